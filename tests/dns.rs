//! End-to-end test of chapter 3's DNS servers (netns/double11.toml, root
//! only, docs/dns.md): from the phone's namespace `dig` walks the lab's own
//! root (198.18.0.2), the .com TLD (198.18.0.18) and the shop's server
//! (198.18.1.2) by hand, over UDP and TCP, across the mobile core, the
//! carriers and BGP; tshark decodes every frame of it; and Debian's `nsd`,
//! serving the very zone files the topology gives our `dns-auth` app,
//! answers every query of a list the same way, section by section.

mod support;

use d11_bench::dns::Peer;
use support::*;

/// One server of the topology: its node, its address and its zones
/// (origin, master-file text), read from netns/double11.toml.
struct Server {
    node: String,
    address: String,
    zones: Vec<(String, String)>,
}

fn servers() -> Vec<Server> {
    let text = std::fs::read_to_string(topology("double11.toml")).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    let mut out = Vec::new();
    for n in t["nodes"].as_array().unwrap() {
        if n.get("app").and_then(|a| a.as_str()) != Some("dns-auth") {
            continue;
        }
        let addr = n["ports"][0]["address"].as_str().unwrap();
        let zones = n["config"]["zones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| {
                (
                    z["origin"].as_str().unwrap().to_string(),
                    z["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.push(Server {
            node: n["name"].as_str().unwrap().to_string(),
            address: addr.split('/').next().unwrap().to_string(),
            zones,
        });
    }
    out
}

/// dig's header flags, rcode and the three sections, without what differs
/// between any two servers (the id, EDNS cookies, timing).
fn sections(lab: &Lab, node: &str, server: &str, port: &str, q: &[&str], tcp: bool) -> String {
    let mut cmd = vec![
        "dig",
        "+norec",
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "+additional",
        "+nocookie",
        "-p",
        port,
    ];
    if tcp {
        cmd.push("+tcp");
    }
    let at = format!("@{server}");
    cmd.push(&at);
    cmd.extend_from_slice(q);
    let out = lab.sh(node, &cmd);
    // The header line without its id: `opcode: QUERY, status: NOERROR`.
    let mut lines: Vec<&str> = out
        .lines()
        .map(|l| l.split(", id:").next().unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.contains("EDNS: version"))
        .filter(|l| !l.starts_with(";; Got answer") && !l.starts_with(";; OPT"))
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phone_walks_root_com_and_the_shop_by_hand_and_nsd_answers_alike() {
    let _s = serial();
    require_root();
    let scratch = Scratch::new("dns");
    let name;
    {
        let lab = Lab::up("double11.toml", "dns");
        name = lab.name.clone();

        // The walk, by hand, from the phone, captured on every wire.
        let cap = scratch.path("walk.pcapng");
        let walk = "dig +norec @198.18.0.2 www.geektime.com A; \
                    dig +norec @198.18.0.18 www.geektime.com A; \
                    dig +norec @198.18.1.2 www.geektime.com A; \
                    dig +norec +tcp @198.18.1.2 www.geektime.com.gslb.d11cloud.com A; \
                    dig +norec @198.18.1.18 www.geektime.com.gslb.d11cloud.com A";
        let o = lab.capture(&cap, "ue", &["sh", "-c", walk]);
        let out = text(&o);
        assert!(o.status.success(), "the walk failed:\n{out}");
        for want in [
            "com.\t\t\t172800\tIN\tNS\ta.gtld.lab.",
            "a.gtld.lab.\t\t172800\tIN\tA\t198.18.0.18",
            "geektime.com.\t\t172800\tIN\tNS\tns1.geektime.com.",
            "ns1.geektime.com.\t172800\tIN\tA\t198.18.1.2",
            "www.geektime.com.\t600\tIN\tCNAME\twww.geektime.com.gslb.d11cloud.com.",
            "gslb.d11cloud.com.\t86400\tIN\tNS\tns1.gslb.d11cloud.com.",
            "ns1.gslb.d11cloud.com.\t86400\tIN\tA\t198.18.1.18",
            "www.geektime.com.gslb.d11cloud.com. 20 IN A\t203.0.113.24",
            "www.geektime.com.gslb.d11cloud.com. 20 IN A\t203.0.113.26",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        assert_eq!(out.matches("status: NOERROR").count(), 5, "{out}");
        assert!(
            out.contains("(TCP)"),
            "the last query went over TCP:\n{out}"
        );

        // Every DNS message decodes, nothing is malformed, on any wire.
        let dns = tshark_fields(
            &cap,
            "dns",
            &["frame.interface_name", "dns.qry.name", "dns.flags.response"],
        );
        assert!(
            dns.iter().any(|f| f[0] == "dns-root:eth0" && f[2] == "1"),
            "the root's answer on its wire: {dns:?}"
        );
        assert!(
            dns.iter().any(|f| f[0] == "dns-com:eth0" && f[2] == "1"),
            "on .com's wire: {dns:?}"
        );
        assert!(
            dns.iter().any(|f| f[0] == "dns-shop:eth0" && f[2] == "1"),
            "on the shop's DNS wire: {dns:?}"
        );
        assert!(
            dns.iter().any(|f| f[0] == "gslb:eth0" && f[2] == "1"),
            "on the GSLB's wire: {dns:?}"
        );
        assert_eq!(bad_frames(&cap), Vec::<Vec<String>>::new());

        // nsd, serving the topology's own zone files, answers each query
        // as our server does: the same rcode, flags and sections.
        let queries: [&[&str]; 12] = [
            &[".", "NS"],
            &[".", "SOA"],
            &["com", "NS"],
            &["com", "DS"],
            &["www.geektime.com", "A"],
            &["www.geektime.com", "AAAA"],
            &["geektime.com", "NS"],
            &["geektime.com", "MX"],
            &["nope.geektime.com", "A"],
            &["www.geektime.com.gslb.d11cloud.com", "A"],
            &["gslb.d11cloud.com", "A"],
            &["a.root.lab", "A"],
        ];
        for s in servers() {
            let _nsd = Peer::nsd(
                &d11_bin(),
                &lab.name,
                &s.node,
                &scratch.path(&s.node),
                "127.0.0.1",
                "5300",
                &s.zones,
            )
            .unwrap();
            for q in queries {
                for tcp in [false, true] {
                    let ours = sections(&lab, &s.node, &s.address, "53", q, tcp);
                    let theirs = sections(&lab, &s.node, "127.0.0.1", "5300", q, tcp);
                    assert_eq!(ours, theirs, "{} {q:?} tcp={tcp}: ours, then nsd's", s.node);
                }
            }
        }

        // RFC 8906 § 8's queries (ISC's EDNS compliance tests) against each
        // authoritative server, the GSLB included, from the phone.
        for (server, zone) in [
            ("198.18.0.2", "."),
            ("198.18.0.18", "com"),
            ("198.18.1.2", "geektime.com"),
            ("198.18.1.18", "gslb.d11cloud.com"),
        ] {
            rfc8906(&lab, server, zone);
        }

        flood(&lab, &scratch);
    }
    assert_gone(&name);
}

/// A query flood against the shop's server (dnsperf from the carrier's
/// resolver's namespace, as many queries in flight as it can, distinct
/// names, most of them NXDOMAIN): the phone's own queries are still
/// answered while it lasts, every flood query the server read is counted
/// under an outcome, and the server's memory does not grow with it.
fn flood(lab: &Lab, scratch: &Scratch) {
    let names: String = (0..2000)
        .map(|i| format!("flood-{i}.geektime.com A\n"))
        .collect();
    let file = scratch.path("flood.txt");
    std::fs::write(&file, names).unwrap();
    let pid = node(&lab.status(), "dns-shop")["pid"]
        .as_u64()
        .expect("dns-shop's pid");
    let rss = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = (report(lab, "dns-shop"), rss());
    let dnsperf = std::process::Command::new(d11_bin())
        .args(["exec", "--name", &lab.name, "resolver", "--"])
        .args(["dnsperf", "-s", "198.18.1.2", "-d"])
        .arg(&file)
        .args(["-l", "6", "-c", "8", "-q", "2000", "-t", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Under the flood (it runs 6 s; these take well under that).
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..5 {
        let out = lab.sh(
            "ue",
            &[
                "dig",
                "+norec",
                "+tries=3",
                "+time=1",
                "@198.18.1.2",
                "geektime.com",
                "SOA",
            ],
        );
        assert!(
            out.contains("status: NOERROR") && out.contains("geektime.com.\t\t3600\tIN\tSOA"),
            "the phone's query during the flood:\n{out}"
        );
    }
    let o = dnsperf.wait_with_output().unwrap();
    let perf = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{perf}");
    let sent: u64 = perf
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries sent:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("dnsperf's output: {perf}"));
    let after = (report(lab, "dns-shop"), rss());
    let c = |r: &serde_json::Value, k: &str| r["counters"][k].as_u64().unwrap();
    let read = c(&after.0, "udp_queries") - c(&before.0, "udp_queries");
    let outcomes: u64 = [
        "answers",
        "referrals",
        "nodata",
        "nxdomain",
        "refused",
        "formerr",
        "notimp",
        "badvers",
        "truncated",
        "dropped",
    ]
    .iter()
    .map(|k| c(&after.0, k) - c(&before.0, k))
    .sum();
    assert!(sent > 10_000, "a flood: {perf}");
    assert!(read >= 5, "the server read the flood: {read} of {sent}");
    assert_eq!(
        read, outcomes,
        "each query read has an outcome: {:#}",
        after.0
    );
    assert!(
        after.1 < before.1 + 8 * 1024,
        "dns-shop's RSS grew from {} to {} KiB under {sent} queries",
        before.1,
        after.1
    );
}

/// What RFC 8906 § 8 expects of an authoritative server for `zone`: each
/// query answered, EDNS version 0 spoken, unknown types, options, flags and
/// versions handled as RFC 6891 says, the DO bit copied (RFC 3225 § 3), an
/// unknown opcode NOTIMP, over UDP and TCP.
fn rfc8906(lab: &Lab, server: &str, zone: &str) {
    let at = format!("@{server}");
    // (dig options, status, SOA in the answer, OPT in the answer, DO echoed)
    let cases: [(&str, &str, bool, bool, bool); 11] = [
        ("+noedns +noad +norec soa", "NOERROR", true, false, false),
        (
            "+noedns +noad +norec type1000",
            "NOERROR",
            false,
            false,
            false,
        ),
        (
            "+nocookie +edns=0 +noad +norec soa",
            "NOERROR",
            true,
            true,
            false,
        ),
        (
            "+nocookie +edns=1 +noednsneg +noad +norec soa",
            "BADVERS",
            false,
            true,
            false,
        ),
        (
            "+nocookie +edns=0 +noad +norec +ednsopt=100 soa",
            "NOERROR",
            true,
            true,
            false,
        ),
        (
            "+nocookie +edns=0 +noad +norec +ednsflags=0x40 soa",
            "NOERROR",
            true,
            true,
            false,
        ),
        (
            "+nocookie +edns=1 +noednsneg +noad +norec +ednsopt=100 soa",
            "BADVERS",
            false,
            true,
            false,
        ),
        (
            "+nocookie +edns=1 +noednsneg +noad +norec +ednsflags=0x40 soa",
            "BADVERS",
            false,
            true,
            false,
        ),
        (
            "+nocookie +edns=0 +noad +norec +dnssec soa",
            "NOERROR",
            true,
            true,
            true,
        ),
        (
            "+nocookie +edns=0 +noad +norec +tcp soa",
            "NOERROR",
            true,
            true,
            false,
        ),
        (
            "+noedns +noad +norec +opcode=15 +header-only",
            "NOTIMP",
            false,
            false,
            false,
        ),
    ];
    for (opts, status, soa, opt, dnssec_ok) in cases {
        let mut cmd = vec!["dig", "+tries=1", "+time=2", &at, zone];
        cmd.extend(opts.split_whitespace());
        let out = lab.sh("ue", &cmd);
        let what = format!("dig {opts} {zone} @{server}:\n{out}");
        assert!(out.contains(&format!("status: {status},")), "{what}");
        let soa_line = out
            .lines()
            .any(|l| !l.starts_with(';') && l.contains("\tSOA\t"));
        let answer = out
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION:"))
            .take_while(|l| !l.is_empty())
            .any(|l| l.contains("\tSOA\t"));
        assert_eq!(answer, soa, "the SOA in the answer: {what}");
        assert!(soa || status != "BADVERS" || !soa_line, "{what}");
        assert_eq!(out.contains("; EDNS: version: 0,"), opt, "the OPT: {what}");
        // No unknown option or flag comes back; DO only when asked.
        assert!(!out.contains("MBZ") && !out.contains("OPT=100"), "{what}");
        assert_eq!(
            out.contains("; EDNS: version: 0, flags: do;"),
            dnssec_ok,
            "{what}"
        );
        if status == "NOERROR" && opts.contains("+norec") && !opts.contains("opcode") {
            assert!(out.contains("flags: qr aa"), "authoritative: {what}");
        }
    }
}

/// A resolver's answer as dig shows it, without what differs between two
/// resolvers that are both right: the id, the TTLs (each counts down from
/// when it cached), the OPT line, and the additional section's count
/// (unbound adds the addresses of an NS answer's targets; additional data
/// is optional, RFC 2181 § 9, and neither dig view here shows it).
fn resolved(lab: &Lab, node: &str, server: &str, port: &str, q: &[&str], tcp: bool) -> String {
    let mut cmd = vec![
        "dig",
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "+nocookie",
        "-p",
        port,
    ];
    if tcp {
        cmd.push("+tcp");
    }
    let at = format!("@{server}");
    cmd.push(&at);
    cmd.extend_from_slice(q);
    let out = lab.sh(node, &cmd);
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| l.split(", id:").next().unwrap_or(l))
        .map(|l| l.split(", ADDITIONAL:").next().unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.contains("EDNS: version") && !l.contains("WARNING"))
        .filter(|l| !l.starts_with(";; Got answer") && !l.starts_with(";; OPT"))
        .map(|l| {
            if l.starts_with(';') {
                return l.to_string();
            }
            // A record: name TTL class type data…, without the TTL; an
            // SOA keeps only its owner and type (serials agree, but the
            // point is which zone said no).
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) == Some(&"SOA") {
                format!("{} {} SOA", f[0], f[2])
            } else {
                let mut f = f;
                f.remove(1);
                f.join(" ")
            }
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn report(lab: &Lab, node: &str) -> serde_json::Value {
    let o = d11(&["show", "--name", &lab.name, node, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_phone_resolves_through_the_carriers_resolver_and_unbound_answers_alike() {
    let _s = serial();
    require_root();
    let scratch = Scratch::new("dns-resolver");
    let name;
    let resolv_conf;
    {
        let lab = Lab::up("double11.toml", "dnsr");
        name = lab.name.clone();
        // No hosts entry for the shop is left: the phone's resolv.conf
        // names the carrier's resolver, as the attach gave it (the pgw's
        // config.dns in the PCO; the topology names none for the phone),
        // written by its baseband with the lab's marker line.
        let etc = format!("/etc/netns/{}", lab.netns("ue"));
        let hosts = std::fs::read_to_string(format!("{etc}/hosts")).unwrap_or_default();
        assert!(!hosts.contains("geektime"), "{hosts}");
        resolv_conf = format!("{etc}/resolv.conf");
        let resolv = std::fs::read_to_string(&resolv_conf).unwrap();
        assert!(
            resolv.starts_with(&format!("# written by d11 up for lab {}", lab.name))
                && resolv.lines().skip(1).eq(["nameserver 198.18.2.2"]),
            "{resolv}"
        );
        let ue = report(&lab, "ue");
        assert_eq!(ue["dns"], serde_json::json!(["198.18.2.2"]), "{ue}");
        let topo = std::fs::read_to_string(format!("/run/d11/{}/topology.toml", lab.name)).unwrap();
        assert!(!topo.contains("nameservers = [\"198.18.2.2\"]"), "{topo}");

        // Cold: `dig www.geektime.com` from the phone, every wire captured.
        let cap = scratch.path("resolve.pcapng");
        let o = lab.capture(&cap, "ue", &["dig", "www.geektime.com"]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(
            out.contains("status: NOERROR") && out.contains("SERVER: 198.18.2.2#53"),
            "{out}"
        );
        assert!(out.contains("flags: qr rd ra;"), "{out}");
        for want in [
            "www.geektime.com.\t600\tIN\tCNAME\twww.geektime.com.gslb.d11cloud.com.",
            "www.geektime.com.gslb.d11cloud.com. 20 IN A\t203.0.113.24",
            "www.geektime.com.gslb.d11cloud.com. 20 IN A\t203.0.113.25",
            "www.geektime.com.gslb.d11cloud.com. 20 IN A\t203.0.113.26",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        // The resolver's own queries on its wire: root, .com, the shop's
        // server (the CNAME), .com again for d11cloud.com, the cloud's
        // (a referral to the GSLB), the GSLB (the VIPs).
        let asked: Vec<String> = tshark_fields(
            &cap,
            "dns.flags.response == 0 && ip.src == 198.18.2.2 && frame.interface_name == \"resolver:eth0\"",
            &["ip.dst", "dns.qry.name"],
        )
        .into_iter()
        .map(|f| f[0].clone())
        .collect();
        assert_eq!(
            asked,
            [
                "198.18.0.2",
                "198.18.0.18",
                "198.18.1.2",
                "198.18.0.18",
                "198.18.1.2",
                "198.18.1.18"
            ],
            "the walk"
        );
        assert_eq!(bad_frames(&cap), Vec::<Vec<String>>::new());

        // Again: from the cache, no query leaves the resolver, TTLs no higher.
        let before = report(&lab, "resolver");
        let again = lab.sh("ue", &["dig", "+noall", "+answer", "www.geektime.com"]);
        let after = report(&lab, "resolver");
        let c = |r: &serde_json::Value, k: &str| r["counters"][k].as_u64().unwrap();
        assert_eq!(c(&after, "cache_answers"), c(&before, "cache_answers") + 1);
        assert_eq!(c(&after, "upstream_udp"), c(&before, "upstream_udp"));
        let ttl = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u32>().unwrap();
        let first = again.lines().next().unwrap();
        assert!(ttl(first) <= 600, "{again}");
        assert!(again.lines().skip(1).all(|l| ttl(l) <= 20), "{again}");
        let cache = &after["cache"];
        assert!(
            cache
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "www.geektime.com.gslb.d11cloud.com." && r["type"] == "A"),
            "{cache}"
        );

        // `d11 order` asks the cloud's HTTPDNS first, which picks east by
        // the phone's NATed address, and says so.
        let o = d11(&["order", "--name", &lab.name]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(
            out.contains("www.geektime.com via HTTPDNS httpdns.d11cloud.com (198.18.1.18), region east for 198.51.100."),
            "{out}"
        );
        assert!(
            out.contains(": 203.0.113.24 203.0.113.25 203.0.113.26 (TTL 20 s)"),
            "{out}"
        );
        let gslb = report(&lab, "gslb");
        assert_eq!(gslb["httpdns"]["requests"]["200"], 1, "{gslb}");
        // An app without HTTPDNS resolves through the carrier's resolver.
        let dns_line = "www.geektime.com via DNS 198.18.2.2, CNAME www.geektime.com. -> www.geektime.com.gslb.d11cloud.com.: 203.0.113.24 203.0.113.25 203.0.113.26";
        let o = d11(&["order", "--name", &lab.name, "--no-httpdns"]);
        let out = text(&o);
        assert!(o.status.success() && out.contains(dns_line), "{out}");
        // HTTPDNS out of the phone's reach: the app falls back to DNS.
        lab.sh("ue", &["ip", "route", "add", "blackhole", "198.18.1.18/32"]);
        let o = d11(&["order", "--name", &lab.name]);
        let out = text(&o);
        assert!(o.status.success() && out.contains(dns_line), "{out}");
        assert!(
            out.contains("HTTPDNS httpdns.d11cloud.com (198.18.1.18): connect 198.18.1.18:443:")
                && out.contains("falling back to DNS"),
            "{out}"
        );
        lab.sh("ue", &["ip", "route", "del", "blackhole", "198.18.1.18/32"]);

        // unbound, from the same root hints, beside ours in the resolver's
        // namespace: the phone gets the same answers from both.
        let _unbound = Peer::unbound(
            &d11_bin(),
            &lab.name,
            "resolver",
            &scratch.path("unbound"),
            "198.18.2.2",
            "5353",
        )
        .unwrap();
        let queries: [&[&str]; 9] = [
            &["www.geektime.com", "A"],
            &["www.geektime.com", "AAAA"],
            &["nope.geektime.com", "A"],
            &["geektime.com", "NS"],
            &["geektime.com", "MX"],
            &["www.geektime.com.gslb.d11cloud.com", "A"],
            &["gslb.d11cloud.com", "A"],
            &["a.root.lab", "A"],
            &["nope.example", "A"],
        ];
        for q in queries {
            for tcp in [false, true] {
                let ours = resolved(&lab, "ue", "198.18.2.2", "53", q, tcp);
                let theirs = resolved(&lab, "ue", "198.18.2.2", "5353", q, tcp);
                assert_eq!(ours, theirs, "{q:?} tcp={tcp}: ours, then unbound's");
            }
        }
    }
    assert_gone(&name);
    // The attach's resolv.conf went with the lab.
    assert!(
        !std::path::Path::new(&resolv_conf).exists(),
        "{resolv_conf}"
    );
}

/// `dig +short` of the shop's name through the phone's resolver.
fn vips_seen(lab: &Lab) -> Vec<String> {
    lab.sh("ue", &["dig", "+short", "www.geektime.com", "A"])
        .lines()
        .filter(|l| !l.ends_with('.'))
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(not(d11_root), ignore = "needs root: network namespaces")]
fn the_gslb_answers_the_nearest_region_and_fails_over_to_north_when_east_is_down() {
    let _s = serial();
    require_root();
    let name;
    {
        let lab = Lab::up("double11.toml", "gslb");
        name = lab.name.clone();
        // The carrier's resolver is nearest east.
        assert_eq!(
            vips_seen(&lab),
            ["203.0.113.24", "203.0.113.25", "203.0.113.26"]
        );
        // A host behind the second carrier's resolver (off c3, its own
        // resolv.conf names it) gets north's, by that resolver's address.
        let north = lab.sh("resolver-n", &["dig", "+short", "www.geektime.com", "A"]);
        let north: Vec<&str> = north.lines().filter(|l| !l.ends_with('.')).collect();
        assert_eq!(north, ["198.19.24.24", "198.19.24.25", "198.19.24.26"]);
        // A client subnet in north's list picks north, and the answer says
        // for which prefix it holds [RFC 7871 § 7.2.1].
        let ecs = lab.sh(
            "ue",
            &[
                "dig",
                "+norec",
                "+subnet=198.18.3.0/24",
                "@198.18.1.18",
                "www.geektime.com.gslb.d11cloud.com",
                "A",
            ],
        );
        assert!(ecs.contains("CLIENT-SUBNET: 198.18.3.0/24/28"), "{ecs}");
        assert!(ecs.contains(" 20 IN A\t198.19.24.24"), "{ecs}");

        // East's load balancer gone from its network: the GSLB's checks
        // find every east VIP down, and once the resolver's copy has
        // expired (TTL 20 s) the phone gets north's VIPs, all three: a
        // north VIP is left out only after two failed checks in a row.
        lab.sh("vm-lb", &["ip", "link", "set", "eth0", "down"]);
        let north = ["198.19.24.24", "198.19.24.25", "198.19.24.26"];
        let mut seen = Vec::new();
        for _ in 0..120 {
            seen = vips_seen(&lab);
            if seen == north {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        assert_eq!(seen, north);
        let gslb = report(&lab, "gslb");
        let east = &gslb["regions"][0];
        assert!(
            east["vips"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["up"] == false),
            "{gslb}"
        );
        assert!(
            gslb["regions"][1]["failovers_in"].as_u64().unwrap() >= 1,
            "{gslb}"
        );

        // And the order goes through north.
        let o = d11(&["order", "--name", &lab.name]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(
            out.contains("POST /purchaseOrder to www.geektime.com 198.19.24.24:443"),
            "{out}"
        );
    }
    assert_gone(&name);
}
