//! A forwarding information base: longest-prefix match over IPv4 prefixes.
//!
//! One hash map per prefix length that is in use, searched from the longest
//! length down; a lookup costs one probe per distinct length present (three or
//! four in the lab's tables), independent of the number of routes.

use crate::hash::FastMap;
use d11_wire::addr::prefix_mask;
use d11_wire::Ipv4Cidr;
use std::net::Ipv4Addr;

/// Longest-prefix-match table from prefixes to `T` (a next hop, an action…).
#[derive(Debug, Clone)]
pub struct Fib<T> {
    /// (prefix length, network address → value), longest length first.
    tables: Vec<(u8, FastMap<u32, T>)>,
}

impl<T> Default for Fib<T> {
    fn default() -> Self {
        Fib { tables: Vec::new() }
    }
}

impl<T> Fib<T> {
    pub fn new() -> Fib<T> {
        Fib::default()
    }

    /// Adds or replaces the route for `prefix` (host bits ignored); returns the old value.
    pub fn insert(&mut self, prefix: Ipv4Cidr, value: T) -> Option<T> {
        let len = prefix.prefix_len();
        let key = u32::from(prefix.network().addr());
        let i = match self.tables.iter().position(|(l, _)| *l <= len) {
            Some(i) if self.tables[i].0 == len => i,
            Some(i) => {
                self.tables.insert(i, (len, FastMap::default()));
                i
            }
            None => {
                self.tables.push((len, FastMap::default()));
                self.tables.len() - 1
            }
        };
        self.tables[i].1.insert(key, value)
    }

    /// The value for exactly `prefix` (host bits ignored).
    pub fn get(&self, prefix: Ipv4Cidr) -> Option<&T> {
        let len = prefix.prefix_len();
        let (_, t) = self.tables.iter().find(|(l, _)| *l == len)?;
        t.get(&u32::from(prefix.network().addr()))
    }

    pub fn remove(&mut self, prefix: Ipv4Cidr) -> Option<T> {
        let len = prefix.prefix_len();
        let i = self.tables.iter().position(|(l, _)| *l == len)?;
        let v = self.tables[i].1.remove(&u32::from(prefix.network().addr()));
        if self.tables[i].1.is_empty() {
            self.tables.remove(i);
        }
        v
    }

    /// The most specific route covering `ip`.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<(Ipv4Cidr, &T)> {
        let a = u32::from(ip);
        self.tables.iter().find_map(|(len, t)| {
            let net = a & prefix_mask(*len);
            t.get(&net).map(|v| {
                (
                    Ipv4Cidr::new(Ipv4Addr::from(net), *len)
                        .unwrap_or(Ipv4Cidr::new(ip, 32).expect("32 is a valid length")),
                    v,
                )
            })
        })
    }

    pub fn len(&self) -> usize {
        self.tables.iter().map(|(_, t)| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Every route, longest prefixes first.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Cidr, &T)> {
        self.tables.iter().flat_map(|(len, t)| {
            t.iter()
                .filter_map(move |(net, v)| Some((Ipv4Cidr::new(Ipv4Addr::from(*net), *len)?, v)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
