//! `app = "hss"`: the Home Subscriber Server of the lab's EPC, answering the
//! MME's S6a requests over Diameter on kernel TCP 3868.
//!
//! Read TS 29.272 § 5.2 first (Update Location, Authentication Information)
//! and § 7.2 for the commands; RFC 6733 § 5 for the peer's capabilities
//! exchange and watchdog (a peer's first message must be its CER, § 5.3).
//! The vectors are EPS-AKA's (TS 33.401 § 6.1.2, `d11_security::aka`), one
//! sequence number per subscriber that steps by 32 (an IND of 5 bits, TS
//! 33.102 Annex C.3.2) and follows the USIM after a resynchronisation
//! (Re-Synchronization-Info = RAND ‖ AUTS, TS 33.102 § 6.3.5).
//!
//! Subscribers live in SQLite (`hss.sqlite` in the lab's data directory):
//! IMSI, K, OPc, the next SQN, the APN, whether the subscriber may use the
//! network (`barred`: the story's "does it have money"), and where it last
//! attached (the MME's Origin-Host and when). The topology provisions them
//! (`subscribers`, and a `range` for `d11 load`'s phones); a restart keeps
//! each subscriber's SQN.

use crate::app::{AppEnv, Running, Shutdown};
use d11_core::settings::ConfigError;
use d11_core::Rng;
use d11_security::aka;
use d11_security::Milenage;
use d11_wire::diameter::{
    self, avp, cmd, find, message_len, result, DiameterPacket, MessageBuilder, APP_S6A, VENDOR_3GPP,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

const V: Option<u32> = Some(VENDOR_3GPP);
/// How far SQN steps per vector: one SEQ with a 5-bit IND [TS 33.102 C.3.2].
const SQN_STEP: u64 = 32;
/// The most vectors one AIR gets.
const MAX_VECTORS: u32 = 5;
/// A peer silent for this long is closed (its watchdog is 30 s, RFC 3539).
const IDLE: Duration = Duration::from_secs(90);
/// The most subscribers a `range` provisions.
const MAX_RANGE: u32 = 1_000_000;
/// Rows the report lists.
const REPORT_ROWS: usize = 100;

/// A subscriber as the topology provisions it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    pub imsi: String,
    /// K and OPc, 32 hex digits each.
    pub k: String,
    pub opc: String,
    #[serde(default = "default_apn")]
    pub apn: String,
    #[serde(default)]
    pub barred: bool,
}

/// Many subscribers with consecutive IMSIs and one K/OPc (`d11 load`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubscriberRange {
    pub first_imsi: String,
    pub count: u32,
    pub k: String,
    pub opc: String,
}

/// The hss node's `config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HssSettings {
    #[serde(default = "default_port")]
    pub port: u16,
    /// Its Diameter identity and realm.
    #[serde(default = "default_host")]
    pub origin_host: String,
    #[serde(default = "default_realm")]
    pub realm: String,
    #[serde(default)]
    pub subscribers: Vec<SubscriberConfig>,
    #[serde(default)]
    pub range: Option<SubscriberRange>,
}

fn default_port() -> u16 {
    diameter::PORT
}
fn default_host() -> String {
    "hss.epc.lab".into()
}
fn default_realm() -> String {
    "epc.lab".into()
}
fn default_apn() -> String {
    "internet".into()
}

/// 32 hex digits as 16 octets (K, OPc).
pub(crate) fn key(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let v: Option<Vec<u8>> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    v?.try_into().ok()
}

/// 6 to 15 digits.
pub(crate) fn imsi_ok(s: &str) -> bool {
    (6..=15).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit())
}

impl HssSettings {
    /// One line naming the key of the first thing wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, s) in self.subscribers.iter().enumerate() {
            let at = |f: &str| format!("subscribers[{i}].{f}");
            if !imsi_ok(&s.imsi) {
                return Err(ConfigError::new(at("imsi"), "6 to 15 digits"));
            }
            if key(&s.k).is_none() {
                return Err(ConfigError::new(at("k"), "32 hex digits"));
            }
            if key(&s.opc).is_none() {
                return Err(ConfigError::new(at("opc"), "32 hex digits"));
            }
        }
        if let Some(r) = &self.range {
            if !imsi_ok(&r.first_imsi) {
                return Err(ConfigError::new("range.first_imsi", "6 to 15 digits"));
            }
            let end = r.first_imsi.parse::<u64>().unwrap_or(0) + u64::from(r.count);
            if end > 10u64.pow(r.first_imsi.len() as u32) {
                return Err(ConfigError::new(
                    "range.count",
                    "runs past the IMSI's digits",
                ));
            }
            if r.count > MAX_RANGE {
                return Err(ConfigError::new(
                    "range.count",
                    format!("at most {MAX_RANGE}"),
                ));
            }
            if key(&r.k).is_none() {
                return Err(ConfigError::new("range.k", "32 hex digits"));
            }
            if key(&r.opc).is_none() {
                return Err(ConfigError::new("range.opc", "32 hex digits"));
            }
        }
        Ok(())
    }
}

/// One subscriber in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscriberRow {
    pub imsi: String,
    pub apn: String,
    pub barred: bool,
    /// The SQN of the next vector.
    pub sqn: u64,
    /// The MME it last attached through, and when (Unix ms).
    pub last_mme: Option<String>,
    pub last_attach_ms: Option<u64>,
}

/// What the HSS counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HssCounters {
    pub peers: u64,
    pub vectors: u64,
    pub resyncs: u64,
    pub bad_auts: u64,
    pub locations: u64,
    pub unknown_imsi: u64,
    pub barred: u64,
    /// Answered with a protocol or permanent error (E bit, 3xxx/5xxx).
    pub errors: u64,
    /// Connections closed for a stream that cannot be a Diameter message.
    pub broken_streams: u64,
}

/// `d11 show hss`'s report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HssReport {
    pub subscribers: u64,
    /// The first [`REPORT_ROWS`] by IMSI.
    pub listed: Vec<SubscriberRow>,
    pub counters: HssCounters,
}

#[derive(Default)]
struct Counters {
    peers: AtomicU64,
    vectors: AtomicU64,
    resyncs: AtomicU64,
    bad_auts: AtomicU64,
    locations: AtomicU64,
    unknown_imsi: AtomicU64,
    barred: AtomicU64,
    errors: AtomicU64,
    broken_streams: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The subscriber database and the S6a logic, without sockets.
pub struct Hss {
    db: Mutex<Connection>,
    rng: Mutex<Rng>,
    origin_host: String,
    realm: String,
    address: Ipv4Addr,
    counters: Counters,
}

struct Subscriber {
    k: [u8; 16],
    opc: [u8; 16],
    sqn: u64,
    apn: String,
    barred: bool,
}

/// Why a request gets an error answer.
enum Refusal {
    /// A Result-Code, base protocol [RFC 6733 § 7.1]; `protocol` sets E.
    Base { code: u32, protocol: bool },
    /// An Experimental-Result of 3GPP [TS 29.272 § 7.4].
    Experimental(u32),
}

impl Hss {
    /// Opens (or makes) the database at `path` and provisions `settings`'
    /// subscribers, keeping the SQN of those already there.
    pub fn open(
        path: &Path,
        settings: &HssSettings,
        address: Ipv4Addr,
        seed: u64,
    ) -> rusqlite::Result<Hss> {
        let mut db = Connection::open(path)?;
        // WAL with synchronous NORMAL: a commit (the SQN moved on in each
        // AIA, the location in each ULA) is safe from the process's own
        // death (`kill -9`, the supervisor's restart) without an fsync
        // each; a power loss may take the last SQNs back, which the USIM
        // answers with AUTS and the resync repairs [TS 33.102 § 6.3.5].
        // An fsync per commit held the HSS to ~500 answers/s on this disk.
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS subscribers (
               imsi TEXT PRIMARY KEY, k BLOB NOT NULL, opc BLOB NOT NULL,
               sqn INTEGER NOT NULL, apn TEXT NOT NULL, barred INTEGER NOT NULL,
               last_mme TEXT, last_attach_ms INTEGER);",
        )?;
        let tx = db.transaction()?;
        {
            let mut put = tx.prepare(
                "INSERT INTO subscribers (imsi, k, opc, sqn, apn, barred) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(imsi) DO UPDATE SET k = ?2, opc = ?3, apn = ?5, barred = ?6",
            )?;
            for s in &settings.subscribers {
                let (k, opc) = (
                    key(&s.k).unwrap_or_default(),
                    key(&s.opc).unwrap_or_default(),
                );
                put.execute(params![
                    s.imsi,
                    &k[..],
                    &opc[..],
                    SQN_STEP as i64,
                    s.apn,
                    s.barred
                ])?;
            }
            if let Some(r) = &settings.range {
                let first: u64 = r.first_imsi.parse().unwrap_or(0);
                let (k, opc) = (
                    key(&r.k).unwrap_or_default(),
                    key(&r.opc).unwrap_or_default(),
                );
                for i in 0..u64::from(r.count) {
                    let imsi = format!("{:0w$}", first + i, w = r.first_imsi.len());
                    put.execute(params![
                        imsi,
                        &k[..],
                        &opc[..],
                        SQN_STEP as i64,
                        default_apn(),
                        false
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(Hss {
            db: Mutex::new(db),
            rng: Mutex::new(Rng::new(seed)),
            origin_host: settings.origin_host.clone(),
            realm: settings.realm.clone(),
            address,
            counters: Counters::default(),
        })
    }

    fn subscriber(&self, imsi: &str) -> Option<Subscriber> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        db.query_row(
            "SELECT k, opc, sqn, apn, barred FROM subscribers WHERE imsi = ?1",
            params![imsi],
            |r| {
                let k: Vec<u8> = r.get(0)?;
                let opc: Vec<u8> = r.get(1)?;
                Ok(Subscriber {
                    k: k.try_into().unwrap_or_default(),
                    opc: opc.try_into().unwrap_or_default(),
                    sqn: r.get::<_, i64>(2)? as u64,
                    apn: r.get(3)?,
                    barred: r.get(4)?,
                })
            },
        )
        .optional()
        .ok()
        .flatten()
    }

    fn set_sqn(&self, imsi: &str, sqn: u64) {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let _ = db.execute(
            "UPDATE subscribers SET sqn = ?2 WHERE imsi = ?1",
            params![imsi, sqn as i64],
        );
    }

    /// The answer to one request; `None` for an answer received (the HSS
    /// sends no requests) [RFC 6733 § 6.2].
    pub fn answer(&self, req: &DiameterPacket<&[u8]>) -> Option<Vec<u8>> {
        if !req.is_request() {
            return None;
        }
        let outcome = if req.reserved_flags() != 0 {
            Err(Refusal::Base {
                code: result::INVALID_HDR_BITS,
                protocol: true,
            })
        } else {
            match req.command_code() {
                cmd::CAPABILITIES_EXCHANGE => Ok(self.cea(req)),
                cmd::DEVICE_WATCHDOG | cmd::DISCONNECT_PEER => Ok(self.plain_answer(req)),
                cmd::AUTHENTICATION_INFORMATION | cmd::UPDATE_LOCATION
                    if req.application_id() != APP_S6A =>
                {
                    Err(Refusal::Base {
                        code: result::APPLICATION_UNSUPPORTED,
                        protocol: true,
                    })
                }
                cmd::AUTHENTICATION_INFORMATION => self.aia(req),
                cmd::UPDATE_LOCATION => self.ula(req),
                _ => Err(Refusal::Base {
                    code: result::COMMAND_UNSUPPORTED,
                    protocol: true,
                }),
            }
        };
        Some(outcome.unwrap_or_else(|r| self.refuse(req, r)))
    }

    fn identity(&self, m: &mut MessageBuilder) {
        m.utf8(avp::ORIGIN_HOST, None, &self.origin_host).utf8(
            avp::ORIGIN_REALM,
            None,
            &self.realm,
        );
    }

    fn cea(&self, req: &DiameterPacket<&[u8]>) -> Vec<u8> {
        let mut m = MessageBuilder::answer(req, false);
        m.u32(avp::RESULT_CODE, None, result::SUCCESS);
        self.identity(&mut m);
        m.ipv4(avp::HOST_IP_ADDRESS, self.address)
            .u32(avp::VENDOR_ID, None, 0)
            .avp(avp::PRODUCT_NAME, None, false, b"d11")
            .grouped(avp::VENDOR_SPECIFIC_APPLICATION_ID, None, |g| {
                g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                    avp::AUTH_APPLICATION_ID,
                    None,
                    APP_S6A,
                );
            });
        m.finish()
    }

    fn plain_answer(&self, req: &DiameterPacket<&[u8]>) -> Vec<u8> {
        let mut m = MessageBuilder::answer(req, false);
        m.u32(avp::RESULT_CODE, None, result::SUCCESS);
        self.identity(&mut m);
        m.finish()
    }

    /// Session-Id first, as answers to session requests carry it.
    fn session_answer(&self, req: &DiameterPacket<&[u8]>, error: bool) -> MessageBuilder {
        let mut m = MessageBuilder::answer(req, error);
        if let Ok(Some(sid)) = find(req.avp_bytes(), avp::SESSION_ID, None) {
            m.avp(avp::SESSION_ID, None, true, sid.data);
        }
        m
    }

    fn refuse(&self, req: &DiameterPacket<&[u8]>, r: Refusal) -> Vec<u8> {
        bump(&self.counters.errors);
        let protocol = matches!(r, Refusal::Base { protocol: true, .. });
        let mut m = self.session_answer(req, protocol);
        match r {
            Refusal::Base { code, .. } => {
                m.u32(avp::RESULT_CODE, None, code);
            }
            Refusal::Experimental(code) => {
                m.grouped(avp::EXPERIMENTAL_RESULT, None, |g| {
                    g.u32(avp::VENDOR_ID, None, VENDOR_3GPP).u32(
                        avp::EXPERIMENTAL_RESULT_CODE,
                        None,
                        code,
                    );
                });
            }
        }
        if req.command_code() != cmd::CAPABILITIES_EXCHANGE {
            m.u32(avp::AUTH_SESSION_STATE, None, 1);
        }
        self.identity(&mut m);
        m.finish()
    }

    /// The IMSI (User-Name) and the visited PLMN of a session request.
    fn user_and_plmn<'a>(
        &self,
        req: &'a DiameterPacket<&'a [u8]>,
    ) -> Result<(&'a str, [u8; 3]), Refusal> {
        let bad = |code| Refusal::Base {
            code,
            protocol: false,
        };
        let avps = req.avp_bytes();
        let missing = || bad(result::MISSING_AVP);
        let user = find(avps, avp::USER_NAME, None)
            .map_err(|_| bad(result::INVALID_AVP_LENGTH))?
            .ok_or_else(missing)?;
        let imsi = user.utf8().map_err(|_| bad(result::INVALID_AVP_VALUE))?;
        let plmn = find(avps, avp::VISITED_PLMN_ID, V)
            .map_err(|_| bad(result::INVALID_AVP_LENGTH))?
            .ok_or_else(missing)?;
        let plmn = plmn
            .data
            .try_into()
            .map_err(|_| bad(result::INVALID_AVP_VALUE))?;
        Ok((imsi, plmn))
    }

    /// Authentication-Information: vectors, after a resynchronisation if
    /// the request carries one [TS 29.272 § 5.2.3.1].
    fn aia(&self, req: &DiameterPacket<&[u8]>) -> Result<Vec<u8>, Refusal> {
        let (imsi, plmn) = self.user_and_plmn(req)?;
        let Some(sub) = self.subscriber(imsi) else {
            bump(&self.counters.unknown_imsi);
            return Err(Refusal::Experimental(result::ERROR_USER_UNKNOWN));
        };
        let info = find(
            req.avp_bytes(),
            avp::REQUESTED_EUTRAN_AUTHENTICATION_INFO,
            V,
        )
        .ok()
        .flatten();
        let wanted = info
            .and_then(|i| {
                find(i.data, avp::NUMBER_OF_REQUESTED_VECTORS, V)
                    .ok()
                    .flatten()
            })
            .and_then(|n| n.u32().ok())
            .unwrap_or(1)
            .clamp(1, MAX_VECTORS);
        let m = Milenage::new(&sub.k, &sub.opc);
        let mut sqn = sub.sqn;
        let resync =
            info.and_then(|i| find(i.data, avp::RE_SYNCHRONIZATION_INFO, V).ok().flatten());
        if let Some(r) = resync {
            let (Ok(rand), Ok(auts)) = (
                <[u8; 16]>::try_from(r.data.get(..16).unwrap_or_default()),
                <[u8; 14]>::try_from(r.data.get(16..).unwrap_or_default()),
            ) else {
                bump(&self.counters.bad_auts);
                return Err(Refusal::Base {
                    code: result::INVALID_AVP_VALUE,
                    protocol: false,
                });
            };
            let Some(sqn_ms) = aka::resync(&m, &rand, &auts) else {
                bump(&self.counters.bad_auts);
                return Err(Refusal::Experimental(
                    result::AUTHENTICATION_DATA_UNAVAILABLE,
                ));
            };
            bump(&self.counters.resyncs);
            sqn = aka::u48(&sqn_ms) + SQN_STEP;
        }
        let vectors: Vec<aka::EutranVector> = (0..wanted)
            .map(|i| {
                let mut rand = [0u8; 16];
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                rand[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
                rand[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
                aka::vector(&m, &rand, &aka::sqn(sqn + u64::from(i) * SQN_STEP), &plmn)
            })
            .collect();
        self.set_sqn(imsi, sqn + u64::from(wanted) * SQN_STEP);
        self.counters
            .vectors
            .fetch_add(u64::from(wanted), Ordering::Relaxed);
        let mut a = self.session_answer(req, false);
        a.u32(avp::RESULT_CODE, None, result::SUCCESS)
            .u32(avp::AUTH_SESSION_STATE, None, 1);
        self.identity(&mut a);
        a.grouped(avp::AUTHENTICATION_INFO, V, |g| {
            for v in &vectors {
                g.grouped(avp::E_UTRAN_VECTOR, V, |e| {
                    e.avp(avp::RAND, V, true, &v.rand)
                        .avp(avp::XRES, V, true, &v.xres)
                        .avp(avp::AUTN, V, true, &v.autn)
                        .avp(avp::KASME, V, true, &v.kasme);
                });
            }
        });
        Ok(a.finish())
    }

    /// Update-Location: where the subscriber is, and its subscription
    /// [TS 29.272 § 5.2.1.1].
    fn ula(&self, req: &DiameterPacket<&[u8]>) -> Result<Vec<u8>, Refusal> {
        let (imsi, _) = self.user_and_plmn(req)?;
        let Some(sub) = self.subscriber(imsi) else {
            bump(&self.counters.unknown_imsi);
            return Err(Refusal::Experimental(result::ERROR_USER_UNKNOWN));
        };
        if sub.barred {
            bump(&self.counters.barred);
            return Err(Refusal::Experimental(
                result::ERROR_UNKNOWN_EPS_SUBSCRIPTION,
            ));
        }
        let mme = find(req.avp_bytes(), avp::ORIGIN_HOST, None)
            .ok()
            .flatten()
            .and_then(|h| h.utf8().ok())
            .unwrap_or("")
            .to_string();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        {
            let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            let _ = db.execute(
                "UPDATE subscribers SET last_mme = ?2, last_attach_ms = ?3 WHERE imsi = ?1",
                params![imsi, mme, now],
            );
        }
        bump(&self.counters.locations);
        let ambr = |g: &mut MessageBuilder| {
            g.grouped(avp::AMBR, V, |a| {
                a.u32(avp::MAX_REQUESTED_BANDWIDTH_UL, V, 100_000_000).u32(
                    avp::MAX_REQUESTED_BANDWIDTH_DL,
                    V,
                    100_000_000,
                );
            });
        };
        let mut a = self.session_answer(req, false);
        a.u32(avp::RESULT_CODE, None, result::SUCCESS)
            .u32(avp::AUTH_SESSION_STATE, None, 1);
        self.identity(&mut a);
        a.u32(avp::ULA_FLAGS, V, 1)
            .grouped(avp::SUBSCRIPTION_DATA, V, |s| {
                // SERVICE_GRANTED; ONLY_PACKET [TS 29.272 § 7.3.29, 7.3.21].
                s.u32(avp::SUBSCRIBER_STATUS, V, 0)
                    .u32(avp::NETWORK_ACCESS_MODE, V, 2);
                ambr(s);
                s.grouped(avp::APN_CONFIGURATION_PROFILE, V, |p| {
                    p.u32(avp::CONTEXT_IDENTIFIER, V, 1)
                        .u32(avp::ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR, V, 0)
                        .grouped(avp::APN_CONFIGURATION, V, |c| {
                            c.u32(avp::CONTEXT_IDENTIFIER, V, 1)
                                .u32(avp::PDN_TYPE, V, 0)
                                .utf8(avp::SERVICE_SELECTION, None, &sub.apn)
                                .grouped(avp::EPS_SUBSCRIBED_QOS_PROFILE, V, |q| {
                                    q.u32(avp::QOS_CLASS_IDENTIFIER, V, 9).grouped(
                                        avp::ALLOCATION_RETENTION_PRIORITY,
                                        V,
                                        |r| {
                                            r.u32(avp::PRIORITY_LEVEL, V, 9)
                                                .u32(avp::PRE_EMPTION_CAPABILITY, V, 1)
                                                .u32(avp::PRE_EMPTION_VULNERABILITY, V, 1);
                                        },
                                    );
                                });
                            ambr(c);
                        });
                });
            });
        Ok(a.finish())
    }

    pub fn report(&self) -> HssReport {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let subscribers = db
            .query_row("SELECT COUNT(*) FROM subscribers", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0) as u64;
        let listed = db
            .prepare(
                "SELECT imsi, apn, barred, sqn, last_mme, last_attach_ms FROM subscribers
                 ORDER BY imsi LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map(params![REPORT_ROWS as i64], |r| {
                    Ok(SubscriberRow {
                        imsi: r.get(0)?,
                        apn: r.get(1)?,
                        barred: r.get(2)?,
                        sqn: r.get::<_, i64>(3)? as u64,
                        last_mme: r.get(4)?,
                        last_attach_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_default();
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HssReport {
            subscribers,
            listed,
            counters: HssCounters {
                peers: n(&c.peers),
                vectors: n(&c.vectors),
                resyncs: n(&c.resyncs),
                bad_auts: n(&c.bad_auts),
                locations: n(&c.locations),
                unknown_imsi: n(&c.unknown_imsi),
                barred: n(&c.barred),
                errors: n(&c.errors),
                broken_streams: n(&c.broken_streams),
            },
        }
    }

    /// Serves one peer: its first message must be a CER; each request is
    /// answered; a stream that cannot be Diameter is closed [RFC 6733 § 5.3].
    /// The answers to what one read brought go out in one write, with
    /// Nagle off: the MME's requests are small and many at once, and with
    /// Nagle each write would wait for the ACK of the last.
    pub async fn serve_peer(self: Arc<Self>, mut s: TcpStream) {
        bump(&self.counters.peers);
        let _ = s.set_nodelay(true);
        let mut buf = Vec::with_capacity(4096);
        let mut out = Vec::with_capacity(4096);
        let mut greeted = false;
        loop {
            let go_on = loop {
                match message_len(&buf) {
                    Some(Ok(n)) if buf.len() >= n => {
                        let msg: Vec<u8> = buf.drain(..n).collect();
                        let Ok(p) = DiameterPacket::new_checked(&msg[..]) else {
                            bump(&self.counters.broken_streams);
                            break false;
                        };
                        let cer = p.command_code() == cmd::CAPABILITIES_EXCHANGE;
                        if !greeted && !cer {
                            warn!("hss: a peer spoke before its CER; closed");
                            bump(&self.counters.broken_streams);
                            break false;
                        }
                        greeted = true;
                        if let Some(a) = self.answer(&p) {
                            out.extend_from_slice(&a);
                        }
                        if p.command_code() == cmd::DISCONNECT_PEER {
                            break false;
                        }
                    }
                    Some(Err(e)) => {
                        warn!("hss: {e}; connection closed");
                        bump(&self.counters.broken_streams);
                        break false;
                    }
                    _ => break true,
                }
            };
            if !out.is_empty() {
                if s.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            if !go_on {
                return;
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(IDLE, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// `app = "hss"`.
pub struct HssApp;

impl crate::app::App for HssApp {
    const NAME: &'static str = "hss";
    const SUMMARY: &'static str = "the HSS: subscribers, EPS-AKA vectors, S6a over Diameter";
    type Settings = HssSettings;
    fn listens(s: &HssSettings) -> Option<u16> {
        Some(s.port)
    }
    fn check(env: &AppEnv, s: &HssSettings) -> Result<(), ConfigError> {
        s.validate()?;
        env.address("the hss answers the MME on its address")?;
        Ok(())
    }
    fn run(
        env: AppEnv,
        s: HssSettings,
        ctl: tokio::net::UnixListener,
        shutdown: Shutdown,
    ) -> Running {
        Box::pin(async move {
            let addr = match env.address("the hss needs an address")? {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => anyhow::bail!("the hss is IPv4 only"),
            };
            std::fs::create_dir_all(&env.data_dir)?;
            let seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id());
            let hss = Arc::new(Hss::open(&env.data_dir.join("hss.sqlite"), &s, addr, seed)?);
            let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(addr), s.port)).await?;
            let report = {
                let hss = hss.clone();
                Arc::new(move || serde_json::to_value(hss.report()).unwrap_or_default())
            };
            tokio::spawn(crate::control::serve(ctl, env.node.clone(), "hss", report));
            info!(%addr, port = s.port, subscribers = hss.report().subscribers, "hss up");
            tokio::select! {
                _ = shutdown => Ok(()),
                r = async {
                    loop {
                        let (conn, peer) = listener.accept().await?;
                        info!(%peer, "hss: a Diameter peer");
                        tokio::spawn(hss.clone().serve_peer(conn));
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), std::io::Error>(())
                } => Ok(r?),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d11_wire::diameter::Flags;

    const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
    const IMSI: &str = "001010000000001";
    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    fn settings() -> HssSettings {
        HssSettings {
            port: 3868,
            origin_host: default_host(),
            realm: default_realm(),
            subscribers: vec![
                SubscriberConfig {
                    imsi: IMSI.into(),
                    k: K.into(),
                    opc: OPC.into(),
                    apn: default_apn(),
                    barred: false,
                },
                SubscriberConfig {
                    imsi: "001010000000002".into(),
                    k: K.into(),
                    opc: OPC.into(),
                    apn: default_apn(),
                    barred: true,
                },
            ],
            range: Some(SubscriberRange {
                first_imsi: "001010000010000".into(),
                count: 100,
                k: K.into(),
                opc: OPC.into(),
            }),
        }
    }

    fn hss(dir: &tempfile::TempDir) -> Hss {
        Hss::open(
            &dir.path().join("hss.sqlite"),
            &settings(),
            Ipv4Addr::new(172, 16, 5, 2),
            7,
        )
        .unwrap()
    }

    fn request(code: u32, app: u32, build: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let f = Flags {
            request: true,
            proxiable: app != 0,
            error: false,
        };
        let mut m = MessageBuilder::new(code, app, f, 9, 9);
        build(&mut m);
        m.finish()
    }

    fn air(imsi: &str, resync: Option<&[u8]>) -> Vec<u8> {
        request(cmd::AUTHENTICATION_INFORMATION, APP_S6A, |m| {
            m.utf8(avp::SESSION_ID, None, "mme.epc.lab;1;1")
                .u32(avp::AUTH_SESSION_STATE, None, 1)
                .utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
                .utf8(avp::ORIGIN_REALM, None, "epc.lab")
                .utf8(avp::DESTINATION_REALM, None, "epc.lab")
                .utf8(avp::USER_NAME, None, imsi)
                .grouped(avp::REQUESTED_EUTRAN_AUTHENTICATION_INFO, V, |g| {
                    g.u32(avp::NUMBER_OF_REQUESTED_VECTORS, V, 1);
                    if let Some(r) = resync {
                        g.avp(avp::RE_SYNCHRONIZATION_INFO, V, true, r);
                    }
                })
                .avp(avp::VISITED_PLMN_ID, V, true, &PLMN);
        })
    }

    fn ulr(imsi: &str) -> Vec<u8> {
        request(cmd::UPDATE_LOCATION, APP_S6A, |m| {
            m.utf8(avp::SESSION_ID, None, "mme.epc.lab;1;2")
                .utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
                .utf8(avp::ORIGIN_REALM, None, "epc.lab")
                .utf8(avp::USER_NAME, None, imsi)
                .u32(avp::RAT_TYPE, V, 1004)
                .avp(avp::VISITED_PLMN_ID, V, true, &PLMN);
        })
    }

    fn ask(h: &Hss, req: &[u8]) -> Vec<u8> {
        h.answer(&DiameterPacket::new_checked(req).unwrap())
            .unwrap()
    }

    fn result_of(a: &[u8]) -> (Option<u32>, Option<u32>, bool) {
        let p = DiameterPacket::new_checked(a).unwrap();
        let rc = find(p.avp_bytes(), avp::RESULT_CODE, None)
            .unwrap()
            .map(|a| a.u32().unwrap());
        let exp = find(p.avp_bytes(), avp::EXPERIMENTAL_RESULT, None)
            .unwrap()
            .and_then(|e| find(e.data, avp::EXPERIMENTAL_RESULT_CODE, None).unwrap())
            .map(|a| a.u32().unwrap());
        (rc, exp, p.is_error())
    }

    fn vector_of(a: &[u8]) -> ([u8; 16], [u8; 16], [u8; 8], [u8; 32]) {
        let p = DiameterPacket::new_checked(a).unwrap();
        let info = find(p.avp_bytes(), avp::AUTHENTICATION_INFO, V)
            .unwrap()
            .unwrap();
        let v = find(info.data, avp::E_UTRAN_VECTOR, V).unwrap().unwrap();
        let get = |c| find(v.data, c, V).unwrap().unwrap().data.to_vec();
        (
            get(avp::RAND).try_into().unwrap(),
            get(avp::AUTN).try_into().unwrap(),
            get(avp::XRES).try_into().unwrap(),
            get(avp::KASME).try_into().unwrap(),
        )
    }

    fn usim() -> Milenage {
        Milenage::new(&key(K).unwrap(), &key(OPC).unwrap())
    }

    #[test]
    fn a_vector_is_one_the_usim_accepts_and_the_sqn_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let h = hss(&dir);
        let a = ask(&h, &air(IMSI, None));
        assert_eq!(result_of(&a), (Some(result::SUCCESS), None, false));
        let (rand, autn, xres, kasme) = vector_of(&a);
        let aka::Answer::Res {
            res,
            kasme: k2,
            sqn,
        } = aka::answer(&usim(), &rand, &autn, &aka::sqn(0), &PLMN)
        else {
            panic!("the USIM refused the HSS's vector")
        };
        assert_eq!((res, k2), (xres, kasme));
        assert_eq!(aka::u48(&sqn), SQN_STEP);
        // The next vector is fresh for a USIM that saw this one.
        let (rand, autn, ..) = vector_of(&ask(&h, &air(IMSI, None)));
        assert!(matches!(
            aka::answer(&usim(), &rand, &autn, &sqn, &PLMN),
            aka::Answer::Res { .. }
        ));
        assert_eq!(h.report().counters.vectors, 2);
    }

    #[test]
    fn a_usim_ahead_resynchronises_the_hss_through_auts() {
        let dir = tempfile::tempdir().unwrap();
        let h = hss(&dir);
        let (rand, autn, ..) = vector_of(&ask(&h, &air(IMSI, None)));
        let ahead = aka::sqn(100_000);
        let aka::Answer::SynchFailure { auts } = aka::answer(&usim(), &rand, &autn, &ahead, &PLMN)
        else {
            panic!()
        };
        let mut info = rand.to_vec();
        info.extend_from_slice(&auts);
        let a = ask(&h, &air(IMSI, Some(&info)));
        assert_eq!(result_of(&a).0, Some(result::SUCCESS));
        let (rand, autn, ..) = vector_of(&a);
        assert!(matches!(
            aka::answer(&usim(), &rand, &autn, &ahead, &PLMN),
            aka::Answer::Res { .. }
        ));
        assert_eq!(h.report().counters.resyncs, 1);
        // A forged AUTS: no vectors.
        info[20] ^= 1;
        let a = ask(&h, &air(IMSI, Some(&info)));
        assert_eq!(
            result_of(&a).1,
            Some(result::AUTHENTICATION_DATA_UNAVAILABLE)
        );
        assert_eq!(h.report().counters.bad_auts, 1);
    }

    #[test]
    fn unknown_barred_and_located_subscribers_get_their_answers() {
        let dir = tempfile::tempdir().unwrap();
        let h = hss(&dir);
        assert_eq!(
            result_of(&ask(&h, &air("001019999999999", None))).1,
            Some(result::ERROR_USER_UNKNOWN)
        );
        assert_eq!(
            result_of(&ask(&h, &ulr("001019999999999"))).1,
            Some(result::ERROR_USER_UNKNOWN)
        );
        assert_eq!(
            result_of(&ask(&h, &ulr("001010000000002"))).1,
            Some(result::ERROR_UNKNOWN_EPS_SUBSCRIPTION)
        );
        let a = ask(&h, &ulr(IMSI));
        assert_eq!(result_of(&a), (Some(result::SUCCESS), None, false));
        let p = DiameterPacket::new_checked(&a[..]).unwrap();
        let sub = find(p.avp_bytes(), avp::SUBSCRIPTION_DATA, V)
            .unwrap()
            .unwrap();
        let profile = find(sub.data, avp::APN_CONFIGURATION_PROFILE, V)
            .unwrap()
            .unwrap();
        let apn = find(profile.data, avp::APN_CONFIGURATION, V)
            .unwrap()
            .unwrap();
        assert_eq!(
            find(apn.data, avp::SERVICE_SELECTION, None)
                .unwrap()
                .unwrap()
                .utf8(),
            Ok("internet")
        );
        let r = h.report();
        assert_eq!(r.subscribers, 102);
        let row = r.listed.iter().find(|s| s.imsi == IMSI).unwrap();
        assert_eq!(row.last_mme.as_deref(), Some("mme.epc.lab"));
        assert_eq!(
            (
                r.counters.unknown_imsi,
                r.counters.barred,
                r.counters.locations
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn bad_requests_get_the_base_protocols_errors() {
        let dir = tempfile::tempdir().unwrap();
        let h = hss(&dir);
        // A command the HSS does not serve: 3001 with E.
        let a = ask(&h, &request(999, APP_S6A, |_| {}));
        assert_eq!(
            result_of(&a),
            (Some(result::COMMAND_UNSUPPORTED), None, true)
        );
        // AIR outside S6a: 3007.
        let mut r = air(IMSI, None);
        r[8..12].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(
            result_of(&ask(&h, &r)).0,
            Some(result::APPLICATION_UNSUPPORTED)
        );
        // No User-Name: 5005.
        let r = request(cmd::AUTHENTICATION_INFORMATION, APP_S6A, |m| {
            m.utf8(avp::SESSION_ID, None, "s")
                .avp(avp::VISITED_PLMN_ID, V, true, &PLMN);
        });
        assert_eq!(
            result_of(&ask(&h, &r)),
            (Some(result::MISSING_AVP), None, false)
        );
        // Reserved header bits: 3008.
        let mut r = air(IMSI, None);
        r[4] |= 0x01;
        assert_eq!(result_of(&ask(&h, &r)).0, Some(result::INVALID_HDR_BITS));
        // An answer is not answered.
        let dwa = MessageBuilder::new(cmd::DEVICE_WATCHDOG, 0, Flags::default(), 1, 1).finish();
        assert_eq!(
            h.answer(&DiameterPacket::new_checked(&dwa[..]).unwrap()),
            None
        );
        assert_eq!(h.report().counters.errors, 4);
    }

    #[test]
    fn a_restart_keeps_each_subscribers_sqn() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let h = hss(&dir);
            ask(&h, &air(IMSI, None));
            h.report()
                .listed
                .iter()
                .find(|s| s.imsi == IMSI)
                .unwrap()
                .sqn
        };
        let h = hss(&dir);
        let after = h
            .report()
            .listed
            .iter()
            .find(|s| s.imsi == IMSI)
            .unwrap()
            .sqn;
        assert_eq!((before, after), (2 * SQN_STEP, 2 * SQN_STEP));
    }

    #[test]
    fn settings_errors_name_their_key() {
        let mut s = settings();
        s.subscribers[1].opc = "xyz".into();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            settings_err("subscribers[1].opc")
        );
        let mut s = settings();
        s.range.as_mut().unwrap().first_imsi = "999999999999990".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("range.count"));
    }

    fn settings_err(key: &str) -> String {
        ConfigError::new(key, "32 hex digits").to_string()
    }

    async fn read_one(s: &mut TcpStream) -> Vec<u8> {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.unwrap();
        let n = message_len(&head).unwrap().unwrap();
        let mut rest = vec![0u8; n - 4];
        s.read_exact(&mut rest).await.unwrap();
        [head.to_vec(), rest].concat()
    }

    #[tokio::test]
    async fn a_peer_is_served_over_tcp_after_its_cer_and_closed_if_it_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(hss(&dir));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = {
            let h = h.clone();
            tokio::spawn(async move {
                for _ in 0..2 {
                    let (c, _) = l.accept().await.unwrap();
                    tokio::spawn(h.clone().serve_peer(c));
                }
            })
        };
        let mut c = TcpStream::connect(addr).await.unwrap();
        let cer = request(cmd::CAPABILITIES_EXCHANGE, 0, |m| {
            m.utf8(avp::ORIGIN_HOST, None, "mme.epc.lab")
                .utf8(avp::ORIGIN_REALM, None, "epc.lab");
        });
        // The CER and the AIR in one write, the AIR cut in two.
        let a = air(IMSI, None);
        c.write_all(&[&cer[..], &a[..10]].concat()).await.unwrap();
        let cea = read_one(&mut c).await;
        assert_eq!(result_of(&cea).0, Some(result::SUCCESS));
        c.write_all(&a[10..]).await.unwrap();
        let aia = read_one(&mut c).await;
        assert_eq!(result_of(&aia).0, Some(result::SUCCESS));
        // A peer whose first message is not a CER is closed.
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        c2.write_all(&air(IMSI, None)).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(c2.read(&mut byte).await.unwrap(), 0);
        server.await.unwrap();
        assert_eq!(h.report().counters.broken_streams, 1);
    }
}
