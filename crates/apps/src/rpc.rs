//! The lab's RPC framework, shaped like Apache Dubbo: chapter 10 of the
//! story, where the controller calls the order service, which calls stock
//! and coupon. docs/rpc.md describes the protocol.
//!
//! - [`codec`]: Dubbo's 16-byte header and the request/response bodies, sans-IO;
//!   [`hessian`]: the Hessian 2.0 subset the bodies are written in.
//! - [`server`]: serves registered `service.method` handlers on a TCP listener.
//! - [`client`]: one multiplexed connection: calls matched by request id,
//!   per-call timeouts, heartbeats, reconnect.
//! - [`registry`]: providers register with a TTL; consumers long-poll for changes.
//! - [`consumer`]: calls one service across its providers (random, round robin,
//!   least active), failover retries for idempotent calls only.
//!
//! A provider:
//!
//! ```no_run
//! # async fn provider(registry: std::sync::Arc<d11_apps::rpc::Client>) -> std::io::Result<()> {
//! use d11_apps::rpc::{registry, Call, Server, ServerConfig, Services, Value};
//! let mut services = Services::new();
//! services.method("stock", "deduct", |c: Call| async move {
//!     let sku = c.str_arg(0)?;
//!     Ok(Value::from(format!("deducted {sku}")))
//! });
//! let server = Server::new("stock", ServerConfig::default(), services);
//! let listener = server.bind().await?;
//! let me = "192.168.1.30:20880".to_string();
//! tokio::spawn(registry::keep_registered(registry, "stock".into(), me, std::time::Duration::from_secs(9)));
//! server.serve(listener).await;
//! # Ok(()) }
//! ```
//!
//! A consumer:
//!
//! ```no_run
//! # async fn consumer(registry: std::sync::Arc<d11_apps::rpc::Client>) -> Result<(), d11_apps::rpc::Fault> {
//! use d11_apps::rpc::{registry, CallOptions, Consumer, ConsumerConfig};
//! let providers = registry::subscribe(registry, "stock".into(), std::time::Duration::from_secs(30));
//! let stock = Consumer::new("stock", ConsumerConfig::default(), providers);
//! let v = stock.call("deduct", vec!["sku-68".into()], CallOptions::idempotent()).await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod codec;
pub mod consumer;
pub mod hessian;
pub mod registry;
pub mod server;

pub use client::{Client, ClientConfig, ClientReport};
pub use codec::{Fault, Request, Status};
pub use consumer::{
    Balance, CallOptions, Consumer, ConsumerConfig, ConsumerReport, ProviderReport, Traced,
};
pub use hessian::Value;
pub use registry::{Providers, Registry, RegistryReport};
pub use server::{Call, Server, ServerConfig, ServerReport, Services};
