//! The phone's baseband, sans-IO: its USIM and the UE's side of NAS EMM.
//!
//! Read TS 24.301 § 5.5.1.2 first (the attach as the UE runs it), § 5.4.2
//! (authentication: the USIM checks AUTN and answers RES, or fails with
//! #20 MAC failure, #21 synch failure carrying AUTS, #26 non-EPS), § 5.4.3
//! (security mode control: the UE checks the command's MAC with the new
//! KNASint and that its own security capabilities came back unchanged,
//! § 5.4.3.5) and § 4.4.3 (NAS COUNTs). The USIM's check is
//! `d11_security::aka::answer` (TS 33.102 § 6.3.3), the keys TS 33.401
//! Annex A.
//!
//! NAS goes over the lab's radio carriage (`d11_elements::s1link`); this
//! core is fed NAS PDUs and answers with NAS PDUs, up to the Attach
//! Accept (its PDN address) and Attach Complete. [`BasebandApp`] runs it
//! in the phone's host on an AF_PACKET socket.

use crate::hss::{imsi_ok, key};
use d11_core::settings::ConfigError;
use d11_security::aka::{self, Answer};
use d11_security::kdf::{self, NasKey};
use d11_security::nas::{nas_mac, Direction, NasKeys};
use d11_security::Milenage;
use d11_wire::nas::{
    cause, emit_protected, sec, EmmMessage, EsmMessage, MobileIdentity, NasError, Pdu, KSI_NONE,
};
use d11_wire::pco::Pco;
use serde::{Deserialize, Serialize};

/// The USIM as the topology writes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UsimConfig {
    pub imsi: String,
    /// K and OPc, 32 hex digits each.
    pub k: String,
    pub opc: String,
}

impl UsimConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !imsi_ok(&self.imsi) {
            return Err(ConfigError::new(format!("{at}.imsi"), "6 to 15 digits"));
        }
        if key(&self.k).is_none() {
            return Err(ConfigError::new(format!("{at}.k"), "32 hex digits"));
        }
        if key(&self.opc).is_none() {
            return Err(ConfigError::new(format!("{at}.opc"), "32 hex digits"));
        }
        Ok(())
    }
}

/// Where the phone's attach stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UeState {
    Deregistered,
    /// Attach Request sent.
    AttachRequested,
    /// Security Mode Complete sent: the network holds our keys.
    Secured,
    /// Attach Accept taken, Attach Complete sent: EMM-REGISTERED with the
    /// PDN address of the default bearer [TS 24.301 § 5.5.1.2.4].
    Attached,
    /// Detach Request sent; Detach Accept awaited [§ 5.5.2.2].
    Detaching,
    /// Attach Reject or Authentication Reject (cause 0) received.
    Rejected(u8),
}

/// What the phone's baseband says of a NAS PDU it could not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasebandError {
    /// The NAS PDU did not decode.
    #[error("NAS: {0}")]
    Nas(#[from] NasError),
    /// A protected message whose MAC is not the network's (or with no
    /// security context to check it against) [TS 24.301 § 4.4.4.2].
    #[error("integrity check failed")]
    Integrity,
    /// A plain message TS 24.301 § 4.4.4.2 does not let the UE take.
    #[error("a plain message the UE must not accept here")]
    NotAllowedPlain,
}

/// The radio carriage of NAS: Ethernet with EtherType 0x88B5 (IEEE Local
/// Experimental 1), the NAS PDU as payload; the phone's MAC names the UE
/// (`d11_elements::s1link::ETHERTYPE_NAS`, docs/attach.md).
pub const ETHERTYPE_NAS: u16 = 0x88b5;

/// The UE network capability we send: EEA0/1/2 and EIA0/1/2
/// [TS 24.301 § 9.9.3.34].
pub const UE_NETWORK_CAPABILITY: [u8; 2] = [0xe0, 0xe0];
/// A PDN Connectivity Request, PTI 1, IPv4, initial request, asking in
/// its PCO for the DNS server's address [TS 24.301 § 8.3.20; TS 24.008
/// § 10.5.6.3, container 0x000D]: the ESM container of the Attach Request.
pub fn pdn_connectivity_request() -> Vec<u8> {
    EsmMessage::PdnConnectivityRequest {
        pti: 1,
        pdn_type: 1,
        request_type: 1,
        pco: Some(Pco::dns_request()),
    }
    .to_vec()
}

#[derive(Debug)]
struct Security {
    /// KNASint (EIA2) and KNASenc when the network selected EEA2.
    keys: NasKeys,
    dl_count: u32,
    ul_count: u32,
}

/// The baseband: USIM, EMM state, NAS security context.
#[derive(Debug)]
pub struct Baseband {
    imsi: String,
    usim: Milenage,
    /// The USIM's highest SQN accepted [TS 33.102 Annex C].
    sqn_ms: [u8; 6],
    plmn: [u8; 3],
    state: UeState,
    kasme: Option<[u8; 32]>,
    sec: Option<Security>,
    capability: Vec<u8>,
    /// The default bearer's address from the Attach Accept.
    address: Option<std::net::Ipv4Addr>,
    /// The DNS servers the network gave in the Activate Default EPS Bearer
    /// Context Request's PCO [TS 24.301 § 8.3.6.13].
    dns: Vec<std::net::Ipv4Addr>,
    /// The GUTI the Attach Accept gave, its identity in a Detach Request.
    guti: Option<d11_wire::nas::Guti>,
    /// The network detached it with "re-attach required".
    reattach: bool,
}

impl Baseband {
    /// A baseband whose USIM holds `usim` (validated), in `plmn`.
    pub fn new(usim: &UsimConfig, plmn: [u8; 3]) -> Option<Baseband> {
        Some(Baseband {
            imsi: usim.imsi.clone(),
            usim: Milenage::new(&key(&usim.k)?, &key(&usim.opc)?),
            sqn_ms: [0; 6],
            plmn,
            state: UeState::Deregistered,
            kasme: None,
            sec: None,
            capability: UE_NETWORK_CAPABILITY.to_vec(),
            address: None,
            dns: Vec::new(),
            guti: None,
            reattach: false,
        })
    }

    /// The USIM's SQN (a test sets it ahead of the HSS's for a resync).
    pub fn set_sqn_ms(&mut self, sqn: u64) {
        self.sqn_ms = aka::sqn(sqn);
    }

    /// What the phone offers (a test offers EIA0 alone).
    pub fn set_capability(&mut self, c: Vec<u8>) {
        self.capability = c;
    }

    pub fn state(&self) -> UeState {
        self.state
    }

    /// The address the network gave the phone, once attached.
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        self.address
    }

    /// The DNS servers the attach gave (the PCO of the default bearer).
    pub fn dns(&self) -> &[std::net::Ipv4Addr] {
        &self.dns
    }

    /// A UE-initiated EPS detach, not a switch-off (type 1), naming the
    /// UE by its GUTI [TS 24.301 § 5.5.2.2.1, § 8.2.11.1]; None when not
    /// attached.
    pub fn detach_request(&mut self) -> Option<Vec<u8>> {
        if self.state != UeState::Attached {
            return None;
        }
        let identity = match self.guti {
            Some(g) => MobileIdentity::Guti(g),
            None => MobileIdentity::Imsi(self.imsi.clone()),
        };
        let req = EmmMessage::DetachRequest {
            ksi: 0,
            detach_type: 1,
            identity,
        };
        let s = self.sec.as_mut()?;
        self.state = UeState::Detaching;
        Some(protect(s, sec::INTEGRITY_CIPHERED, &req.to_vec()))
    }

    /// Whether the network's Detach Request asked for a new attach
    /// [TS 24.301 § 5.5.2.3.2]; asking clears it.
    pub fn take_reattach(&mut self) -> bool {
        std::mem::take(&mut self.reattach)
    }

    pub fn imsi(&self) -> &str {
        &self.imsi
    }

    /// Attach Request with the IMSI and a PDN Connectivity Request
    /// [TS 24.301 § 5.5.1.2.2], plain: no security context yet.
    pub fn attach_request(&mut self) -> Vec<u8> {
        self.state = UeState::AttachRequested;
        self.sec = None;
        EmmMessage::AttachRequest {
            ksi: KSI_NONE,
            attach_type: 1, // EPS attach
            identity: MobileIdentity::Imsi(self.imsi.clone()),
            ue_network_capability: self.capability.clone(),
            esm: pdn_connectivity_request(),
        }
        .to_vec()
    }

    /// A NAS PDU from the network; what to send back, if anything.
    pub fn on_nas(&mut self, pdu: &[u8]) -> Result<Option<Vec<u8>>, BasebandError> {
        match Pdu::parse(pdu)? {
            Pdu::Plain(m) => self.plain(EmmMessage::parse(m)?),
            Pdu::Protected {
                header,
                mac,
                sn,
                message,
            } => {
                // Security Mode Command is integrity protected, never
                // ciphered [TS 24.301 § 5.4.3.2].
                if header == sec::INTEGRITY_NEW_CONTEXT {
                    if let msg @ EmmMessage::SecurityModeCommand { .. } =
                        EmmMessage::parse(message)?
                    {
                        return self.security_mode(mac, sn, message, msg);
                    }
                }
                let s = self.sec.as_mut().ok_or(BasebandError::Integrity)?;
                // The MAC over what came, then deciphered when the header
                // type ciphers [§ 4.4.5].
                let plain = s
                    .keys
                    .open_next(
                        &mut s.dl_count,
                        sn,
                        Direction::Downlink,
                        sec::ciphers(header),
                        mac,
                        message,
                    )
                    .ok_or(BasebandError::Integrity)?;
                self.protected(EmmMessage::parse(&plain)?)
            }
        }
    }

    /// What the UE takes in plain [TS 24.301 § 4.4.4.2]: before security,
    /// the authentication messages and Attach Reject.
    fn plain(&mut self, msg: EmmMessage) -> Result<Option<Vec<u8>>, BasebandError> {
        match msg {
            EmmMessage::AuthenticationRequest { rand, autn, .. } => {
                Ok(Some(self.challenge(&rand, &autn)))
            }
            EmmMessage::AuthenticationReject => {
                self.state = UeState::Rejected(0);
                Ok(None)
            }
            EmmMessage::AttachReject { cause } if self.sec.is_none() => {
                self.state = UeState::Rejected(cause);
                Ok(None)
            }
            _ => Err(BasebandError::NotAllowedPlain),
        }
    }

    /// The USIM's answer to RAND and AUTN [TS 33.102 § 6.3.3].
    fn challenge(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Vec<u8> {
        let failure = |cause, auts| EmmMessage::AuthenticationFailure { cause, auts }.to_vec();
        match aka::answer(&self.usim, rand, autn, &self.sqn_ms, &self.plmn) {
            Answer::Res { res, kasme, sqn } => {
                self.sqn_ms = sqn;
                self.kasme = Some(kasme);
                EmmMessage::AuthenticationResponse { res: res.to_vec() }.to_vec()
            }
            Answer::MacFailure => failure(cause::MAC_FAILURE, None),
            Answer::SynchFailure { auts } => failure(cause::SYNCH_FAILURE, Some(auts)),
            Answer::NotEps => failure(cause::NON_EPS_AUTHENTICATION_UNACCEPTABLE, None),
        }
    }

    /// Security Mode Command [TS 24.301 § 5.4.3.3]: its MAC under the new
    /// KNASint, our capabilities replayed unchanged; then Security Mode
    /// Complete, integrity protected and ciphered with the new context and
    /// the EEA the command names (EEA0 or 128-EEA2; another is a Security
    /// Mode Reject, #24 security mode rejected, unspecified [§ 5.4.3.5]).
    fn security_mode(
        &mut self,
        mac: [u8; 4],
        sn: u8,
        message: &[u8],
        msg: EmmMessage,
    ) -> Result<Option<Vec<u8>>, BasebandError> {
        let EmmMessage::SecurityModeCommand {
            eea,
            eia,
            ue_security_capability,
            ..
        } = msg
        else {
            return Err(BasebandError::Integrity);
        };
        let kasme = self.kasme.ok_or(BasebandError::Integrity)?;
        let knas_int = kdf::nas_key(&kasme, NasKey::Integrity, eia);
        if eia != 2 || nas_mac(&knas_int, u32::from(sn), Direction::Downlink, sn, message) != mac {
            return Err(BasebandError::Integrity);
        }
        let derived = NasKeys::derive(&kasme, eea);
        let mut s = Security {
            keys: derived.clone().unwrap_or(NasKeys {
                int: knas_int,
                enc: None,
            }),
            dl_count: u32::from(sn) + 1,
            ul_count: 0,
        };
        let replayed_ok = self.capability.starts_with(&ue_security_capability)
            && ue_security_capability.len() >= 2;
        let accepted = replayed_ok && derived.is_some();
        let reply = match (replayed_ok, derived) {
            (true, Some(_)) => EmmMessage::SecurityModeComplete,
            (false, _) => EmmMessage::SecurityModeReject {
                cause: cause::UE_SECURITY_CAPABILITIES_MISMATCH,
            },
            (true, None) => EmmMessage::SecurityModeReject {
                cause: cause::SECURITY_MODE_REJECTED,
            },
        };
        let header = sec::INTEGRITY_CIPHERED_NEW_CONTEXT;
        let out = protect(&mut s, header, &reply.to_vec());
        if accepted {
            self.sec = Some(s);
            self.state = UeState::Secured;
        }
        Ok(Some(out))
    }

    fn protected(&mut self, msg: EmmMessage) -> Result<Option<Vec<u8>>, BasebandError> {
        match msg {
            EmmMessage::AttachReject { cause } => {
                self.state = UeState::Rejected(cause);
                Ok(None)
            }
            EmmMessage::DetachAccept if self.state == UeState::Detaching => {
                self.state = UeState::Deregistered;
                self.address = None;
                self.dns.clear();
                Ok(None)
            }
            EmmMessage::NetworkDetachRequest { detach_type, .. }
                if self.state != UeState::Deregistered =>
            {
                // [TS 24.301 § 5.5.2.3.2]: the bearer contexts go, Detach
                // Accept answers; "re-attach required" (1) asks for a new
                // attach once the signalling connection is released.
                self.state = UeState::Deregistered;
                self.address = None;
                self.dns.clear();
                self.reattach = detach_type == 1;
                let s = self.sec.as_mut().ok_or(BasebandError::Integrity)?;
                let accept = EmmMessage::DetachAccept.to_vec();
                Ok(Some(protect(s, sec::INTEGRITY_CIPHERED, &accept)))
            }
            EmmMessage::AttachAccept { esm, guti, .. } => {
                self.guti = guti;
                // The default bearer: its address, and the accept of it
                // inside Attach Complete [TS 24.301 § 6.4.1.3].
                let EsmMessage::ActivateDefaultBearerRequest {
                    ebi,
                    pti,
                    pdn_address,
                    pco,
                    ..
                } = EsmMessage::parse(&esm)?
                else {
                    return Err(BasebandError::Nas(NasError::IeValue));
                };
                self.address = Some(pdn_address);
                self.dns = pco.map(|p| p.dns_servers()).unwrap_or_default();
                self.state = UeState::Attached;
                let done = EmmMessage::AttachComplete {
                    esm: EsmMessage::ActivateDefaultBearerAccept { ebi, pti }.to_vec(),
                };
                let s = self.sec.as_mut().ok_or(BasebandError::Integrity)?;
                Ok(Some(protect(s, sec::INTEGRITY_CIPHERED, &done.to_vec())))
            }
            _ => Ok(None),
        }
    }
}

/// An uplink message protected with the context's next uplink COUNT:
/// ciphered (EEA2) when the header type says so, then its MAC [TS 24.301
/// § 4.4.5].
fn protect(s: &mut Security, header: u8, msg: &[u8]) -> Vec<u8> {
    let count = s.ul_count;
    s.ul_count += 1;
    let mut body = msg.to_vec();
    let mac = s
        .keys
        .seal(count, Direction::Uplink, sec::ciphers(header), &mut body);
    let mut out = Vec::with_capacity(msg.len() + 6);
    emit_protected(&mut out, header, mac, count as u8, &body);
    out
}

/// How long the phone waits for the network's next NAS message before it
/// sends its Attach Request again (the lab's T3410/T3411: 3 s, not 15/10).
const RETRY: std::time::Duration = std::time::Duration::from_secs(3);
/// After the network's Detach Request "re-attach required", the new
/// Attach Request waits for the release of the signalling connection
/// [TS 24.301 § 5.5.2.3.2]: the radio carriage has no RRC to say when
/// the eNodeB let the UE context go, so a short guard stands in for it.
pub const REATTACH_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// The PLMN the phone's USIM belongs to: MCC 001 MNC 01, the test
/// network's, the lab's [TS 24.008 § 10.5.1.13].
pub const HOME_PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

fn default_port() -> String {
    "eth0".into()
}
fn default_gateway() -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 45, 0, 1)
}
fn default_prefix_len() -> u8 {
    16
}

/// `config` of a host running `app = "baseband"`: the USIM and where the
/// address it is given goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasebandSettings {
    pub usim: UsimConfig,
    /// The radio: the interface NAS rides (EtherType 0x88B5).
    #[serde(default = "default_port")]
    pub port: String,
    /// The default route's gateway and the prefix length the PDN address
    /// is put on the interface with (the UE pool's: 10.45.0.1, /16).
    #[serde(default = "default_gateway")]
    pub gateway: std::net::Ipv4Addr,
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
}

/// What the baseband app reports (`d11 show ue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasebandReport {
    pub imsi: String,
    pub state: UeState,
    /// The PDN address from the Attach Accept, once on the interface.
    pub address: Option<std::net::Ipv4Addr>,
    /// The DNS servers the attach gave, written to the namespace's
    /// resolv.conf with the address.
    #[serde(default)]
    pub dns: Vec<std::net::Ipv4Addr>,
    pub attach_requests: u64,
    /// NAS from the network this phone refused (MAC, order, decoding).
    pub nas_refused: u64,
}

/// `app = "baseband"`: the phone's modem. It attaches over the radio
/// carriage of NAS (an AF_PACKET socket on the phone's interface,
/// EtherType 0x88B5, `d11_elements::s1link`), runs [`Baseband`], and on
/// Attach Accept puts the PDN address and the default route on the
/// interface; `d11 up` waits until it has.
pub struct BasebandApp;

impl BasebandApp {
    /// After a detach: the address and the default route go
    /// (`ip addr flush dev PORT`).
    fn unconfigure(s: &BasebandSettings) -> anyhow::Result<()> {
        let st = std::process::Command::new("ip")
            .args(["-4", "addr", "flush", "dev", &s.port])
            .status()?;
        anyhow::ensure!(st.success(), "ip addr flush dev {} failed: {st}", s.port);
        Ok(())
    }

    /// The DNS servers of the attach as the namespace's resolv.conf, as
    /// a modem driver hands them to the system's resolver [resolv.conf(5)];
    /// none given, none written (what the file said stays).
    fn resolv_conf(f: &crate::app::EtcFile, dns: &[std::net::Ipv4Addr]) -> anyhow::Result<()> {
        if dns.is_empty() {
            return Ok(());
        }
        let body: String = dns.iter().map(|a| format!("nameserver {a}\n")).collect();
        f.write(&body)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", f.path.display()))
    }

    /// `ip addr replace ADDR/LEN dev PORT`, `ip route replace default via GW`.
    fn configure(s: &BasebandSettings, a: std::net::Ipv4Addr) -> anyhow::Result<()> {
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let st = std::process::Command::new("ip").args(args).status()?;
            anyhow::ensure!(st.success(), "ip {} failed: {st}", args.join(" "));
            Ok(())
        };
        let cidr = format!("{a}/{}", s.prefix_len);
        run(&["addr", "replace", &cidr, "dev", &s.port])?;
        let gw = s.gateway.to_string();
        run(&["route", "replace", "default", "via", &gw, "dev", &s.port])
    }
}

impl crate::app::App for BasebandApp {
    const NAME: &'static str = "baseband";
    const SUMMARY: &'static str =
        "the phone's baseband: USIM, EPS attach over the radio, the PDN address on eth0";
    const WORKERS: usize = 1;
    type Settings = BasebandSettings;
    fn check(_env: &crate::app::AppEnv, s: &BasebandSettings) -> Result<(), ConfigError> {
        s.usim.validate("config.usim")?;
        if s.prefix_len == 0 || s.prefix_len > 32 {
            return Err(ConfigError::new("config.prefix_len", "1 to 32"));
        }
        Ok(())
    }
    fn run(
        env: crate::app::AppEnv,
        s: BasebandSettings,
        ctl: tokio::net::UnixListener,
        shutdown: crate::app::Shutdown,
    ) -> crate::app::Running {
        Box::pin(async move {
            use std::sync::atomic::{AtomicBool, Ordering};
            use std::sync::{Arc, Mutex};
            let bb = Baseband::new(&s.usim, HOME_PLMN)
                .ok_or_else(|| anyhow::anyhow!("config.usim: not a USIM"))?;
            let sock = d11_io::PacketSocket::open(&s.port)?;
            let mac = sock.mac()?;
            let report = Arc::new(Mutex::new(BasebandReport {
                imsi: bb.imsi().to_string(),
                state: bb.state(),
                address: None,
                dns: Vec::new(),
                attach_requests: 0,
                nas_refused: 0,
            }));
            let r = report.clone();
            // `d11 detach` / `d11 attach`: what the phone wants, which the
            // radio loop follows.
            let want = Arc::new(AtomicBool::new(true));
            let w = want.clone();
            let commands: crate::control::Commands = Arc::new(move |line: &str| {
                let attach = match line {
                    "attach" => true,
                    "detach" => false,
                    _ => return None,
                };
                w.store(attach, Ordering::Relaxed);
                Some(serde_json::json!({"ok": true}))
            });
            tokio::spawn(crate::control::serve_with(
                ctl,
                env.node.clone(),
                "baseband",
                crate::control::report(move || r.lock().unwrap_or_else(|e| e.into_inner()).clone()),
                commands,
            ));
            let stop = Arc::new(AtomicBool::new(false));
            let radio = {
                let stop = stop.clone();
                let resolv = env.resolv_conf.clone();
                tokio::task::spawn_blocking(move || {
                    radio(bb, &s, &resolv, &sock, &mac, &report, &stop, &want)
                })
            };
            tokio::select! {
                _ = shutdown => {
                    stop.store(true, Ordering::Relaxed);
                    Ok(())
                }
                r = radio => r?,
            }
        })
    }
}

/// The phone's radio loop: the Attach Request (again after [`RETRY`] of
/// silence, until attached), the network's NAS answered, the address put
/// on the interface. The socket is non-blocking and the app has no unsafe
/// code to register it with tokio: it is read every 10 ms (100 ms once
/// attached).
#[allow(clippy::too_many_arguments)]
fn radio(
    mut bb: Baseband,
    s: &BasebandSettings,
    resolv: &crate::app::EtcFile,
    sock: &d11_io::PacketSocket,
    mac: &[u8],
    report: &std::sync::Mutex<BasebandReport>,
    stop: &std::sync::atomic::AtomicBool,
    want: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let frame = |nas: &[u8]| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(mac);
        f.extend_from_slice(&ETHERTYPE_NAS.to_be_bytes());
        f.extend_from_slice(nas);
        f
    };
    let mut quiet_until = Instant::now();
    let mut buf = vec![0u8; 2048];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let wanted = want.load(std::sync::atomic::Ordering::Relaxed);
        if !wanted && bb.state() == UeState::Attached {
            if let Some(req) = bb.detach_request() {
                sock.send(&frame(&req))?;
                quiet_until = Instant::now() + RETRY;
            }
        }
        let attached = bb.state() == UeState::Attached || !wanted;
        if !attached && Instant::now() >= quiet_until {
            let req = bb.attach_request();
            sock.send(&frame(&req))?;
            quiet_until = Instant::now() + RETRY;
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            r.attach_requests += 1;
            r.state = bb.state();
        }
        while let Some(m) = sock.recv_frame(&mut buf)? {
            let f = &buf[..m.len.min(buf.len())];
            if f.len() < 14 || f[12..14] != ETHERTYPE_NAS.to_be_bytes() || f[..6] != *mac {
                continue;
            }
            quiet_until = Instant::now() + RETRY;
            let reply = bb.on_nas(&f[14..]);
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            match reply {
                Ok(Some(nas)) => sock.send(&frame(&nas))?,
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(%e, "NAS refused");
                    r.nas_refused += 1;
                }
            }
            if bb.take_reattach() {
                tracing::info!("detached by the network: re-attach required");
                quiet_until = Instant::now() + REATTACH_AFTER;
            }
            if bb.state() == UeState::Deregistered && r.address.take().is_some() {
                // Detached: the address and the route go before the state
                // says so.
                BasebandApp::unconfigure(s)?;
            }
            if bb.state() == UeState::Attached && r.address.is_none() {
                if let Some(a) = bb.address() {
                    BasebandApp::configure(s, a)?;
                    BasebandApp::resolv_conf(resolv, bb.dns())?;
                    tracing::info!(address = %a, dns = ?bb.dns(), "attached");
                    r.address = Some(a);
                    r.dns = bb.dns().to_vec();
                }
            }
            r.state = bb.state();
        }
        let nap = if attached { 100 } else { 10 };
        std::thread::sleep(Duration::from_millis(nap));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attach_request_is_the_one_pycrate_and_tshark_read() {
        // crates/wire/fixtures/nas.py's Attach Request (IMSI 001010000000001,
        // EEA0-2/EIA0-2, PDN connectivity request PTI 1 IPv4 asking in its
        // PCO for the DNS server: `attach_request_dns`).
        let mut b = Baseband::new(
            &UsimConfig {
                imsi: "001010000000001".into(),
                k: "465b5ce8b199b49faa5f0a2ee238a6bc".into(),
                opc: "cd63cb71954a9f4e48a5994e37a02baf".into(),
            },
            [0x00, 0xf1, 0x10],
        )
        .unwrap();
        assert_eq!(
            b.attach_request(),
            d11_wire::hex("07417108091010000000001002e0e0000a0201d011270480000d00")
        );
        assert_eq!(b.state(), UeState::AttachRequested);
    }

    /// A baseband authenticated by a vector made as the HSS makes it
    /// (SQN 1); returns it with the vector's KASME.
    fn authenticated() -> (Baseband, [u8; 32]) {
        let (k, opc) = (
            "465b5ce8b199b49faa5f0a2ee238a6bc",
            "cd63cb71954a9f4e48a5994e37a02baf",
        );
        let usim = UsimConfig {
            imsi: "001010000000001".into(),
            k: k.into(),
            opc: opc.into(),
        };
        let plmn = [0x00, 0xf1, 0x10];
        let mut b = Baseband::new(&usim, plmn).unwrap();
        b.attach_request();
        let m = Milenage::new(&key(k).unwrap(), &key(opc).unwrap());
        let v = aka::vector(&m, &[7; 16], &aka::sqn(1), &plmn);
        let req = EmmMessage::AuthenticationRequest {
            ksi: 0,
            rand: v.rand,
            autn: v.autn,
        };
        let res = b.on_nas(&req.to_vec()).unwrap().unwrap();
        assert_eq!(
            EmmMessage::parse(&res).unwrap(),
            EmmMessage::AuthenticationResponse {
                res: v.xres.to_vec()
            }
        );
        (b, v.kasme)
    }

    /// The network's Security Mode Command naming `eea`, integrity
    /// protected (header 3) at COUNT 0 [TS 24.301 § 5.4.3.2].
    fn smc(kasme: &[u8; 32], eea: u8) -> Vec<u8> {
        let msg = EmmMessage::SecurityModeCommand {
            eea,
            eia: 2,
            ksi: 0,
            ue_security_capability: UE_NETWORK_CAPABILITY.to_vec(),
        }
        .to_vec();
        let int = kdf::nas_key(kasme, NasKey::Integrity, 2);
        let mac = nas_mac(&int, 0, Direction::Downlink, 0, &msg);
        let mut out = vec![];
        emit_protected(&mut out, sec::INTEGRITY_NEW_CONTEXT, mac, 0, &msg);
        out
    }

    #[test]
    fn under_eea2_the_security_mode_complete_is_ciphered_and_the_ciphered_attach_accept_is_read() {
        let (mut b, kasme) = authenticated();
        let done = b.on_nas(&smc(&kasme, 2)).unwrap().unwrap();
        let Ok(Pdu::Protected {
            header,
            mac,
            sn,
            message,
        }) = Pdu::parse(&done)
        else {
            panic!("{done:?}")
        };
        assert_eq!((header, sn), (sec::INTEGRITY_CIPHERED_NEW_CONTEXT, 0));
        assert_ne!(message, [0x07, 0x5e], "not Security Mode Complete in plain");
        let keys = NasKeys::derive(&kasme, 2).unwrap();
        let mut plain = message.to_vec();
        assert!(keys.open(0, Direction::Uplink, true, mac, &mut plain));
        assert_eq!(
            EmmMessage::parse(&plain).unwrap(),
            EmmMessage::SecurityModeComplete
        );
        assert_eq!(b.state(), UeState::Secured);
        // The Attach Accept (crates/wire's fixture) ciphered by the network
        // at downlink COUNT 1; the baseband answers with Attach Complete.
        let mut accept = d11_wire::hex("07420129060000f110000100155201c101090908696e7465726e657405010a2d0002500bf600f110800101c0000001");
        let mac = keys.seal(1, Direction::Downlink, true, &mut accept);
        let mut pdu = vec![];
        emit_protected(&mut pdu, sec::INTEGRITY_CIPHERED, mac, 1, &accept);
        let complete = b.on_nas(&pdu).unwrap().expect("Attach Complete");
        assert_eq!(b.state(), UeState::Attached);
        assert_eq!(b.address(), Some(std::net::Ipv4Addr::new(10, 45, 0, 2)));
        let Ok(Pdu::Protected {
            mac, sn, message, ..
        }) = Pdu::parse(&complete)
        else {
            panic!()
        };
        let mut plain = message.to_vec();
        assert!(keys.open(u32::from(sn), Direction::Uplink, true, mac, &mut plain));
        assert!(matches!(
            EmmMessage::parse(&plain),
            Ok(EmmMessage::AttachComplete { .. })
        ));
        // The same bytes once more: a replay fails the MAC under the next
        // COUNT.
        assert_eq!(b.on_nas(&pdu), Err(BasebandError::Integrity));
    }

    #[test]
    fn a_security_mode_command_naming_eea1_is_rejected_with_24() {
        let (mut b, kasme) = authenticated();
        let reply = b.on_nas(&smc(&kasme, 1)).unwrap().unwrap();
        let Ok(Pdu::Protected { message, .. }) = Pdu::parse(&reply) else {
            panic!()
        };
        assert_eq!(
            EmmMessage::parse(message).unwrap(),
            EmmMessage::SecurityModeReject {
                cause: cause::SECURITY_MODE_REJECTED
            }
        );
        assert_ne!(b.state(), UeState::Secured);
    }
}
