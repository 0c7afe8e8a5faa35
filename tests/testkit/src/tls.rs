//! Test certificates (rcgen): a CA, and server certificates it signs for `127.0.0.1` and
//! `localhost`, written as PEM files for the bridge (`[http] tls_cert`/`tls_key`), the Python
//! peers (`--ca`) and client mode (`ca_file`); a rustls client config trusting the CA for
//! [`crate::http`]; and the leaf's SPKI hash for Chromium's
//! `--ignore-certificate-errors-spki-list` (that one certificate only, not a blanket switch).
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let ca = testkit::tls::TestCa::new("test CA");
//! let files = ca.write_server(dir.path(), "server");
//! // [http] tls_cert = files.cert, tls_key = files.key; clients trust ca.pem(dir.path())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// A certificate authority for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

/// A server certificate's files and its fingerprints.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// PEM certificate chain (leaf, then the CA).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
    /// The leaf's DER.
    pub der: Vec<u8>,
    /// Base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo (Chromium's SPKI list).
    pub spki_sha256: String,
}

impl ServerFiles {
    /// The `[http]` lines serving this certificate.
    pub fn http_toml(&self) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns the path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, pem("CERTIFICATE", &self.cert)).expect("write ca.pem");
        path
    }

    /// A server certificate for `127.0.0.1`, `::1` and `localhost`, written to
    /// `dir/<name>.crt.pem` (with the CA) and `dir/<name>.key.pem`.
    pub fn write_server(&self, dir: &Path, name: &str) -> ServerFiles {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        let files = ServerFiles {
            cert: dir.join(format!("{name}.crt.pem")),
            key: dir.join(format!("{name}.key.pem")),
            der: cert.der().to_vec(),
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(key.subject_public_key_info())),
        };
        let chain = pem("CERTIFICATE", cert.der()) + &pem("CERTIFICATE", &self.cert);
        std::fs::write(&files.cert, chain).expect("write cert");
        std::fs::write(&files.key, pem("PRIVATE KEY", &key.serialize_der())).expect("write key");
        files
    }

    /// A rustls client config trusting this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .expect("CA into the root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}
