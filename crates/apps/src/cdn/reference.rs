//! The reference a CDN cache is measured against (issue 17): Debian's
//! nginx with `proxy_cache`, configured to our caches' policy — keyed by
//! host and URI, revalidating with the stored validators
//! (`proxy_cache_revalidate`), one fetch per key at a time
//! (`proxy_cache_lock`), up to 16 idle connections kept to its upstream
//! (`keepalive`, as our caches' `upstream_idle`), its
//! `$upstream_cache_status` in `X-Cache` — over TLS with the lab PKI on
//! both sides. Used by the CDN's tests and by
//! `d11 bench cdn`; not part of the lab.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pki::PkiPaths;

/// An nginx caching proxy on `127.0.0.1:port`; killed when dropped.
pub struct NginxCache {
    child: Child,
    pub port: u16,
}

impl NginxCache {
    /// Starts nginx in `dir` (its config, cache and logs there) in front of
    /// `upstream` (`127.0.0.1` port) whose certificate holds `name`, with
    /// `workers` worker processes; waits until it listens.
    pub fn start(
        dir: &Path,
        pki: &PkiPaths,
        upstream: u16,
        name: &str,
        workers: usize,
    ) -> std::io::Result<NginxCache> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // One process when one worker; else a master that, run as root,
        // keeps its workers as root (the cache directory is ours).
        let processes = match (workers, std::fs::metadata("/proc/self")?.uid()) {
            (0 | 1, _) => "master_process off; worker_processes 1;".to_string(),
            (n, 0) => format!("user root; worker_processes {n};"),
            (n, _) => format!("worker_processes {n};"),
        };
        let conf = format!(
            "{processes} daemon off;\n\
             pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               proxy_cache_path {d}/cache keys_zone=cdn:10m max_size=64m;\n\
               upstream up {{ server 127.0.0.1:{upstream}; keepalive 16; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {chain}; ssl_certificate_key {key};\n\
                 location / {{\n\
                   proxy_pass https://up;\n\
                   proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                   proxy_ssl_server_name on; proxy_ssl_name {name};\n\
                   proxy_ssl_verify on; proxy_ssl_trusted_certificate {root};\n\
                   proxy_set_header Host $host;\n\
                   proxy_cache cdn; proxy_cache_key $host$request_uri;\n\
                   proxy_cache_revalidate on; proxy_cache_lock on;\n\
                   add_header X-Cache \"$upstream_cache_status from nginx\" always;\n\
                 }}\n\
               }}\n\
             }}\n",
            d = dir.display(),
            chain = pki.server_chain().display(),
            key = pki.server_key().display(),
            root = pki.root_cert().display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nginx = NginxCache { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "nginx exited {status}: {log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other("nginx did not listen within 5 s"))
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown, the master stopping its workers
        // (a SIGKILL would leave them behind); SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..40 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
