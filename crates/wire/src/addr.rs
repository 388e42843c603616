//! Address newtypes: [`MacAddr`] and [`Ipv4Cidr`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IEEE 802 MAC address.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads the first six bytes of `b`; `None` if there are fewer.
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        Some(MacAddr(b.get(..6)?.try_into().ok()?))
    }
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }
    /// Group bit set (broadcast or multicast) [IEEE 802-2014 § 8.2].
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
    pub fn is_unicast(self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC address string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (want six hex octets like 02:00:00:00:00:01)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv4 address with a prefix length, as written `192.0.2.1/30`.
///
/// The address keeps its host bits: an interface address and its subnet in one
/// value ([`Ipv4Cidr::network`] clears them).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// `{0}` is not ADDRESS/PREFIX (like 192.0.2.1/30)
    #[error("`{0}` is not ADDRESS/PREFIX (like 192.0.2.1/30)")]
    Syntax(String),
    /// the prefix length must be 0..=32
    #[error("prefix length {0} is not in 0..=32")]
    PrefixLen(u32),
}

impl Ipv4Cidr {
    /// `None` if `prefix_len > 32`.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Cidr> {
        if prefix_len > 32 {
            None
        } else {
            Some(Ipv4Cidr { addr, prefix_len })
        }
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
    pub fn mask(&self) -> u32 {
        prefix_mask(self.prefix_len)
    }
    /// The same prefix with the host bits cleared.
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix_len: self.prefix_len,
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }
    /// The subnet's directed broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    /// True if the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let len = self.prefix_len.min(other.prefix_len);
        let m = prefix_mask(len);
        (u32::from(self.addr) ^ u32::from(other.addr)) & m == 0
    }
}

/// The netmask of a prefix length (`0..=32`).
pub const fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.into()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let len: u32 = p.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        if len > 32 {
            return Err(CidrError::PrefixLen(len));
        }
        Ok(Ipv4Cidr {
            addr,
            prefix_len: len as u8,
        })
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let m: MacAddr = "02:00:5e:10:00:0a".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x5e, 0x10, 0, 0x0a]);
        assert_eq!(m.to_string(), "02:00:5e:10:00:0a");
        assert!("02:00:5e:10:00".parse::<MacAddr>().is_err());
        assert!("02:00:5e:10:00:0a:01".parse::<MacAddr>().is_err());
        assert!("02:00:5e:10:00:zz".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(m.is_unicast());
    }

    #[test]
    fn cidr_contains_and_network() {
        let c: Ipv4Cidr = "192.0.2.5/30".parse().unwrap();
        assert_eq!(c.network().to_string(), "192.0.2.4/30");
        assert!(c.contains("192.0.2.7".parse().unwrap()));
        assert!(!c.contains("192.0.2.8".parse().unwrap()));
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 0, 2, 7));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(
            "1.2.3.4/33".parse::<Ipv4Cidr>(),
            Err(CidrError::PrefixLen(33))
        );
        assert!(c.overlaps(&"192.0.2.0/24".parse().unwrap()));
        assert!(!c.overlaps(&"192.0.2.8/30".parse().unwrap()));
    }
}
