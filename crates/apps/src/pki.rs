//! The lab PKI, made at `d11 up`: a root CA → an intermediate CA → a leaf for
//! `www.geektime.com` (chapter 5 of the story), and the rustls configurations
//! built from it. The phone trusts only the root; the controller sends the
//! leaf and the intermediate, as a real server does [RFC 8446 § 4.4.2].
//!
//! Read [RFC 5280 § 4.2.1] (key usage, basic constraints, extended key usage)
//! first. Only ECDSA P-256 keys are made; the CA keys live only in memory while
//! `make` runs, so nothing but the leaf key is ever written to disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The ALPN protocol both ends offer [RFC 7301]: the order is plain HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// An error making or loading the lab PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not make a certificate.
    #[error("making the {what} certificate: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    /// A PKI file or its directory could not be written.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file meant to hold certificates holds none.
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    /// rustls refused a certificate or key.
    #[error("{path} is not usable: {source}")]
    Tls {
        path: PathBuf,
        source: rustls::Error,
    },
}

/// Files in a lab's PKI directory (`/run/d11/LAB/pki/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiPaths { dir: dir.into() }
    }

    /// `root.pem`: the lab root CA, the only certificate the UE trusts.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// `intermediate.pem`: the CA that signs the leaf.
    pub fn intermediate_cert(&self) -> PathBuf {
        self.dir.join("intermediate.pem")
    }

    /// `server.pem`: the leaf then the intermediate, what the server sends.
    pub fn server_chain(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server.key`: the leaf's PKCS#8 key, mode 0600.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// Makes root CA → intermediate CA → leaf for `names` (DNS names, or IP
/// addresses when a name parses as one) and writes the files of `paths`.
/// Subjects name the lab: "CN=double11 lab root CA, O=double11 lab LAB".
pub fn make(paths: &PkiPaths, lab: &str, names: &[&str]) -> Result<(), PkiError> {
    let now = time::OffsetDateTime::now_utc();
    let validity = |params: &mut CertificateParams| {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
    };
    let subject = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, format!("double11 lab {lab}"));
        dn
    };
    let generate = |what| move |source| PkiError::Generate { what, source };

    // Root: may sign one level of CA below it [RFC 5280 § 4.2.1.9].
    let mut root = CertificateParams::default();
    validity(&mut root);
    root.distinguished_name = subject("double11 lab root CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("root"))?;
    let root = CertifiedIssuer::self_signed(root, root_key).map_err(generate("root"))?;

    // Intermediate: signs leaves only.
    let mut inter = CertificateParams::default();
    validity(&mut inter);
    inter.distinguished_name = subject("double11 lab intermediate CA");
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    inter.use_authority_key_identifier_extension = true;
    let inter_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("intermediate"))?;
    let inter =
        CertifiedIssuer::signed_by(inter, inter_key, &root).map_err(generate("intermediate"))?;

    // Leaf: a TLS server certificate for `names` [RFC 5280 § 4.2.1.12].
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(owned).map_err(generate("server"))?;
    validity(&mut leaf);
    leaf.distinguished_name = subject(names.first().copied().unwrap_or("double11 lab server"));
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("server"))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &inter)
        .map_err(generate("server"))?;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&paths.dir)
        .map_err(|source| PkiError::Write {
            path: paths.dir.clone(),
            source,
        })?;
    write_atomically(&paths.root_cert(), root.pem().as_bytes(), 0o644)?;
    write_atomically(&paths.intermediate_cert(), inter.pem().as_bytes(), 0o644)?;
    let chain = format!("{}{}", leaf_cert.pem(), inter.pem());
    write_atomically(&paths.server_chain(), chain.as_bytes(), 0o644)?;
    write_atomically(
        &paths.server_key(),
        leaf_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// Writes `bytes` to a temporary file created with `mode` beside `path`, then
/// renames it over `path`, so a reader sees the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Every certificate in the PEM file `path`.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem = |source| PkiError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A rustls server configuration from `server.pem` and `server.key`: TLS 1.2
/// and 1.3, ALPN `http/1.1`, the ring provider.
pub fn server_config(paths: &PkiPaths) -> Result<Arc<ServerConfig>, PkiError> {
    let chain_path = paths.server_chain();
    let key_path = paths.server_key();
    let chain = load_certs(&chain_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| PkiError::Pem {
        path: key_path.clone(),
        source,
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| PkiError::Tls {
                path: chain_path.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| PkiError::Tls {
                path: key_path,
                source,
            })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client configuration trusting only the PEM roots in `root`, ALPN
/// `http/1.1`, TLS 1.2 and 1.3. With `key_log`, session secrets go to the file
/// named by `SSLKEYLOGFILE` (NSS key log format), for Wireshark.
pub fn client_config(root: &Path, key_log: bool) -> Result<Arc<ClientConfig>, PkiError> {
    client_config_with_versions(
        root,
        key_log,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// [`client_config`] offering only `versions` (e.g. `&[&rustls::version::TLS12]`).
pub fn client_config_with_versions(
    root: &Path,
    key_log: bool,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, PkiError> {
    let tls = |source| PkiError::Tls {
        path: root.to_path_buf(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(root)? {
        roots.add(cert).map_err(tls)?;
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    if key_log {
        config.key_log = Arc::new(rustls::KeyLogFile::new());
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn lab_pki(lab: &str) -> (tempfile::TempDir, PkiPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::new(dir.path().join("pki"));
        make(&paths, lab, &["www.geektime.com", "127.0.0.1"]).unwrap();
        (dir, paths)
    }

    /// Handshakes over an in-memory pipe and, on success, echoes one byte so
    /// both ends prove the session works. Returns the negotiated version.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<rustls::ProtocolVersion, std::io::Error> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            tls.write_all(&b).await?;
            tls.flush().await
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = connector.connect(name, c).await?;
        tls.write_all(b"x").await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        server.await.unwrap()?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ALPN_HTTP11));
        Ok(conn.protocol_version().unwrap())
    }

    #[test]
    fn chain_verifies_with_openssl_against_the_root_only() {
        let (dir, paths) = lab_pki("test");
        let chain = fs::read_to_string(paths.server_chain()).unwrap();
        let leaf_end = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
        let leaf = dir.path().join("leaf.pem");
        fs::write(&leaf, &chain[..leaf_end]).unwrap();
        // The intermediate in server.pem is the one in intermediate.pem.
        assert_eq!(
            chain[leaf_end..].trim(),
            fs::read_to_string(paths.intermediate_cert())
                .unwrap()
                .trim()
        );

        let verify = |extra: &[&str]| {
            Command::new("openssl")
                .arg("verify")
                .args(["-CAfile".as_ref(), paths.root_cert().as_os_str()])
                .args(extra)
                .arg(&leaf)
                .output()
                .expect("openssl is installed")
        };
        let inter = paths.intermediate_cert();
        let ok = verify(&[
            "-untrusted",
            inter.to_str().unwrap(),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "www.geektime.com",
        ]);
        assert!(ok.status.success(), "{ok:?}");
        assert!(String::from_utf8_lossy(&ok.stdout).contains(": OK"));
        // Without the intermediate the leaf does not chain to the root.
        assert!(!verify(&[]).status.success());
    }

    #[test]
    fn certificates_carry_the_constraints_and_only_the_leaf_key_is_written() {
        let (_dir, paths) = lab_pki("test");
        let text = |path: PathBuf| {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let root = text(paths.root_cert());
        assert!(root.contains("CA:TRUE, pathlen:1"), "{root}");
        assert!(root.contains("Certificate Sign, CRL Sign"), "{root}");
        assert!(root.contains("CN = double11 lab root CA, O = double11 lab test"));
        assert!(root.contains("prime256v1"));
        let inter = text(paths.intermediate_cert());
        assert!(inter.contains("CA:TRUE, pathlen:0"), "{inter}");
        let leaf = text(paths.server_chain());
        assert!(leaf.contains("CA:FALSE"), "{leaf}");
        assert!(leaf.contains("TLS Web Server Authentication"), "{leaf}");
        assert!(leaf.contains("Digital Signature"), "{leaf}");
        assert!(
            leaf.contains("DNS:www.geektime.com, IP Address:127.0.0.1"),
            "{leaf}"
        );

        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(paths.server_key()), 0o600);
        assert_eq!(mode(paths.dir.clone()), 0o755);
        let mut files: Vec<_> = fs::read_dir(&paths.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["intermediate.pem", "root.pem", "server.key", "server.pem"]
        );
    }

    #[tokio::test]
    async fn tls12_and_tls13_handshakes_succeed_with_the_lab_root() {
        let (_dir, paths) = lab_pki("test");
        let server = server_config(&paths).unwrap();
        let root = paths.root_cert();
        let both = client_config(&root, false).unwrap();
        let v = handshake(server.clone(), both, "www.geektime.com").await;
        assert_eq!(v.unwrap(), rustls::ProtocolVersion::TLSv1_3);
        let tls12 = client_config_with_versions(&root, false, &[&rustls::version::TLS12]).unwrap();
        let v = handshake(server, tls12, "127.0.0.1").await;
        assert_eq!(v.unwrap(), rustls::ProtocolVersion::TLSv1_2);
    }

    #[tokio::test]
    async fn a_client_trusting_another_root_fails_the_handshake() {
        let (_dir, paths) = lab_pki("test");
        let (_other_dir, other) = lab_pki("other");
        let server = server_config(&paths).unwrap();
        let client = client_config(&other.root_cert(), false).unwrap();
        let err = handshake(server, client, "www.geektime.com")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        // Nor does the lab root vouch for a name the leaf does not carry.
        let server = server_config(&paths).unwrap();
        let client = client_config(&paths.root_cert(), false).unwrap();
        assert!(handshake(server, client, "www.example.com").await.is_err());
    }

    #[test]
    fn errors_name_the_file() {
        let (_dir, paths) = lab_pki("test");
        let missing = PkiPaths::new(paths.dir.join("nowhere"));
        let err = server_config(&missing).unwrap_err().to_string();
        assert!(err.contains("nowhere/server.pem"), "{err}");
        fs::write(paths.dir.join("empty.pem"), "").unwrap();
        let err = client_config(&paths.dir.join("empty.pem"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.pem holds no certificate"), "{err}");
    }
}
