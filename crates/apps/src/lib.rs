//! The lab's applications. Unlike the elements, these run on the ordinary
//! kernel TCP/IP stack of a host namespace (a VM or the phone), on tokio
//! sockets, exactly as real programs would: the lab PKI made at `d11 up`,
//! the L4 load balancer in `vm-lb` (HAProxy's `mode tcp`), the HTTPS
//! controller in `vm-ctl`/`vm-ctl2`, the phone app behind `d11 order`,
//! the load generator of many phone apps behind `d11 bench order`, the
//! simulated phones of `d11 load` (smoltcp stacks behind the eNodeB), and the
//! shop behind the controller: registry, order, stock, coupon and db.

pub mod app;
pub mod baseband;
pub mod cdn;
pub mod control;
pub mod controller;
pub mod db;
pub mod dns;
pub mod health;
pub mod hss;
pub mod https;
pub mod l4lb;
pub mod load;
pub mod phone;
pub mod pki;
pub mod ran;
pub mod rpc;
pub mod shop;

/// A listener on `addr` with room for `backlog` connections the application
/// has not accepted yet (the kernel caps it at `net.core.somaxconn`, 4,096 in
/// a lab namespace); tokio's `TcpListener::bind` asks for 1,024, which a
/// surge of phones overflows: the kernel then drops SYNs (a full accept
/// queue drops them even with SYN cookies) and each waits a retransmission.
/// Address reuse as `TcpListener::bind` sets it, and TCP_NODELAY, which
/// Linux copies from the listening socket to every connection it accepts:
/// each of our servers wants Nagle off, and the l4lb saves a `setsockopt`
/// per session (it checks once that the option came along).
pub fn listen(
    addr: std::net::SocketAddr,
    backlog: usize,
) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.clamp(128, u32::MAX as usize) as u32)
}
