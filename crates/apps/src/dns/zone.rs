//! A zone an authoritative server holds, and the answer it gives.
//!
//! Read RFC 1034 § 4.3.2 first (the algorithm an authoritative server runs
//! for a query: the zone, a delegation below it, an exact match, a CNAME,
//! the name error), then RFC 2308 § 3 (the SOA in a negative answer, its TTL
//! the lesser of the SOA's TTL and its MINIMUM) and RFC 6891 § 6.1.3 (an
//! OPT record with a version we do not speak gets BADVERS).
//!
//! Zones are master files (RFC 1035 § 5) parsed by hickory-proto; the
//! messages are hickory-proto's too. This file has no sockets and no clock.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;
use std::collections::{BTreeMap, BTreeSet};

/// The longest CNAME chain followed inside one zone.
const MAX_CHAIN: usize = 8;
/// The Extended DNS Error option's code [RFC 8914 § 2].
const EDE: u16 = 15;
/// What a UDP answer may fill without EDNS [RFC 1035 § 4.2.1].
pub const PLAIN_UDP: usize = 512;
/// The largest UDP answer we send, whatever the client offers: the
/// DNS flag day 2020's 1232 octets, so no answer is fragmented.
pub const MAX_UDP: usize = 1232;

/// Why a zone file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// the zone file does not parse
    #[error("the zone file does not parse: {0}")]
    Parse(String),
    /// the zone has no SOA at its origin
    #[error("the zone {0} has no SOA at its origin")]
    NoSoa(String),
    /// the zone has no NS at its origin
    #[error("the zone {0} has no NS at its origin")]
    NoNs(String),
}

/// One zone: its origin, its SOA and every record by owner name.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    lower: LowerName,
    soa: Record,
    /// Records by owner (all types).
    names: BTreeMap<LowerName, Vec<Record>>,
    /// Names with a record below the origin, for empty non-terminals.
    owners: BTreeSet<Name>,
}

impl Zone {
    /// Parses a master file whose `$ORIGIN` (or `origin`) names the zone.
    pub fn parse(text: &str, origin: &str) -> Result<Zone, ZoneError> {
        let origin = Name::from_ascii(origin).map_err(|e| ZoneError::Parse(e.to_string()))?;
        let (origin, sets) = Parser::new(text, None, Some(origin))
            .parse()
            .map_err(|e| ZoneError::Parse(e.to_string()))?;
        let lower = LowerName::from(&origin);
        let mut names: BTreeMap<LowerName, Vec<Record>> = BTreeMap::new();
        let mut owners = BTreeSet::new();
        for (key, set) in sets {
            for r in set.records_without_rrsigs() {
                owners.insert(r.name.to_lowercase());
                names.entry(key.name.clone()).or_default().push(r.clone());
            }
        }
        let soa = names
            .get(&lower)
            .and_then(|rs| rs.iter().find(|r| r.record_type() == RecordType::SOA))
            .cloned()
            .ok_or_else(|| ZoneError::NoSoa(origin.to_string()))?;
        if !names
            .get(&lower)
            .is_some_and(|rs| rs.iter().any(|r| r.record_type() == RecordType::NS))
        {
            return Err(ZoneError::NoNs(origin.to_string()));
        }
        Ok(Zone {
            origin,
            lower,
            soa,
            names,
            owners,
        })
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.names.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn rrs(&self, name: &LowerName, t: RecordType) -> Vec<Record> {
        self.names
            .get(name)
            .map(|rs| {
                rs.iter()
                    .filter(|r| t == RecordType::ANY || r.record_type() == t)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The SOA for a negative answer: TTL the lesser of its own and its
    /// MINIMUM [RFC 2308 § 3].
    fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(s) = &soa.data {
            soa.ttl = soa.ttl.min(s.minimum);
        }
        soa
    }

    /// The closest delegation (NS below the origin) on the way to `name`,
    /// from the top down [RFC 1034 § 4.3.2 step 3b].
    fn cut(&self, name: &Name) -> Option<LowerName> {
        let top = self.origin.num_labels() as usize + 1;
        (top..=name.num_labels() as usize)
            .map(|n| LowerName::from(name.trim_to(n)))
            .find(|n| {
                self.names
                    .get(n)
                    .is_some_and(|rs| rs.iter().any(|r| r.record_type() == RecordType::NS))
            })
    }

    /// The A and AAAA of each NS target inside this zone: the glue.
    fn glue(&self, ns: &[Record]) -> Vec<Record> {
        let mut out = Vec::new();
        for r in ns {
            if let RData::NS(target) = &r.data {
                let t = LowerName::from(&target.0);
                if self.lower.zone_of(&t) {
                    out.extend(self.rrs(&t, RecordType::A));
                    out.extend(self.rrs(&t, RecordType::AAAA));
                }
            }
        }
        out
    }

    /// A positive answer's authority section: the zone's NS (unless the
    /// answer is that very set), and the addresses of every NS named in
    /// the answer and authority as additional data [RFC 1034 § 4.3.2 step
    /// 6, RFC 1035 § 3.3.11], as nsd answers.
    fn with_authority(&self, resp: &mut Message) {
        let apex_ns = |r: &Record| {
            r.record_type() == RecordType::NS && LowerName::from(&r.name) == self.lower
        };
        if !resp.answers.iter().any(apex_ns) {
            resp.authorities
                .extend(self.rrs(&self.lower, RecordType::NS));
        }
        let ns: Vec<Record> = resp
            .answers
            .iter()
            .chain(&resp.authorities)
            .filter(|r| r.record_type() == RecordType::NS)
            .cloned()
            .collect();
        // A record the answer already holds is not repeated [RFC 2181 § 5.5].
        for g in self.glue(&ns) {
            if !resp.answers.contains(&g) && !resp.additionals.contains(&g) {
                resp.additionals.push(g);
            }
        }
    }

    /// Whether some record's owner is below `name` (an empty non-terminal).
    fn has_below(&self, name: &Name) -> bool {
        let l = name.to_lowercase();
        self.owners.iter().any(|o| o != &l && l.zone_of(o))
    }
}

/// What [`Authority::answer`] did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer,
    Referral,
    NoData,
    NxDomain,
    Refused,
    FormErr,
    NotImp,
    BadVers,
    /// The answer did not fit the client's UDP size: TC set.
    Truncated,
    /// Not a DNS message, or a response: no answer at all.
    Dropped,
}

/// The zones one server holds.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    zones: Vec<Zone>,
}

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Authority {
    pub fn new(zones: Vec<Zone>) -> Authority {
        Authority { zones }
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone with the longest origin that contains `name`.
    fn zone_for(&self, name: &Name) -> Option<&Zone> {
        let l = LowerName::from(name);
        self.zones
            .iter()
            .filter(|z| z.lower.zone_of(&l))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// The answer to one query message, or `None` (with why) when it gets
    /// none: fewer than 12 octets, or a response [RFC 1035 § 4.1.1].
    pub fn answer(&self, query: &[u8], via: Transport) -> (Option<Vec<u8>>, Outcome) {
        let Admitted {
            req,
            mut resp,
            limit,
        } = match admit(query, via) {
            Ok(a) => a,
            Err(done) => return done,
        };
        let q = &req.queries[0];
        let outcome = self.resolve(q.name(), q.query_type(), &mut resp);
        fit(resp, limit, outcome)
    }

    /// Fills `resp` for `qname`/`qtype` [RFC 1034 § 4.3.2].
    fn resolve(&self, qname: &Name, qtype: RecordType, resp: &mut Message) -> Outcome {
        let Some(mut zone) = self.zone_for(qname) else {
            resp.metadata.response_code = ResponseCode::Refused;
            // Extended DNS Error 20, Not Authoritative [RFC 8914 § 4.21].
            if let Some(e) = &mut resp.edns {
                e.options_mut()
                    .insert(EdnsOption::Unknown(EDE, vec![0, 20]));
            }
            return Outcome::Refused;
        };
        let mut name = qname.clone();
        let mut chain = 0;
        loop {
            // A delegation on the way: a referral, not authoritative.
            if let Some(cut) = zone.cut(&name) {
                if !(qtype == RecordType::DS && LowerName::from(&name) == cut) {
                    // The chain's target is delegated: the CNAMEs, then
                    // the referral for the target, as nsd answers.
                    let ns = zone.rrs(&cut, RecordType::NS);
                    resp.additionals = zone.glue(&ns);
                    resp.authorities = ns;
                    if chain > 0 {
                        return Outcome::Answer;
                    }
                    resp.metadata.authoritative = false;
                    return Outcome::Referral;
                }
            }
            resp.metadata.authoritative = true;
            let l = LowerName::from(&name);
            let rrs = zone.rrs(&l, qtype);
            if !rrs.is_empty() {
                resp.answers.extend(rrs);
                zone.with_authority(resp);
                return Outcome::Answer;
            }
            let cname = zone.rrs(&l, RecordType::CNAME);
            if let Some(c) = cname.first() {
                let RData::CNAME(target) = &c.data else {
                    return Outcome::Answer;
                };
                let target = target.0.clone();
                resp.answers.push(c.clone());
                chain += 1;
                // Follow it while it stays in zones we hold [RFC 1034 §
                // 4.3.2 step 3a], as nsd does.
                match self.zone_for(&target) {
                    Some(z) if chain < MAX_CHAIN => zone = z,
                    _ => return Outcome::Answer,
                }
                name = target;
                continue;
            }
            if zone.names.contains_key(&l) || zone.has_below(&name) {
                // After a CNAME too: the SOA of where the chain ended [RFC 2308 § 2.2].
                resp.authorities.push(zone.negative_soa());
                return if chain == 0 {
                    Outcome::NoData
                } else {
                    Outcome::Answer
                };
            }
            resp.authorities.push(zone.negative_soa());
            resp.metadata.response_code = ResponseCode::NXDomain;
            return Outcome::NxDomain;
        }
    }
}

/// A query a server will answer: the request, the response it starts
/// (id, opcode, RD, the question, an OPT when the query had one) and the
/// octets the answer may fill.
pub struct Admitted {
    pub req: Message,
    pub resp: Message,
    pub limit: usize,
}

/// Checks one message as any server must before answering it: the
/// header, one question of class IN [RFC 9619], opcode QUERY, EDNS version
/// 0 [RFC 6891 § 6.1.3]; what fails gets its error answer here (or none).
pub fn admit(query: &[u8], via: Transport) -> Result<Admitted, (Option<Vec<u8>>, Outcome)> {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return Err(formerr_of_header(query)),
    };
    if req.metadata.message_type != MessageType::Query {
        return Err((None, Outcome::Dropped));
    }
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.queries = req.queries.clone();
    let mut limit = match via {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => PLAIN_UDP,
    };
    if let Some(e) = &req.edns {
        let mut opt = Edns::new();
        opt.set_max_payload(MAX_UDP as u16);
        opt.set_version(0);
        // The DO bit is copied [RFC 3225 § 3]; no other flag or option is.
        opt.set_dnssec_ok(e.flags().dnssec_ok);
        resp.edns = Some(opt);
        // [RFC 6891 § 6.1.3]: only version 0 is spoken.
        if e.version() > 0 {
            resp.metadata.response_code = ResponseCode::BADVERS;
            resp.queries.clear();
            return Err((resp.to_vec().ok(), Outcome::BadVers));
        }
        if via == Transport::Udp {
            limit = (e.max_payload() as usize).clamp(PLAIN_UDP, MAX_UDP);
        }
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return Err((resp.to_vec().ok(), Outcome::NotImp));
    }
    // One question, of class IN [RFC 9619].
    let [q] = req.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return Err((resp.to_vec().ok(), Outcome::FormErr));
    };
    if q.query_class() != DNSClass::IN {
        resp.metadata.response_code = ResponseCode::Refused;
        return Err((resp.to_vec().ok(), Outcome::Refused));
    }
    Ok(Admitted { req, resp, limit })
}

/// A FORMERR echoing the id and opcode of a message that does not parse,
/// when at least its header is there.
fn formerr_of_header(query: &[u8]) -> (Option<Vec<u8>>, Outcome) {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return (None, Outcome::Dropped);
    }
    let mut out = query[..12].to_vec();
    out[2] = 0x80 | (query[2] & 0x79); // QR, opcode, RD kept
    out[3] = ResponseCode::FormErr.low();
    out[4..12].fill(0);
    (Some(out), Outcome::FormErr)
}

/// Encodes `resp` within `limit` octets: without the additional section if
/// that is what overflows (glue is optional), else with TC set and empty
/// sections [RFC 2181 § 9].
pub fn fit(mut resp: Message, limit: usize, outcome: Outcome) -> (Option<Vec<u8>>, Outcome) {
    match resp.to_vec() {
        Ok(v) if v.len() <= limit => return (Some(v), outcome),
        Ok(_) => {}
        Err(_) => {
            resp.answers.clear();
            resp.authorities.clear();
            resp.additionals.clear();
            resp.metadata.response_code = ResponseCode::ServFail;
            return (resp.to_vec().ok(), outcome);
        }
    }
    resp.additionals.clear();
    if let Ok(v) = resp.to_vec() {
        if v.len() <= limit {
            return (Some(v), outcome);
        }
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.metadata.truncation = true;
    (resp.to_vec().ok(), Outcome::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "$TTL 3600
@      IN SOA ns1 hostmaster 2026111101 7200 3600 1209600 300
@      IN NS  ns1
ns1    IN A   198.18.1.2
www    600 IN CNAME www.geektime.com.gslb.d11cloud.com.
loop1  IN CNAME loop2
loop2  IN CNAME loop1
a.b.c  IN A   192.0.2.7
sub    IN NS  ns.sub
ns.sub IN A   198.18.1.9
";

    fn authority() -> Authority {
        Authority::new(vec![Zone::parse(SHOP, "geektime.com.").unwrap()])
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn ask(q: &str) -> (Message, Outcome) {
        let (out, o) = authority().answer(&hex(q), Transport::Udp);
        (Message::from_vec(&out.expect("an answer")).unwrap(), o)
    }

    // /usr/bin/python3 -c "from scapy.all import DNS,DNSQR; print(bytes(DNS(id=0x1234,rd=0,
    //   qd=DNSQR(qname='www.geektime.com',qtype='A'))).hex())"
    const WWW_A: &str = "12340000000100000000000003777777086765656b74696d6503636f6d0000010001";
    // … qd=DNSQR(qname='nope.geektime.com',qtype='A')
    const NOPE_A: &str = "123400000001000000000000046e6f7065086765656b74696d6503636f6d0000010001";
    // … qd=DNSQR(qname='x.example',qtype='A')
    const OUTSIDE_A: &str = "1234000000010000000000000178076578616d706c650000010001";
    // … qd=DNSQR(qname='www.geektime.com',qtype='A'), ar=DNSRROPT(rclass=1232, version=1)
    const WWW_A_EDNS1: &str =
        "12340000000100000000000103777777086765656b74696d6503636f6d000001000100002904d0000180000000";

    #[test]
    fn a_cname_out_of_the_zones_held_is_the_whole_authoritative_answer() {
        let (m, o) = ask(WWW_A);
        assert_eq!(o, Outcome::Answer);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(m.answers[0].ttl, 600);
    }

    #[test]
    fn a_missing_name_is_nxdomain_with_the_soa_at_its_minimum() {
        let (m, o) = ask(NOPE_A);
        assert_eq!(o, Outcome::NxDomain);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(
            m.authorities[0].ttl, 300,
            "min(SOA TTL, MINIMUM) [RFC 2308 § 3]"
        );
    }

    #[test]
    fn a_name_outside_every_zone_is_refused() {
        let (m, o) = ask(OUTSIDE_A);
        assert_eq!(o, Outcome::Refused);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn an_unknown_edns_version_gets_badvers_with_version_0() {
        let (m, o) = ask(WWW_A_EDNS1);
        assert_eq!(o, Outcome::BadVers);
        // 16 is BADVERS with an OPT record (hickory reads it as BADSIG, the same number).
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    }

    #[test]
    fn a_cname_loop_ends_after_the_chain_limit() {
        let a = authority();
        let q = Message::from_vec(&hex(WWW_A)).unwrap();
        let mut resp = q.clone();
        resp.answers.clear();
        let name = Name::from_ascii("loop1.geektime.com.").unwrap();
        let o = a.resolve(&name, RecordType::A, &mut resp);
        assert_eq!(o, Outcome::Answer);
        assert_eq!(resp.answers.len(), MAX_CHAIN);
    }

    #[test]
    fn a_name_below_a_delegation_is_referred_with_glue_and_without_aa() {
        let a = authority();
        let mut resp = Message::from_vec(&hex(WWW_A)).unwrap();
        let name = Name::from_ascii("www.sub.geektime.com.").unwrap();
        assert_eq!(
            a.resolve(&name, RecordType::A, &mut resp),
            Outcome::Referral
        );
        assert!(!resp.metadata.authoritative);
        assert_eq!(resp.authorities[0].record_type(), RecordType::NS);
        assert_eq!(
            resp.additionals[0].data.ip_addr(),
            Some("198.18.1.9".parse().unwrap())
        );
    }

    #[test]
    fn an_empty_non_terminal_is_nodata_not_nxdomain() {
        let a = authority();
        let mut resp = Message::from_vec(&hex(WWW_A)).unwrap();
        let name = Name::from_ascii("b.c.geektime.com.").unwrap();
        assert_eq!(a.resolve(&name, RecordType::A, &mut resp), Outcome::NoData);
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    }

    #[test]
    fn bad_messages_get_formerr_or_nothing_never_a_panic() {
        let a = authority();
        // QDCOUNT 2: scapy's question above twice, the header's count by hand.
        let two = format!("123400000002000000000000{}{}", &WWW_A[24..], &WWW_A[24..]);
        let (out, o) = a.answer(&hex(&two), Transport::Udp);
        assert_eq!(o, Outcome::FormErr);
        assert_eq!(out.unwrap()[3] & 0x0f, 1);
        // QDCOUNT 0.
        assert_eq!(
            a.answer(&hex("123400000000000000000000"), Transport::Udp).1,
            Outcome::FormErr
        );
        // A compression pointer to itself (offset 12) as the question's name.
        let (out, o) = a.answer(&hex("123400000001000000000000c00c00010001"), Transport::Udp);
        assert_eq!(o, Outcome::FormErr);
        assert_eq!(&out.unwrap()[..2], &[0x12, 0x34]);
        // A label of 64 octets.
        let long = format!(
            "123400000001000000000000{}{}0000010001",
            "40",
            "61".repeat(64)
        );
        assert_eq!(a.answer(&hex(&long), Transport::Udp).1, Outcome::FormErr);
        // A name of 321 octets (five 63-octet labels), over 255 [RFC 1035 § 2.3.4].
        let name = format!("{}00", format!("3f{}", "61".repeat(63)).repeat(5));
        let over = format!("123400000001000000000000{name}00010001");
        assert_eq!(a.answer(&hex(&over), Transport::Udp).1, Outcome::FormErr);
        // A question cut short.
        assert_eq!(
            a.answer(&hex(&WWW_A[..40]), Transport::Udp).1,
            Outcome::FormErr
        );
        // Shorter than a header, and a response: no answer at all.
        assert_eq!(
            a.answer(&[0x12, 0x34, 0], Transport::Udp),
            (None, Outcome::Dropped)
        );
        let mut resp = hex(WWW_A);
        resp[2] |= 0x80;
        assert_eq!(a.answer(&resp, Transport::Udp).1, Outcome::Dropped);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = authority().answer(&bytes, Transport::Udp);
        }
    }
}
