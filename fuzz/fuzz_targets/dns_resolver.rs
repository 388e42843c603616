//! The resolver's iteration (crates/apps/src/dns/resolver.rs) fed an
//! arbitrary reply to its first query, then a second, and the stub's reading
//! of an answer (dns/stub.rs): never a panic, and the lookup ends (an
//! answer or a next query), never loops.
#![no_main]
use d11_apps::dns::resolver::{Cache, Hint, Lookup, Next};
use d11_apps::dns::stub::read_answer;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let hints = [Hint {
        name: Name::from_ascii("a.root.lab.").expect("name"),
        addr: "198.18.0.2".parse().expect("addr"),
    }];
    let name = Name::from_ascii("www.geektime.com.").expect("name");
    let mut cache = Cache::new(1 << 16);
    let mut l = Lookup::new(name.clone(), RecordType::A);
    let (a, b) = data.split_at(data.len() / 2);
    for reply in [a, b] {
        match l.next(now, &mut cache, &hints) {
            Next::Ask { .. } => l.on_reply(now, &mut cache, reply),
            Next::Done(_) => break,
        }
    }
    let _ = l.next(now, &mut cache, &hints);
    if let Ok(m) = Message::from_vec(data) {
        let _ = read_answer(&name, &m);
    }
});
