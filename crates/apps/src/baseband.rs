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
//! core is fed NAS PDUs and answers with NAS PDUs. Today it carries the
//! attach up to the HSS's Update Location: Attach Accept and the phone's
//! address come in the next slice (`PROGRESS-attach.md`).

use crate::hss::{imsi_ok, key};
use d11_core::settings::ConfigError;
use d11_security::aka::{self, Answer};
use d11_security::kdf::{self, NasKey};
use d11_security::nas::{nas_mac, Direction};
use d11_security::Milenage;
use d11_wire::nas::{
    cause, emit_protected, sec, EmmMessage, EsmMessage, MobileIdentity, NasError, Pdu, KSI_NONE,
};
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

/// The UE network capability we send: EEA0/1/2 and EIA0/1/2
/// [TS 24.301 § 9.9.3.34].
pub const UE_NETWORK_CAPABILITY: [u8; 2] = [0xe0, 0xe0];
/// A PDN Connectivity Request, PTI 1, IPv4, initial request
/// [TS 24.301 § 8.3.20]: the ESM container of the Attach Request.
pub const PDN_CONNECTIVITY_REQUEST: [u8; 4] = [0x02, 0x01, 0xd0, 0x11];

#[derive(Debug)]
struct Security {
    knas_int: [u8; 16],
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
            esm: PDN_CONNECTIVITY_REQUEST.to_vec(),
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
                let msg = EmmMessage::parse(message)?;
                if header == sec::INTEGRITY_NEW_CONTEXT {
                    if let EmmMessage::SecurityModeCommand { .. } = msg {
                        return self.security_mode(mac, sn, message, msg);
                    }
                }
                let s = self.sec.as_mut().ok_or(BasebandError::Integrity)?;
                let mut count = (s.dl_count & !0xff) | u32::from(sn);
                if count < s.dl_count {
                    count += 0x100;
                }
                if nas_mac(&s.knas_int, count, Direction::Downlink, sn, message) != mac {
                    return Err(BasebandError::Integrity);
                }
                s.dl_count = count + 1;
                self.protected(msg)
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
    /// Complete, protected with the new context.
    fn security_mode(
        &mut self,
        mac: [u8; 4],
        sn: u8,
        message: &[u8],
        msg: EmmMessage,
    ) -> Result<Option<Vec<u8>>, BasebandError> {
        let EmmMessage::SecurityModeCommand {
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
        let mut s = Security {
            knas_int,
            dl_count: u32::from(sn) + 1,
            ul_count: 0,
        };
        let replayed_ok = self.capability.starts_with(&ue_security_capability)
            && ue_security_capability.len() >= 2;
        let (reply, header) = if replayed_ok {
            (
                EmmMessage::SecurityModeComplete,
                sec::INTEGRITY_CIPHERED_NEW_CONTEXT,
            )
        } else {
            let c = cause::UE_SECURITY_CAPABILITIES_MISMATCH;
            (
                EmmMessage::SecurityModeReject { cause: c },
                sec::INTEGRITY_CIPHERED_NEW_CONTEXT,
            )
        };
        let out = protect(&mut s, header, &reply.to_vec());
        if replayed_ok {
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
            EmmMessage::AttachAccept { esm, .. } => {
                // The default bearer: its address, and the accept of it
                // inside Attach Complete [TS 24.301 § 6.4.1.3].
                let EsmMessage::ActivateDefaultBearerRequest {
                    ebi,
                    pti,
                    pdn_address,
                    ..
                } = EsmMessage::parse(&esm)?
                else {
                    return Err(BasebandError::Nas(NasError::IeValue));
                };
                self.address = Some(pdn_address);
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

/// An uplink message protected with the context's next uplink COUNT.
fn protect(s: &mut Security, header: u8, msg: &[u8]) -> Vec<u8> {
    let count = s.ul_count;
    s.ul_count += 1;
    let sn = count as u8;
    let mac = nas_mac(&s.knas_int, count, Direction::Uplink, sn, msg);
    let mut out = Vec::with_capacity(msg.len() + 6);
    emit_protected(&mut out, header, mac, sn, msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attach_request_is_the_one_pycrate_and_tshark_read() {
        // crates/wire/fixtures/nas.py's Attach Request (IMSI 001010000000001,
        // EEA0-2/EIA0-2, PDN connectivity request PTI 1 IPv4).
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
            d11_wire::hex("07417108091010000000001002e0e000040201d011")
        );
        assert_eq!(b.state(), UeState::AttachRequested);
    }
}
