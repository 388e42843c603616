//! A forwarding information base: longest-prefix match over IPv4 prefixes.
//!
//! DIR-24-8 (Gupta, Lin and McKeown, "Routing Lookups in Hardware at Memory
//! Access Speeds", INFOCOM 1998; DPDK's `rte_lpm`), cut to what memory
//! allows. A table of 2^24 entries, indexed by an address's top 24 bits,
//! answers the prefixes of /16 to /24 in one read. A /24 that holds longer
//! prefixes points instead to a group of 2^d two-octet entries, d its
//! longest prefix's length less 24 (2 for a /26, 256 for a /32; DPDK's
//! groups are always 256 four-octet ones): a second read. Prefixes shorter
//! than /16 stay out of the table (a /8 would write 65,536 entries, a
//! default route all of them): they are probed in per-length hash maps,
//! longest first, when the table has nothing.
//!
//! Memory: the table is one zeroed allocation of 64 MiB that the kernel
//! backs only where it is written, a 4 KiB page per 1,024 /24s holding a
//! route (256 KiB for 10.0.0.0/8 full of them; a 2 MiB huge page instead
//! when transparent huge pages are `always`), allocated with the first
//! prefix of /16 or longer. A /16 or longer is in its length's map (the
//! network → an index into the distinct values) only where the table cannot
//! answer it: hidden under longer prefixes in all it spans, or with a value
//! whose index its entries do not hold. Otherwise the table is its only
//! record: `get` reads its entries, and a removed prefix's entries go to
//! the longest cover found there or in the maps.

use crate::hash::FastMap;
use d11_wire::addr::prefix_mask;
use d11_wire::Ipv4Cidr;
use std::fmt;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::ops::Range;

/// The shortest prefix length the table answers.
const TABLE_MIN: u8 = 16;
/// A table entry. Without [`GROUP`]: bits 23–20, the length of the longest
/// /16 to /24 covering the entry's /24 less 15 (0: none); bits 19–0, that
/// prefix's value (an index into [`Values`]) or [`IN_MAP`]. With it: bits
/// 30–28, the group's depth less one; bits 23–0, its index among the groups
/// of that depth, whose first two entries hold what the entry would.
type Entry = u32;
const GROUP: u32 = 0x8000_0000;
const LEN_SHIFT: u32 = 20;
const VALUE: u32 = 0x000f_ffff;
/// The value is not in the entry (more distinct values than its bits
/// hold): the prefix's map has it.
const IN_MAP: u32 = VALUE;
/// A group's entry: bits 15–12, the length of the longest prefix covering
/// it less 24 (0: none longer than /24); bits 11–0, its value or
/// [`SUB_IN_MAP`].
type Sub = u16;
const SUB_VALUE: u16 = 0x0fff;
const SUB_IN_MAP: u16 = SUB_VALUE;
/// Group entries before the sub-entries: the /24's own entry, low half first.
const HEADER: usize = 2;

/// The length of the /16 to /24 an entry holds, 0 if none.
fn entry_len(e: Entry) -> u8 {
    match (e >> LEN_SHIFT) & 0xf {
        0 => 0,
        l => l as u8 + TABLE_MIN - 1,
    }
}

/// An entry for a /16 to /24 whose value is `value`.
fn entry(len: u8, value: u32) -> Entry {
    (u32::from(len + 1 - TABLE_MIN) << LEN_SHIFT) | value.min(IN_MAP)
}

/// The length of the prefix a group's entry holds, 0 if none.
fn sub_len(s: Sub) -> u8 {
    match s >> 12 {
        0 => 0,
        l => l as u8 + 24,
    }
}

/// A group's entry for a /25 to /32 whose value is `value`.
fn sub(len: u8, value: u32) -> Sub {
    (u16::from(len - 24) << 12) | value.min(u32::from(SUB_IN_MAP)) as u16
}

/// The span of a group of depth `d`: its header and 2^d entries.
fn stride(d: u8) -> usize {
    HEADER + (1 << d)
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

/// Where the table answers a prefix of /16 or longer: `n` slots from
/// `first` of the /24 entries (`group: None`, lengths 16 to 24) or of its
/// /24's group (depth and start; lengths 25 to 32).
#[derive(Clone, Copy)]
struct Span {
    group: Option<(u8, usize)>,
    first: usize,
    n: usize,
}

impl Span {
    fn slots(self) -> Range<usize> {
        self.first..self.first + self.n
    }

    /// Whether a slot of this level holds the value index `v` itself.
    fn holds(self, v: u32) -> bool {
        v < match self.group {
            None => IN_MAP,
            Some(_) => u32::from(SUB_IN_MAP),
        }
    }
}

/// The DIR-24-8 part: the table and the groups of the /24s that hold
/// longer prefixes.
struct Table {
    entries: Box<[Entry]>,
    /// Bit `b`: an entry of the `b`th /16 was written (never cleared), so
    /// that [`Table::visible`] reads only those.
    written: Box<[u64]>,
    /// Groups of depth `k + 1` at `groups[k]`, each [`stride`] long …
    groups: [Vec<Sub>; 8],
    /// … and the indices of those free.
    free: [Vec<u32>; 8],
}

/// A group entry's depth and where its group starts.
fn group_at(e: Entry) -> (u8, usize) {
    let d = ((e >> 28) & 7) as u8 + 1;
    (d, (e & 0x00ff_ffff) as usize * stride(d))
}

impl Table {
    fn new() -> Table {
        Table {
            // Zeroed pages the kernel maps only when written.
            entries: vec![0; 1 << 24].into_boxed_slice(),
            written: vec![0; 1 << 10].into_boxed_slice(),
            groups: Default::default(),
            free: Default::default(),
        }
    }

    /// The /16 to /24 entry of the `i`th /24 (its group's header if it has one).
    fn own(&self, i: usize) -> Entry {
        let e = self.entries[i];
        if e & GROUP == 0 {
            return e;
        }
        let (d, at) = group_at(e);
        let g = &self.groups[usize::from(d - 1)];
        u32::from(g[at]) | (u32::from(g[at + 1]) << 16)
    }

    fn put(&mut self, i: usize, e: Entry) {
        self.entries[i] = e;
        self.written[i >> 14] |= 1 << ((i >> 8) & 63);
    }

    fn set_own(&mut self, i: usize, own: Entry) {
        let e = self.entries[i];
        if e & GROUP == 0 {
            self.put(i, own);
            return;
        }
        let (d, at) = group_at(e);
        let g = &mut self.groups[usize::from(d - 1)];
        g[at] = own as u16;
        g[at + 1] = (own >> 16) as u16;
    }

    /// The `i`th /24's group, made or deepened to depth `d` at least (each
    /// entry of a shallower one copied over the addresses it spans): its
    /// depth and start.
    fn deepen(&mut self, i: usize, d: u8) -> (u8, usize) {
        let e = self.entries[i];
        let old = (e & GROUP != 0).then(|| group_at(e));
        if let Some((od, at)) = old.filter(|(od, _)| *od >= d) {
            return (od, at);
        }
        let own = self.own(i);
        let subs: Vec<Sub> = match old {
            Some((od, at)) => {
                let g = &self.groups[usize::from(od - 1)];
                let from = &g[at + HEADER..at + stride(od)];
                (0..1usize << d).map(|j| from[j >> (d - od)]).collect()
            }
            None => vec![0; 1 << d],
        };
        if let Some((od, at)) = old {
            self.free[usize::from(od - 1)].push((at / stride(od)) as u32);
        }
        let k = usize::from(d - 1);
        let g = &mut self.groups[k];
        let idx = self.free[k].pop().unwrap_or_else(|| {
            g.resize(g.len() + stride(d), 0);
            (g.len() / stride(d) - 1) as u32
        });
        let at = idx as usize * stride(d);
        g[at] = own as u16;
        g[at + 1] = (own >> 16) as u16;
        g[at + HEADER..at + stride(d)].copy_from_slice(&subs);
        self.put(i, GROUP | (u32::from(d - 1) << 28) | idx);
        (d, at)
    }

    fn subs_mut(&mut self, d: u8, at: usize) -> &mut [Sub] {
        &mut self.groups[usize::from(d - 1)][at + HEADER..at + stride(d)]
    }

    /// The `i`th /24 holds no longer prefix: its group goes.
    fn ungroup(&mut self, i: usize) {
        let own = self.own(i);
        let (d, at) = group_at(self.entries[i]);
        self.free[usize::from(d - 1)].push((at / stride(d)) as u32);
        self.put(i, own);
    }

    /// Where `net`/`len` (16 or longer) is answered: a /25 or longer needs
    /// its /24's group, deep enough.
    fn span(&self, net: u32, len: u8) -> Option<Span> {
        let i = (net >> 8) as usize;
        if len <= 24 {
            return Some(Span {
                group: None,
                first: i,
                n: 1 << (24 - len),
            });
        }
        let e = self.entries[i];
        if e & GROUP == 0 {
            return None;
        }
        let (d, at) = group_at(e);
        (d + 24 >= len).then(|| Span {
            group: Some((d, at)),
            first: ((net & 0xff) >> (8 - d)) as usize,
            n: 1 << (d + 24 - len),
        })
    }

    /// The length (0: none) and value of slot `k` of `group`'s level.
    fn slot(&self, group: Option<(u8, usize)>, k: usize) -> (u8, u32) {
        match group {
            None => {
                let e = self.own(k);
                (entry_len(e), e & VALUE)
            }
            Some((d, at)) => {
                let s = self.groups[usize::from(d - 1)][at + HEADER + k];
                (sub_len(s), u32::from(s & SUB_VALUE))
            }
        }
    }

    fn set_slot(&mut self, group: Option<(u8, usize)>, k: usize, len: u8, v: u32) {
        match group {
            None => self.set_own(k, if len == 0 { 0 } else { entry(len, v) }),
            Some((d, at)) => self.subs_mut(d, at)[k] = if len == 0 { 0 } else { sub(len, v) },
        }
    }

    /// The value index of `net`/`len` (16 or longer) where a slot holds it.
    fn find(&self, net: u32, len: u8) -> Option<u32> {
        let s = self.span(net, len)?;
        s.slots().find_map(|k| {
            let (l, v) = self.slot(s.group, k);
            (l == len && s.holds(v)).then_some(v)
        })
    }

    /// Every prefix whose value a slot holds: network, length, value index.
    fn visible(&self) -> Vec<(u32, u8, u32)> {
        let mut out = Vec::new();
        // A prefix's slots are one run, broken only by longer prefixes':
        // the last found of each length is enough to find each once.
        let mut last: [Option<u32>; 33] = [None; 33];
        let mut found = |out: &mut Vec<_>, s: Span, k: usize, at: u32| {
            let (len, v) = self.slot(s.group, k);
            let net = at & prefix_mask(len);
            if len != 0 && s.holds(v) && last[usize::from(len)] != Some(net) {
                last[usize::from(len)] = Some(net);
                out.push((net, len, v));
            }
        };
        for (w, bits) in self.written.iter().enumerate() {
            let mut bits = *bits;
            while bits != 0 {
                let b = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                for i in b << 8..(b + 1) << 8 {
                    let at = (i as u32) << 8;
                    let own = Span {
                        group: None,
                        first: i,
                        n: 1,
                    };
                    found(&mut out, own, i, at);
                    let e = self.entries[i];
                    if e & GROUP != 0 {
                        let (d, start) = group_at(e);
                        let g = Span {
                            group: Some((d, start)),
                            first: 0,
                            n: 1 << d,
                        };
                        for k in g.slots() {
                            found(&mut out, g, k, at | ((k as u32) << (8 - d)));
                        }
                    }
                }
            }
        }
        out
    }
}

/// Longest-prefix-match table from prefixes to `T` (a next hop, an action…).
pub struct Fib<T> {
    /// By prefix length, network address → index into `values`: every
    /// route shorter than /16, and those of /16 or longer whose value no
    /// slot of the table holds (hidden, or an index too large for a slot).
    maps: [FastMap<u32, u32>; 33],
    /// Routes of each length.
    counts: [u32; 33],
    /// Bit `l` set: there are routes of length `l`.
    lengths: u64,
    values: Values<T>,
    /// Made with the first prefix of [`TABLE_MIN`] or longer.
    table: Option<Table>,
}

impl<T> Default for Fib<T> {
    fn default() -> Self {
        Fib {
            maps: std::array::from_fn(|_| FastMap::default()),
            counts: [0; 33],
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
        let old = self.find(net, len);
        if old.is_none() {
            self.counts[usize::from(len)] += 1;
            self.lengths |= 1 << len;
        }
        if len < TABLE_MIN {
            self.maps[usize::from(len)].insert(net, v);
        } else {
            self.place(net, len, v, old.is_some());
        }
        old.and_then(|i| self.values.release(i))
    }

    /// Writes the value index `v` of `net`/`len` (16 or longer) into the
    /// slots it takes: those of its span that no longer prefix holds when
    /// it is new, its own when it is replaced. A cover that loses its last
    /// slot, and the prefix itself if it has none or its value does not
    /// fit, go into their maps.
    fn place(&mut self, net: u32, len: u8, v: u32, replace: bool) {
        let Fib { maps, table, .. } = self;
        let table = table.get_or_insert_with(Table::new);
        if len > 24 {
            table.deepen((net >> 8) as usize, len - 24);
        }
        let Some(s) = table.span(net, len) else {
            return;
        };
        let mut shown = false;
        // The covers whose slots it took, by length, and their values.
        let mut covers = 0u64;
        let mut cover_values = [0u32; 33];
        for k in s.slots() {
            let (l, cv) = table.slot(s.group, k);
            if (replace && l == len) || (!replace && l <= len) {
                if l != 0 && l < len {
                    covers |= 1 << l;
                    cover_values[usize::from(l)] = cv;
                }
                table.set_slot(s.group, k, len, v);
                shown = true;
            }
        }
        while covers != 0 {
            let l = covers.trailing_zeros() as u8;
            covers &= covers - 1;
            let c = net & prefix_mask(l);
            let seen = table
                .span(c, l)
                .is_some_and(|cs| cs.slots().any(|k| table.slot(cs.group, k).0 == l));
            if !seen {
                // A value the slots did not hold is in the map already.
                maps[usize::from(l)]
                    .entry(c)
                    .or_insert(cover_values[usize::from(l)]);
            }
        }
        if shown && s.holds(v) {
            maps[usize::from(len)].remove(&net);
        } else {
            maps[usize::from(len)].insert(net, v);
        }
    }

    pub fn remove(&mut self, prefix: Ipv4Cidr) -> Option<T> {
        let len = prefix.prefix_len();
        let net = u32::from(prefix.network().addr());
        let v = self.find(net, len)?;
        self.counts[usize::from(len)] -= 1;
        if self.counts[usize::from(len)] == 0 {
            self.lengths &= !(1 << len);
        }
        self.maps[usize::from(len)].remove(&net);
        if len >= TABLE_MIN {
            self.uncover(net, len);
        }
        self.values.release(v)
    }

    /// The removed `net`/`len`'s slots go to the longest of its covers that
    /// the same level holds (a shorter one is found as before), which its
    /// map then no longer needs to hold if it was hidden.
    fn uncover(&mut self, net: u32, len: u8) {
        let lowest = if len <= 24 { TABLE_MIN } else { 25 };
        let cover = (lowest..len)
            .rev()
            .filter(|l| self.lengths & (1 << l) != 0)
            .find_map(|l| {
                let c = net & prefix_mask(l);
                Some((l, c, self.find(c, l)?))
            });
        let Fib { maps, table, .. } = self;
        let Some(table) = table else {
            return;
        };
        let Some(s) = table.span(net, len) else {
            return;
        };
        let (cl, cv) = cover.map_or((0, 0), |(l, _, v)| (l, v));
        let mut shown = false;
        for k in s.slots() {
            if table.slot(s.group, k).0 == len {
                table.set_slot(s.group, k, cl, cv);
                shown = true;
            }
        }
        if let Some((l, c, _)) = cover.filter(|_| shown && s.holds(cv)) {
            maps[usize::from(l)].remove(&c);
        }
        if let Some((d, at)) = s.group {
            let i = (net >> 8) as usize;
            if table.subs_mut(d, at).iter().all(|s| *s == 0) {
                table.ungroup(i);
            }
        }
    }
}

impl<T> Fib<T> {
    /// The value for exactly `prefix` (host bits ignored).
    pub fn get(&self, prefix: Ipv4Cidr) -> Option<&T> {
        let i = self.find(u32::from(prefix.network().addr()), prefix.prefix_len())?;
        self.values.get(i)
    }

    /// The value index of exactly `net`/`len`: in its map, else in the table.
    fn find(&self, net: u32, len: u8) -> Option<u32> {
        if self.lengths & (1 << len) == 0 {
            return None;
        }
        if let Some(i) = self.maps[usize::from(len)].get(&net) {
            return Some(*i);
        }
        self.table
            .as_ref()
            .filter(|_| len >= TABLE_MIN)?
            .find(net, len)
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
        if let Some(t) = &self.table {
            let mut e = t.entries[(a >> 8) as usize];
            if e & GROUP != 0 {
                let (d, at) = group_at(e);
                let g = &t.groups[usize::from(d - 1)];
                let s = *g.get(at + HEADER + ((a & 0xff) >> (8 - d)) as usize)?;
                let len = sub_len(s);
                if len != 0 {
                    if s & SUB_VALUE == SUB_IN_MAP {
                        return self.probe(a, len);
                    }
                    let v = self.values.get(u32::from(s & SUB_VALUE))?;
                    return Some((cidr(a & prefix_mask(len), len)?, v));
                }
                e = u32::from(*g.get(at)?) | (u32::from(*g.get(at + 1)?) << 16);
            }
            let len = entry_len(e);
            if len != 0 {
                if e & VALUE == IN_MAP {
                    return self.probe(a, len);
                }
                return Some((
                    cidr(a & prefix_mask(len), len)?,
                    self.values.get(e & VALUE)?,
                ));
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
        self.counts.iter().map(|n| *n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths == 0
    }

    /// Every route, in no particular order: the maps', then those the
    /// table holds (read from the /16s it has written).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Cidr, &T)> {
        let mapped = (0..=32u8).flat_map(move |len| {
            self.maps[usize::from(len)]
                .iter()
                .map(move |(net, i)| (*net, len, *i))
        });
        let shown = self.table.iter().flat_map(Table::visible);
        mapped
            .chain(shown)
            .filter_map(move |(net, len, i)| Some((cidr(net, len)?, self.values.get(i)?)))
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
    fn a_prefix_hidden_under_longer_ones_is_kept_and_comes_back_when_they_go() {
        let mut f = Fib::new();
        let l = |f: &Fib<i32>, s: &str| f.lookup(s.parse().unwrap()).map(|(p, v)| (p, *v));
        for (p, v) in [
            ("10.1.2.0/23", 23),
            ("10.1.2.0/24", 24),
            ("10.1.3.0/24", 240),
            ("10.1.2.0/25", 25),
            ("10.1.2.0/26", 26),
            ("10.1.2.64/26", 260),
        ] {
            f.insert(c(p), v);
        }
        // The /23 and the /25 have no slot of their own: their maps keep them.
        assert_eq!(f.maps[23].len() + f.maps[25].len(), 2);
        assert_eq!(
            (f.get(c("10.1.2.0/23")), f.get(c("10.1.2.0/25"))),
            (Some(&23), Some(&25))
        );
        let mut all: Vec<(Ipv4Cidr, i32)> = f.iter().map(|(p, v)| (p, *v)).collect();
        all.sort_by_key(|(p, _)| (p.prefix_len(), p.addr()));
        assert_eq!(all.len(), 6, "{all:?}");
        assert_eq!(f.insert(c("10.1.2.0/25"), 125), Some(25));
        f.remove(c("10.1.2.64/26"));
        assert_eq!(l(&f, "10.1.2.65"), Some((c("10.1.2.0/25"), 125)));
        assert!(f.maps[25].is_empty(), "shown again, out of its map");
        f.remove(c("10.1.3.0/24"));
        assert_eq!(l(&f, "10.1.3.1"), Some((c("10.1.2.0/23"), 23)));
        assert!(f.maps[23].is_empty());
        f.remove(c("10.1.2.0/25"));
        f.remove(c("10.1.2.0/26"));
        assert_eq!(l(&f, "10.1.2.1"), Some((c("10.1.2.0/24"), 24)));
        assert_eq!(f.len(), 2);
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

    #[test]
    fn more_distinct_values_than_a_group_entry_holds_are_read_from_the_maps() {
        let mut f = Fib::new();
        let n = u32::from(SUB_IN_MAP) + 2;
        for i in 0..n {
            f.insert(cidr(0x0a00_0000 + (i << 8), 25).unwrap(), i);
        }
        for i in [0, u32::from(SUB_IN_MAP) - 1, u32::from(SUB_IN_MAP) + 1] {
            let (p, v) = f.lookup(Ipv4Addr::from(0x0a00_0001 + (i << 8))).unwrap();
            assert_eq!((p, *v), (cidr(0x0a00_0000 + (i << 8), 25).unwrap(), i));
            assert!(f.lookup(Ipv4Addr::from(0x0a00_0081 + (i << 8))).is_none());
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

    /// A prefix of /20 to /28 inside 10.0.0.0/22, so that many are hidden
    /// under longer ones.
    fn crowded() -> impl Strategy<Value = Ipv4Cidr> {
        (0u32..1 << 10, 20u8..=28)
            .prop_map(|(x, len)| cidr(0x0a00_0000 | x, len).unwrap().network())
    }

    /// Inserts and removes `ops` (a removal takes an earlier prefix, so that
    /// removals hit), then looks up `probes`, both ends of every prefix that
    /// was in, and reads every route, each checked against the model.
    fn agrees_with_a_search(
        ops: Vec<(Ipv4Cidr, u8, bool)>,
        probes: Vec<u32>,
    ) -> Result<(), TestCaseError> {
        let mut f = Fib::new();
        let mut model = std::collections::BTreeMap::new();
        let mut inserted = vec![];
        for (i, (p, v, remove)) in ops.into_iter().enumerate() {
            let key = (p.prefix_len(), u32::from(p.addr()));
            if remove && !inserted.is_empty() {
                let q: Ipv4Cidr = inserted[i % inserted.len()];
                let key = (q.prefix_len(), u32::from(q.addr()));
                prop_assert_eq!(f.remove(q), model.remove(&key));
            } else {
                prop_assert_eq!(f.insert(p, v), model.insert(key, v));
                inserted.push(p);
            }
            prop_assert_eq!(f.len(), model.len());
        }
        for q in &inserted {
            let key = (q.prefix_len(), u32::from(q.addr()));
            prop_assert_eq!(f.get(*q), model.get(&key));
        }
        let ends = inserted
            .iter()
            .flat_map(|p| [u32::from(p.addr()), u32::from(p.broadcast())]);
        for x in probes.into_iter().chain(ends) {
            for a in [x, x & !0xff, x ^ 0x0100_0000] {
                let got = f.lookup(Ipv4Addr::from(a)).map(|(p, v)| (p, *v));
                prop_assert_eq!(got, brute(&model, a));
            }
        }
        let mut all: Vec<((u8, u32), u8)> = f
            .iter()
            .map(|(p, v)| ((p.prefix_len(), u32::from(p.addr())), *v))
            .collect();
        all.sort();
        prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        Ok(())
    }

    proptest! {
        #[test]
        fn answers_as_a_search_of_every_prefix_after_inserts_and_removes(
            ops in proptest::collection::vec((prefix(), 0u8..4, any::<bool>()), 1..80),
            probes in proptest::collection::vec(address(), 64),
        ) {
            agrees_with_a_search(ops, probes)?;
        }

        #[test]
        fn answers_as_a_search_with_prefixes_hidden_under_longer_ones(
            ops in proptest::collection::vec((crowded(), 0u8..4, any::<bool>()), 1..200),
            probes in proptest::collection::vec(0x0a00_0000u32..0x0a00_0400, 64),
        ) {
            agrees_with_a_search(ops, probes)?;
        }
    }
}
