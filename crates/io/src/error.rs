use d11_core::pcapng::PcapError;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `d11-io`; each message names the
/// namespace, interface or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("network namespace {name}: cannot open {path}: {source}")]
    NetnsOpen {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot enter network namespace {name}: {source}")]
    NetnsEnter { name: String, source: io::Error },
    #[error("cannot return from network namespace {name} to the original one: {source}")]
    NetnsLeave { name: String, source: io::Error },
    #[error("no interface {ifname} in network namespace {netns}")]
    NoSuchInterface { netns: String, ifname: String },
    #[error("cannot attach to TAP {ifname} in network namespace {netns}: {source}")]
    TapAttach {
        netns: String,
        ifname: String,
        source: io::Error,
    },
    #[error("AF_PACKET socket on {ifname}: {op}: {source}")]
    Packet {
        ifname: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("driver: {ports} ports but {names} port names")]
    PortNames { ports: usize, names: usize },
    #[error("driver: {op}: {source}")]
    Driver { op: &'static str, source: io::Error },
    #[error("control socket {path}: {op}: {source}")]
    Control {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("control socket {path}: the answer is not JSON: {source}")]
    ControlAnswer {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("control socket {path}: refused: {error}")]
    Refused { path: PathBuf, error: String },
    #[error("control socket {path}: an answer of another shape: {error}")]
    Answer { path: PathBuf, error: String },
    #[error("capture point {label}: {source}")]
    CapturePoint { label: String, source: Box<IoError> },
    #[error("capture: cannot write the pcapng: {}", pcap_detail(.0))]
    CaptureWrite(#[from] PcapError),
    #[error("cannot install the SIGINT/SIGTERM handler: {0}")]
    SignalHandler(io::Error),
}

/// pcap-file's I/O error hides its cause in the message; show it.
fn pcap_detail(e: &PcapError) -> String {
    match e {
        PcapError::IoError(io) => io.to_string(),
        e => e.to_string(),
    }
}
