//! Names the lab derives from the topology (namespaces `LAB-NODE`) and the
//! run directory `/run/d11/LAB/` every command of a lab shares.

use crate::topology::{Topology, TopologyError};
use std::path::{Path, PathBuf};

/// Where every lab keeps its runtime state: `/run/d11/LAB/`.
pub const RUN_ROOT: &str = "/run/d11";

/// The state root in force: [`RUN_ROOT`], or `$D11_RUN_DIR` when set. A
/// private root keeps labs apart: `d11 down --all` under one root never
/// reaches the labs of another (the test suite uses its own).
pub fn run_root() -> PathBuf {
    std::env::var_os("D11_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RUN_ROOT))
}

/// Longest lab name: with a node name (≤ 20) the namespace name stays short.
pub const MAX_LAB_NAME: usize = 24;

/// Longest node name.
pub const MAX_NODE_NAME: usize = 20;

/// The network namespace of `node` in `lab`: `LAB-NODE`.
pub fn netns_name(lab: &str, node: &str) -> String {
    format!("{lab}-{node}")
}

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Where `ip netns exec NS` finds files to mount over `/etc` (ip-netns(8)).
pub(crate) const ETC_NETNS_DIR: &str = "/etc/netns";

/// The first line of every file `d11 up` writes under [`ETC_NETNS_DIR`]:
/// teardown removes only files that carry it.
pub fn etc_marker(lab: &str) -> String {
    format!(
        "# written by d11 up for lab {lab}, removed by d11 down ({})",
        netns_marker(lab)
    )
}

/// The hosts file `d11 up` writes for `node` (ip-netns(8) mounts it over
/// `/etc/hosts` in `ip netns exec`); programs that enter the namespace
/// themselves read it from here.
pub fn netns_hosts_file(lab: &str, node: &str) -> PathBuf {
    Path::new(ETC_NETNS_DIR)
        .join(netns_name(lab, node))
        .join("hosts")
}

/// The resolv.conf `d11 up` writes for `node` (mounted over
/// `/etc/resolv.conf` by `ip netns exec` like the hosts file).
pub fn netns_resolv_file(lab: &str, node: &str) -> PathBuf {
    Path::new(ETC_NETNS_DIR)
        .join(netns_name(lab, node))
        .join("resolv.conf")
}

/// The alias [`crate::build`] gives `lo` in each namespace of `lab`: it
/// proves a namespace belongs to the lab even when the run directory is gone.
pub(crate) fn netns_marker(lab: &str) -> String {
    format!("d11-lab:{lab}@{}", run_root().display())
}

/// The lab a marker alias names if it belongs to the state root in force
/// (the inverse of [`netns_marker`]).
pub(crate) fn marker_lab(alias: &str) -> Option<&str> {
    let (lab, root) = alias.strip_prefix("d11-lab:")?.split_once('@')?;
    (Path::new(root) == run_root()).then_some(lab)
}

/// The names of every namespace `ip netns` knows (`/run/netns/*`).
pub(crate) fn existing_namespaces() -> std::io::Result<std::collections::BTreeSet<String>> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e),
    }
}

/// True for `[a-z][a-z0-9-]*` of at most `max` bytes: the shape of lab and
/// node names, safe in a file name, a namespace name and a shell word.
pub(crate) fn is_simple_name(name: &str, max: usize) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && name.len() <= max
}

/// A lab name that is not `[a-z][a-z0-9-]*` of at most 24 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lab name {0:?} must match [a-z][a-z0-9-]* and be at most 24 bytes")]
pub struct LabNameError(pub String);

/// Checks a lab name (`--name`) before it becomes part of paths and namespaces.
pub fn check_lab_name(lab: &str) -> Result<(), LabNameError> {
    if is_simple_name(lab, MAX_LAB_NAME) {
        Ok(())
    } else {
        Err(LabNameError(lab.to_string()))
    }
}

/// The run directory of one lab, `/run/d11/LAB/`:
///
/// | file | written by | holds |
/// |---|---|---|
/// | `topology.toml` | [`crate::build`] | the lab's topology (normalised copy) |
/// | `namespaces` | [`crate::build`] | one namespace name a line, written before each is created |
/// | `logs/NODE.log` | the supervisor | stdout and stderr of the node's element process |
/// | `NODE.sock` | the element process | its control socket |
/// | `supervisor.pid` | the supervisor | `PID STARTTIME` of the supervisor process |
/// | `supervisor.json` | the supervisor | [`crate::SupervisorState`] |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    lab: String,
    path: PathBuf,
}

impl RunDir {
    /// `/run/d11/LAB/` (under [`run_root`]).
    pub fn new(lab: &str) -> RunDir {
        RunDir::under(&run_root(), lab)
    }

    /// `ROOT/LAB/`: the same layout somewhere else (tests of the supervisor,
    /// which needs no root).
    pub fn under(root: &Path, lab: &str) -> RunDir {
        RunDir {
            lab: lab.to_string(),
            path: root.join(lab),
        }
    }

    pub fn lab(&self) -> &str {
        &self.lab
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn topology_file(&self) -> PathBuf {
        self.path.join("topology.toml")
    }

    pub fn namespaces_file(&self) -> PathBuf {
        self.path.join("namespaces")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// `logs/NODE.log`: where the supervisor appends the node's output.
    pub fn log_file(&self, node: &str) -> PathBuf {
        self.logs_dir().join(format!("{node}.log"))
    }

    /// `pki/`: the lab PKI `d11 up` makes (root, intermediate, server chain
    /// and key).
    pub fn pki_dir(&self) -> PathBuf {
        self.path.join("pki")
    }

    /// `vpn/`: the VPN's keys `d11 up` makes (`esp_sa`, Wireshark's ESP SA
    /// table; `sas.txt`).
    pub fn vpn_dir(&self) -> PathBuf {
        self.path.join("vpn")
    }

    /// `orders.sqlite`: the orders the lab's controllers record.
    pub fn order_store(&self) -> PathBuf {
        self.path.join("orders.sqlite")
    }

    /// `db/`: the files of the lab's `db` apps (`db/NODE.sqlite`), the VMs' disks.
    pub fn db_dir(&self) -> PathBuf {
        self.path.join("db")
    }

    /// `NODE.sock`: the element's or app's control socket.
    pub fn socket(&self, node: &str) -> PathBuf {
        self.path.join(format!("{node}.sock"))
    }

    pub fn supervisor_pid_file(&self) -> PathBuf {
        self.path.join("supervisor.pid")
    }

    pub fn supervisor_state_file(&self) -> PathBuf {
        self.path.join("supervisor.json")
    }

    /// The topology saved by [`crate::build`].
    pub fn topology(&self) -> Result<Topology, TopologyError> {
        Topology::load(&self.topology_file())
    }

    /// The namespace names recorded by [`crate::build`]; empty when the file
    /// (or the whole directory) is gone.
    pub fn namespaces(&self) -> std::io::Result<Vec<String>> {
        match std::fs::read_to_string(self.namespaces_file()) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_short_lowercase_words() {
        assert!(check_lab_name("d11").is_ok());
        assert!(check_lab_name("t-lab-12345").is_ok());
        assert!(check_lab_name("a23456789012345678901234").is_ok());
        for bad in [
            "",
            "1lab",
            "Lab",
            "lab_x",
            "lab/x",
            "a234567890123456789012345",
        ] {
            let e = check_lab_name(bad).unwrap_err();
            assert!(e.to_string().contains("[a-z][a-z0-9-]*"), "{e}");
        }
    }

    #[test]
    fn run_dir_layout_matches_the_documented_files() {
        let rd = RunDir::new("d11");
        assert_eq!(rd.path(), Path::new("/run/d11/d11"));
        assert_eq!(rd.log_file("a2"), Path::new("/run/d11/d11/logs/a2.log"));
        assert_eq!(rd.socket("a2"), Path::new("/run/d11/d11/a2.sock"));
        assert_eq!(netns_name("d11", "a2"), "d11-a2");
    }
}
