//! The l4lb's request handling (crates/apps/src/l4lb.rs) on arbitrary
//! input. The l4lb parses nothing of its sessions' bytes (it is L4: TLS
//! passes through), so what a hostile client or server controls is the
//! bytes and the order of writes, half-closes and aborts on either side.
//! The fuzzer scripts those on in-memory pipes around the sessions' own
//! `relay`, and checks: never a panic or a hang; with no abort the session
//! ends normally (`--`) with every byte delivered, in order, each way, and
//! the meters counting exactly those; with an abort each side got a prefix
//! of what the other sent. The rest of the input is tried as the l4lb's
//! JSON config (the topology's `config` table): parsed, validated, and if
//! valid a balancer built and its status read.
#![no_main]
use d11_apps::l4lb::{relay, Buffers, Idle, L4lb, L4lbConfig, Termination};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    }
    RT.with(|rt| rt.block_on(f))
}

/// Reads everything until end of stream or an error.
fn drain(mut r: ReadHalf<DuplexStream>) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut got = vec![];
        let mut buf = [0u8; 512];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    })
}

/// One end the script drives: its writer, and the task reading what it gets.
struct End {
    w: Option<WriteHalf<DuplexStream>>,
    reader: Option<JoinHandle<Vec<u8>>>,
    sent: Vec<u8>,
    aborted: bool,
}

impl End {
    fn new(s: DuplexStream) -> End {
        let (r, w) = tokio::io::split(s);
        End { w: Some(w), reader: Some(drain(r)), sent: vec![], aborted: false }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let Some(w) = &mut self.w else { return };
        // Refused once the other side is gone: only what was taken counts.
        let mut rest = bytes;
        while !rest.is_empty() {
            match w.write(rest).await {
                Ok(n) if n > 0 => {
                    self.sent.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                _ => {
                    self.w = None;
                    return;
                }
            }
        }
    }

    async fn shutdown(&mut self) {
        if let Some(mut w) = self.w.take() {
            let _ = w.shutdown().await;
        }
    }

    /// Gone without a goodbye: both halves dropped.
    fn abort(&mut self) {
        self.w = None;
        if let Some(r) = self.reader.take() {
            r.abort();
            self.aborted = true;
        }
    }

    async fn received(&mut self) -> Vec<u8> {
        match self.reader.take() {
            Some(r) => r.await.unwrap_or_default(),
            None => vec![],
        }
    }
}

fn script(data: &[u8]) {
    // Small pipes, so backpressure and partial writes happen.
    let cap = usize::from(data.first().copied().unwrap_or(0) % 64) + 1;
    let (client_outside, client_lb) = tokio::io::duplex(cap);
    let (server_lb, server_outside) = tokio::io::duplex(cap);
    let meters = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let idle = Idle { client: Duration::from_secs(3600), server: Duration::from_secs(3600) };
    let buffers = Buffers::default();
    block_on(async {
        let relayed = relay(
            tokio::io::split(client_lb),
            tokio::io::split(server_lb),
            idle,
            [&meters[0], &meters[1], &meters[2]],
            &buffers,
            std::future::pending::<()>(),
        );
        let drive = async {
            let mut client = End::new(client_outside);
            let mut server = End::new(server_outside);
            let mut ops = data.get(1..).unwrap_or_default();
            while let Some((&op, rest)) = ops.split_first() {
                ops = rest;
                match op % 8 {
                    0..=2 => {
                        let n = ops.len().min(usize::from(op >> 3) + 1);
                        let (bytes, rest) = ops.split_at(n);
                        ops = rest;
                        let end = if op % 8 == 2 { &mut server } else { &mut client };
                        end.send(bytes).await;
                    }
                    3 => client.shutdown().await,
                    4 => server.shutdown().await,
                    5 if op & 0x80 != 0 => client.abort(),
                    6 if op & 0x80 != 0 => server.abort(),
                    _ => tokio::task::yield_now().await,
                }
            }
            client.shutdown().await;
            server.shutdown().await;
            let to_client = client.received().await;
            let to_server = server.received().await;
            (client, server, to_client, to_server)
        };
        let (termination, (client, server, to_client, to_server)) = tokio::join!(relayed, drive);
        let _ = termination.code();
        assert!(client.sent.starts_with(&to_server), "the server got what the client sent, in order");
        assert!(server.sent.starts_with(&to_client), "the client got what the server sent, in order");
        let [up, down, down_too] = meters.map(|m| m.load(Ordering::Relaxed));
        assert_eq!(down, down_too);
        assert!(up <= client.sent.len() as u64 && down <= server.sent.len() as u64);
        if !client.aborted && !server.aborted {
            assert_eq!(termination, Termination::Normal);
            assert_eq!(to_server, client.sent);
            assert_eq!(to_client, server.sent);
            assert_eq!((up, down), (client.sent.len() as u64, server.sent.len() as u64));
        } else {
            assert!(
                matches!(termination, Termination::Normal | Termination::ClientAbort | Termination::ServerAbort),
                "{termination:?}"
            );
        }
    });
}

fn config(data: &[u8]) {
    let Ok(c) = serde_json::from_slice::<L4lbConfig>(data) else { return };
    if c.validate().is_ok() && c.backends.len() <= 64 {
        let lb = L4lb::new("vm-lb", c);
        let _ = serde_json::to_string(&lb.status());
    }
}

fuzz_target!(|data: &[u8]| {
    script(data);
    config(data);
});
