//! One line per closed connection in the shape of HAProxy's `option tcplog`
//! (HAProxy configuration manual § 8.2.2, "TCP log format"):
//!
//! ```text
//! client_ip:port [accept_date] frontend backend/server Tw/Tc/Tt bytes_read termination_state actconn/feconn/beconn/srv_conn/retries
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use time::OffsetDateTime;

/// How a session ended: HAProxy's two-character termination state, the
/// first for the cause, the second for the phase (§ 8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// `--`: both sides closed normally.
    Normal,
    /// `SC`: no server UP, or every connection attempt was refused.
    ServerRefused,
    /// `sC`: the last connection attempt timed out.
    ConnectTimeout,
    /// `CD`: the client aborted (reset or write error) during data.
    ClientAbort,
    /// `SD`: the server aborted during data.
    ServerAbort,
    /// `cD`: the client side stayed idle past `client_timeout_ms`.
    ClientTimeout,
    /// `sD`: the server side stayed idle past `server_timeout_ms`.
    ServerTimeout,
    /// `KD`: killed at the end of the shutdown grace.
    Killed,
}

impl Termination {
    pub fn code(self) -> &'static str {
        match self {
            Termination::Normal => "--",
            Termination::ServerRefused => "SC",
            Termination::ConnectTimeout => "sC",
            Termination::ClientAbort => "CD",
            Termination::ServerAbort => "SD",
            Termination::ClientTimeout => "cD",
            Termination::ServerTimeout => "sD",
            Termination::Killed => "KD",
        }
    }
}

/// The fields of one tcplog line.
#[derive(Debug, Clone)]
pub struct TcpLog<'a> {
    pub client: SocketAddr,
    pub accept_date: OffsetDateTime,
    pub frontend: &'a str,
    pub backend: &'a str,
    /// `None` logs `<NOSRV>`.
    pub server: Option<SocketAddr>,
    /// From accept to the server connection established; `None` logs -1.
    pub connect: Option<Duration>,
    /// From accept to close.
    pub total: Duration,
    /// Bytes sent to the client.
    pub bytes_read: u64,
    pub termination: Termination,
    pub actconn: usize,
    pub feconn: usize,
    pub beconn: usize,
    pub srv_conn: usize,
    pub retries: u32,
}

impl fmt::Display for TcpLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.accept_date;
        let month = &d.month().to_string()[..3];
        write!(
            f,
            "{} [{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}] {} {}/",
            self.client,
            d.day(),
            month,
            d.year(),
            d.hour(),
            d.minute(),
            d.second(),
            d.millisecond(),
            self.frontend,
            self.backend
        )?;
        match self.server {
            Some(s) => write!(f, "{s}")?,
            None => f.write_str("<NOSRV>")?,
        }
        let tc = self.connect.map_or(-1, |c| c.as_millis() as i128);
        write!(
            f,
            " 0/{tc}/{} {} {} {}/{}/{}/{}/{}",
            self.total.as_millis(),
            self.bytes_read,
            self.termination.code(),
            self.actconn,
            self.feconn,
            self.beconn,
            self.srv_conn,
            self.retries
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> TcpLog<'static> {
        TcpLog {
            client: "203.0.113.7:51234".parse().unwrap(),
            // 2018-11-11 00:00:01.042 UTC
            accept_date: OffsetDateTime::from_unix_timestamp_nanos(1_541_894_401_042_000_000)
                .unwrap(),
            frontend: "vm-lb",
            backend: "ctl",
            server: Some("192.168.1.20:443".parse().unwrap()),
            connect: Some(Duration::from_millis(1)),
            total: Duration::from_millis(1234),
            bytes_read: 5321,
            termination: Termination::Normal,
            actconn: 3,
            feconn: 3,
            beconn: 2,
            srv_conn: 1,
            retries: 0,
        }
    }

    #[test]
    fn a_normal_session_reads_like_haproxy_tcplog() {
        assert_eq!(
            line().to_string(),
            "203.0.113.7:51234 [11/Nov/2018:00:00:01.042] vm-lb ctl/192.168.1.20:443 \
             0/1/1234 5321 -- 3/3/2/1/0"
        );
    }

    #[test]
    fn a_session_without_server_logs_nosrv_and_no_connect_time() {
        let mut l = line();
        l.server = None;
        l.connect = None;
        l.termination = Termination::ServerRefused;
        l.retries = 2;
        assert!(l
            .to_string()
            .ends_with("vm-lb ctl/<NOSRV> 0/-1/1234 5321 SC 3/3/2/1/2"));
    }
}
