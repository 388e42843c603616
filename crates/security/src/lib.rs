//! EPS security for the lab's attach: what the HSS, the MME and the phone's
//! USIM compute (3GPP TS 33.401 on top of TS 33.102 and TS 35.206).
//!
//! - [`milenage`]: f1–f5, f1*, f5* (TS 35.206), checked against TS 35.208.
//! - [`aka`]: EPS-AKA's vector in the HSS, the USIM's checks of AUTN and
//!   its AUTS on a sequence number out of range, and the HSS's
//!   resynchronisation from AUTS (TS 33.102 § 6.3).
//! - [`kdf`]: the key hierarchy (TS 33.401 Annex A, the KDF of TS 33.220
//!   Annex B): KASME, the NAS keys, KeNB.
//! - [`nas`]: 128-EIA2 (AES-CMAC) and 128-EEA2 (AES-CTR) on NAS messages
//!   (TS 33.401 Annex B).
//!
//! The lab uses its own: RustCrypto's AES, CMAC and HMAC-SHA-256 underneath,
//! the 3GPP constructions here, golden values from TS 35.208, Debian's
//! `osmo-auc-gen` and Python's `cryptography` (OpenSSL).
#![forbid(unsafe_code)]

pub mod aka;
pub mod kdf;
pub mod milenage;
pub mod nas;

pub use milenage::Milenage;
