//! The MME's Diameter peer: S6a to the HSS over the element layer's TCP.
//!
//! Read RFC 6733 § 5.3 first (the capabilities exchange: the initiator's
//! first message is its CER, and the connection carries nothing else until
//! a CEA with DIAMETER_SUCCESS), § 5.5 with RFC 3539 § 3.4.1 (the
//! watchdog: a DWR after Tw of silence, the connection given up when a
//! second Tw passes unanswered) and § 5.4 (DPR/DPA), then TS 29.272 § 5.2
//! for the S6a requests the MME makes through [`S6aPeer::request`].
//!
//! A stream that cannot be cut into Diameter messages
//! ([`d11_wire::diameter::message_len`] refuses it) is closed; the peer
//! connects again after [`RECONNECT`] (RFC 6733's Tc).

use d11_core::l3::tcp::DEFAULT_BUFFER;
use d11_core::l3::{TcpHandle, TcpState};
use d11_core::{Ctx, Instant, L3};
use d11_wire::diameter::{
    self, avp, cmd, find, message_len, result, DiameterPacket, Flags, MessageBuilder, APP_S6A,
    VENDOR_3GPP,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Tc: how long after a lost connection the peer connects again [RFC 6733
/// § 2.1 suggests 30 s; the lab's HSS is one wire away].
pub const RECONNECT: Duration = Duration::from_secs(5);
/// Tw: the watchdog's interval [RFC 3539 § 3.4.1: 30 s].
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// The MME's Diameter identity and its HSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S6aConfig {
    pub hss: Ipv4Addr,
    pub origin_host: String,
    pub realm: String,
}

/// The peer's state [RFC 6733 § 5.6, initiator side].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerState {
    Closed,
    /// SYN sent.
    WaitConnAck,
    /// CER sent.
    WaitCea,
    Open,
}

/// What the peer counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S6aCounters {
    pub connects: u64,
    pub requests: u64,
    pub answers: u64,
    pub watchdogs: u64,
    /// Connections closed: a stream that is not Diameter, a CEA refusing
    /// us, a watchdog unanswered, the HSS closing.
    pub closed: u64,
    /// Requests from the HSS this peer does not serve (answered 3001).
    pub unsupported: u64,
}

/// The S6a row of the MME's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S6aRow {
    pub hss: SocketAddrV4,
    pub state: PeerState,
    /// The HSS's Origin-Host from its CEA.
    pub hss_host: Option<String>,
    pub counters: S6aCounters,
}

/// The MME's Diameter connection to its HSS.
#[derive(Debug)]
pub struct S6aPeer {
    cfg: S6aConfig,
    sock: Option<TcpHandle>,
    state: PeerState,
    rx: Vec<u8>,
    tx: VecDeque<u8>,
    next_id: u32,
    retry_at: Instant,
    watchdog_at: Instant,
    dwr_outstanding: bool,
    hss_host: Option<String>,
    answers: VecDeque<Vec<u8>>,
    counters: S6aCounters,
}

impl S6aPeer {
    pub fn new(cfg: S6aConfig) -> S6aPeer {
        S6aPeer {
            cfg,
            sock: None,
            state: PeerState::Closed,
            rx: vec![],
            tx: VecDeque::new(),
            next_id: 1,
            retry_at: Instant::ZERO,
            watchdog_at: Instant::ZERO,
            dwr_outstanding: false,
            hss_host: None,
            answers: VecDeque::new(),
            counters: S6aCounters::default(),
        }
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        self.state == PeerState::Open
    }

    /// The Session-Id of a new S6a session [RFC 6733 § 8.8].
    pub fn session_id(&mut self, cx: &Ctx) -> String {
        let id = self.next();
        format!(
            "{};{};{id}",
            self.cfg.origin_host,
            cx.now.total_micros() / 1000
        )
    }

    fn next(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends an S6a request whose AVPs after the peer's identity `build`
    /// writes; its hop-by-hop id, which the answer carries back, or None
    /// when the peer is not open.
    pub fn request(
        &mut self,
        code: u32,
        session: &str,
        build: impl FnOnce(&mut MessageBuilder),
    ) -> Option<u32> {
        if !self.is_open() {
            return None;
        }
        let id = self.next();
        let flags = Flags {
            request: true,
            proxiable: true,
            error: false,
        };
        let mut m = MessageBuilder::new(code, APP_S6A, flags, id, id);
        m.utf8(avp::SESSION_ID, None, session)
            .grouped(avp::VENDOR_SPECIFIC_APPLICATION_ID, None, |g| {
                g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                    avp::AUTH_APPLICATION_ID,
                    None,
                    APP_S6A,
                );
            })
            .u32(avp::AUTH_SESSION_STATE, None, 1); // NO_STATE_MAINTAINED
        self.identity(&mut m);
        m.utf8(avp::DESTINATION_REALM, None, &self.cfg.realm);
        build(&mut m);
        self.counters.requests += 1;
        self.tx.extend(m.finish());
        Some(id)
    }

    /// The next S6a answer (AIA, ULA) received, whole.
    pub fn answer(&mut self) -> Option<Vec<u8>> {
        self.answers.pop_front()
    }

    fn identity(&self, m: &mut MessageBuilder) {
        m.utf8(avp::ORIGIN_HOST, None, &self.cfg.origin_host).utf8(
            avp::ORIGIN_REALM,
            None,
            &self.cfg.realm,
        );
    }

    /// When [`S6aPeer::serve`] must run without a frame.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.state {
            PeerState::Closed => Some(self.retry_at),
            PeerState::Open => Some(self.watchdog_at),
            _ => None,
        }
    }

    /// Connects when due, reads and answers what arrived, runs the
    /// watchdog, writes what is queued. The caller polls the layer after.
    pub fn serve(&mut self, l3: &mut L3, cx: &mut Ctx) {
        if self.state == PeerState::Closed && cx.now >= self.retry_at {
            self.connect(l3, cx);
        }
        let Some(h) = self.sock else {
            return;
        };
        let state = l3.tcp_stack(cx).socket(h).state();
        if self.state == PeerState::WaitConnAck && state == TcpState::Established {
            self.cer(cx);
        }
        if matches!(
            state,
            TcpState::Closed | TcpState::CloseWait | TcpState::TimeWait
        ) {
            return self.close(l3, cx, "the HSS closed the connection");
        }
        let mut buf = [0u8; 2048];
        loop {
            let s = l3.tcp_stack(cx).socket(h);
            match s.recv_slice(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            }
        }
        while let Some(len) = message_len(&self.rx) {
            let n = match len {
                Ok(n) if n <= self.rx.len() => n,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(%e, "S6a stream is not Diameter");
                    return self.close(l3, cx, "a stream that is not Diameter");
                }
            };
            let msg: Vec<u8> = self.rx.drain(..n).collect();
            if let Err(why) = self.message(cx, &msg) {
                return self.close(l3, cx, why);
            }
        }
        if self.state == PeerState::Open && cx.now >= self.watchdog_at {
            if self.dwr_outstanding {
                return self.close(l3, cx, "the watchdog went unanswered");
            }
            self.dwr();
            self.watchdog_at = cx.now + WATCHDOG;
        }
        let s = l3.tcp_stack(cx).socket(h);
        while !self.tx.is_empty() && s.can_send() {
            let (a, _) = self.tx.as_slices();
            match s.send_slice(a) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.tx.drain(..n);
                }
            }
        }
    }

    fn connect(&mut self, l3: &mut L3, cx: &mut Ctx) {
        self.retry_at = cx.now + RECONNECT;
        let Some(local) = l3
            .lookup(self.cfg.hss)
            .and_then(|(_, hop)| l3.port(hop.port))
            .map(|p| p.address.addr())
        else {
            return;
        };
        let port = 49152 + (cx.rng.next_u64() % 16384) as u16;
        let remote = SocketAddrV4::new(self.cfg.hss, diameter::PORT);
        let tcp = l3.tcp_stack(cx);
        match tcp.connect(SocketAddrV4::new(local, port), remote, DEFAULT_BUFFER) {
            Ok(h) => {
                // Requests go as they are made: with Nagle each small one
                // would wait for the HSS's (delayed) ACK of the last.
                tcp.socket(h).set_nagle_enabled(false);
                self.sock = Some(h);
                self.state = PeerState::WaitConnAck;
                self.counters.connects += 1;
            }
            Err(e) => tracing::warn!(%e, "S6a connect"),
        }
    }

    fn close(&mut self, l3: &mut L3, cx: &mut Ctx, why: &str) {
        tracing::info!(why, "S6a connection closed");
        if let Some(h) = self.sock.take() {
            let tcp = l3.tcp_stack(cx);
            tcp.socket(h).abort();
            tcp.remove(h);
        }
        self.counters.closed += 1;
        self.state = PeerState::Closed;
        self.retry_at = cx.now + RECONNECT;
        self.rx.clear();
        self.tx.clear();
        self.dwr_outstanding = false;
    }

    /// CER [RFC 6733 § 5.3.1], advertising S6a.
    fn cer(&mut self, cx: &Ctx) {
        let id = self.next();
        let flags = Flags {
            request: true,
            ..Flags::default()
        };
        let mut m = MessageBuilder::new(cmd::CAPABILITIES_EXCHANGE, 0, flags, id, id);
        self.identity(&mut m);
        m.ipv4(avp::HOST_IP_ADDRESS, Ipv4Addr::UNSPECIFIED)
            .u32(avp::VENDOR_ID, None, 0)
            .avp(avp::PRODUCT_NAME, None, false, b"d11")
            .u32(
                avp::ORIGIN_STATE_ID,
                None,
                (cx.now.total_micros() / 1000) as u32,
            )
            .grouped(avp::VENDOR_SPECIFIC_APPLICATION_ID, None, |g| {
                g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                    avp::AUTH_APPLICATION_ID,
                    None,
                    APP_S6A,
                );
            });
        self.tx.extend(m.finish());
        self.state = PeerState::WaitCea;
    }

    fn dwr(&mut self) {
        let id = self.next();
        let flags = Flags {
            request: true,
            ..Flags::default()
        };
        let mut m = MessageBuilder::new(cmd::DEVICE_WATCHDOG, 0, flags, id, id);
        self.identity(&mut m);
        self.tx.extend(m.finish());
        self.dwr_outstanding = true;
        self.counters.watchdogs += 1;
    }

    /// One whole message; an error closes the connection.
    fn message(&mut self, cx: &Ctx, msg: &[u8]) -> Result<(), &'static str> {
        let p = DiameterPacket::new_checked(msg).map_err(|_| "a message that does not parse")?;
        // Any traffic resets the watchdog [RFC 3539 § 3.4.1].
        self.watchdog_at = cx.now + WATCHDOG;
        if p.is_request() {
            return {
                self.answer_request(&p);
                Ok(())
            };
        }
        let code = find(p.avp_bytes(), avp::RESULT_CODE, None)
            .ok()
            .flatten()
            .and_then(|a| a.u32().ok());
        match p.command_code() {
            cmd::CAPABILITIES_EXCHANGE if self.state == PeerState::WaitCea => {
                if code != Some(result::SUCCESS) {
                    return Err("the HSS refused our CER");
                }
                self.hss_host = find(p.avp_bytes(), avp::ORIGIN_HOST, None)
                    .ok()
                    .flatten()
                    .and_then(|a| a.utf8().ok().map(str::to_string));
                tracing::info!(hss = ?self.hss_host, "S6a peer open");
                self.state = PeerState::Open;
                Ok(())
            }
            _ if self.state != PeerState::Open => Err("a message before the CEA"),
            cmd::DEVICE_WATCHDOG => {
                self.dwr_outstanding = false;
                Ok(())
            }
            _ => {
                self.counters.answers += 1;
                self.answers.push_back(msg.to_vec());
                Ok(())
            }
        }
    }

    /// DWR gets a DWA; DPR a DPA (the HSS then closes); others 3001.
    fn answer_request(&mut self, p: &DiameterPacket<&[u8]>) {
        let unsupported = !matches!(
            p.command_code(),
            cmd::DEVICE_WATCHDOG | cmd::DISCONNECT_PEER
        );
        if unsupported {
            self.counters.unsupported += 1;
        }
        let mut m = MessageBuilder::answer(p, unsupported);
        m.u32(
            avp::RESULT_CODE,
            None,
            if unsupported {
                result::COMMAND_UNSUPPORTED
            } else {
                result::SUCCESS
            },
        );
        self.identity(&mut m);
        self.tx.extend(m.finish());
    }

    pub fn row(&self) -> S6aRow {
        S6aRow {
            hss: SocketAddrV4::new(self.cfg.hss, diameter::PORT),
            state: self.state,
            hss_host: self.hss_host.clone(),
            counters: self.counters.clone(),
        }
    }
}
