//! The lab's RPC framework, shaped like Apache Dubbo: chapter 10 of the
//! story, where the controller calls the order service, which calls stock
//! and coupon. docs/rpc.md describes the protocol.
//!
//! - [`codec`]: Dubbo's 16-byte header and Hessian 2.0 bodies ([`hessian`]), sans-IO.
//! - [`server`]: serves registered `service.method` handlers on a TCP listener.
//! - [`client`]: one multiplexed connection: calls matched by request id,
//!   per-call timeouts, heartbeats, reconnect.
//! - [`registry`]: providers register with a TTL; consumers long-poll for changes.
//! - [`consumer`]: calls one service across its providers (random, round robin,
//!   least active), failover retries for idempotent calls only.

pub mod codec;
pub mod hessian;

pub use codec::{Fault, Request, Status};
pub use hessian::Value;
