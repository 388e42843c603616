//! Many simulated phones behind the eNodeB, in one process (`d11 load`).
//!
//! Read smoltcp's `iface::Interface` (one IP stack: ARP, IPv4, TCP, polled
//! with the time as an argument) and rustls's `ClientConnection` (sans-IO
//! TLS: `read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`)
//! first. Each phone is a [`Ue`]: its own MAC and its own USIM (an IMSI of
//! the hss's range, the range's K and OPc) in a [`Baseband`], which attaches
//! over the radio carriage of NAS (EtherType 0x88B5, `d11_elements::s1link`)
//! as the phone's own baseband app does; then, on the address the Attach
//! Accept gave, its own smoltcp `Interface` and `SocketSet` (so its own ARP
//! cache, its own TCP sequence numbers seeded per phone, its own ports) and,
//! for each order, its own TCP socket and rustls client. All
//! phones share one radio: an AF_PACKET socket on the UE host's `eth0`, the
//! TAP whose other end the eNodeB holds. NAS from the eNodeB goes to the
//! phone whose MAC it is sent to; other frames are handed to the phone
//! whose address they carry (IPv4 destination, or an ARP's target
//! address); frames to the kernel's own address (10.45.0.2) or
//! anyone else are not the phones' business. The kernel of the UE host
//! ignores the phones' frames: they are for MACs that are not its own
//! (`PACKET_OTHERHOST`), and ARP for addresses it does not hold.
//!
//! Everything here is sans-IO: [`Exchange`] is one order over TLS as bytes
//! in and bytes out; [`Ran`] is the phones, fed frames and the time by a
//! driver that owns the socket (`crates/cli/src/load.rs`).

use crate::baseband::{Baseband, UeState, UsimConfig, ETHERTYPE_NAS};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use serde::{Deserialize, Serialize};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

/// The phones' clock (smoltcp's), for the driver.
pub use smoltcp::time::Instant as StackInstant;

/// `config` with session resumption off: every order a full handshake, as
/// a new phone app process makes.
pub fn without_resumption(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut c = config.clone();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// How one order ended, the report's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Outcome {
    /// 201 Created: the order was accepted.
    Created,
    /// 409: sold out (or another conflict).
    Conflict,
    /// Any 5xx.
    ServerError,
    /// Any other status.
    OtherStatus,
    /// No complete reply within the timeout.
    Timeout,
    /// The TLS handshake or a record failed (bad certificate, alert).
    TlsError,
    /// The connection was refused, reset or closed before the reply.
    ConnectionLost,
    /// `--attach-only`: the TCP handshake completed.
    Attached,
    /// The phone never attached (rejected, or no Attach Accept in time):
    /// its orders were not placed.
    NotAttached,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Created => "201 created",
            Outcome::Conflict => "409 sold out",
            Outcome::ServerError => "5xx",
            Outcome::OtherStatus => "other status",
            Outcome::Timeout => "timeout",
            Outcome::TlsError => "TLS error",
            Outcome::ConnectionLost => "connection lost",
            Outcome::Attached => "attached",
            Outcome::NotAttached => "not attached",
        }
    }

    pub fn ok(self) -> bool {
        matches!(self, Outcome::Created | Outcome::Attached)
    }

    fn of_status(status: u16) -> Outcome {
        match status {
            201 => Outcome::Created,
            409 => Outcome::Conflict,
            500..=599 => Outcome::ServerError,
            _ => Outcome::OtherStatus,
        }
    }
}

/// The story's request, written by hand: HTTP/1.1 with a Content-Length and
/// `Connection: close`, so the server closes first and no phone holds a
/// TIME_WAIT socket per order.
pub fn request(host: &str, idempotency_key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /purchaseOrder HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         User-Agent: d11-load/0.1\r\nIdempotency-Key: {idempotency_key}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A complete HTTP/1.1 reply in `buf`: its status, and the body's length
/// once all of it is there (status line and `Content-Length` only; a reply
/// without a length ends at the connection's end, `at_eof`).
pub fn parse_reply(buf: &[u8], at_eof: bool) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(n) if buf.len() >= end + n => Some((status, n)),
        None if at_eof => Some((status, buf.len() - end)),
        _ => None,
    }
}

/// One order over TLS, sans-IO: ciphertext in with [`Exchange::read_tls`],
/// ciphertext out with [`Exchange::write_tls`], the end of the peer's
/// stream with [`Exchange::on_eof`]; [`Exchange::outcome`] once decided.
pub struct Exchange {
    tls: ClientConnection,
    request: Option<Vec<u8>>,
    reply: Vec<u8>,
    outcome: Option<(Outcome, u16)>,
}

impl Exchange {
    pub fn new(
        config: Arc<ClientConfig>,
        host: &str,
        request: Vec<u8>,
    ) -> Result<Exchange, String> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(Exchange {
            tls,
            request: Some(request),
            reply: Vec::new(),
            outcome: None,
        })
    }

    /// Feeds ciphertext from the server; returns how much was taken (all
    /// of it unless rustls's buffer is full; call again after writing).
    pub fn read_tls(&mut self, mut data: &[u8]) -> usize {
        let total = data.len();
        while !data.is_empty() && self.outcome.is_none() {
            match self.tls.read_tls(&mut data) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if self.tls.process_new_packets().is_err() {
                self.outcome = Some((Outcome::TlsError, 0));
                break;
            }
            self.advance(false);
        }
        total - data.len()
    }

    /// The server's stream ended (FIN).
    pub fn on_eof(&mut self) {
        if self.outcome.is_none() {
            self.advance(true);
        }
        if self.outcome.is_none() {
            self.outcome = Some((Outcome::ConnectionLost, 0));
        }
    }

    fn advance(&mut self, eof: bool) {
        if !self.tls.is_handshaking() {
            if let Some(req) = self.request.take() {
                // rustls buffers plaintext until the handshake is done.
                let _ = self.tls.writer().write_all(&req);
            }
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.reply.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        if let Some((status, _)) = parse_reply(&self.reply, eof) {
            self.outcome = Some((Outcome::of_status(status), status));
        }
    }

    /// Writes what TLS has to send into `w` (a TCP socket's send buffer)
    /// until it is empty or `w` is full.
    pub fn write_tls(&mut self, w: &mut dyn Write) -> usize {
        let mut n = 0;
        while self.tls.wants_write() {
            match self.tls.write_tls(w) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }

    /// Once decided: how the order ended and the HTTP status (0 if none).
    pub fn outcome(&self) -> Option<(Outcome, u16)> {
        self.outcome
    }

    /// The reply's bytes as received (head and body).
    pub fn reply(&self) -> &[u8] {
        &self.reply
    }

    /// The TLS handshake is over.
    pub fn handshake_done(&self) -> bool {
        !self.tls.is_handshaking()
    }

    /// The request went to TLS (it is written once the handshake is over).
    pub fn request_written(&self) -> bool {
        self.request.is_none()
    }

    /// Sends TLS close_notify (with the next `write_tls`).
    pub fn close(&mut self) {
        self.tls.send_close_notify();
    }
}

/// A smoltcp TCP socket as an `io::Write` for rustls: full is WouldBlock.
struct SocketWriter<'a>(&'a mut tcp::Socket<'static>);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.send_slice(buf) {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One phone's NIC: frames the radio handed it, frames it wants sent.
#[derive(Default)]
struct Nic {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    /// Per local port, the highest sequence number sent (end of segment):
    /// a later segment ending at or below it is a retransmission.
    snd_max: Vec<(u16, u32)>,
    retransmissions: u64,
}

impl Nic {
    /// Counts a TCP segment that carries nothing new (SYN, FIN or data
    /// already sent once).
    fn count_retransmission(&mut self, f: &[u8]) {
        if f.len() < 34 || f[12..14] != [8, 0] || f[23] != 6 {
            return;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let t = 14 + ihl;
        if f.len() < t + 20 || total < ihl + 20 {
            return;
        }
        let port = u16::from_be_bytes([f[t], f[t + 1]]);
        let seq = u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]]);
        let doff = usize::from(f[t + 12] >> 4) * 4;
        let flags = f[t + 13];
        let len = (total - ihl).saturating_sub(doff) as u32
            + u32::from(flags & 0x02 != 0)
            + u32::from(flags & 0x01 != 0);
        if len == 0 {
            return;
        }
        let end = seq.wrapping_add(len);
        match self.snd_max.iter_mut().find(|(p, _)| *p == port) {
            Some((_, max)) => {
                if (end.wrapping_sub(*max) as i32) <= 0 {
                    self.retransmissions += 1;
                } else {
                    *max = end;
                }
            }
            None => {
                if flags & 0x02 == 0 {
                    return;
                }
                if self.snd_max.len() >= 8 {
                    self.snd_max.remove(0);
                }
                self.snd_max.push((port, end));
            }
        }
    }
}

impl Device for Nic {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(self)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // The radio's MTU (1400), as the operator signals it.
        caps.max_transmission_unit = 1414;
        caps
    }
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct TxToken<'a>(&'a mut Nic);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.count_retransmission(&frame);
        self.0.tx.push(frame);
        r
    }
}

/// What all phones do.
#[derive(Clone)]
pub struct RanConfig {
    /// Phone `i`'s USIM: IMSI `first_imsi + i` (as many digits), K and OPc
    /// of the hss's subscriber range.
    pub usims: UsimRange,
    /// The PLMN the USIMs belong to (the lab's 001/01).
    pub plmn: [u8; 3],
    /// Phones with an attach under way at once.
    pub attach_window: usize,
    /// New attaches started per second at most: a burst of Attach
    /// Requests beyond the radio TAP's queue (`txqueuelen`, 1,000 frames)
    /// is dropped by the kernel, unseen by the sender.
    pub attach_rate: u32,
    /// How long a phone tries to attach (its Attach Request again after
    /// [`ATTACH_RETRY`] of silence) before it gives up.
    pub attach_timeout: Duration,
    /// The UE pool's prefix length (16), the phones' subnet.
    pub prefix_len: u8,
    /// The gateway the eNodeB answers ARP for (10.45.0.1).
    pub gateway: Ipv4Addr,
    pub phones: usize,
    /// Orders each phone places, one after the other.
    pub orders: usize,
    /// Phones with an order in flight at once.
    pub concurrency: usize,
    /// The shop (www.geektime.com resolved) and its port.
    pub server: SocketAddrV4,
    pub host: String,
    pub tls: Arc<ClientConfig>,
    /// The JSON body of each order.
    pub body: Vec<u8>,
    /// For each order: connect, TLS, request and reply.
    pub timeout: Duration,
    /// Only open one TCP connection per phone (handshake, then close).
    pub attach_only: bool,
    /// Seeds the phones' stacks (initial sequence numbers, ports).
    pub seed: u64,
}

/// The phones' USIMs: the hss's `config.range`.
#[derive(Debug, Clone)]
pub struct UsimRange {
    pub first_imsi: String,
    pub count: usize,
    pub k: String,
    pub opc: String,
}

impl UsimRange {
    /// The USIM of phone `i`.
    pub fn usim(&self, i: usize) -> UsimConfig {
        let first: u64 = self.first_imsi.parse().unwrap_or(0);
        UsimConfig {
            imsi: format!("{:0w$}", first + i as u64, w = self.first_imsi.len()),
            k: self.k.clone(),
            opc: self.opc.clone(),
        }
    }
}

/// How long a phone waits for the network's next NAS message before it
/// sends its Attach Request again (the baseband app's 3 s: the lab's
/// T3410/T3411).
pub const ATTACH_RETRY: Duration = Duration::from_secs(3);

/// The MAC of phone `i`: locally administered, 02:4c (for "load") and the index.
pub fn phone_mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0x4c, b[0], b[1], b[2], b[3]]
}

/// Where a phone's attach stands.
struct Attach {
    /// The first Attach Request.
    started: SmolInstant,
    /// The last NAS sent or heard: the Attach Request goes again
    /// [`ATTACH_RETRY`] after it.
    last: SmolInstant,
}

/// One simulated phone.
struct Ue {
    bb: Baseband,
    attach: Option<Attach>,
    /// The address the Attach Accept gave, and the stack on it.
    ip: Option<Ipv4Addr>,
    iface: Option<Interface>,
    nic: Nic,
    sockets: SocketSet<'static>,
    conn: Option<Conn>,
    /// Sockets closing after their order, removed once closed.
    closing: Vec<SocketHandle>,
    orders_left: usize,
    next_port: u16,
    poll_at: Option<SmolInstant>,
}

struct Conn {
    socket: SocketHandle,
    exchange: Option<Exchange>,
    started: SmolInstant,
    key: String,
    /// Bytes written into the connection and read from it.
    sent: u64,
    received: u64,
    /// When bytes last came in.
    last_received: Option<SmolInstant>,
}

/// Where an order that timed out stood when the phone gave up: enough to
/// tell a path that lost the connection (bytes left unacknowledged) from a
/// server that went quiet (all acknowledged, no reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub phone: usize,
    /// The phone's address and port (`ue:port`), as the pgw's NAT row has them.
    pub src: String,
    /// The pgw's public `addr:port` for it (`d11 load` looks it up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
    pub idempotency_key: String,
    /// smoltcp's state of the connection ("ESTABLISHED", "SYN-SENT", …).
    pub tcp_state: String,
    /// Bytes the phone wrote, and of them not acknowledged by the server.
    pub sent: u64,
    pub unacked: usize,
    pub received: u64,
    /// Milliseconds from the order's start to the last bytes received.
    pub last_received_ms: Option<f64>,
    pub tls_handshake_done: bool,
    pub request_written: bool,
    /// Reply bytes decrypted (head and body so far).
    pub reply_bytes: usize,
}

/// One finished order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRecord {
    pub phone: usize,
    pub ue: Ipv4Addr,
    pub outcome: Outcome,
    pub status: u16,
    pub ms: f64,
    pub idempotency_key: String,
    /// A timed-out order: where it stood.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<Stall>,
}

/// How one phone's attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachOutcome {
    /// Attach Accept taken, Attach Complete sent.
    Attached,
    /// Attach Reject (EMM cause) or Authentication Reject (0).
    Rejected(u8),
    /// No Attach Accept within the attach timeout.
    Timeout,
}

impl AttachOutcome {
    pub fn label(self) -> String {
        match self {
            AttachOutcome::Attached => "attached".into(),
            AttachOutcome::Rejected(0) => "authentication reject".into(),
            AttachOutcome::Rejected(c) => format!("attach reject #{c}"),
            AttachOutcome::Timeout => "timeout".into(),
        }
    }
}

/// One phone's attach.
#[derive(Debug, Clone, Serialize)]
pub struct AttachRecord {
    pub phone: usize,
    pub imsi: String,
    /// The PDN address the Attach Accept gave.
    pub ue: Option<Ipv4Addr>,
    pub outcome: AttachOutcome,
    /// From the first Attach Request to the Attach Accept.
    pub ms: f64,
    /// Attach Requests sent (1 unless one went unanswered).
    pub requests: u32,
}

/// The phones.
pub struct Ran {
    cfg: RanConfig,
    ues: Vec<Ue>,
    /// Phones waiting to attach, and those attaching.
    attach_queue: VecDeque<usize>,
    attaching: Vec<usize>,
    /// Attach Requests sent per phone (index: phone).
    requests: Vec<u32>,
    /// Phones the network detached with "re-attach required", and when
    /// they attach again ([`crate::baseband::REATTACH_AFTER`]).
    reattach: Vec<(usize, SmolInstant)>,
    /// Attaches again after the network's Detach Request.
    pub reattaches: u64,
    /// Attached phones by address (the pgw's, in any order).
    by_ip: HashMap<u32, usize>,
    /// NAS frames for the radio.
    nas_out: Vec<Vec<u8>>,
    pub attaches: Vec<AttachRecord>,
    /// NAS from the network a phone refused (MAC, order, decoding).
    pub nas_refused: u64,
    first_request: Option<SmolInstant>,
    last_attached: Option<SmolInstant>,
    /// Attaches started, for the rate: the allowance grows with the clock.
    starts: u64,
    /// Phones with frames waiting.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Phones with orders left, in order; `active` of them are in flight.
    queue: VecDeque<usize>,
    active: Vec<usize>,
    pub done: Vec<OrderRecord>,
    /// Frames of no phone (the kernel's address, other hosts).
    pub not_ours: u64,
    /// Frames dropped because their phone had 256 waiting already.
    pub rx_overflow: u64,
}

impl Ran {
    /// The phones, none attached yet. None if the range's K or OPc is
    /// not a key.
    pub fn new(cfg: RanConfig) -> Option<Ran> {
        let mut ues = Vec::with_capacity(cfg.phones);
        for i in 0..cfg.phones {
            ues.push(Ue {
                bb: Baseband::new(&cfg.usims.usim(i), cfg.plmn)?,
                attach: None,
                ip: None,
                iface: None,
                nic: Nic::default(),
                sockets: SocketSet::new(Vec::new()),
                conn: None,
                closing: Vec::new(),
                orders_left: if cfg.attach_only { 1 } else { cfg.orders },
                // Ports 40,000 ..= 60,000, a start per phone and per seed.
                next_port: 40_000
                    + ((cfg
                        .seed
                        .wrapping_mul(0x9e37_79b9)
                        .wrapping_add(i as u64 * 7919))
                        % 20_000) as u16,
                poll_at: None,
            });
        }
        Some(Ran {
            queue: VecDeque::new(),
            attach_queue: (0..cfg.phones).collect(),
            attaching: Vec::new(),
            requests: vec![0; cfg.phones],
            reattach: Vec::new(),
            reattaches: 0,
            by_ip: HashMap::with_capacity(cfg.phones),
            nas_out: Vec::new(),
            attaches: Vec::new(),
            nas_refused: 0,
            first_request: None,
            last_attached: None,
            starts: 0,
            is_dirty: vec![false; cfg.phones],
            cfg,
            ues,
            dirty: Vec::new(),
            active: Vec::new(),
            done: Vec::new(),
            not_ours: 0,
            rx_overflow: 0,
        })
    }

    /// The radio frame of a NAS PDU from phone `i` (to the eNodeB: broadcast,
    /// as the baseband app sends it).
    fn nas_frame(i: usize, nas: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + nas.len());
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&phone_mac(i));
        f.extend_from_slice(&ETHERTYPE_NAS.to_be_bytes());
        f.extend_from_slice(nas);
        f
    }

    /// Phone `i` sends its Attach Request (again).
    fn attach_request(&mut self, i: usize, now: SmolInstant) {
        let ue = &mut self.ues[i];
        let req = ue.bb.attach_request();
        let a = ue.attach.get_or_insert(Attach {
            started: now,
            last: now,
        });
        a.last = now;
        self.requests[i] += 1;
        self.first_request.get_or_insert(now);
        self.nas_out.push(Self::nas_frame(i, &req));
    }

    /// Phone `i`'s attach ended: attached, its stack comes up on the
    /// address and its orders queue; otherwise its orders are not placed.
    fn attach_ended(&mut self, i: usize, outcome: AttachOutcome, now: SmolInstant) {
        let ue = &mut self.ues[i];
        let Some(a) = ue.attach.take() else {
            return;
        };
        if let (Some(old), AttachOutcome::Attached) = (ue.ip, outcome) {
            return self.attached_again(i, old);
        }
        let ip = ue
            .bb
            .address()
            .filter(|_| outcome == AttachOutcome::Attached);
        self.attaches.push(AttachRecord {
            phone: i,
            imsi: ue.bb.imsi().to_string(),
            ue: ip,
            outcome,
            ms: (now - a.started).total_micros() as f64 / 1e3,
            requests: self.requests[i],
        });
        let Some(ip) = ip else {
            for _ in 0..ue.orders_left {
                self.done.push(OrderRecord {
                    phone: i,
                    ue: Ipv4Addr::UNSPECIFIED,
                    outcome: Outcome::NotAttached,
                    status: 0,
                    ms: 0.0,
                    idempotency_key: String::new(),
                    stall: None,
                });
            }
            ue.orders_left = 0;
            return;
        };
        self.last_attached = Some(now);
        self.stack_up(i, ip, now);
    }

    /// Phone `i` attached again after the network detached it: its
    /// stack and orders carry on, on the new address if it changed (the
    /// pgw gives an IMSI's session its address back).
    fn attached_again(&mut self, i: usize, old: Ipv4Addr) {
        let ue = &mut self.ues[i];
        let Some(ip) = ue.bb.address().filter(|&a| a != old) else {
            return;
        };
        if let Some(iface) = ue.iface.as_mut() {
            let len = self.cfg.prefix_len;
            iface.update_ip_addrs(|a| {
                a.clear();
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), len));
            });
        }
        ue.ip = Some(ip);
        self.by_ip.remove(&u32::from(old));
        self.by_ip.entry(u32::from(ip)).or_insert(i);
    }

    /// Phone `i`'s stack on `ip`, its orders queued.
    fn stack_up(&mut self, i: usize, ip: Ipv4Addr, now: SmolInstant) {
        let cfg = &self.cfg;
        let ue = &mut self.ues[i];
        let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(phone_mac(i))));
        c.random_seed = cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut iface = Interface::new(c, &mut ue.nic, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), cfg.prefix_len));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        ue.iface = Some(iface);
        ue.ip = Some(ip);
        // A second phone given the same address would be a bug of the
        // network's; the first keeps it.
        self.by_ip.entry(u32::from(ip)).or_insert(i);
        self.queue.push_back(i);
    }

    /// Attaches under way.
    pub fn attaching(&self) -> usize {
        self.attaching.len()
    }

    /// Phones attached so far.
    pub fn attached(&self) -> usize {
        self.by_ip.len()
    }

    /// Orders in all (phones × orders, or one attach per phone).
    pub fn total(&self) -> usize {
        if self.cfg.attach_only {
            self.cfg.phones
        } else {
            self.cfg.phones * self.cfg.orders
        }
    }

    pub fn in_flight(&self) -> usize {
        self.active.len()
    }

    /// Sockets still closing their connection (FIN sent or awaited), not
    /// counting TIME_WAIT: the driver lets them finish before it exits.
    pub fn closing(&self) -> usize {
        self.ues
            .iter()
            .flat_map(|u| {
                u.closing
                    .iter()
                    .map(move |&h| u.sockets.get::<tcp::Socket>(h).state())
            })
            .filter(|s| !matches!(s, tcp::State::TimeWait | tcp::State::Closed))
            .count()
    }

    pub fn finished(&self) -> bool {
        self.done.len() >= self.total() && self.attaching.is_empty() && self.attach_queue.is_empty()
    }

    /// Retransmitted TCP segments the phones sent.
    pub fn retransmissions(&self) -> u64 {
        self.ues.iter().map(|u| u.nic.retransmissions).sum()
    }

    /// A frame from the radio: NAS to the phone whose MAC it is sent to,
    /// the rest to the phone whose address it carries.
    pub fn on_frame(&mut self, now: SmolInstant, frame: &[u8]) {
        if frame.get(12..14) == Some(&ETHERTYPE_NAS.to_be_bytes()[..]) {
            self.on_nas(now, frame);
            return;
        }
        let dst = match frame.get(12..14) {
            Some([8, 0]) if frame.len() >= 34 => &frame[30..34],
            Some([8, 6]) if frame.len() >= 42 => &frame[38..42],
            _ => {
                self.not_ours += 1;
                return;
            }
        };
        let dst = u32::from_be_bytes([dst[0], dst[1], dst[2], dst[3]]);
        let Some(&i) = self.by_ip.get(&dst) else {
            self.not_ours += 1;
            return;
        };
        let ue = &mut self.ues[i];
        if ue.nic.rx.len() < 256 {
            ue.nic.rx.push_back(frame.to_vec());
        } else {
            self.rx_overflow += 1;
        }
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i);
        }
    }

    /// NAS from the eNodeB for the phone the frame's destination MAC
    /// names: its baseband answers [TS 24.301 § 5.5.1.2].
    fn on_nas(&mut self, now: SmolInstant, frame: &[u8]) {
        let i = match frame.get(..6) {
            Some([0x02, 0x4c, a, b, c, d]) => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => {
                self.not_ours += 1;
                return;
            }
        };
        let Some(ue) = self.ues.get_mut(i) else {
            self.not_ours += 1;
            return;
        };
        if let Some(a) = ue.attach.as_mut() {
            a.last = now;
        }
        match ue.bb.on_nas(&frame[14..]) {
            Ok(Some(reply)) => self.nas_out.push(Self::nas_frame(i, &reply)),
            Ok(None) => {}
            Err(_) => self.nas_refused += 1,
        }
        if self.ues[i].bb.take_reattach() {
            let after = crate::baseband::REATTACH_AFTER.as_millis() as u64;
            self.reattach
                .push((i, now + SmolDuration::from_millis(after)));
        }
        match self.ues[i].bb.state() {
            UeState::Attached => self.attach_ended(i, AttachOutcome::Attached, now),
            UeState::Rejected(c) => self.attach_ended(i, AttachOutcome::Rejected(c), now),
            _ => {}
        }
    }

    /// Starts attaches up to the window; sends an Attach Request again
    /// after [`ATTACH_RETRY`] of silence; gives up after the attach timeout.
    fn attach_poll(&mut self, now: SmolInstant) {
        let retry = SmolDuration::from_millis(ATTACH_RETRY.as_millis() as u64);
        let timeout = SmolDuration::from_millis(self.cfg.attach_timeout.as_millis() as u64);
        let mut k = 0;
        while k < self.reattach.len() {
            if now < self.reattach[k].1 {
                k += 1;
                continue;
            }
            let (i, _) = self.reattach.swap_remove(k);
            self.reattaches += 1;
            self.attach_request(i, now);
            self.attaching.push(i);
        }
        let ues = &self.ues;
        self.attaching.retain(|&i| ues[i].attach.is_some());
        for k in 0..self.attaching.len() {
            let i = self.attaching[k];
            let Some(a) = self.ues[i].attach.as_ref() else {
                continue;
            };
            if now >= a.started + timeout {
                self.attach_ended(i, AttachOutcome::Timeout, now);
            } else if now >= a.last + retry {
                self.attach_request(i, now);
            }
        }
        let ues = &self.ues;
        self.attaching.retain(|&i| ues[i].attach.is_some());
        // The allowance: `attach_rate` a second from the first start, and
        // a millisecond's worth at once.
        let since = self.first_request.map_or(0, |t| (now - t).total_micros());
        let allowed = (since * u64::from(self.cfg.attach_rate)) / 1_000_000
            + u64::from(self.cfg.attach_rate / 1000).max(1);
        while self.attaching.len() < self.cfg.attach_window && self.starts < allowed {
            let Some(i) = self.attach_queue.pop_front() else {
                break;
            };
            self.attach_request(i, now);
            self.attaching.push(i);
            self.starts += 1;
        }
    }

    /// Runs every phone that has frames, a timer due or an order to start;
    /// pushes the frames they send into `out`. Returns when to call again.
    pub fn poll(&mut self, now: SmolInstant, out: &mut Vec<Vec<u8>>) -> Option<SmolInstant> {
        self.attach_poll(now);
        out.append(&mut self.nas_out);
        while self.active.len() < self.cfg.concurrency {
            let Some(i) = self.queue.pop_front() else {
                break;
            };
            self.active.push(i);
            self.mark(i);
        }
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.is_dirty[i] = false;
        }
        for i in dirty {
            self.service(i, now, out);
        }
        let due: Vec<usize> = self
            .active
            .iter()
            .copied()
            .chain(self.closing_phones())
            .filter(|&i| self.ues[i].poll_at.is_none_or(|t| t <= now))
            .collect();
        for i in due {
            self.service(i, now, out);
        }
        // Phones whose orders are all placed leave the active set.
        let ues = &self.ues;
        let before = self.active.len();
        self.active
            .retain(|&i| ues[i].conn.is_some() || ues[i].orders_left > 0);
        if self.active.len() < before && !self.queue.is_empty() {
            return Some(now);
        }
        let orders = self
            .active
            .iter()
            .filter_map(|&i| self.ues[i].poll_at)
            .min();
        // Attaches are looked at again within 100 ms (their retries), the
        // next start within 1 ms.
        let attaches = if !self.attach_queue.is_empty() || !self.reattach.is_empty() {
            Some(now + SmolDuration::from_millis(1))
        } else {
            (!self.attaching.is_empty()).then(|| now + SmolDuration::from_millis(100))
        };
        match (orders, attaches) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn closing_phones(&self) -> Vec<usize> {
        // Few phones close at a time; a scan is cheaper than a set.
        self.ues
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.closing.is_empty() && u.conn.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    fn mark(&mut self, i: usize) {
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i);
        }
    }

    /// Polls phone `i`'s stack and moves its order on until neither has
    /// more to do.
    fn service(&mut self, i: usize, now: SmolInstant, out: &mut Vec<Vec<u8>>) {
        let cfg = &self.cfg;
        let ue = &mut self.ues[i];
        // The stack is taken out while the phone's order moves on with it.
        let (Some(ip), Some(mut iface)) = (ue.ip, ue.iface.take()) else {
            return;
        };
        for _ in 0..64 {
            iface.poll(now, &mut ue.nic, &mut ue.sockets);
            let moved = drive(cfg, i, ip, &mut iface, ue, now, &mut self.done);
            if !moved && ue.nic.rx.is_empty() {
                break;
            }
        }
        ue.closing.retain(|&h| {
            // Kept through TIME_WAIT: a socket removed early would answer
            // the server's late FIN or retransmission with a reset.
            let gone = ue.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed;
            if gone {
                ue.sockets.remove(h);
            }
            !gone
        });
        ue.poll_at = iface.poll_at(now, &ue.sockets);
        ue.iface = Some(iface);
        if let Some(c) = &ue.conn {
            // The order's own deadline.
            let deadline = c.started + SmolDuration::from_millis(cfg.timeout.as_millis() as u64);
            ue.poll_at = Some(ue.poll_at.map_or(deadline, |t| t.min(deadline)));
        }
        out.append(&mut ue.nic.tx);
    }
}

/// One step of phone `ue`'s order; true if anything moved.
fn drive(
    cfg: &RanConfig,
    i: usize,
    ip: Ipv4Addr,
    iface: &mut Interface,
    ue: &mut Ue,
    now: SmolInstant,
    done: &mut Vec<OrderRecord>,
) -> bool {
    let Some(conn) = ue.conn.as_mut() else {
        if ue.orders_left == 0 {
            return false;
        }
        // A new order: a new socket, port and (unless attaching) TLS client.
        let (rx, tx) = if cfg.attach_only {
            (1024, 1024)
        } else {
            (16 * 1024, 4 * 1024)
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        s.set_nagle_enabled(false);
        ue.next_port = if ue.next_port >= 60_000 {
            40_000
        } else {
            ue.next_port + 1
        };
        let remote = (IpAddress::Ipv4(*cfg.server.ip()), cfg.server.port());
        if s.connect(iface.context(), remote, ue.next_port).is_err() {
            return false;
        }
        let key = crate::phone::new_idempotency_key();
        let exchange = if cfg.attach_only {
            None
        } else {
            match Exchange::new(
                cfg.tls.clone(),
                &cfg.host,
                request(&cfg.host, &key, &cfg.body),
            ) {
                Ok(e) => Some(e),
                Err(_) => return false,
            }
        };
        let socket = ue.sockets.add(s);
        ue.conn = Some(Conn {
            socket,
            exchange,
            started: now,
            key,
            sent: 0,
            received: 0,
            last_received: None,
        });
        return true;
    };
    let s = ue.sockets.get_mut::<tcp::Socket>(conn.socket);
    let mut moved = false;
    let mut decided: Option<(Outcome, u16)> = None;
    match conn.exchange.as_mut() {
        None => {
            if s.state() == tcp::State::Established {
                decided = Some((Outcome::Attached, 0));
            }
        }
        Some(ex) => {
            while s.can_recv() {
                let n = s
                    .recv(|b| {
                        let n = ex.read_tls(b);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                conn.received += n as u64;
                conn.last_received = Some(now);
                moved = true;
            }
            let n = if s.may_send() {
                ex.write_tls(&mut SocketWriter(s))
            } else {
                0
            };
            if n > 0 {
                conn.sent += n as u64;
                moved = true;
            }
            if !s.may_recv() && s.state() != tcp::State::SynSent && !s.can_recv() {
                ex.on_eof();
            }
            decided = ex.outcome();
        }
    }
    let timeout = SmolDuration::from_millis(cfg.timeout.as_millis() as u64);
    if decided.is_none() {
        if s.state() == tcp::State::Closed {
            decided = Some((Outcome::ConnectionLost, 0));
        } else if now >= conn.started + timeout {
            decided = Some((Outcome::Timeout, 0));
        }
    }
    let Some((outcome, status)) = decided else {
        return moved;
    };
    let ms = (now - conn.started).total_micros() as f64 / 1e3;
    let stall = (outcome == Outcome::Timeout).then(|| Stall {
        phone: i,
        src: format!("{ip}:{}", s.local_endpoint().map_or(0, |e| e.port)),
        nat: None,
        idempotency_key: conn.key.clone(),
        tcp_state: s.state().to_string(),
        sent: conn.sent,
        unacked: s.send_queue(),
        received: conn.received,
        last_received_ms: conn
            .last_received
            .map(|t| (t - conn.started).total_micros() as f64 / 1e3),
        tls_handshake_done: conn.exchange.as_ref().is_some_and(Exchange::handshake_done),
        request_written: conn
            .exchange
            .as_ref()
            .is_some_and(Exchange::request_written),
        reply_bytes: conn.exchange.as_ref().map_or(0, |e| e.reply().len()),
    });
    if let Some(ex) = conn.exchange.as_mut() {
        if outcome != Outcome::TlsError && outcome != Outcome::Timeout {
            ex.close();
            let _ = ex.write_tls(&mut SocketWriter(s));
        }
    }
    match outcome {
        Outcome::Timeout | Outcome::TlsError => s.abort(),
        _ => s.close(),
    }
    done.push(OrderRecord {
        phone: i,
        ue: ip,
        outcome,
        status,
        ms,
        idempotency_key: std::mem::take(&mut conn.key),
        stall,
    });
    ue.closing.push(conn.socket);
    ue.conn = None;
    ue.orders_left -= 1;
    true
}

/// Counts per outcome and latency of the orders that succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RanReport {
    pub phones: usize,
    pub orders: usize,
    pub ok: usize,
    pub failed: usize,
    pub by_outcome: BTreeMap<String, usize>,
    pub latency_ms: crate::load::Latency,
    pub retransmissions: u64,
    pub seconds: f64,
    pub orders_per_s: f64,
    /// The phones' attaches.
    #[serde(default)]
    pub attach: AttachReport,
    /// Where the orders that timed out stood (the first [`STALLS_SHOWN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
}

/// Timed-out orders the report details.
pub const STALLS_SHOWN: usize = 10;

/// The phones' attaches: how they ended, how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachReport {
    pub phones: usize,
    pub attached: usize,
    pub failed: usize,
    pub by_outcome: BTreeMap<String, usize>,
    /// From the first Attach Request to the last Attach Accept.
    pub seconds: f64,
    pub attaches_per_s: f64,
    /// Of the attached phones, first Attach Request to Attach Accept.
    pub latency_ms: crate::load::Latency,
    /// Attach Requests sent, retries included.
    pub requests: u64,
    /// NAS from the network a phone refused.
    pub nas_refused: u64,
    /// Attaches again after the network's Detach Request (an SGW restart).
    #[serde(default)]
    pub reattaches: u64,
}

impl Ran {
    pub fn report(&self, seconds: f64) -> RanReport {
        let mut by_outcome = BTreeMap::new();
        let mut ms = Vec::new();
        for r in &self.done {
            *by_outcome.entry(r.outcome.label().to_string()).or_insert(0) += 1;
            if r.outcome.ok() {
                ms.push(r.ms);
            }
        }
        let ok = ms.len();
        let mut attach = AttachReport {
            phones: self.cfg.phones,
            requests: self.requests.iter().map(|&n| u64::from(n)).sum(),
            nas_refused: self.nas_refused,
            reattaches: self.reattaches,
            ..AttachReport::default()
        };
        let mut attach_ms = Vec::new();
        for a in &self.attaches {
            *attach.by_outcome.entry(a.outcome.label()).or_insert(0) += 1;
            if a.outcome == AttachOutcome::Attached {
                attach_ms.push(a.ms);
            }
        }
        attach.attached = attach_ms.len();
        attach.failed = self.attaches.len() - attach.attached;
        attach.latency_ms = crate::load::Latency::of(&mut attach_ms);
        if let (Some(a), Some(b)) = (self.first_request, self.last_attached) {
            attach.seconds = (b - a).total_micros() as f64 / 1e6;
            if attach.seconds > 0.0 {
                attach.attaches_per_s = attach.attached as f64 / attach.seconds;
            }
        }
        RanReport {
            attach,
            stalls: self
                .done
                .iter()
                .filter_map(|r| r.stall.clone())
                .take(STALLS_SHOWN)
                .collect(),
            phones: self.cfg.phones,
            orders: self.done.len(),
            ok,
            failed: self.done.len() - ok,
            by_outcome,
            latency_ms: crate::load::Latency::of(&mut ms),
            retransmissions: self.retransmissions(),
            seconds,
            orders_per_s: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use rustls::ServerConnection;

    fn ran(phones: usize) -> Ran {
        let dir = tempfile::tempdir().unwrap();
        let paths = pki::PkiPaths::new(dir.path());
        pki::make(&paths, "ldran", &["www.geektime.com"]).unwrap();
        let tls = pki::client_config(&paths.root_cert(), false).unwrap();
        Ran::new(RanConfig {
            usims: UsimRange {
                first_imsi: "001010000000002".into(),
                count: 10_000,
                k: "465b5ce8b199b49faa5f0a2ee238a6bc".into(),
                opc: "cd63cb71954a9f4e48a5994e37a02baf".into(),
            },
            plmn: [0x00, 0xf1, 0x10],
            attach_window: phones,
            attach_rate: 20_000,
            attach_timeout: Duration::from_secs(30),
            prefix_len: 16,
            gateway: Ipv4Addr::new(10, 45, 0, 1),
            phones,
            orders: 1,
            concurrency: phones,
            server: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 24), 443),
            host: "www.geektime.com".into(),
            tls,
            body: b"{}".to_vec(),
            timeout: Duration::from_secs(5),
            attach_only: true,
            seed: 1,
        })
        .unwrap()
    }

    /// Phone `i` attached with address 10.45.0.(3 + i), as if its Attach
    /// Accept had said so (the attach itself is crates/sim/tests/attach.rs's).
    fn attached(r: &mut Ran, phones: usize) {
        for i in 0..phones {
            let ip = Ipv4Addr::new(10, 45, 0, 3 + i as u8);
            r.stack_up(i, ip, SmolInstant::from_millis(0));
            r.by_ip.insert(u32::from(ip), i);
        }
        r.attach_queue.clear();
    }

    #[test]
    fn each_phone_sends_an_attach_request_with_its_own_imsi_from_its_own_mac() {
        let mut r = ran(3);
        let mut out = Vec::new();
        r.poll(SmolInstant::from_millis(1), &mut out);
        assert_eq!(out.len(), 3, "an Attach Request each, nothing else yet");
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f[..6], [0xff; 6]);
            assert_eq!(f[6..12], phone_mac(i));
            assert_eq!(f[12..14], [0x88, 0xb5]);
            let mut bb = Baseband::new(&r.cfg.usims.usim(i), [0x00, 0xf1, 0x10]).unwrap();
            assert_eq!(f[14..], bb.attach_request()[..]);
        }
        assert_eq!(r.cfg.usims.usim(2).imsi, "001010000000004");
        // Silence: the Attach Request again after 3 s, not before.
        out.clear();
        r.poll(SmolInstant::from_millis(2_999), &mut out);
        assert!(out.is_empty());
        r.poll(SmolInstant::from_millis(3_001), &mut out);
        assert_eq!(out.len(), 3);
        // No answer within the timeout: each phone gives up, its order unplaced.
        r.poll(SmolInstant::from_millis(30_001), &mut out);
        r.poll(SmolInstant::from_millis(30_002), &mut out);
        assert!(r.finished());
        let rep = r.report(30.0);
        assert_eq!((rep.attach.attached, rep.attach.failed), (0, 3));
        assert_eq!(
            rep.attach.requests, 6,
            "two each: the poll at 3 s, then none before the timeout"
        );
        assert_eq!(rep.by_outcome.get("not attached"), Some(&3));
    }

    #[test]
    fn nas_for_a_mac_of_no_phone_is_not_ours_and_garbage_nas_is_refused() {
        let mut r = ran(2);
        let mut out = Vec::new();
        r.poll(SmolInstant::from_millis(1), &mut out);
        let mut f = vec![
            0x02, 0x4c, 0, 0, 0, 9, 2, 0, 0, 0, 1, 0, 0x88, 0xb5, 0x07, 0x55,
        ];
        r.on_frame(SmolInstant::from_millis(2), &f);
        assert_eq!(r.not_ours, 1);
        f[5] = 1;
        r.on_frame(SmolInstant::from_millis(2), &f);
        f.truncate(14);
        r.on_frame(SmolInstant::from_millis(2), &f);
        assert_eq!(r.nas_refused, 2);
        assert_eq!(r.attaching(), 2);
    }

    /// An ARP request from the enb (radio MAC 02:00:00:00:01:00, 10.45.0.1)
    /// for `target`.
    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 1, 0, 10, 45, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    #[test]
    fn each_phone_arps_for_the_gateway_from_its_own_mac_and_answers_for_its_own_address() {
        let mut r = ran(3);
        attached(&mut r, 3);
        let mut out = Vec::new();
        r.poll(SmolInstant::from_millis(1), &mut out);
        // Each phone's first order starts with ARP for 10.45.0.1, from its own MAC and address.
        let mut who: Vec<([u8; 6], [u8; 4])> = out
            .iter()
            .filter(|f| f[12..14] == [8, 6] && f[38..42] == [10, 45, 0, 1])
            .map(|f| (f[6..12].try_into().unwrap(), f[28..32].try_into().unwrap()))
            .collect();
        who.sort();
        assert_eq!(
            who,
            (0..3)
                .map(|i| (phone_mac(i), [10, 45, 0, 3 + i as u8]))
                .collect::<Vec<_>>()
        );
        // The enb asks for phone 1's address: phone 1 answers, alone.
        out.clear();
        r.on_frame(
            SmolInstant::from_millis(2),
            &arp_request(Ipv4Addr::new(10, 45, 0, 4)),
        );
        r.on_frame(
            SmolInstant::from_millis(2),
            &arp_request(Ipv4Addr::new(10, 45, 0, 2)),
        );
        assert_eq!(r.not_ours, 1, "the kernel's own address is not a phone's");
        r.poll(SmolInstant::from_millis(2), &mut out);
        let replies: Vec<&Vec<u8>> = out
            .iter()
            .filter(|f| f[12..14] == [8, 6] && f[20..22] == [0, 2])
            .collect();
        assert_eq!(replies.len(), 1, "{out:?}");
        assert_eq!(replies[0][22..28], phone_mac(1));
        assert_eq!(replies[0][28..32], [10, 45, 0, 4]);
        assert_eq!(replies[0][0..6], [2, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn an_order_that_times_out_says_where_it_stood() {
        let mut r = ran(1);
        attached(&mut r, 1);
        let mut out = Vec::new();
        // The SYN waits for the gateway's MAC, which never comes.
        r.poll(SmolInstant::from_millis(1), &mut out);
        r.poll(SmolInstant::from_millis(5_002), &mut out);
        assert_eq!(r.done.len(), 1);
        assert_eq!(r.done[0].outcome, Outcome::Timeout);
        let s = r.done[0].stall.clone().expect("a timed-out order's stall");
        assert_eq!(s.phone, 0);
        let port: u16 = s.src.strip_prefix("10.45.0.3:").unwrap().parse().unwrap();
        assert!((40_000..=60_000).contains(&port), "{}", s.src);
        assert_eq!(s.tcp_state, "SYN-SENT");
        assert_eq!((s.sent, s.unacked, s.received), (0, 0, 0));
        assert!(!s.tls_handshake_done && !s.request_written);
        assert_eq!(r.report(5.0).stalls, vec![s]);
    }

    #[test]
    fn a_reply_is_complete_at_its_content_length() {
        let r = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhel";
        assert_eq!(parse_reply(r, false), None);
        let r = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_reply(r, false), Some((201, 5)));
        let r = b"HTTP/1.1 409 Conflict\r\n\r\nsold";
        assert_eq!(parse_reply(r, false), None);
        assert_eq!(parse_reply(r, true), Some((409, 4)));
    }

    #[test]
    fn retransmitted_segments_are_counted_and_new_ones_not() {
        // Ethernet + IPv4 (20) + TCP (20) with `len` payload bytes.
        fn seg(seq: u32, flags: u8, len: usize) -> Vec<u8> {
            let mut f = vec![0u8; 54 + len];
            f[12..14].copy_from_slice(&[8, 0]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&((40 + len) as u16).to_be_bytes());
            f[23] = 6;
            f[34..36].copy_from_slice(&40001u16.to_be_bytes());
            f[38..42].copy_from_slice(&seq.to_be_bytes());
            f[46] = 5 << 4;
            f[47] = flags;
            f
        }
        let mut n = Nic::default();
        n.count_retransmission(&seg(100, 0x02, 0)); // SYN
        n.count_retransmission(&seg(100, 0x02, 0)); // SYN again
        n.count_retransmission(&seg(101, 0x10, 0)); // a bare ACK
        n.count_retransmission(&seg(101, 0x18, 500));
        n.count_retransmission(&seg(601, 0x18, 500));
        n.count_retransmission(&seg(101, 0x18, 500)); // lost, sent again
        assert_eq!(n.retransmissions, 2);
    }

    /// One order against a rustls server with the lab PKI, all in memory:
    /// the phone's state machine does the handshake, sends the story's
    /// POST, reads a 201 and closes.
    #[test]
    fn an_exchange_completes_an_order_against_a_tls_server() {
        let dir = tempfile::tempdir().unwrap();
        let paths = pki::PkiPaths::new(dir.path());
        pki::make(&paths, "ldtest", &["www.geektime.com"]).unwrap();
        let server_cfg = pki::server_config(&paths).unwrap();
        let client_cfg = pki::client_config(&paths.root_cert(), false).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        let body = br#"{"order":{"price":"68"}}"#;
        let mut ex = Exchange::new(
            client_cfg,
            "www.geektime.com",
            request("www.geektime.com", "k-1", body),
        )
        .unwrap();
        let mut request_seen = Vec::new();
        for _ in 0..20 {
            let mut c2s = Vec::new();
            ex.write_tls(&mut c2s);
            let mut rd = &c2s[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets().unwrap();
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = server.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                request_seen.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&request_seen).to_string();
            if text.ends_with(std::str::from_utf8(body).unwrap()) && !text.is_empty() {
                assert!(
                    text.starts_with("POST /purchaseOrder HTTP/1.1\r\n"),
                    "{text}"
                );
                assert!(text.contains("Idempotency-Key: k-1\r\n"), "{text}");
                server
                    .writer()
                    .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
                    .unwrap();
                request_seen.clear();
            }
            let mut s2c = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut s2c).unwrap();
            }
            let mut off = 0;
            while off < s2c.len() {
                let n = ex.read_tls(&s2c[off..]);
                if n == 0 {
                    break;
                }
                off += n;
            }
            if ex.outcome().is_some() {
                break;
            }
        }
        assert_eq!(ex.outcome(), Some((Outcome::Created, 201)));
        assert!(ex.reply().ends_with(b"{}"));
    }

    #[test]
    fn a_certificate_from_another_root_is_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let (pa, pb) = (pki::PkiPaths::new(&a), pki::PkiPaths::new(&b));
        pki::make(&pa, "lda", &["www.geektime.com"]).unwrap();
        pki::make(&pb, "ldb", &["www.geektime.com"]).unwrap();
        let mut server = ServerConnection::new(pki::server_config(&pa).unwrap()).unwrap();
        let client = pki::client_config(&pb.root_cert(), false).unwrap();
        let mut ex = Exchange::new(client, "www.geektime.com", b"x".to_vec()).unwrap();
        for _ in 0..5 {
            let mut c2s = Vec::new();
            ex.write_tls(&mut c2s);
            let mut rd = &c2s[..];
            while !rd.is_empty() {
                if server.read_tls(&mut rd).is_err() || server.process_new_packets().is_err() {
                    break;
                }
            }
            let mut s2c = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut s2c).unwrap();
            }
            ex.read_tls(&s2c);
        }
        assert_eq!(ex.outcome(), Some((Outcome::TlsError, 0)));
    }
}
