//! Root end-to-end test of `d11 demo` on netns/double11.toml: the narrated
//! up (captured from its first frame: chapter 2's BGP), order, trace and
//! down in a lab of its own (about 3 s), which leaves nothing behind. The narration itself is unit-tested on canned JSON in
//! crates/cli/src/demo.rs.

mod support;

use support::*;

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_demo_tells_each_chapter_from_the_run_and_takes_its_lab_down() {
    let _s = serial();
    require_root();
    let name = format!("t-demo-{}", std::process::id() % 100_000);
    let dir = Scratch::new("demo");
    let file = dir.path("demo.pcapng");
    let topo = topology("double11.toml");
    let o = d11(&[
        "demo",
        "--name",
        &name,
        "-t",
        &topo.to_string_lossy(),
        "-w",
        &file.to_string_lossy(),
    ]);
    let out = text(&o);
    // Taken down whatever happened above.
    assert_gone(&name);
    assert!(o.status.success(), "d11 demo failed:\n{out}");
    for want in [
        "Chapter 2",
        "OPEN v4 AS 64500 hold 9 s id 192.0.2.1",
        "4-octet AS 64600",
        "c1 → a2      203.0.113.0/24 with AS_PATH [64510 64600], NEXT_HOP 192.0.2.2",
        "a2 heard 2 paths to 203.0.113.0/24",
        "the lower BGP Identifier wins (192.0.2.2 against 192.0.2.14): c1",
        "203.0.113.0/24 via 192.0.2.2 on a2c1",
        "a2 routes it (TTL 63 → 62) by its BGP route 203.0.113.0/24 via c1 (AS_PATH 64510 64600)",
        "Chapter 3",
        "IMSI 001010000000001: Registered, APN internet, address 10.45.0.2",
        "the sgw's session for 001010000000001",
        // The attach from `d11 up`'s capture, message by message.
        "The phone's attach as the wires carried it",
        // (in an Initial UE Message, or an Uplink NAS Transport when an
        // earlier try met the mme before the hss)
        ": NAS Attach Request",
        "mme → hss   Diameter Authentication-Information-Request (AIR)",
        "mme → enb   S1AP Downlink NAS Transport: NAS Authentication Request",
        "mme → enb   S1AP Downlink NAS Transport: NAS Security Mode Command",
        "Diameter Update-Location-Answer (ULA)",
        "mme → sgw   GTPv2-C Create Session Request",
        "sgw → pgw   GTPv2-C Create Session Request",
        // with what the Attach Accept gave: the address, the DNS server of its PCO
        "mme → enb   S1AP Initial Context Setup Request: NAS Attach Accept (10.45.0.2, DNS 198.18.2.2)",
        "enb → mme   S1AP Uplink NAS Transport: NAS Attach Complete",
        "Chapter 3, continued: the shop's name",
        "(the phone, NATed) → 198.18.2.2 (resolver)  query www.geektime.com. A, recursion desired",
        "198.18.0.2 (dns-root) → 198.18.2.2 (resolver)  referral to com. 172800 NS a.gtld.lab.",
        "198.18.1.2 (dns-shop) → 198.18.2.2 (resolver)  answer (authoritative): www.geektime.com. 600 CNAME www.geektime.com.gslb.d11cloud.com.",
        "198.18.1.18 (gslb) → 198.18.2.2 (resolver)  answer (authoritative): www.geektime.com.gslb.d11cloud.com. 20 A 203.0.113.24 203.0.113.25 203.0.113.26",
        "the second: answered from the resolver's cache, no query left it",
        "via HTTPDNS httpdns.d11cloud.com (198.18.1.18), region east",
        "Chapter 4",
        "CNAME static.geektime.com.c.d11cdn.com. -> static.geektime.com.gslb.d11cdn.com.",
        "a miss at the edge and at the parent: fetched from the origin, the origin's bytes",
        "a hit at edge-a2 (Age 1 s), the origin's bytes",
        "Chapters 5 and 6",
        "TLS 1.",
        "→ 201 created",
        "every row as the topology implies ✓",
        "→ SYN-SENT",
        "ESTABLISHED",
        "Chapter 7",
        // The attach's TEIDs: the sgw's pool from 0x2000000, the pgw's
        // from 0x4000000.
        "GTP-U TEID 0x20000",
        "into TEID 0x40000",
        "SNATs the source 10.45.0.2:",
        "Chapter 8",
        "DNATs the destination 203.0.113.24:443 → 192.168.1.10:443",
        "VXLAN VNI 1001",
        "Chapter 9",
        "new connection 192.168.1.10:",
        "The load balancer chose 192.168.",
        "Chapter 1, continued: region north",
        "served by vm-ctl-n",
        "ESP packets and no packet of either VPC in clear",
        "ESP SPI 0x00002001",
        "Dubbo magic 0xdabb",
        "Decryption Secrets Block",
        "d11 down --name",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(file.exists(), "the capture stays after the lab is down");
    let start = dir.path("demo-bgp.pcapng");
    assert!(start.exists(), "so does the capture of the lab's start");
    let broken = broken_frames_whole_and_per_wire(&start);
    assert!(broken.is_empty(), "tshark finds broken frames: {broken:?}");
    // The order's capture and region north's as well, the files a reader
    // opens first.
    for f in [
        dir.path("demo-dns.pcapng"),
        file,
        dir.path("demo-vpn.pcapng"),
    ] {
        let broken = broken_frames_whole_and_per_wire(&f);
        assert!(
            broken.is_empty(),
            "{}: tshark finds broken frames: {broken:?}",
            f.display()
        );
    }
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_demo_refuses_a_lab_that_is_already_up_and_leaves_it_alone() {
    let _s = serial();
    require_root();
    let lab = Lab::up("carrier.toml", "demo-busy");
    let o = d11(&["demo", "--name", &lab.name]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already up"), "{}", text(&o));
    assert!(
        !namespaces(&format!("{}-", lab.name)).is_empty(),
        "the demo took down a lab it did not build"
    );
}
