//! TLS material for the HTTP listener and the outbound links (rustls with the ring provider, as
//! the PTT driver): a server certificate and key from PEM files, client trust (the system's roots
//! or a CA file), and a client connection that is plain TCP or TLS. A leaf module: the config
//! validates files with it, the listener and RTCPeer client mode use it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The crypto provider everywhere in the bridge.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which of a certificate/key pair a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate (chain) file.
    Cert,
    /// The private key file.
    Key,
}

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FileError {
    /// The file at fault.
    pub part: Part,
    /// Why, naming the file.
    pub reason: String,
}

/// Why a client TLS configuration could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The CA file cannot be read or holds no certificate.
    #[error(transparent)]
    File(#[from] FileError),
    /// A certificate in the CA file is not usable as a trust anchor.
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCa {
        /// The CA file.
        path: String,
        /// What rustls said.
        reason: String,
    },
    /// No CA file given and the system has no usable roots.
    #[error("no system CA certificates found ({errors} errors); set a CA file")]
    NoSystemRoots {
        /// How many system certificates failed to load.
        errors: usize,
    },
    /// The crypto provider cannot do the default protocol versions.
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn read(part: Part, path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| FileError {
        part,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = read(Part::Cert, path)?;
    certs_from_pem(&pem, path)
}

fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bad = |reason| FileError {
        part: Part::Cert,
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(format!(
                "{}: not a PEM certificate file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(bad(format!("no CERTIFICATE block in {}", path.display())));
    }
    Ok(certs)
}

/// When a DER certificate stops being valid (its `notAfter`), in Unix seconds; `None` when the
/// bytes are not a certificate. A walk down Certificate → TBSCertificate → Validity, enough for
/// the expiry metric without an X.509 library.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2; // [0] version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = tlv(rest)?;
    let after = tlv(validity)?.2; // past notBefore
    let (tag, time, _) = tlv(after)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (usize::from(first), b)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |l, &x| (l << 8) | usize::from(x));
        (len, &b[n..])
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// A server config from a PEM certificate chain (leaf first) and its PEM private key (PKCS#8,
/// PKCS#1 or SEC1), offering `alpn`. Fails naming the file at fault: unreadable, no PEM block,
/// a key that does not parse or does not match the certificate.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, FileError> {
    let cert_pem = read(Part::Cert, cert)?;
    let key_pem = read(Part::Key, key)?;
    let chain = certs_from_pem(&cert_pem, cert)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| FileError {
        part: Part::Key,
        reason: format!("{}: no usable PEM private key: {e}", key.display()),
    })?;
    let provider = provider();
    if let Err(e) = provider.key_provider.load_private_key(key_der.clone_key()) {
        return Err(FileError {
            part: Part::Key,
            reason: format!("{}: cannot use the private key: {e}", key.display()),
        });
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FileError {
            part: Part::Cert,
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => FileError {
                part: Part::Key,
                reason: format!(
                    "{} does not belong to the certificate in {}",
                    key.display(),
                    cert.display()
                ),
            },
            other => FileError {
                part: Part::Cert,
                reason: format!("{}: cannot use the certificate: {other}", cert.display()),
            },
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config trusting the certificates in `ca_file` (PEM) only, or the system's roots
/// when `None` (those that fail to load are skipped; none at all is an error).
pub fn client_config(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| TrustError::BadCa {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TrustError::NoSystemRoots {
                    errors: found.errors.len(),
                });
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A byte stream: plain TCP or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A client connection to `authority` (`host:port`), with `TCP_NODELAY`; TLS when `tls` is
/// given, the server's certificate checked for `host`.
pub async fn connect(
    authority: &str,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
) -> io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(authority).await?;
    let _ = tcp.set_nodelay(true);
    let Some((config, host)) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?
        .to_owned();
    let stream = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_reads_the_certificates_expiry() {
        let pem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/certs/murmur-cert.pem"
        );
        let cert = &load_certs(Path::new(pem)).unwrap()[0];
        // openssl x509 -enddate: "Jan  1 00:00:00 2120 GMT"
        assert_eq!(not_after(cert.as_ref()), Some(4_733_510_400));
        assert_eq!(not_after(&cert.as_ref()[..40]), None, "cut short");
        assert_eq!(not_after(b"\x30\x80garbage"), None);
        assert_eq!(not_after(&[]), None);
    }

    #[test]
    fn bad_files_name_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let e = server_config(&missing, &junk, &[]).unwrap_err();
        assert_eq!(e.part, Part::Cert);
        assert!(e.reason.contains("cannot read"), "{e}");
        let e = server_config(&junk, &missing, &[]).unwrap_err();
        assert_eq!(e.part, Part::Key, "{e}");
        let e = server_config(&junk, &junk, &[]).unwrap_err();
        assert_eq!(e.part, Part::Cert, "{e}");
        assert!(e.reason.contains("no CERTIFICATE"), "{e}");
        assert!(client_config(Some(&junk), &[]).is_err());
    }
}
