//! The registry (Dubbo's registry centre, ZooKeeper or Nacos in real
//! deployments): providers register `service → address` with a TTL and
//! renew it; a provider that stops renewing disappears; consumers learn the
//! provider list and every change to it.
//!
//! The registry is itself an RPC service named `registry`, spoken with the
//! same framing:
//!
//! | method | arguments | answer |
//! |---|---|---|
//! | `register` | service, address, ttl_ms | the service's revision |
//! | `renew` | service, address, ttl_ms | the revision (re-registers a provider that had expired) |
//! | `unregister` | service, address | the revision |
//! | `subscribe` | service, known revision, wait_ms | `{revision, providers}` |
//!
//! `subscribe` is a long poll (Consul's blocking query, Nacos's long
//! polling): it answers at once when the service's revision differs from
//! the one the consumer knows, otherwise when it changes or after `wait_ms`.
//! Since calls are multiplexed, a waiting subscribe does not hold up other
//! calls on the connection. Revisions come from one counter, so they only grow.
//!
//! [`Table`] is the sans-IO state (time is an argument); [`Registry`] wraps
//! it for the RPC server; [`keep_registered`] and [`subscribe`] are the
//! provider's and the consumer's sides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::client::Client;
use super::codec::{Fault, Request, Status};
use super::hessian::Value;
use super::server::{Call, Services};

/// The service name the registry answers to.
pub const SERVICE: &str = "registry";

/// The providers of one service at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Providers {
    /// 0 for a service never registered.
    pub revision: u64,
    /// Addresses (`ip:port`), sorted.
    pub addrs: Vec<String>,
}

impl Providers {
    fn to_value(&self) -> Value {
        Value::Map(vec![
            ("revision".into(), Value::Long(self.revision as i64)),
            (
                "providers".into(),
                Value::List(self.addrs.iter().map(|a| a.as_str().into()).collect()),
            ),
        ])
    }

    fn from_value(v: &Value) -> Option<Providers> {
        let revision = v.get("revision")?.as_i64()? as u64;
        let Value::List(l) = v.get("providers")? else {
            return None;
        };
        let addrs = l
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<_>>()?;
        Some(Providers { revision, addrs })
    }
}

/// What the registry reports (`d11 show vm-reg`): every service and its
/// providers' leases.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryReport {
    /// Bumped by every change.
    pub revision: u64,
    pub services: BTreeMap<String, ServiceReport>,
}

/// One service: its revision and providers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceReport {
    pub revision: u64,
    pub providers: Vec<Lease>,
}

/// A provider's address and what is left of its lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub addr: String,
    pub expires_in_ms: u64,
}

/// The registry's state: services, their providers and when each expires.
#[derive(Debug, Default)]
pub struct Table {
    services: BTreeMap<String, Entry>,
    counter: u64,
}

#[derive(Debug, Default)]
struct Entry {
    revision: u64,
    /// Address → expiry.
    providers: BTreeMap<String, Instant>,
}

impl Table {
    fn bump(&mut self, service: &str) -> u64 {
        self.counter += 1;
        let e = self.services.entry(service.into()).or_default();
        e.revision = self.counter;
        e.revision
    }

    /// Adds or refreshes a provider; returns the service's revision and
    /// whether the list changed.
    pub fn register(
        &mut self,
        service: &str,
        addr: &str,
        ttl: Duration,
        now: Instant,
    ) -> (u64, bool) {
        let e = self.services.entry(service.into()).or_default();
        let fresh = e.providers.insert(addr.into(), now + ttl).is_none();
        if fresh {
            (self.bump(service), true)
        } else {
            (e.revision, false)
        }
    }

    /// Removes a provider; returns the revision and whether it was there.
    pub fn unregister(&mut self, service: &str, addr: &str) -> (u64, bool) {
        let Some(e) = self.services.get_mut(service) else {
            return (0, false);
        };
        if e.providers.remove(addr).is_some() {
            (self.bump(service), true)
        } else {
            (e.revision, false)
        }
    }

    /// Drops every provider whose TTL ran out; returns them (service, address).
    pub fn expire(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (s, e) in &mut self.services {
            e.providers.retain(|a, exp| {
                let keep = *exp > now;
                if !keep {
                    gone.push((s.clone(), a.clone()));
                }
                keep
            });
        }
        let mut touched: Vec<&String> = gone.iter().map(|(s, _)| s).collect();
        touched.dedup();
        for s in touched.into_iter().cloned().collect::<Vec<_>>() {
            self.bump(&s);
        }
        gone
    }

    /// The providers of `service` now.
    pub fn providers(&self, service: &str) -> Providers {
        self.services
            .get(service)
            .map_or_else(Providers::default, |e| Providers {
                revision: e.revision,
                addrs: e.providers.keys().cloned().collect(),
            })
    }

    /// The last change's number, over all services.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

/// The registry service: a [`Table`] behind a lock, and a signal of changes.
pub struct Registry {
    table: Mutex<Table>,
    changed: watch::Sender<u64>,
    /// How often expired providers are swept out.
    sweep: Duration,
}

impl Registry {
    pub fn new(sweep: Duration) -> Arc<Registry> {
        Arc::new(Registry {
            table: Mutex::default(),
            changed: watch::channel(0).0,
            sweep,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self, counter: u64) {
        self.changed.send_replace(counter);
    }

    /// The providers of `service` now.
    pub fn providers(&self, service: &str) -> Providers {
        self.table().providers(service)
    }

    /// Sweeps expired providers forever (spawn it next to the server).
    pub async fn run_expiry(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.sweep);
        loop {
            tick.tick().await;
            let (gone, counter) = {
                let mut t = self.table();
                (t.expire(Instant::now()), t.counter())
            };
            for (s, a) in &gone {
                info!(service = %s, provider = %a, "registry: provider expired");
            }
            if !gone.is_empty() {
                self.changed(counter);
            }
        }
    }

    /// Waits until `service`'s revision differs from `known`, at most `wait`.
    pub async fn wait_change(&self, service: &str, known: u64, wait: Duration) -> Providers {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let p = self.providers(service);
            if p.revision != known {
                return p;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.providers(service),
            }
        }
    }

    /// The `registry` service's handlers, to add to a server's [`Services`].
    pub fn services(self: &Arc<Self>) -> Services {
        let mut s = Services::new();
        let r = self.clone();
        s.method(SERVICE, "register", move |c: Call| {
            let r = r.clone();
            async move {
                let (svc, addr, ttl) = (c.str_arg(0)?, c.str_arg(1)?, ttl(&c, 2)?);
                let (rev, fresh) = r.table().register(svc, addr, ttl, Instant::now());
                if fresh {
                    info!(service = %svc, provider = %addr, ?ttl, "registry: provider registered");
                    r.changed(rev);
                }
                Ok(Value::Long(rev as i64))
            }
        });
        let r = self.clone();
        s.method(SERVICE, "renew", move |c: Call| {
            let r = r.clone();
            async move {
                let (svc, addr, ttl) = (c.str_arg(0)?, c.str_arg(1)?, ttl(&c, 2)?);
                let (rev, fresh) = r.table().register(svc, addr, ttl, Instant::now());
                if fresh {
                    info!(service = %svc, provider = %addr, "registry: provider re-registered by renew");
                    r.changed(rev);
                }
                Ok(Value::Long(rev as i64))
            }
        });
        let r = self.clone();
        s.method(SERVICE, "unregister", move |c: Call| {
            let r = r.clone();
            async move {
                let (svc, addr) = (c.str_arg(0)?, c.str_arg(1)?);
                let (rev, was) = r.table().unregister(svc, addr);
                if was {
                    info!(service = %svc, provider = %addr, "registry: provider unregistered");
                    r.changed(rev);
                }
                Ok(Value::Long(rev as i64))
            }
        });
        let r = self.clone();
        s.method(SERVICE, "subscribe", move |c: Call| {
            let r = r.clone();
            async move {
                let svc = c.str_arg(0)?.to_owned();
                let known = c.int_arg(1)?.max(0) as u64;
                let wait = Duration::from_millis(c.int_arg(2)?.clamp(0, 600_000) as u64);
                Ok(r.wait_change(&svc, known, wait).await.to_value())
            }
        });
        s
    }

    /// Every service and its providers, for the control socket and `d11 show`.
    pub fn status(&self) -> RegistryReport {
        let t = self.table();
        let now = Instant::now();
        let services = t
            .services
            .iter()
            .map(|(s, e)| {
                let providers = e
                    .providers
                    .iter()
                    .map(|(a, exp)| Lease {
                        addr: a.clone(),
                        expires_in_ms: exp.saturating_duration_since(now).as_millis() as u64,
                    })
                    .collect();
                let entry = ServiceReport {
                    revision: e.revision,
                    providers,
                };
                (s.clone(), entry)
            })
            .collect();
        RegistryReport {
            revision: t.counter,
            services,
        }
    }
}

fn ttl(c: &Call, i: usize) -> Result<Duration, Fault> {
    match c.int_arg(i)? {
        t if t > 0 => Ok(Duration::from_millis(t as u64)),
        _ => Err(Fault::new(Status::BadRequest, "ttl_ms must be at least 1")),
    }
}

/// Registers `addr` as a provider of `service` and renews it every `ttl / 3`
/// until the task is dropped (then the entry expires after `ttl`).
pub async fn keep_registered(registry: Arc<Client>, service: String, addr: String, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(1));
    let mut method = "register";
    loop {
        let req = Request::new(
            SERVICE,
            method,
            vec![
                service.as_str().into(),
                addr.as_str().into(),
                Value::Long(ttl.as_millis() as i64),
            ],
        );
        match registry.call(req, Some(every)).await {
            Ok(_) => method = "renew",
            Err(f) => warn!(%service, provider = %addr, "registry {method}: {f}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes `addr` from `service` now (a clean shutdown).
pub async fn unregister(registry: &Client, service: &str, addr: &str) -> Result<(), Fault> {
    let req = Request::new(SERVICE, "unregister", vec![service.into(), addr.into()]);
    registry.call(req, None).await.map(|_| ())
}

/// The providers of `service` now (a subscribe that does not wait).
pub async fn lookup(registry: &Client, service: &str) -> Result<Providers, Fault> {
    poll(registry, service, u64::MAX, Duration::ZERO).await
}

async fn poll(
    registry: &Client,
    service: &str,
    known: u64,
    wait: Duration,
) -> Result<Providers, Fault> {
    let req = Request::new(
        SERVICE,
        "subscribe",
        vec![
            service.into(),
            Value::Long(known as i64),
            Value::Long(wait.as_millis() as i64),
        ],
    );
    let v = registry
        .call(req, Some(wait + Duration::from_secs(2)))
        .await?;
    Providers::from_value(&v)
        .ok_or_else(|| Fault::new(Status::BadResponse, format!("subscribe answered {v}")))
}

/// Follows `service`'s providers: the receiver holds the latest list and
/// changes as the registry reports; long polls of `wait` each. Stops when
/// every receiver is gone.
pub fn subscribe(
    registry: Arc<Client>,
    service: String,
    wait: Duration,
) -> watch::Receiver<Providers> {
    let (tx, rx) = watch::channel(Providers::default());
    tokio::spawn(async move {
        let mut known = u64::MAX;
        loop {
            if tx.is_closed() {
                return;
            }
            match poll(&registry, &service, known, wait).await {
                Ok(p) => {
                    if p.revision != known {
                        info!(%service, revision = p.revision, providers = ?p.addrs, "registry: providers");
                        known = p.revision;
                        tx.send_replace(p);
                    }
                }
                Err(f) => {
                    warn!(%service, "registry subscribe: {f}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_expire_and_revisions_only_grow() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let mut t = Table::default();
        assert_eq!(t.providers("stock"), Providers::default());
        assert_eq!(
            t.register("stock", "192.168.1.30:20880", ttl, t0),
            (1, true)
        );
        assert_eq!(
            t.register("stock", "192.168.2.30:20880", ttl, t0),
            (2, true)
        );
        assert_eq!(
            t.register("coupon", "192.168.1.40:20880", ttl, t0),
            (3, true)
        );
        // A renewal changes nothing but the expiry.
        assert_eq!(
            t.register(
                "stock",
                "192.168.1.30:20880",
                ttl,
                t0 + Duration::from_secs(2)
            ),
            (2, false)
        );
        assert_eq!(
            t.providers("stock").addrs,
            ["192.168.1.30:20880", "192.168.2.30:20880"]
        );
        // At 3 s the one not renewed expires and the coupon one too.
        let gone = t.expire(t0 + ttl);
        assert_eq!(gone.len(), 2);
        let p = t.providers("stock");
        assert_eq!(p.addrs, ["192.168.1.30:20880"]);
        assert!(p.revision > 3);
        assert!(t.providers("coupon").addrs.is_empty());
        let c = t.providers("coupon").revision;
        assert!(c > 3 && c != p.revision);
        assert!(t.unregister("stock", "192.168.1.30:20880").1);
        assert!(!t.unregister("stock", "192.168.1.30:20880").1);
        assert_eq!(t.unregister("nothing", "x").0, 0);
    }

    #[test]
    fn providers_cross_the_wire_as_a_hessian_map() {
        let p = Providers {
            revision: 7,
            addrs: vec!["10.0.0.1:20880".into()],
        };
        let bytes = p.to_value().to_bytes();
        let v = Value::from_bytes(&bytes).unwrap();
        assert_eq!(Providers::from_value(&v), Some(p));
        assert_eq!(Providers::from_value(&Value::Null), None);
    }
}
