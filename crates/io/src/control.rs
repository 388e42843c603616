//! The control socket of an element process (`/run/d11/LAB/NODE.sock`), and
//! the client `d11 status` and the supervisor's readiness check use.
//!
//! Protocol: a client connects to the Unix stream socket (unix(7)) and sends
//! one line; the server answers one JSON line and closes.
//!
//! | line     | answer |
//! |----------|--------|
//! | `status` | [`Status`]: `{"node","role","pid","uptime_ms","ports":{name: counters},"report": element}` |
//! | `table NAME` | [`d11_core::status::Table`]: a table the report cuts at `REPORT_ROWS`, in full |
//! | `ping`   | `{"ok":true}` |
//! | `impair` | [`d11_core::status::ImpairReport`]: every impaired port |
//! | `impair PORT tx\|rx SPEC…` | [`d11_core::status::ImpairSet`]; `off` clears (`docs/impair.md`) |
//! | other    | [`d11_core::status::Refusal`]: `{"error":"unknown command …"}` |
//!
//! The answers are `d11_core::status`'s types; [`status`] and [`ask`] read
//! them back typed.
//!
//! The server runs inside the driver's epoll loop and never blocks the
//! datapath: it reads what is there, answers when the line is complete and
//! drops a client that has not sent it within [`CLIENT_TIMEOUT`].

use crate::impair::ImpairAnswer;
use crate::sys::Epoll;
use crate::IoError;
use d11_core::status::{PortStatus, Refusal, Status, Table};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a client may take to send its line (and to read the answer).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest command line accepted.
const MAX_LINE: usize = 1024;
/// Epoll tokens from here on are control clients (slot = token - base).
pub(crate) const CLIENT_TOKENS: u64 = 1 << 32;

struct Client {
    stream: UnixStream,
    line: Vec<u8>,
    answer: Vec<u8>,
    sent: usize,
    deadline: Instant,
}

/// What the driver is asked for: its ports and the element's report for
/// `status`, one of the element's tables for `table NAME`, or the answer
/// to `impair ARGS`.
pub(crate) enum Request<'a> {
    Status,
    Table(&'a str),
    Impair(&'a str),
}

/// What the driver answers.
pub(crate) enum Answer {
    Status {
        ports: Vec<(String, PortStatus)>,
        report: Value,
    },
    /// `None`: the element has no such table.
    Table(Option<Value>),
    Impair(ImpairAnswer),
}

/// Where a client's command stands after reading what is there.
enum Command {
    Pending,
    Closed,
    TooLong,
    Line(String),
}

impl Client {
    fn read_command(&mut self) -> Command {
        let mut buf = [0u8; 256];
        let eof = loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => self.line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Command::Closed,
            }
            if self.line.contains(&b'\n') || self.line.len() > MAX_LINE {
                break false;
            }
        };
        // A last line without its newline still counts when the client closes.
        let end = match self.line.iter().position(|&b| b == b'\n') {
            Some(end) => end,
            None if self.line.len() > MAX_LINE => return Command::TooLong,
            None if eof && !self.line.is_empty() => self.line.len(),
            None if eof => return Command::Closed,
            None => return Command::Pending,
        };
        Command::Line(
            String::from_utf8_lossy(&self.line[..end])
                .trim()
                .to_string(),
        )
    }
    /// Writes what the socket takes; true once the whole answer is out.
    fn write_answer(&mut self) -> io::Result<bool> {
        while self.sent < self.answer.len() {
            match self.stream.write(&self.answer[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// A listening control socket; the socket file is removed when it is dropped.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we bound, so that drop never
    /// removes a successor's socket.
    file_id: (u64, u64),
    node: String,
    role: String,
    started: Instant,
    clients: Vec<Option<Client>>,
}

impl ControlServer {
    /// Listens at `path` for the element `node` playing `role`. A stale
    /// socket file left by a crashed process is removed first; one that a
    /// live process still answers on is an error.
    pub fn bind(path: &Path, node: &str, role: &str) -> Result<ControlServer, IoError> {
        let err = |op| {
            move |source| IoError::Control {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(err("refusing to replace a file that is not a socket")(
                    io::ErrorKind::AlreadyExists.into(),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(err("another process is listening there")(
                    io::ErrorKind::AddrInUse.into(),
                ));
            }
            std::fs::remove_file(path).map_err(err("remove the stale socket"))?;
        }
        let listener = UnixListener::bind(path).map_err(err("bind"))?;
        listener
            .set_nonblocking(true)
            .map_err(err("set non-blocking"))?;
        let meta = std::fs::symlink_metadata(path).map_err(err("stat"))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            node: node.to_string(),
            role: role.to_string(),
            started: Instant::now(),
            clients: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Accepts every waiting client and watches it in `epoll`.
    pub(crate) fn accept(&mut self, epoll: &Epoll) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "control accept");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let slot = match self.clients.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.clients.push(None);
                    self.clients.len() - 1
                }
            };
            if epoll
                .add(
                    stream.as_raw_fd(),
                    CLIENT_TOKENS + slot as u64,
                    libc::EPOLLIN,
                )
                .is_err()
            {
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                line: Vec::new(),
                answer: Vec::new(),
                sent: 0,
                deadline: Instant::now() + CLIENT_TIMEOUT,
            });
        }
    }

    /// Moves client `slot` on: reads its line, answers it (`driver` gives
    /// the driver's `(ports, report)` JSON for `status` and the answer to
    /// `impair …`), writes what the socket takes.
    pub(crate) fn serve(
        &mut self,
        epoll: &Epoll,
        slot: usize,
        driver: impl FnOnce(Request<'_>) -> Answer,
    ) {
        let Some(Some(c)) = self.clients.get_mut(slot) else {
            return;
        };
        if c.answer.is_empty() {
            let answer = match c.read_command() {
                Command::Pending => return,
                Command::Closed => return self.close(epoll, slot),
                Command::TooLong => {
                    json!({"error": format!("command longer than {MAX_LINE} bytes")})
                }
                Command::Line(cmd) => self.answer(&cmd, driver),
            };
            let Some(Some(c)) = self.clients.get_mut(slot) else {
                return;
            };
            c.answer = answer.to_string().into_bytes();
            c.answer.push(b'\n');
            c.deadline = Instant::now() + CLIENT_TIMEOUT;
        }
        let Some(Some(c)) = self.clients.get_mut(slot) else {
            return;
        };
        match c.write_answer() {
            Ok(false) => {
                // A client that keeps reading a long answer keeps its time.
                c.deadline = Instant::now() + CLIENT_TIMEOUT;
                let (fd, token) = (c.stream.as_raw_fd(), CLIENT_TOKENS + slot as u64);
                if epoll.modify(fd, token, libc::EPOLLOUT).is_err() {
                    self.close(epoll, slot);
                }
            }
            Ok(true) | Err(_) => self.close(epoll, slot),
        }
    }

    fn answer(&self, cmd: &str, driver: impl FnOnce(Request<'_>) -> Answer) -> Value {
        let request = if cmd == "impair" || cmd.starts_with("impair ") {
            Request::Impair(&cmd["impair".len()..])
        } else if cmd == "status" {
            Request::Status
        } else if let Some(name) = cmd.strip_prefix("table ") {
            Request::Table(name.trim())
        } else if cmd == "ping" {
            return json!({"ok": true});
        } else {
            let error = format!("unknown command {cmd:?} (try status, table NAME, ping, impair)");
            return serde_json::to_value(Refusal { error }).unwrap_or_default();
        };
        let table = match request {
            Request::Table(name) => Some(name.to_string()),
            _ => None,
        };
        let answer = match driver(request) {
            Answer::Impair(a) => serde_json::to_value(a),
            Answer::Table(Some(rows)) => serde_json::to_value(Table {
                table: table.unwrap_or_default(),
                rows,
            }),
            Answer::Table(None) => serde_json::to_value(Refusal {
                error: format!(
                    "{} has no table {:?} to give in full (its status report has the others)",
                    self.node,
                    table.unwrap_or_default()
                ),
            }),
            Answer::Status { ports, report } => serde_json::to_value(Status {
                node: self.node.clone(),
                role: self.role.clone(),
                pid: std::process::id(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                ports,
                report,
            }),
        };
        answer.unwrap_or_default()
    }

    /// The earliest time a client will be dropped, if any is connected.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().flatten().map(|c| c.deadline).min()
    }

    /// Drops the clients whose time is up.
    pub(crate) fn expire(&mut self, epoll: &Epoll, now: Instant) {
        for slot in 0..self.clients.len() {
            if matches!(&self.clients[slot], Some(c) if c.deadline <= now) {
                tracing::debug!(path = %self.path.display(), "control client timed out");
                self.close(epoll, slot);
            }
        }
    }

    fn close(&mut self, epoll: &Epoll, slot: usize) {
        if let Some(c) = self.clients.get_mut(slot).and_then(Option::take) {
            // The fd closes right after; a failed delete changes nothing.
            let _ = epoll.delete(c.stream.as_raw_fd());
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The node's [`Status`], from its control socket.
pub fn status(path: &Path, timeout: Duration) -> Result<Status, IoError> {
    ask(path, "status", timeout)
}

/// One of the node's tables in full (`table NAME`), as `T`.
pub fn table<T: DeserializeOwned>(
    path: &Path,
    name: &str,
    timeout: Duration,
) -> Result<T, IoError> {
    let t: Table = ask(path, &format!("table {name}"), timeout)?;
    T::deserialize(&t.rows).map_err(|e| IoError::Answer {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// Sends `cmd` and reads the answer as `T`; a refusal (`{"error": …}`) or
/// an answer of another shape is an error naming the socket.
pub fn ask<T: DeserializeOwned>(path: &Path, cmd: &str, timeout: Duration) -> Result<T, IoError> {
    let v = query(path, cmd, timeout)?;
    if let Ok(r) = Refusal::deserialize(&v) {
        return Err(IoError::Refused {
            path: path.to_path_buf(),
            error: r.error,
        });
    }
    T::deserialize(&v).map_err(|e| IoError::Answer {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// Sends `cmd` to the control socket at `path` and returns its JSON answer,
/// giving up after `timeout` overall.
pub fn query(path: &Path, cmd: &str, timeout: Duration) -> Result<Value, IoError> {
    let deadline = Instant::now() + timeout;
    let err = |op| {
        move |source| IoError::Control {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let mut s = UnixStream::connect(path).map_err(err("connect"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(err("set timeout"))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .map_err(err("send"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err("wait for the answer")(io::ErrorKind::TimedOut.into()));
        }
        s.set_read_timeout(Some(left)).map_err(err("set timeout"))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err("wait for the answer")(e)),
        }
    }
    serde_json::from_slice(&answer).map_err(|source| IoError::ControlAnswer {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server driven by hand in a thread-local epoll, as the driver would.
    fn serve_one(server: &mut ControlServer, epoll: &mut Epoll) {
        for _ in 0..100 {
            let ready: Vec<_> = epoll
                .wait(Some(Duration::from_millis(20)))
                .unwrap()
                .map(|(t, _)| t)
                .collect();
            for t in ready {
                if t == 0 {
                    server.accept(epoll);
                } else {
                    let slot = (t - CLIENT_TOKENS) as usize;
                    server.serve(epoll, slot, |req| match req {
                        Request::Table("fib") => Answer::Table(Some(big_table())),
                        Request::Table(_) => Answer::Table(None),
                        _ => Answer::Status {
                            ports: vec![("p0".into(), PortStatus::default())],
                            report: json!({"fib": 3}),
                        },
                    });
                }
            }
            server.expire(epoll, Instant::now());
        }
    }

    /// More rows than one write of the socket takes (a few MB of JSON).
    fn big_table() -> Value {
        (0..100_000u32)
            .map(|i| json!({"prefix": format!("10.{}.{}.0/24", i >> 8 & 255, i & 255), "n": i}))
            .collect()
    }

    #[test]
    fn a_table_comes_whole_and_one_the_element_lacks_is_refused() {
        let path = temp_socket("table");
        let mut server = ControlServer::bind(&path, "mid", "router").unwrap();
        let mut epoll = Epoll::new().unwrap();
        epoll.add(server.listener_fd(), 0, libc::EPOLLIN).unwrap();
        let p = path.clone();
        let client = std::thread::spawn(move || {
            let t = Duration::from_secs(10);
            (
                table::<Vec<Value>>(&p, "fib", t),
                table::<Value>(&p, "arp", t),
            )
        });
        serve_one(&mut server, &mut epoll);
        let (fib, arp) = client.join().unwrap();
        let fib = fib.unwrap();
        assert_eq!(fib.len(), 100_000);
        assert_eq!(fib[99_999]["n"], 99_999);
        let arp = arp.unwrap_err().to_string();
        assert!(arp.contains("mid has no table \"arp\""), "{arp}");
    }

    fn temp_socket(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("d11-io-{}-{tag}.sock", std::process::id()))
    }

    #[test]
    fn status_ping_and_unknown_commands_are_answered() {
        let path = temp_socket("answers");
        let mut server = ControlServer::bind(&path, "sgw", "sgw").unwrap();
        let mut epoll = Epoll::new().unwrap();
        epoll.add(server.listener_fd(), 0, libc::EPOLLIN).unwrap();
        let p = path.clone();
        let client = std::thread::spawn(move || {
            let t = Duration::from_secs(2);
            (
                status(&p, t),
                query(&p, "ping", t),
                ask::<Value>(&p, "reboot", t),
            )
        });
        serve_one(&mut server, &mut epoll);
        let (status, ping, unknown) = client.join().unwrap();
        let status = status.unwrap();
        assert_eq!(status.node, "sgw");
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.report["fib"], 3);
        assert!(status.port("p0").is_some());
        assert_eq!(ping.unwrap(), json!({"ok": true}));
        let unknown = unknown.unwrap_err().to_string();
        assert!(
            unknown.contains("refused: unknown command \"reboot\""),
            "{unknown}"
        );
        drop(server);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_refused() {
        let path = temp_socket("stale");
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale); // the file stays, nobody listens: what a crash leaves
        let live = ControlServer::bind(&path, "a2", "router").unwrap();
        let e = ControlServer::bind(&path, "a2", "router")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&*path.to_string_lossy()) && e.contains("another process"),
            "{e}"
        );
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn query_names_the_socket_it_could_not_reach() {
        let path = temp_socket("nobody");
        let e = query(&path, "ping", Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&*path.to_string_lossy()) && e.contains("connect"),
            "{e}"
        );
    }
}
