//! The lab's applications. Unlike the elements, these run on the ordinary
//! kernel TCP/IP stack of a host namespace (a VM or the phone), on tokio
//! sockets, exactly as real programs would: the lab PKI made at `d11 up`,
//! the L4 load balancer in `vm-lb` (HAProxy's `mode tcp`), the HTTPS
//! controller in `vm-ctl`/`vm-ctl2`, the phone app behind `d11 order`,
//! the load generator of many phone apps behind `d11 bench order`, the
//! simulated phones of `d11 load` (smoltcp stacks behind the eNodeB), and the
//! shop behind the controller: registry, order, stock, coupon and db.

pub mod app;
pub mod control;
pub mod controller;
pub mod db;
pub mod l4lb;
pub mod load;
pub mod phone;
pub mod pki;
pub mod ran;
pub mod rpc;
pub mod shop;
