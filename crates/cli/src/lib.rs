//! What the package's two programs share: `d11`, every command, and
//! `d11-element`, one element process as the supervisor starts it
//! ([`element`]). An element runs a program of its own so that its
//! process holds only the pages of its own code: the topology and the
//! role registry, the driver, a log writer (docs/bgp.md § Figures).

pub mod element;

/// The error and its causes on one line, outermost first; a cause the
/// message before already quotes is not repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !msg.contains(&cause) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&cause);
        }
    }
    msg
}

/// Logs to stderr (the supervisor appends it to logs/NODE.log). `RUST_LOG`
/// chooses the levels as a comma-separated list of `LEVEL` and
/// `TARGET=LEVEL` (`debug`, `d11_core::l3=trace,info`); `info` by default
/// (packets are at `trace`).
pub fn init_tracing() {
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}
