//! `app = "gslb"`: the cloud's global server load balancer, the
//! authoritative server of the zone the shop's CNAME points into
//! (`gslb.d11cloud.com.`). For each name it serves it answers the VIPs of
//! the region nearest the asker, healthy ones only, with a short TTL.
//!
//! Read RFC 7871 first (EDNS Client Subnet: when a resolver says for whom
//! it asks, that address picks the region, and the answer's SCOPE
//! PREFIX-LENGTH tells for which clients it holds, § 7.2.1; else the
//! resolver's own source address does, as GSLBs did before ECS), then RFC
//! 2308 § 3 for the negative answers. [`Gslb`] is the answer logic
//! without sockets or a clock; the health of each VIP comes in from the
//! shell ([`Gslb::set_health`]), which checks it by a TCP connect to port
//! 443 through the VIP every `check_interval_ms`, and counts the results
//! as HAProxy does ([`crate::health`]): `fall` failures in a row take a VIP
//! out of the answers, `rise` passes bring it back, so one SYN lost on a
//! busy network does not. When none of the nearest region's VIPs is up,
//! the next region that has one answers (failover).

use super::httpdns::HttpDnsSettings;
use super::zone::{admit, fit, Admitted, Outcome, Transport};
use super::{accept_tcp, serve_tcp, serve_udp, UdpServerSocket, PORT};
use crate::app::{AppEnv, Running, Shutdown};
use crate::health::{Health, InitState, Transition};
use crate::https::{Front, FrontReport};
use d11_core::settings::ConfigError;
use d11_wire::Ipv4Cidr;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::info;

/// One region the GSLB answers for.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    /// Its load balancers' public addresses.
    pub vips: Vec<Ipv4Addr>,
    /// The askers (resolvers, or ECS client subnets) it is nearest to.
    #[serde(default)]
    pub clients: Vec<Ipv4Cidr>,
}

/// The `gslb` node's `config`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GslbSettings {
    #[serde(default = "default_port")]
    pub port: u16,
    /// The zone it is authoritative for (delegated to it by its parent).
    pub zone: String,
    /// Its own name server name inside the zone (the delegation's NS).
    pub ns: String,
    /// The names it balances, relative to the zone (`www.geektime.com`).
    pub names: Vec<String>,
    /// The TTL of its answers: short, so a failover reaches clients soon.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Time between two checks of every VIP, and a check's timeout.
    #[serde(default = "default_interval")]
    pub check_interval_ms: u64,
    /// Consecutive passed checks that bring a DOWN VIP back (HAProxy's `rise`).
    #[serde(default = "default_rise_fall")]
    pub rise: u32,
    /// Consecutive failed checks that take an UP VIP out (HAProxy's `fall`).
    #[serde(default = "default_rise_fall")]
    pub fall: u32,
    /// The first region is the default for askers no region lists.
    pub regions: Vec<RegionConfig>,
    /// Serve HTTPDNS too ([`super::httpdns`]; the topology's `[pki]` names
    /// the certificate's names).
    #[serde(default)]
    pub httpdns: Option<HttpDnsSettings>,
}

fn default_port() -> u16 {
    PORT
}
fn default_ttl() -> u32 {
    20
}
fn default_interval() -> u64 {
    2000
}
fn default_rise_fall() -> u32 {
    2
}

/// A region's health and what it has answered, for `d11 show GSLB`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegionRow {
    pub name: String,
    pub vips: Vec<VipRow>,
    pub clients: Vec<String>,
    /// Answers naming this region's VIPs.
    pub answers: u64,
    /// Of those, answers for askers nearest another region (failovers).
    pub failovers_in: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipRow {
    pub vip: Ipv4Addr,
    pub up: bool,
    pub checks: u64,
    pub failures: u64,
}

/// `d11 show NODE`'s report of a `gslb` node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GslbReport {
    pub zone: String,
    pub ttl: u32,
    pub regions: Vec<RegionRow>,
    pub queries: u64,
    pub ecs_queries: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub formerr: u64,
    pub dropped: u64,
    /// HTTPDNS's front (connections, TLS, requests by status), when served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub httpdns: Option<FrontReport>,
}

#[derive(Debug, Clone)]
struct Vip {
    addr: Ipv4Addr,
    health: Health,
    checks: u64,
    failures: u64,
}

#[derive(Debug, Clone)]
struct Region {
    name: String,
    vips: Vec<Vip>,
    clients: Vec<Ipv4Cidr>,
    answers: u64,
    failovers_in: u64,
}

/// What [`Gslb::pick`] chose for one asker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub region: String,
    pub vips: Vec<Ipv4Addr>,
    /// The prefix length of the client list that matched (0: the default).
    pub scope: u8,
    /// Whether the nearest region had no VIP up.
    pub failover: bool,
}

/// The GSLB's answer logic and state.
#[derive(Debug, Clone)]
pub struct Gslb {
    zone: Name,
    lzone: LowerName,
    ns: Name,
    addr: Ipv4Addr,
    names: Vec<LowerName>,
    ttl: u32,
    regions: Vec<Region>,
    queries: u64,
    ecs_queries: u64,
    nxdomain: u64,
    refused: u64,
    formerr: u64,
    dropped: u64,
}

fn name_in(zone: &Name, s: &str) -> Result<Name, String> {
    let n = Name::from_ascii(s).map_err(|e| e.to_string())?;
    if n.is_fqdn() {
        Ok(n)
    } else {
        n.append_domain(zone).map_err(|e| e.to_string())
    }
}

impl GslbSettings {
    pub fn gslb(&self, addr: Ipv4Addr) -> Result<Gslb, ConfigError> {
        let zone =
            Name::from_ascii(&self.zone).map_err(|e| ConfigError::new("zone", e.to_string()))?;
        let ns = name_in(&zone, &self.ns).map_err(|e| ConfigError::new("ns", e))?;
        let names = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                name_in(&zone, n)
                    .map(|n| LowerName::from(&n))
                    .map_err(|e| ConfigError::new(format!("names[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.regions.is_empty() {
            return Err(ConfigError::new("regions", "at least one region"));
        }
        for (key, n) in [("rise", self.rise), ("fall", self.fall)] {
            if n == 0 {
                return Err(ConfigError::new(key, "at least 1"));
            }
        }
        if let Some(i) = self.regions.iter().position(|r| r.vips.is_empty()) {
            return Err(ConfigError::new(
                format!("regions[{i}].vips"),
                "at least one VIP",
            ));
        }
        Ok(Gslb {
            lzone: LowerName::from(&zone),
            zone,
            ns,
            addr,
            names,
            ttl: self.ttl,
            regions: self
                .regions
                .iter()
                .map(|r| Region {
                    name: r.name.clone(),
                    vips: r
                        .vips
                        .iter()
                        .map(|&addr| Vip {
                            addr,
                            // Up until `fall` checks fail: the balancers
                            // start with the lab, maybe after the GSLB.
                            health: Health::new(self.rise, self.fall, InitState::FullyUp),
                            checks: 0,
                            failures: 0,
                        })
                        .collect(),
                    clients: r.clients.clone(),
                    answers: 0,
                    failovers_in: 0,
                })
                .collect(),
            queries: 0,
            ecs_queries: 0,
            nxdomain: 0,
            refused: 0,
            formerr: 0,
            dropped: 0,
        })
    }
}

impl Gslb {
    /// Every VIP to check.
    pub fn vips(&self) -> Vec<Ipv4Addr> {
        self.regions
            .iter()
            .flat_map(|r| r.vips.iter().map(|v| v.addr))
            .collect()
    }

    /// A health check's result for `vip`, counted towards `rise` or `fall`.
    pub fn set_health(&mut self, vip: Ipv4Addr, passed: bool) {
        for v in self.regions.iter_mut().flat_map(|r| r.vips.iter_mut()) {
            if v.addr == vip {
                v.checks += 1;
                if !passed {
                    v.failures += 1;
                }
                if let Some(t) = v.health.on_check(passed) {
                    info!(%vip, up = t == Transition::Up, "VIP health changed");
                }
            }
        }
    }

    fn soa(&self) -> Record {
        let mut mbox = Name::from_ascii("hostmaster").expect("literal");
        mbox = mbox
            .append_domain(&self.zone)
            .unwrap_or_else(|_| self.zone.clone());
        Record::from_rdata(
            self.zone.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                self.ns.clone(),
                mbox,
                1,
                3600,
                600,
                86400,
                self.ttl,
            )),
        )
    }

    /// The region nearest `client`: the first listing it, else the first.
    /// With the prefix length that matched (0 for the default).
    fn nearest(&self, client: Ipv4Addr) -> (usize, u8) {
        for (i, r) in self.regions.iter().enumerate() {
            if let Some(c) = r.clients.iter().find(|c| c.contains(client)) {
                return (i, c.prefix_len());
            }
        }
        (0, 0)
    }

    /// The VIPs to give `client`: those up in its nearest region; when
    /// none is, those of the next region that has one up (failover); else
    /// the nearest region's as they are. Counted in the region's answers
    /// (DNS and HTTPDNS alike).
    pub fn pick(&mut self, client: Ipv4Addr) -> Pick {
        let (near, scope) = self.nearest(client);
        let n = self.regions.len();
        let at = (0..n)
            .map(|k| (near + k) % n)
            .find(|&i| self.regions[i].vips.iter().any(|v| v.health.is_up()))
            .unwrap_or(near);
        let region = &mut self.regions[at];
        region.answers += 1;
        if at != near {
            region.failovers_in += 1;
        }
        let up: Vec<Ipv4Addr> = (region.vips.iter())
            .filter(|v| v.health.is_up())
            .map(|v| v.addr)
            .collect();
        Pick {
            region: region.name.clone(),
            vips: if up.is_empty() {
                region.vips.iter().map(|v| v.addr).collect()
            } else {
                up
            },
            scope,
            failover: at != near,
        }
    }

    /// Whether `host` (`www.geektime.com`, as an app knows it) is one of
    /// the names this GSLB balances, and its TTL if so.
    pub fn balances(&self, host: &str) -> Option<u32> {
        let n = name_in(&self.zone, host.trim_end_matches('.')).ok()?;
        self.names
            .contains(&LowerName::from(&n))
            .then_some(self.ttl)
    }

    /// The answer to one query from `from` [RFC 1034 § 4.3.2, RFC 7871 § 7.2].
    pub fn answer(
        &mut self,
        query: &[u8],
        from: IpAddr,
        via: Transport,
    ) -> (Option<Vec<u8>>, Outcome) {
        self.queries += 1;
        let Admitted {
            req,
            mut resp,
            limit,
        } = match admit(query, via) {
            Ok(a) => a,
            Err((out, o)) => {
                match o {
                    Outcome::Dropped => self.dropped += 1,
                    Outcome::Refused => self.refused += 1,
                    _ => self.formerr += 1,
                }
                return (out, o);
            }
        };
        let q = &req.queries[0];
        let qname = LowerName::from(q.name());
        let qtype = q.query_type();
        if !self.lzone.zone_of(&qname) {
            self.refused += 1;
            resp.metadata.response_code = ResponseCode::Refused;
            return fit(resp, limit, Outcome::Refused);
        }
        resp.metadata.authoritative = true;
        // The client: ECS's address when the resolver sent one (IPv4), else
        // the resolver's own [RFC 7871 § 7.1.1].
        let ecs = req
            .edns
            .as_ref()
            .and_then(|e| match e.options().get(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let client = match (&ecs, from) {
            (Some(s), _) if matches!(s.addr(), IpAddr::V4(_)) => {
                self.ecs_queries += 1;
                match s.addr() {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                }
            }
            (_, IpAddr::V4(a)) => a,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let apex = qname == self.lzone;
        let is_ns = qname == LowerName::from(&self.ns);
        let balanced = self.names.contains(&qname);
        let mut outcome = Outcome::Answer;
        if balanced && matches!(qtype, RecordType::A | RecordType::ANY) {
            let pick = self.pick(client);
            for &v in &pick.vips {
                resp.answers.push(Record::from_rdata(
                    q.name().clone(),
                    self.ttl,
                    RData::A(A(v)),
                ));
            }
            // The answer holds for the askers of the prefix that chose it
            // [RFC 7871 § 7.2.1]; echo the option with that scope.
            if let (Some(s), Some(e)) = (&ecs, resp.edns.as_mut()) {
                let scope = if pick.failover { 0 } else { pick.scope };
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    s.addr(),
                    s.source_prefix(),
                    scope,
                )));
            }
        } else if apex && matches!(qtype, RecordType::SOA) {
            resp.answers.push(self.soa());
        } else if apex && matches!(qtype, RecordType::NS) {
            resp.answers.push(Record::from_rdata(
                self.zone.clone(),
                self.ttl,
                RData::NS(NS(self.ns.clone())),
            ));
            resp.additionals.push(Record::from_rdata(
                self.ns.clone(),
                self.ttl,
                RData::A(A(self.addr)),
            ));
        } else if is_ns && qtype == RecordType::A {
            resp.answers.push(Record::from_rdata(
                self.ns.clone(),
                self.ttl,
                RData::A(A(self.addr)),
            ));
        } else if apex || is_ns || balanced || self.names.iter().any(|n| qname.zone_of(n)) {
            // NODATA (an empty non-terminal too) [RFC 2308 § 2.2].
            resp.authorities.push(self.soa());
            outcome = Outcome::NoData;
        } else {
            resp.authorities.push(self.soa());
            resp.metadata.response_code = ResponseCode::NXDomain;
            self.nxdomain += 1;
            outcome = Outcome::NxDomain;
        }
        fit(resp, limit, outcome)
    }

    pub fn report(&self) -> GslbReport {
        GslbReport {
            zone: self.zone.to_string(),
            ttl: self.ttl,
            regions: self
                .regions
                .iter()
                .map(|r| RegionRow {
                    name: r.name.clone(),
                    vips: r
                        .vips
                        .iter()
                        .map(|v| VipRow {
                            vip: v.addr,
                            up: v.health.is_up(),
                            checks: v.checks,
                            failures: v.failures,
                        })
                        .collect(),
                    clients: r.clients.iter().map(|c| c.to_string()).collect(),
                    answers: r.answers,
                    failovers_in: r.failovers_in,
                })
                .collect(),
            queries: self.queries,
            ecs_queries: self.ecs_queries,
            nxdomain: self.nxdomain,
            refused: self.refused,
            formerr: self.formerr,
            dropped: self.dropped,
            httpdns: None,
        }
    }
}

/// Whether `vip`:443 accepts a TCP connection within `timeout`.
async fn check(vip: Ipv4Addr, timeout: Duration) -> bool {
    let to = SocketAddr::from((vip, 443));
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(to)).await,
        Ok(Ok(_))
    )
}

fn locked(g: &Mutex<Gslb>) -> std::sync::MutexGuard<'_, Gslb> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

/// `app = "gslb"`.
pub struct GslbApp;

impl crate::app::App for GslbApp {
    const NAME: &'static str = "gslb";
    const SUMMARY: &'static str =
        "the cloud's GSLB: authoritative for its zone, answering the nearest healthy region's VIPs";
    type Settings = GslbSettings;
    /// One event loop, as the resolver's ([`super::ldns`]): a query is
    /// answered on the thread that polls the socket.
    const WORKERS: usize = 1;
    fn listens(s: &GslbSettings) -> Option<u16> {
        Some(s.port)
    }
    fn check(env: &AppEnv, s: &GslbSettings) -> Result<(), ConfigError> {
        if s.httpdns.is_some() {
            env.https_pki("a GSLB serving HTTPDNS")?;
        }
        match env.address("a GSLB answers on its address")? {
            IpAddr::V4(a) => s.gslb(a).map(|_| ()),
            IpAddr::V6(_) => Err(ConfigError::new("ports", "an IPv4 address")),
        }
    }
    fn run(
        env: AppEnv,
        s: GslbSettings,
        ctl: tokio::net::UnixListener,
        shutdown: Shutdown,
    ) -> Running {
        Box::pin(async move {
            let addr = env.address("gslb needs an address")?;
            let IpAddr::V4(v4) = addr else {
                anyhow::bail!("gslb needs an IPv4 address");
            };
            let gslb = Arc::new(Mutex::new(s.gslb(v4).map_err(|e| anyhow::anyhow!("{e}"))?));
            let at = SocketAddr::new(addr, s.port);
            let udp = UdpServerSocket::bind(at)?;
            let tcp = crate::listen(at, 1024)?;
            // HTTPDNS, from the same table and health.
            let httpdns = match &s.httpdns {
                Some(h) => {
                    let tls = crate::pki::server_config(env.https_pki("a GSLB serving HTTPDNS")?)?;
                    let front = Front::new(tls, h.limits());
                    let listener = crate::listen(SocketAddr::new(addr, h.port), 1024)?;
                    let router = super::httpdns::router(gslb.clone(), &front);
                    let serving = front.clone();
                    tokio::spawn(async move {
                        let never = std::future::pending::<()>();
                        if let Err(e) = serving.serve(listener, router, never).await {
                            tracing::warn!(error = %e, "HTTPDNS stopped");
                        }
                    });
                    Some(front)
                }
                None => None,
            };
            let report = {
                let g = gslb.clone();
                crate::control::report(move || GslbReport {
                    httpdns: httpdns.as_ref().map(|f| f.report()),
                    ..locked(&g).report()
                })
            };
            tokio::spawn(crate::control::serve(ctl, env.node.clone(), "gslb", report));
            // The health checks: every VIP each interval, all at once.
            let interval = Duration::from_millis(s.check_interval_ms.max(100));
            let checker = {
                let g = gslb.clone();
                async move {
                    let mut tick = tokio::time::interval(interval);
                    loop {
                        tick.tick().await;
                        let vips = locked(&g).vips();
                        let results = futures_join(vips, interval).await;
                        let mut g = locked(&g);
                        for (vip, up) in results {
                            g.set_health(vip, up);
                        }
                    }
                }
            };
            info!(%at, zone = %s.zone, "gslb up");
            tokio::select! {
                _ = shutdown => Ok(()),
                _ = checker => Ok(()),
                r = serve_udp(&udp, |q, peer| {
                    locked(&gslb).answer(q, peer.ip(), Transport::Udp).0
                }) => Ok(r?),
                r = accept_tcp(tcp, |conn, peer| {
                    let g = gslb.clone();
                    serve_tcp(conn, move |msg| {
                        let out = locked(&g).answer(&msg, peer.ip(), Transport::Tcp).0;
                        async move { out }
                    })
                }) => Ok(r?),
            }
        })
    }
}

/// Checks every VIP at once, each within `timeout`.
async fn futures_join(vips: Vec<Ipv4Addr>, timeout: Duration) -> Vec<(Ipv4Addr, bool)> {
    let tasks: Vec<_> = vips
        .into_iter()
        .map(|v| tokio::spawn(async move { (v, check(v, timeout).await) }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn gslb() -> Gslb {
        let s: GslbSettings = toml::from_str(
            r#"
zone = "gslb.d11cloud.com."
ns = "ns1"
names = ["www.geektime.com"]
regions = [
  { name = "east", vips = ["203.0.113.24", "203.0.113.25", "203.0.113.26"], clients = ["198.18.2.0/28"] },
  { name = "north", vips = ["198.19.24.24", "198.19.24.25", "198.19.24.26"], clients = ["198.18.3.0/28", "192.0.2.128/25"] },
]
"#,
        )
        .unwrap();
        s.gslb(Ipv4Addr::new(198, 18, 1, 18)).unwrap()
    }

    // /usr/bin/python3 -c "from scapy.all import DNS,DNSQR; print(bytes(DNS(id=7,rd=0,
    //   qd=DNSQR(qname='www.geektime.com.gslb.d11cloud.com',qtype='A'))).hex())"
    const WWW: &str = "00070000000100000000000003777777086765656b74696d6503636f6d0467736c6208643131636c6f756403636f6d0000010001";
    // … id=8, ar=DNSRROPT(rclass=1232, rdata=[EDNS0ClientSubnet(family=1,
    //   source_plen=24, scope_plen=0, address='198.18.3.0')])  (scapy.layers.dns)
    const WWW_ECS: &str = "00080000000100000000000103777777086765656b74696d6503636f6d0467736c6208643131636c6f756403636f6d000001000100002904d000008000000b0008000700011800c61203";
    // … id=9, qd=DNSQR(qname='nope.gslb.d11cloud.com',qtype='A')
    const NOPE: &str =
        "000900000001000000000000046e6f70650467736c6208643131636c6f756403636f6d0000010001";

    fn ask(g: &mut Gslb, q: &[u8], from: &str) -> Message {
        let (out, _) = g.answer(q, from.parse().unwrap(), Transport::Udp);
        Message::from_vec(&out.unwrap()).unwrap()
    }

    fn vips(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn the_resolvers_address_picks_its_region_with_a_short_ttl() {
        let mut g = gslb();
        let m = ask(&mut g, &hex(WWW), "198.18.2.2");
        assert!(m.metadata.authoritative);
        assert_eq!(vips(&m), ["203.0.113.24", "203.0.113.25", "203.0.113.26"]);
        assert_eq!(m.answers[0].ttl, 20);
        let m = ask(&mut g, &hex(WWW), "198.18.3.2");
        assert_eq!(vips(&m), ["198.19.24.24", "198.19.24.25", "198.19.24.26"]);
        // Nobody's: the first region.
        assert_eq!(
            vips(&ask(&mut g, &hex(WWW), "192.0.2.1"))[0],
            "203.0.113.24"
        );
    }

    #[test]
    fn a_client_subnet_picks_the_region_and_the_answer_says_its_scope() {
        let mut g = gslb();
        // Asked by east's resolver for a client in 198.18.3.0/24: north.
        let m = ask(&mut g, &hex(WWW_ECS), "198.18.2.2");
        assert_eq!(vips(&m)[0], "198.19.24.24");
        let Some(EdnsOption::Subnet(s)) = m.edns.as_ref().unwrap().options().get(EdnsCode::Subnet)
        else {
            panic!("no ECS echoed")
        };
        assert_eq!(
            (s.source_prefix(), s.scope_prefix()),
            (24, 28),
            "[RFC 7871 § 7.2.1]"
        );
        assert_eq!(g.report().ecs_queries, 1);
    }

    /// `n` checks of `vip` with the same result.
    fn checks(g: &mut Gslb, vip: [u8; 4], passed: bool, n: usize) {
        for _ in 0..n {
            g.set_health(Ipv4Addr::from(vip), passed);
        }
    }

    #[test]
    fn a_region_with_every_vip_down_fails_over_and_one_down_vip_is_left_out() {
        let mut g = gslb();
        let east = |g: &mut Gslb| vips(&ask(g, &hex(WWW), "198.18.2.2"));
        // One failed check (a SYN lost) leaves the VIP in; `fall` (2) in a
        // row take it out.
        checks(&mut g, [203, 0, 113, 25], false, 1);
        assert_eq!(east(&mut g).len(), 3);
        checks(&mut g, [203, 0, 113, 25], false, 1);
        assert_eq!(east(&mut g), ["203.0.113.24", "203.0.113.26"]);
        checks(&mut g, [203, 0, 113, 24], false, 2);
        checks(&mut g, [203, 0, 113, 26], false, 2);
        assert_eq!(east(&mut g)[0], "198.19.24.24");
        let r = g.report();
        assert_eq!((r.regions[1].answers, r.regions[1].failovers_in), (1, 1));
        assert!(!r.regions[0].vips[0].up);
        assert_eq!(
            (r.regions[0].vips[0].checks, r.regions[0].vips[0].failures),
            (2, 2)
        );
        // Back up after `rise` (2) passes: east again.
        checks(&mut g, [203, 0, 113, 24], true, 1);
        assert_eq!(east(&mut g)[0], "198.19.24.24");
        checks(&mut g, [203, 0, 113, 24], true, 1);
        assert_eq!(east(&mut g), ["203.0.113.24"]);
    }

    #[test]
    fn rise_or_fall_of_zero_is_refused_naming_the_key() {
        let base = r#"zone = "z."
ns = "ns1"
names = ["www"]
regions = [ { name = "east", vips = ["203.0.113.24"] } ]
"#;
        for key in ["rise", "fall"] {
            let s: GslbSettings = toml::from_str(&format!("{key} = 0\n{base}")).unwrap();
            let e = s.gslb(Ipv4Addr::new(198, 18, 1, 18)).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn other_names_are_nxdomain_with_the_soa_and_outside_names_refused() {
        let mut g = gslb();
        let m = ask(&mut g, &hex(NOPE), "198.18.2.2");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // The shop's own name, outside the zone (the WWW question with the
        // last three labels cut: www.geektime.com).
        let outside = hex("00070000000100000000000003777777086765656b74696d6503636f6d0000010001");
        let m = ask(&mut g, &outside, "198.18.2.2");
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = gslb().answer(&bytes, "198.18.2.2".parse().unwrap(), Transport::Udp);
        }
    }
}
