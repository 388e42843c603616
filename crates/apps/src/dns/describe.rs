//! One line per DNS message, as `d11 demo` tells chapter 3 from a capture:
//! what was asked, and what came back — an answer, a referral (RFC 1034
//! § 4.3.2: NS of a zone below, with glue), a negative answer (RFC 2308:
//! NXDOMAIN or no data, with the SOA) or an error.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

/// `msg` in one line, `None` when it is not a DNS message.
pub fn describe(msg: &[u8]) -> Option<String> {
    let m = Message::from_vec(msg).ok()?;
    let q = m.queries.first();
    let asked = q.map_or("(no question)".to_string(), |q| {
        format!("{} {}", q.name(), q.query_type())
    });
    if m.metadata.message_type == MessageType::Query {
        let rd = if m.metadata.recursion_desired {
            ", recursion desired"
        } else {
            ""
        };
        return Some(format!("query {asked}{rd}"));
    }
    let aa = if m.metadata.authoritative {
        " (authoritative)"
    } else {
        ""
    };
    let rcode = m.metadata.response_code;
    let soa = || {
        m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some(format!(
                ", SOA of {} (negative TTL {} s)",
                r.name,
                s.minimum.min(r.ttl)
            )),
            _ => None,
        })
    };
    Some(match rcode {
        ResponseCode::NoError if !m.answers.is_empty() => {
            format!("answer{aa}: {}", rrsets(&m.answers))
        }
        ResponseCode::NoError
            if m.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::NS) =>
        {
            let ns: Vec<&Record> = (m.authorities.iter())
                .filter(|r| r.record_type() == RecordType::NS)
                .collect();
            let glue: Vec<&Record> = (m.additionals.iter())
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                .collect();
            let mut s = format!(
                "referral to {}",
                rrsets(&ns.into_iter().cloned().collect::<Vec<_>>())
            );
            if !glue.is_empty() {
                s += &format!(
                    " (glue {})",
                    rrsets(&glue.into_iter().cloned().collect::<Vec<_>>())
                );
            }
            s
        }
        ResponseCode::NoError => format!("no data for {asked}{aa}{}", soa().unwrap_or_default()),
        ResponseCode::NXDomain => format!("NXDOMAIN{aa}{}", soa().unwrap_or_default()),
        other => other.to_str().to_string(),
    })
}

/// Records in order, one RRset (name, TTL, type) at a time:
/// `NAME TTL TYPE DATA DATA…; …`.
fn rrsets(records: &[Record]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<(String, u32, RecordType)> = None;
    for r in records {
        let key = (r.name.to_string(), r.ttl, r.record_type());
        if last.as_ref() == Some(&key) {
            if let Some(s) = out.last_mut() {
                *s += &format!(" {}", r.data);
            }
        } else {
            out.push(format!("{} {} {} {}", key.0, key.1, key.2, r.data));
            last = Some(key);
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        d11_wire::hex(s.trim())
    }

    // Made by scapy 2.5.0 (/usr/bin/python3, from scapy.all import *):
    // bytes(DNS(id=2,qr=1,qd=DNSQR(qname='www.geektime.com',qtype='A'),
    //   ns=DNSRR(rrname='com.',type='NS',ttl=172800,rdata='a.gtld.lab.'),
    //   ar=DNSRR(rrname='a.gtld.lab.',type='A',ttl=172800,rdata='198.18.0.18'))).hex()
    const REFERRAL: &str = include_str!("fixtures/referral.hex");
    // bytes(DNS(id=3,qr=1,aa=1,rcode=3,qd=DNSQR(qname='nope.geektime.com',qtype='A'),
    //   ns=DNSRRSOA(rrname='geektime.com.',ttl=300,mname='ns1.geektime.com.',
    //   rname='hostmaster.geektime.com.',serial=1,refresh=3600,retry=600,
    //   expire=604800,minimum=300))).hex()
    const NXDOMAIN: &str = include_str!("fixtures/nxdomain.hex");
    // bytes(DNS(id=4,rd=1,qd=DNSQR(qname='www.geektime.com',qtype='A'))).hex()
    const QUERY: &str = "00040100000100000000000003777777086765656b74696d6503636f6d0000010001";

    #[test]
    fn queries_referrals_answers_and_negative_answers_read_as_one_line() {
        assert_eq!(
            describe(&hex(QUERY)).unwrap(),
            "query www.geektime.com. A, recursion desired"
        );
        assert_eq!(
            describe(&hex(REFERRAL)).unwrap(),
            "referral to com. 172800 NS a.gtld.lab. (glue a.gtld.lab. 172800 A 198.18.0.18)"
        );
        assert_eq!(
            describe(&hex(NXDOMAIN)).unwrap(),
            "NXDOMAIN (authoritative), SOA of geektime.com. (negative TTL 300 s)"
        );
        // The stub's fixture: a resolver's answer with a CNAME chain.
        assert_eq!(
            describe(&hex(include_str!("fixtures/stub_answer.hex"))).unwrap(),
            "answer: www.geektime.com. 590 CNAME www.geektime.com.gslb.d11cloud.com.; \
             www.geektime.com.gslb.d11cloud.com. 50 A 203.0.113.24 203.0.113.25"
        );
        assert_eq!(describe(b"\x00\x01"), None);
    }
}
