//! The phone's stub resolver (what a phone's libc does for an app): the
//! hosts file first, then each `nameserver` of resolv.conf(5) in turn, a
//! recursive query (RD) over UDP with EDNS, again over TCP when the answer
//! comes truncated [RFC 7766 § 5]; a query with no answer within
//! `options timeout:` is sent again, `options attempts:` rounds over the
//! servers in all (glibc's defaults, 5 s and 2: a stub retransmits, RFC
//! 1123 § 6.1.3.3, as a datagram lost to a phone re-attaching would
//! otherwise fail the app); the CNAMEs followed and the addresses
//! at the chain's end, with the TTL the answer may be kept for (the least
//! of the chain's, RFC 2181 § 5.2).
//!
//! Blocking std sockets, so it runs on any thread that has entered the
//! phone's namespace ([`lookup_in`]).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the name was resolved (what `d11 order` prints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    /// `hosts file`, `DNS 198.18.2.2` or `HTTPDNS NAME (ADDRESS), …`.
    pub via: String,
    /// The CNAMEs followed, `owner -> target`.
    pub cnames: Vec<String>,
    pub addrs: Vec<Ipv4Addr>,
    /// Seconds the answer may be used (none for the hosts file).
    pub ttl: Option<u32>,
    /// Whether the answer came over TCP (the UDP one was truncated).
    pub tcp: bool,
    /// The service asked first and why it gave no answer (HTTPDNS, when
    /// the app fell back to DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// the name is not a DNS name
    #[error("{0:?} is not a DNS name")]
    Name(String),
    /// the namespace has neither a hosts entry nor a nameserver for it
    #[error("{name} is in no hosts file and no nameserver is configured ({resolv})")]
    NoResolver { name: String, resolv: String },
    /// every nameserver failed
    #[error("{name} did not resolve: {}", .errors.join("; "))]
    Failed { name: String, errors: Vec<String> },
}

/// The files the stub reads (in the namespace's /etc/netns directory).
#[derive(Debug, Clone)]
pub struct StubFiles {
    pub hosts: PathBuf,
    pub resolv: PathBuf,
}

/// The address `name` has in the hosts file at `path` (hosts(5)).
pub fn from_hosts(path: &Path, name: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split('#').next()?.split_whitespace();
        let addr: Ipv4Addr = f.next()?.parse().ok()?;
        f.any(|n| n.eq_ignore_ascii_case(name)).then_some(addr)
    })
}

/// What the stub reads from a resolv.conf(5): its `nameserver` lines and
/// the `timeout:` and `attempts:` of its `options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<IpAddr>,
    /// How long one query waits for its answer.
    pub timeout: Duration,
    /// Rounds over the servers before the name fails.
    pub attempts: u32,
}

impl ResolvConf {
    /// resolv.conf(5) at `path`; glibc's defaults (5 s, 2 rounds, the
    /// same caps: 30 s, 5) where it says nothing, or for a missing file.
    pub fn read(path: &Path) -> ResolvConf {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut conf = ResolvConf {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for l in text.lines() {
            let mut f = l.split_whitespace();
            match f.next() {
                Some("nameserver") => conf
                    .servers
                    .extend(f.next().and_then(|a| a.parse::<IpAddr>().ok())),
                Some("options") => {
                    for o in f {
                        let n = |v: &str| v.parse::<u32>().ok();
                        if let Some(t) = o.strip_prefix("timeout:").and_then(n) {
                            conf.timeout = Duration::from_secs(t.clamp(1, 30).into());
                        } else if let Some(a) = o.strip_prefix("attempts:").and_then(n) {
                            conf.attempts = a.clamp(1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }
}

/// The query a stub sends: RD set, EDNS with a 1232-octet buffer.
pub fn query(id: u16, name: &Name) -> Message {
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name.clone(), RecordType::A));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_version(0);
    q.set_edns(e);
    q
}

/// Reads a resolver's response to `name` A: the CNAMEs from `name`, the
/// addresses at the chain's end, the least TTL; `Err` with why not.
pub fn read_answer(name: &Name, m: &Message) -> Result<(Vec<String>, Vec<Ipv4Addr>, u32), String> {
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(m.metadata.response_code.to_str().to_string());
    }
    let mut at = LowerName::from(name);
    let mut cnames = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..=super::resolver::MAX_CHAIN {
        let here = m.answers.iter().filter(|r| LowerName::from(&r.name) == at);
        let addrs: Vec<(Ipv4Addr, u32)> = here
            .clone()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((a.0, r.ttl)),
                _ => None,
            })
            .collect();
        if !addrs.is_empty() {
            ttl = addrs.iter().map(|(_, t)| *t).fold(ttl, u32::min);
            return Ok((cnames, addrs.into_iter().map(|(a, _)| a).collect(), ttl));
        }
        let Some(c) = here.clone().find_map(|r| match &r.data {
            RData::CNAME(t) => Some((t.0.clone(), r.ttl)),
            _ => None,
        }) else {
            return Err("no address in the answer".into());
        };
        cnames.push(format!("{} -> {}", Name::from(at.clone()), c.0));
        ttl = ttl.min(c.1);
        at = LowerName::from(&c.0);
    }
    Err("a CNAME chain too long".into())
}

fn random_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}

/// One exchange with `server`: over UDP, and over TCP when truncated.
fn ask(server: IpAddr, q: &Message, timeout: Duration) -> std::io::Result<(Message, bool)> {
    let bytes = q.to_vec().map_err(std::io::Error::other)?;
    let to = SocketAddr::new(server, super::PORT);
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(to)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(&bytes)?;
    let mut buf = vec![0u8; 65535];
    let m = loop {
        let n = sock.recv(&mut buf)?;
        if n >= 2 && buf[..2] == q.metadata.id.to_be_bytes() {
            break Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
        }
    };
    if !m.metadata.truncation {
        return Ok((m, false));
    }
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg)?;
    Ok((
        Message::from_vec(&msg).map_err(std::io::Error::other)?,
        true,
    ))
}

/// Resolves `name` as the namespace the calling thread is in would: the
/// hosts file, then each nameserver.
pub fn lookup(files: &StubFiles, name: &str) -> Result<Resolved, StubError> {
    if let Some(a) = from_hosts(&files.hosts, name) {
        return Ok(Resolved {
            name: name.to_string(),
            via: "hosts file".into(),
            cnames: Vec::new(),
            addrs: vec![a],
            ttl: None,
            tcp: false,
            fallback_from: None,
        });
    }
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|_| StubError::Name(name.to_string()))?;
    let conf = ResolvConf::read(&files.resolv);
    if conf.servers.is_empty() {
        return Err(StubError::NoResolver {
            name: name.to_string(),
            resolv: files.resolv.display().to_string(),
        });
    }
    let mut errors = Vec::new();
    let q = query(random_id(), &fqdn);
    let tries = (0..conf.attempts).flat_map(|_| conf.servers.iter().copied());
    for server in tries {
        match ask(server, &q, conf.timeout) {
            Ok((m, tcp)) => match read_answer(&fqdn, &m) {
                Ok((cnames, addrs, ttl)) => {
                    return Ok(Resolved {
                        name: name.to_string(),
                        via: format!("DNS {server}"),
                        cnames,
                        addrs,
                        ttl: Some(ttl),
                        tcp,
                        fallback_from: None,
                    })
                }
                Err(e) => errors.push(format!("{server}: {e}")),
            },
            Err(e) => errors.push(format!("{server}: {e}")),
        }
    }
    Err(StubError::Failed {
        name: name.to_string(),
        errors,
    })
}

/// [`lookup`] from inside the network namespace `netns` (on a thread of
/// its own, so the caller's stays where it is).
pub fn lookup_in(netns: &str, files: &StubFiles, name: &str) -> anyhow::Result<Resolved> {
    let (netns, files, name) = (netns.to_string(), files.clone(), name.to_string());
    std::thread::spawn(move || -> anyhow::Result<Resolved> {
        let _in = d11_io::NetnsGuard::enter(&netns)?;
        Ok(lookup(&files, &name)?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the resolving thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // A resolver's answer, made by scapy 2.5.0:
    // bytes(DNS(id=1,qr=1,rd=1,ra=1,qd=DNSQR(qname='www.geektime.com',qtype='A'),
    //   an=DNSRR(rrname='www.geektime.com.',type='CNAME',ttl=590,rdata='www.geektime.com.gslb.d11cloud.com.')
    //     /DNSRR(rrname='www.geektime.com.gslb.d11cloud.com.',type='A',ttl=50,rdata='203.0.113.24')
    //     /DNSRR(rrname='www.geektime.com.gslb.d11cloud.com.',type='A',ttl=50,rdata='203.0.113.25'))).hex()
    const ANSWER: &str = include_str!("fixtures/stub_answer.hex");

    #[test]
    fn the_chain_is_followed_to_its_addresses_with_the_least_ttl() {
        let m = Message::from_vec(&hex(ANSWER.trim())).unwrap();
        let name = Name::from_ascii("www.geektime.com.").unwrap();
        let (cnames, addrs, ttl) = read_answer(&name, &m).unwrap();
        assert_eq!(
            cnames,
            ["www.geektime.com. -> www.geektime.com.gslb.d11cloud.com."]
        );
        assert_eq!(
            addrs,
            [
                Ipv4Addr::new(203, 0, 113, 24),
                Ipv4Addr::new(203, 0, 113, 25)
            ]
        );
        assert_eq!(ttl, 50);
    }

    #[test]
    fn hosts_then_resolv_conf_are_read_as_libc_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "# c\n203.0.113.24\twww.geektime.com # shop\n").unwrap();
        assert_eq!(
            from_hosts(&hosts, "WWW.geektime.com"),
            Some(Ipv4Addr::new(203, 0, 113, 24))
        );
        assert_eq!(from_hosts(&hosts, "geektime.com"), None);
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# d11\nsearch lab\nnameserver 198.18.2.2\nnameserver x\n",
        )
        .unwrap();
        let conf = ResolvConf::read(&resolv);
        assert_eq!(conf.servers, [IpAddr::from([198, 18, 2, 2])]);
        assert_eq!((conf.timeout, conf.attempts), (Duration::from_secs(5), 2));
        std::fs::write(
            &resolv,
            "nameserver 198.18.2.2\noptions rotate timeout:1 attempts:9\n",
        )
        .unwrap();
        let conf = ResolvConf::read(&resolv);
        assert_eq!((conf.timeout, conf.attempts), (Duration::from_secs(1), 5));
        let files = StubFiles {
            hosts: dir.path().join("none"),
            resolv: dir.path().join("none"),
        };
        assert!(matches!(
            lookup(&files, "www.geektime.com"),
            Err(StubError::NoResolver { .. })
        ));
    }
}
