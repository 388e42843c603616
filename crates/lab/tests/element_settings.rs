//! Each role parses its own settings: a wrong one is one line naming the
//! node, the key and the role (no root needed).

use d11_lab::{Topology, TopologyError};

fn carrier_with(extra: &str) -> Result<Topology, TopologyError> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/carrier.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.replacen(
        "role = \"router\"\n",
        &format!("role = \"router\"\n{extra}"),
        1,
    );
    Topology::parse(&text, "carrier.toml")
}

#[test]
fn every_shipped_element_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../netns");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let t = Topology::load(&path).unwrap();
            t.check_elements()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "{n} topologies");
}

fn cloud_with(from: &str, to: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../netns/cloud.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from}");
    let t = Topology::parse(&text.replacen(from, to, 1), "cloud.toml").unwrap();
    let e = t.check_elements().unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1);
    e
}

#[test]
fn vswitch_settings_name_the_wrong_key() {
    let e = cloud_with(
        "{ port = \"other\", vni = 1002 }",
        "{ port = \"other\", vni = 16777216 }",
    );
    assert!(e.contains("(\"hosta\").config.vms[1].vni"), "{e}");
    assert!(e.contains("24 bits"), "{e}");
    let e = cloud_with(", { port = \"other\", vni = 1002 }", "");
    assert!(e.contains("config.vms"), "{e}");
    assert!(e.contains("\"other\" has no entry"), "{e}");
    let e = cloud_with("vteps = [\"10.0.0.12\"", "vteps = [\"10.9.0.12\"");
    assert!(e.contains("config.flood[0].vteps[0]"), "{e}");
    let e = cloud_with("vms = [ { port = \"ctl\"", "vms = [ { port = \"underlay\"");
    assert!(e.contains("(\"hostb\").config.vms"), "{e}");
}

#[test]
fn vgw_settings_name_the_wrong_key() {
    let e = cloud_with("to = \"192.168.1.10:443\"", "to = \"192.168.1.99:443\"");
    assert!(e.contains("(\"vgw\").config.dnat[0].to"), "{e}");
    let e = cloud_with("\"203.0.113.26\"]", "\"198.51.100.26\"]");
    assert!(e.contains("(\"vgw\").config.vips[2]"), "{e}");
    let e = cloud_with("proto = \"tcp\"", "proto = \"sctp\"");
    assert!(e.contains("(\"vgw\").config.dnat[0].proto"), "{e}");
}

#[test]
fn a_setting_a_role_does_not_know_is_named() {
    let t = carrier_with("config = { bearers = [] }\n").unwrap();
    let e = t.check_elements().unwrap_err().to_string();
    assert!(e.contains("nodes[1] (\"a2\").config"), "{e}");
    assert!(e.contains("unknown field `bearers`"), "{e}");
    assert_eq!(e.lines().count(), 1);
}
