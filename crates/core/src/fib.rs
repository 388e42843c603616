//! A forwarding information base: longest-prefix match over IPv4 prefixes.
//!
//! DIR-24-8 (Gupta, Lin and McKeown, "Routing Lookups in Hardware at Memory
//! Access Speeds", INFOCOM 1998; DPDK's `rte_lpm`), cut to what memory
//! allows. A table of 2^24 entries, indexed by an address's top 24 bits,
//! answers the prefixes of /16 to /24 in one read; its entry also says which
//! lengths from /25 to /32 have a prefix inside that /24, and those are
//! probed first, each in its length's hash map, the longest first. Prefixes
//! shorter than /16 stay out of the table (a /8 would write 65,536 entries, a
//! default route all of them): they are probed in their maps, longest first,
//! when the table has nothing.
//!
//! Memory: the table is one zeroed allocation of 64 MiB that the kernel
//! backs only where it is written, a 4 KiB page per 1,024 /24s holding a
//! route (256 KiB for 10.0.0.0/8 full of them; a 2 MiB huge page instead
//! when transparent huge pages are `always`), allocated with the first
//! prefix of /16 or longer. Every route is also in its length's map (the
//! network → an index into the distinct values), which `get` and `iter`
//! read and from which a removed prefix's cover is restored.

use crate::hash::FastMap;
use d11_wire::addr::prefix_mask;
use d11_wire::Ipv4Cidr;
use std::fmt;
use std::hash::Hash;
use std::net::Ipv4Addr;

/// The shortest prefix length the table answers.
const TABLE_MIN: u8 = 16;
/// A table entry: bits 31–24, which of the lengths /25 to /32 have a prefix
/// inside the entry's /24 (bit k: /25+k); bits 23–20, the length of the
/// longest /16 to /24 covering it less 15 (0: none); bits 19–0, that
/// prefix's value (an index into [`Values`]) or [`IN_MAP`].
type Entry = u32;
const LONGER: u32 = 0xff00_0000;
const LEN_SHIFT: u32 = 20;
const VALUE: u32 = 0x000f_ffff;
/// The value is not in the entry (more distinct values than its bits
/// hold): the prefix's map has it.
const IN_MAP: u32 = VALUE;

/// The length of the /16 to /24 an entry holds, 0 if none.
fn entry_len(e: Entry) -> u8 {
    match (e >> LEN_SHIFT) & 0xf {
        0 => 0,
        l => l as u8 + TABLE_MIN - 1,
    }
}

/// The low 24 bits of an entry for a /16 to /24 whose value is `value`.
fn entry(len: u8, value: u32) -> Entry {
    (u32::from(len + 1 - TABLE_MIN) << LEN_SHIFT) | value.min(IN_MAP)
}

fn cidr(net: u32, len: u8) -> Option<Ipv4Cidr> {
    Ipv4Cidr::new(Ipv4Addr::from(net), len)
}

/// The distinct values of the routes, each with how many routes hold it:
/// a table entry holds an index, and a FIB's many routes few next hops.
#[derive(Debug)]
struct Values<T> {
    slots: Vec<Option<(T, u32)>>,
    index: FastMap<T, u32>,
    free: Vec<u32>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values {
            slots: Vec::new(),
            index: FastMap::default(),
            free: Vec::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Values<T> {
    /// One more route holds `v`: its index.
    fn hold(&mut self, v: T) -> u32 {
        if let Some(&i) = self.index.get(&v) {
            if let Some((_, n)) = &mut self.slots[i as usize] {
                *n += 1;
            }
            return i;
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.slots[i as usize] = Some((v.clone(), 1));
        self.index.insert(v, i);
        i
    }

    /// One route fewer holds the value at `i`: the value.
    fn release(&mut self, i: u32) -> Option<T> {
        let slot = self.slots.get_mut(i as usize)?;
        let (v, n) = slot.as_mut()?;
        *n -= 1;
        if *n > 0 {
            return Some(v.clone());
        }
        let (v, _) = slot.take()?;
        self.index.remove(&v);
        self.free.push(i);
        Some(v)
    }
}

impl<T> Values<T> {
    #[inline]
    fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.as_ref().map(|(v, _)| v)
    }
}

/// Longest-prefix-match table from prefixes to `T` (a next hop, an action…).
pub struct Fib<T> {
    /// Every route, by prefix length: network address → index into `values`.
    maps: [FastMap<u32, u32>; 33],
    /// Bit `l` set: `maps[l]` is not empty.
    lengths: u64,
    values: Values<T>,
    /// By the top 24 bits of an address; made with the first prefix of
    /// [`TABLE_MIN`] or longer.
    table: Option<Box<[Entry]>>,
}

impl<T> Default for Fib<T> {
    fn default() -> Self {
        Fib {
            maps: std::array::from_fn(|_| FastMap::default()),
            lengths: 0,
            values: Values::default(),
            table: None,
        }
    }
}

impl<T> fmt::Debug for Fib<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fib")
            .field("routes", &self.len())
            .field("lengths", &format_args!("{:#x}", self.lengths))
            .field("table", &self.table.is_some())
            .finish()
    }
}

impl<T: Clone + Eq + Hash> Fib<T> {
    pub fn new() -> Fib<T> {
        Fib::default()
    }

    /// Adds or replaces the route for `prefix` (host bits ignored); returns the old value.
    pub fn insert(&mut self, prefix: Ipv4Cidr, value: T) -> Option<T> {
        let len = prefix.prefix_len();
        let net = u32::from(prefix.network().addr());
        let v = self.values.hold(value);
        let old = self.maps[usize::from(len)].insert(net, v);
        self.lengths |= 1 << len;
        if len >= TABLE_MIN {
            // Zeroed pages the kernel maps only when written.
            let table = self
                .table
                .get_or_insert_with(|| vec![0; 1 << 24].into_boxed_slice());
            let first = (net >> 8) as usize;
            if len <= 24 {
                let new = entry(len, v);
                for e in &mut table[first..first + (1 << (24 - len))] {
                    if entry_len(*e) <= len {
                        *e = (*e & LONGER) | new;
                    }
                }
            } else {
                table[first] |= 1 << (24 + len - 25);
            }
        }
        old.and_then(|i| self.values.release(i))
    }

    pub fn remove(&mut self, prefix: Ipv4Cidr) -> Option<T> {
        let len = prefix.prefix_len();
        let net = u32::from(prefix.network().addr());
        let Fib {
            maps,
            lengths,
            values,
            table,
        } = self;
        let v = maps[usize::from(len)].remove(&net)?;
        if maps[usize::from(len)].is_empty() {
            *lengths &= !(1 << len);
        }
        if let (Some(table), true) = (table, len >= TABLE_MIN) {
            let first = (net >> 8) as usize;
            if len <= 24 {
                // Where it was the longest, its longest cover from the table's
                // lengths takes over (a shorter one is probed in its map).
                let cover = (TABLE_MIN..len)
                    .rev()
                    .find_map(|l| {
                        let i = maps[usize::from(l)].get(&(net & prefix_mask(l)))?;
                        Some(entry(l, *i))
                    })
                    .unwrap_or(0);
                for e in &mut table[first..first + (1 << (24 - len))] {
                    if entry_len(*e) == len {
                        *e = (*e & LONGER) | cover;
                    }
                }
            } else {
                // The last of its length inside the /24: no need to probe.
                let step = 1u32 << (32 - len);
                let base = net & prefix_mask(24);
                if (0..1u32 << (len - 24)).all(|k| !maps[usize::from(len)].contains_key(&(base + k * step))) {
                    table[first] &= !(1 << (24 + len - 25));
                }
            }
        }
        values.release(v)
    }
}

impl<T> Fib<T> {
    /// The value for exactly `prefix` (host bits ignored).
    pub fn get(&self, prefix: Ipv4Cidr) -> Option<&T> {
        let net = u32::from(prefix.network().addr());
        let i = self.maps[usize::from(prefix.prefix_len())].get(&net)?;
        self.values.get(*i)
    }

    /// The route of length `len` covering `a`, if there is one.
    #[inline]
    fn probe(&self, a: u32, len: u8) -> Option<(Ipv4Cidr, &T)> {
        let net = a & prefix_mask(len);
        let i = self.maps[usize::from(len)].get(&net)?;
        Some((cidr(net, len)?, self.values.get(*i)?))
    }

    /// The most specific route covering `ip`.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<(Ipv4Cidr, &T)> {
        let a = u32::from(ip);
        if let Some(table) = &self.table {
            let e = table[(a >> 8) as usize];
            let mut longer = e >> 24;
            while longer != 0 {
                let k = 31 - longer.leading_zeros();
                if let Some(r) = self.probe(a, 25 + k as u8) {
                    return Some(r);
                }
                longer &= !(1 << k);
            }
            let len = entry_len(e);
            if len != 0 {
                if e & VALUE == IN_MAP {
                    return self.probe(a, len);
                }
                return Some((cidr(a & prefix_mask(len), len)?, self.values.get(e & VALUE)?));
            }
        }
        let mut shorter = self.lengths & ((1 << TABLE_MIN) - 1);
        while shorter != 0 {
            let len = 63 - shorter.leading_zeros();
            if let Some(r) = self.probe(a, len as u8) {
                return Some(r);
            }
            shorter &= !(1 << len);
        }
        None
    }

    pub fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths == 0
    }

    /// Every route, longest prefixes first.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Cidr, &T)> {
        (0..=32u8).rev().flat_map(move |len| {
            self.maps[usize::from(len)]
                .iter()
                .filter_map(move |(net, i)| Some((cidr(*net, len)?, self.values.get(*i)?)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_default_catches_the_rest() {
        let mut f = Fib::new();
        f.insert(c("0.0.0.0/0"), "default");
        f.insert(c("192.0.2.0/24"), "24");
        f.insert(c("192.0.2.4/30"), "30");
        f.insert(c("192.0.2.6/32"), "32");
        let l = |s: &str| *f.lookup(s.parse().unwrap()).unwrap().1;
        assert_eq!(l("192.0.2.6"), "32");
        assert_eq!(l("192.0.2.5"), "30");
        assert_eq!(l("192.0.2.200"), "24");
        assert_eq!(l("8.8.8.8"), "default");
        assert_eq!(
            f.lookup("192.0.2.5".parse().unwrap()).unwrap().0,
            c("192.0.2.4/30")
        );
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn remove_and_replace() {
        let mut f = Fib::new();
        assert_eq!(f.insert(c("10.0.0.9/8"), 1), None);
        assert_eq!(f.insert(c("10.0.0.0/8"), 2), Some(1));
        assert!(f.lookup("192.0.2.1".parse().unwrap()).is_none());
        assert_eq!(f.remove(c("10.1.2.3/8")), Some(2));
        assert!(f.is_empty());
    }

    #[test]
    fn a_removed_prefix_gives_its_addresses_back_to_the_next_longest_cover() {
        let mut f = Fib::new();
        f.insert(c("10.0.0.0/8"), 8);
        f.insert(c("10.1.0.0/16"), 16);
        f.insert(c("10.1.0.0/20"), 20);
        f.insert(c("10.1.2.0/24"), 24);
        f.insert(c("10.1.2.128/25"), 25);
        let l = |f: &Fib<i32>, s: &str| f.lookup(s.parse().unwrap()).map(|(p, v)| (p, *v));
        assert_eq!(l(&f, "10.1.2.200"), Some((c("10.1.2.128/25"), 25)));
        f.remove(c("10.1.2.128/25"));
        assert_eq!(l(&f, "10.1.2.200"), Some((c("10.1.2.0/24"), 24)));
        f.remove(c("10.1.2.0/24"));
        assert_eq!(l(&f, "10.1.2.200"), Some((c("10.1.0.0/20"), 20)));
        f.remove(c("10.1.0.0/20"));
        assert_eq!(l(&f, "10.1.2.200"), Some((c("10.1.0.0/16"), 16)));
        f.remove(c("10.1.0.0/16"));
        assert_eq!(l(&f, "10.1.2.200"), Some((c("10.0.0.0/8"), 8)));
    }

    #[test]
    fn more_distinct_values_than_an_entry_holds_are_read_from_the_maps() {
        let mut f = Fib::new();
        let n = IN_MAP + 2;
        for i in 0..n {
            f.insert(cidr(0x0a00_0000 + (i << 8), 24).unwrap(), i);
        }
        for i in [0, 1, IN_MAP - 1, IN_MAP, IN_MAP + 1] {
            let (p, v) = f.lookup(Ipv4Addr::from(0x0a00_0001 + (i << 8))).unwrap();
            assert_eq!((u32::from(p.addr()), *v), (0x0a00_0000 + (i << 8), i));
        }
    }

    /// What a FIB answers, by brute force: the longest of the prefixes that
    /// cover the address.
    fn brute(routes: &std::collections::BTreeMap<(u8, u32), u8>, a: u32) -> Option<(Ipv4Cidr, u8)> {
        routes
            .iter()
            .filter(|((len, net), _)| a & prefix_mask(*len) == *net)
            .max_by_key(|((len, _), _)| *len)
            .map(|((len, net), v)| (cidr(*net, *len).unwrap(), *v))
    }

    /// An address inside 10.0.0.0/14, half of them inside 10.0.0.0/21,
    /// so that prefixes nest.
    fn address() -> impl Strategy<Value = u32> {
        (0u32..1 << 18, any::<bool>())
            .prop_map(|(x, near)| 0x0a00_0000 | if near { x & 0x7ff } else { x })
    }

    fn prefix() -> impl Strategy<Value = Ipv4Cidr> {
        (address(), 0u8..=32).prop_map(|(a, len)| cidr(a, len).unwrap().network())
    }

    proptest! {
        #[test]
        fn answers_as_a_search_of_every_prefix_after_inserts_and_removes(
            ops in proptest::collection::vec((prefix(), 0u8..4, any::<bool>()), 1..80),
            probes in proptest::collection::vec(address(), 64),
        ) {
            let mut f = Fib::new();
            let mut model = std::collections::BTreeMap::new();
            let mut inserted = vec![];
            for (i, (p, v, remove)) in ops.into_iter().enumerate() {
                let key = (p.prefix_len(), u32::from(p.addr()));
                if remove && !inserted.is_empty() {
                    // An earlier prefix, so that removals hit.
                    let q: Ipv4Cidr = inserted[i % inserted.len()];
                    let key = (q.prefix_len(), u32::from(q.addr()));
                    prop_assert_eq!(f.remove(q), model.remove(&key));
                } else {
                    prop_assert_eq!(f.insert(p, v), model.insert(key, v));
                    inserted.push(p);
                }
                prop_assert_eq!(f.len(), model.len());
            }
            for x in probes {
                for a in [x, x & !0xff, x ^ 0x0100_0000] {
                    let got = f.lookup(Ipv4Addr::from(a)).map(|(p, v)| (p, *v));
                    prop_assert_eq!(got, brute(&model, a));
                }
            }
            let mut all: Vec<((u8, u32), u8)> =
                f.iter().map(|(p, v)| ((p.prefix_len(), u32::from(p.addr())), *v)).collect();
            all.sort();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }
}
