//! The control socket of an app process (`/run/d11/LAB/NODE.sock`), on tokio.
//!
//! The same protocol as the elements' (`d11_io::control`), so `d11 status`
//! and the supervisor's readiness check treat both alike: a client sends one
//! line and gets one JSON line back.
//!
//! | line     | answer |
//! |----------|--------|
//! | `status` | `{"node","role","pid","uptime_ms","report": app}` |
//! | `ping`   | `{"ok":true}` |
//! | other    | `{"error":"unknown command …"}` |

use serde_json::{json, Value};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long a client may take to send its line.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest command line read.
const MAX_LINE: u64 = 1024;

/// What the app reports under `"report"`.
pub type Report = Arc<dyn Fn() -> Value + Send + Sync>;

/// The app's typed report as JSON: the control socket is where it becomes JSON.
pub fn report<T: serde::Serialize>(f: impl Fn() -> T + Send + Sync + 'static) -> Report {
    Arc::new(move || serde_json::to_value(f()).unwrap_or(Value::Null))
}

/// Binds `path` (replacing a stale socket left by a crashed predecessor)
/// and answers clients until the task is dropped.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// An app's own commands: the answer to a line, None for one it does not
/// know.
pub type Commands = Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;

/// Serves `listener` forever; each client in its own task.
pub async fn serve(listener: UnixListener, node: String, app: &'static str, report: Report) {
    serve_with(listener, node, app, report, Arc::new(|_: &str| None)).await
}

/// [`serve`], with the app's own `commands` beside `status` and `ping`.
pub async fn serve_with(
    listener: UnixListener,
    node: String,
    app: &'static str,
    report: Report,
    commands: Commands,
) {
    let started = Instant::now();
    let node: Arc<str> = node.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (node, report, commands) = (node.clone(), report.clone(), commands.clone());
        tokio::spawn(async move {
            let a = answer(stream, &node, app, started, &report, &commands);
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, a).await;
        });
    }
}

async fn answer(
    stream: UnixStream,
    node: &str,
    app: &str,
    started: Instant,
    report: &Report,
    commands: &Commands,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(BufReader::new(rd), MAX_LINE)
        .read_line(&mut line)
        .await?;
    let v = match line.trim() {
        "ping" => json!({"ok": true}),
        "status" => json!({
            "node": node,
            "role": app,
            "pid": std::process::id(),
            "uptime_ms": started.elapsed().as_millis() as u64,
            "report": report(),
        }),
        other => commands(other).unwrap_or_else(
            || json!({"error": format!("unknown command {other:?} (try status or ping)")}),
        ),
    };
    let mut out = serde_json::to_vec(&v).map_err(io::Error::other)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(path: &Path, cmd: &str) -> Value {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
            .await
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[tokio::test]
    async fn answers_ping_status_and_names_unknown_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm-lb.sock");
        std::fs::write(&path, "stale").unwrap();
        let l = bind(&path).unwrap();
        let report: Report = Arc::new(|| json!({"sessions": 3}));
        tokio::spawn(serve(l, "vm-lb".into(), "l4lb", report));
        assert_eq!(ask(&path, "ping").await, json!({"ok": true}));
        let s = ask(&path, "status").await;
        assert_eq!(s["node"], "vm-lb");
        assert_eq!(s["role"], "l4lb");
        assert_eq!(s["report"]["sessions"], 3);
        let e = ask(&path, "reboot").await;
        assert!(e["error"].as_str().unwrap().contains("reboot"), "{e}");
    }
}
