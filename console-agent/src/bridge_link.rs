//! The agent's WebSocket to the bridge's `/muicall`: `ws://`, or `wss://` with the certificate
//! checked against the configured CA file or the system's roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long connecting (TCP, TLS and the WebSocket upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The WebSocket to the bridge.
pub type BridgeSocket = WebSocketStream<Box<dyn Io>>;

/// The TLS settings of a `wss://` bridge: trust `ca_file` only, or the system's roots.
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("ca_file {}", path.display()))?
            {
                let cert = cert.with_context(|| format!("ca_file {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("ca_file {}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if roots.add_parsable_certificates(found.certs).0 == 0 {
                bail!("no system root certificates could be loaded (set ca_file)");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Opens the WebSocket to `url` (`ws://` or `wss://`; `tls` is used for the latter).
pub async fn connect(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<BridgeSocket> {
    tokio::time::timeout(CONNECT_TIMEOUT, open(url, tls))
        .await
        .map_err(|_| anyhow!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))?
}

async fn open(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> anyhow::Result<BridgeSocket> {
    let request = url.into_client_request()?;
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("no host in {url}"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    // IPv6 literals come bracketed in URLs, not in socket addresses.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tcp = TcpStream::connect((bare.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Io> = if secure {
        let config = tls.ok_or_else(|| anyhow!("wss:// needs TLS settings"))?;
        let name = ServerName::try_from(bare)?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}
