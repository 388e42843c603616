//! Protocol Configuration Options: what a phone asks of its PDN
//! connection beyond the address (here, the DNS server's address) and what
//! the network answers.
//!
//! Read 3GPP TS 24.008 § 10.5.6.3 first: after the IE's type and length
//! (NAS: IEI 0x27, TLV) come one octet — the extension bit set and the
//! configuration protocol, 0 for "PPP for use with IP PDP type" — and then
//! protocols and containers, each a 2-octet identifier, a 1-octet length
//! and its contents. A container the UE sends as a request (such as 0x000D
//! "DNS Server IPv4 Address Request", empty) comes back from the network
//! with the same identifier and its value (0x000D "DNS Server IPv4
//! Address", 4 octets); the network leaves out what it has nothing for.
//!
//! The same value part travels inside GTPv2-C as the PCO IE (type 78): the
//! MME copies it from the PDN Connectivity Request into Create Session
//! Request, the SGW passes it through to the PGW and back, and the MME
//! copies the PGW's answer into Activate Default EPS Bearer Context
//! Request [TS 29.274 § 8.13; TS 24.301 § 8.3.6, § 8.3.20].

use std::net::Ipv4Addr;

/// The IEI of the PCO in ESM messages [TS 24.301 § 8.3.6.13, § 8.3.20.4].
pub const IEI: u8 = 0x27;
/// The first octet: the extension bit and configuration protocol 0, PPP
/// for use with IP PDP type or IP PDN type [TS 24.008 § 10.5.6.3].
pub const PPP: u8 = 0x80;

/// Container identifiers [TS 24.008 § 10.5.6.3, Table 10.5.154].
pub mod id {
    /// MS to network: "DNS Server IPv4 Address Request" (empty); network
    /// to MS: "DNS Server IPv4 Address" (the 4 octets of one server).
    pub const DNS_SERVER_IPV4: u16 = 0x000d;
    /// "IPv4 Link MTU Request" / "IPv4 Link MTU" (2 octets).
    pub const IPV4_LINK_MTU: u16 = 0x0010;
}

/// Why a PCO value does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PcoError {
    #[error("a PCO needs its configuration protocol octet")]
    Empty,
    #[error("a container's length runs past the PCO")]
    Length,
    #[error("a PCO holds at most 253 octets")]
    TooLong,
}

/// One protocol or container: its identifier and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: u16,
    pub contents: Vec<u8>,
}

/// A PCO's value part (after its IEI and length in NAS; the whole value
/// of GTPv2-C's PCO IE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pco {
    /// The first octet as sent (extension bit, configuration protocol).
    pub protocol: u8,
    pub containers: Vec<Container>,
}

impl Pco {
    /// The most octets of a value part: the IE is at most 253 octets with
    /// its type and length [TS 24.008 § 10.5.6.3].
    pub const MAX_LEN: usize = 251;

    /// A PCO of protocol [`PPP`] with `containers`.
    pub fn new(containers: Vec<Container>) -> Pco {
        Pco {
            protocol: PPP,
            containers,
        }
    }

    /// What a phone sends to learn its DNS server: one empty "DNS Server
    /// IPv4 Address Request".
    pub fn dns_request() -> Pco {
        Pco::new(vec![Container {
            id: id::DNS_SERVER_IPV4,
            contents: vec![],
        }])
    }

    pub fn parse(v: &[u8]) -> Result<Pco, PcoError> {
        let (&protocol, mut rest) = v.split_first().ok_or(PcoError::Empty)?;
        if v.len() > Pco::MAX_LEN {
            return Err(PcoError::TooLong);
        }
        let mut containers = Vec::new();
        while !rest.is_empty() {
            let [a, b, n, tail @ ..] = rest else {
                return Err(PcoError::Length);
            };
            let n = usize::from(*n);
            if tail.len() < n {
                return Err(PcoError::Length);
            }
            containers.push(Container {
                id: u16::from_be_bytes([*a, *b]),
                contents: tail[..n].to_vec(),
            });
            rest = &tail[n..];
        }
        Ok(Pco {
            protocol,
            containers,
        })
    }

    /// Appends the value part: containers past [`Pco::MAX_LEN`] are left
    /// out (a container longer than 255 octets is cut to 255).
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.push(self.protocol);
        for c in &self.containers {
            let n = c.contents.len().min(255);
            if buf.len() - start + 3 + n > Pco::MAX_LEN {
                break;
            }
            buf.extend_from_slice(&c.id.to_be_bytes());
            buf.push(n as u8);
            buf.extend_from_slice(&c.contents[..n]);
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        self.emit(&mut b);
        b
    }

    /// Whether a container of `id` is present (a request for it, MS to
    /// network).
    pub fn asks(&self, id: u16) -> bool {
        self.containers.iter().any(|c| c.id == id)
    }

    /// The DNS servers the network gave: each 4-octet "DNS Server IPv4
    /// Address" container, in order (others of that id are ignored).
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        self.containers
            .iter()
            .filter(|c| c.id == id::DNS_SERVER_IPV4)
            .filter_map(|c| <[u8; 4]>::try_from(&c.contents[..]).ok())
            .map(Ipv4Addr::from)
            .collect()
    }

    /// The network's answer to a phone's `request` [TS 24.008
    /// § 10.5.6.3]: one "DNS Server IPv4 Address" per server in `dns`
    /// when it asked for them, nothing for what it did not ask or this
    /// network does not give. None when nothing is answered.
    pub fn answer(request: &Pco, dns: &[Ipv4Addr]) -> Option<Pco> {
        let mut containers = Vec::new();
        if request.asks(id::DNS_SERVER_IPV4) {
            containers.extend(dns.iter().map(|a| Container {
                id: id::DNS_SERVER_IPV4,
                contents: a.octets().to_vec(),
            }));
        }
        (!containers.is_empty()).then(|| Pco::new(containers))
    }
}

impl std::fmt::Display for Pco {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PCO")?;
        for c in &self.containers {
            match (c.id, <[u8; 4]>::try_from(&c.contents[..])) {
                (id::DNS_SERVER_IPV4, Ok(a)) => write!(f, " DNS {}", Ipv4Addr::from(a))?,
                (id::DNS_SERVER_IPV4, Err(_)) => write!(f, " DNS?")?,
                (i, _) => write!(f, " 0x{i:04x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use proptest::prelude::*;

    // The value parts of crates/wire/fixtures/nas.py's PDN Connectivity
    // Request and Activate Default EPS Bearer Context Request, which
    // pycrate 0.8.1 reads as ProtConfig (Prot 0 "PPP with IP PDP",
    // ProtConfigElt ID 13 "DNSServerIPv4Addr", Len 0; then Len 4,
    // 0xc6120202) and re-encodes byte for byte, and tshark 4 shows as
    // "Protocol or Container ID: DNS Server IPv4 Address Request (0x000d)"
    // and gsm_a.gm.sm.pco.dns.ipv4 198.18.2.2.
    const REQUEST: &str = "80000d00";
    const ANSWER: &str = "80000d04c6120202";

    #[test]
    fn the_dns_request_and_its_answer_are_pycrates_bytes() {
        let req = Pco::dns_request();
        assert_eq!(req.to_vec(), hex(REQUEST));
        assert_eq!(Pco::parse(&hex(REQUEST)), Ok(req.clone()));
        let dns = [Ipv4Addr::new(198, 18, 2, 2)];
        let ans = Pco::answer(&req, &dns).unwrap();
        assert_eq!(ans.to_vec(), hex(ANSWER));
        assert_eq!(Pco::parse(&hex(ANSWER)).unwrap().dns_servers(), dns);
        assert_eq!(ans.to_string(), "PCO DNS 198.18.2.2");
    }

    #[test]
    fn only_what_was_asked_is_answered() {
        let mtu_only = Pco::new(vec![Container {
            id: id::IPV4_LINK_MTU,
            contents: vec![],
        }]);
        assert_eq!(Pco::answer(&mtu_only, &[Ipv4Addr::new(1, 2, 3, 4)]), None);
        assert_eq!(Pco::answer(&Pco::dns_request(), &[]), None);
        let two = [Ipv4Addr::new(198, 18, 2, 2), Ipv4Addr::new(198, 18, 3, 2)];
        let a = Pco::answer(&Pco::dns_request(), &two).unwrap();
        assert_eq!(a.dns_servers(), two);
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert_eq!(Pco::parse(&[]), Err(PcoError::Empty));
        assert_eq!(Pco::parse(&hex("80000d05c6120202")), Err(PcoError::Length));
        assert_eq!(Pco::parse(&hex("80000d")), Err(PcoError::Length));
        assert_eq!(Pco::parse(&[0x80; 252]), Err(PcoError::TooLong));
        // A DNS container of the wrong size gives no address.
        let odd = Pco::parse(&hex("80000d03c61202")).unwrap();
        assert!(odd.dns_servers().is_empty());
    }

    proptest! {
        #[test]
        fn what_parses_round_trips(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Pco::parse(&b) {
                prop_assert_eq!(p.to_vec(), b);
                let _ = (p.dns_servers(), p.to_string());
            }
        }
    }
}
