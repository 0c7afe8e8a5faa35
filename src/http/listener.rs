//! The HTTP listener: our own accept loop serving the axum [`Router`] with hyper
//! (HTTP/1.1 with upgrades, for the WebSockets), in place of `axum::serve`, so that every
//! connection is bounded:
//!
//! - **TLS** (optional, `[http] tls_cert` + `tls_key`): rustls; the files are checked every
//!   [`RELOAD_EVERY`] and re-read when they change (or on SIGHUP); new files that do not make a
//!   usable certificate are logged and the previous one stays in use.
//! - **Timeouts**: a connection must deliver a request's headers within `header_timeout_ms` of
//!   its first byte (of connecting, for the first request; the TLS handshake gets as long) —
//!   a slowloris client is closed; between requests a kept-alive connection may wait
//!   `idle_timeout_ms`. A request being answered (an SSE stream too) and an upgraded WebSocket
//!   are never timed out here (the WebSockets have their own heartbeats).
//! - **Caps**: open connections in all (`max_connections`) and per IP address
//!   (`max_connections_per_ip`), WebSockets included for as long as they live; a connection
//!   beyond them is closed at once and counted
//!   (`pttbridge_http_connections_refused_total{reason="total"|"per_ip"}`). Open connections:
//!   the gauge `pttbridge_http_connections`. Timeouts: `pttbridge_http_timeouts_total{kind}`.
//! - `TCP_NODELAY` on every connection: WebSocket frames (events, signalling) are small and must
//!   not wait for Nagle and the peer's delayed ACK (~40 ms).
//! - **Graceful shutdown**: once `shutdown` turns `true`, no more connections are accepted, those
//!   between requests or still sending headers are closed at once and the others finish their
//!   request; [`serve`] returns when all are gone (the caller bounds how long it waits; dropping
//!   the future drops the connections).
//! - An optional plain-HTTP listener (`redirect_listen`) answers everything with a 301 to the
//!   same path on HTTPS (`public_url`'s host, else the request's host with the HTTPS port).
//!
//! Handlers can read the peer's address as `axum::extract::ConnectInfo<SocketAddr>`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::HttpConfig;

/// How often the TLS files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` (HTTPS when `config` has a certificate), and the redirect
/// listener when `config` asks for one, until `shutdown` turns `true` (or its sender is dropped)
/// and every connection has finished.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let limits = Limits::new(config);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let store = CertStore::load(cert.clone(), key.clone())?;
            tokio::spawn(store.clone().watch(shutdown.clone()));
            Some(store)
        }
        _ => None,
    };
    let redirect = match config.redirect_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("http.redirect_listen: cannot listen on {addr}: {e}"),
                )
            })?;
            info!(address = %l.local_addr()?, "HTTP → HTTPS redirect listening");
            let target = RedirectTarget {
                public_url: config.public_url.clone(),
                https_port: listener.local_addr()?.port(),
            };
            Some(accept_loop(
                l,
                redirect_router(target),
                limits.clone(),
                None,
                shutdown.clone(),
            ))
        }
        None => None,
    };
    let main = accept_loop(listener, router, limits, tls, shutdown);
    match redirect {
        Some(r) => {
            tokio::join!(main, r);
        }
        None => main.await,
    }
    Ok(())
}

/// Resolves once `shutdown` is `true` or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Arc<Limits>,
    tls: Option<Arc<CertStore>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let Some(slot) = limits.admit(remote.ip()) else {
                        // Refused: closed at once (counted in admit).
                        drop(tcp);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let conn = Connection {
                        remote,
                        slot,
                        router: router.clone(),
                        limits: limits.clone(),
                        shutdown: shutdown.clone(),
                    };
                    conns.spawn(conn.run(tcp, tls.clone()));
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopping(&mut shutdown) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

// ---- connection caps ----

/// Open connections, in all and per address, against the configured caps.
#[derive(Debug)]
struct Limits {
    max_total: usize,
    max_per_ip: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Limits {
    fn new(config: &HttpConfig) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            header_timeout: config.header_timeout(),
            idle_timeout: config.idle_timeout(),
            write_timeout: config.write_timeout(),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a connection from `ip`, or `None` (counted) when a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let (total, per_ip) = &mut *open;
            if *total >= self.max_total {
                Some("total")
            } else {
                let n = per_ip.entry(ip).or_insert(0);
                if *n >= self.max_per_ip {
                    Some("per_ip")
                } else {
                    *n += 1;
                    *total += 1;
                    None
                }
            }
        };
        if let Some(reason) = refused {
            metrics::counter!("pttbridge_http_connections_refused_total", "reason" => reason)
                .increment(1);
            debug!(%ip, reason, "HTTP connection refused");
            return None;
        }
        metrics::gauge!("pttbridge_http_connections").increment(1.0);
        Some(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; released when dropped (with the socket, which an upgraded
/// WebSocket keeps).
#[derive(Debug)]
struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        metrics::gauge!("pttbridge_http_connections").decrement(1.0);
    }
}

// ---- what a connection is doing, for its timeouts ----

/// Waiting for (the rest of) a request's headers.
const HEAD: u64 = 0;
/// Answering a request.
const BUSY: u64 = 1;
/// Kept alive between requests.
const IDLE: u64 = 2;
/// Handed over to a WebSocket.
const UPGRADED: u64 = 3;
const PHASE_SHIFT: u32 = 56;

/// A connection's phase and since when (ms after `origin`), in one word so they change
/// together.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    state: AtomicU64,
    in_flight: AtomicU32,
    /// Woken when a deadline may have moved (a first byte after idling, a request done).
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            state: AtomicU64::new(HEAD << PHASE_SHIFT),
            in_flight: AtomicU32::new(0),
            changed: Notify::new(),
        }
    }

    fn pack(&self, phase: u64) -> u64 {
        let ms = self.origin.elapsed().as_millis() as u64 & ((1 << PHASE_SHIFT) - 1);
        (phase << PHASE_SHIFT) | ms
    }

    /// Moves from `from` to `to` (now); false if it was not in `from`.
    fn shift(&self, from: u64, to: u64) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s >> PHASE_SHIFT == from).then(|| self.pack(to))
            })
            .is_ok()
    }

    /// Bytes arrived: after idling, a new request's headers start now.
    fn on_read(&self) {
        if self.state.load(Ordering::Acquire) >> PHASE_SHIFT == IDLE && self.shift(IDLE, HEAD) {
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _ = self.shift(HEAD, BUSY) || self.shift(IDLE, BUSY);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 && self.shift(BUSY, IDLE) {
            self.changed.notify_one();
        }
    }

    fn upgraded(&self) {
        self.state.store(UPGRADED << PHASE_SHIFT, Ordering::Release);
    }

    /// When the current phase runs out, and which timeout that is.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let s = self.state.load(Ordering::Acquire);
        let since = self.origin + Duration::from_millis(s & ((1 << PHASE_SHIFT) - 1));
        match s >> PHASE_SHIFT {
            HEAD => Some((since + limits.header_timeout, "header")),
            IDLE => Some((since + limits.idle_timeout, "idle")),
            _ => None,
        }
    }
}

/// The socket (TCP or TLS) as hyper sees it: reads are noted for the timeouts; a write the
/// peer does not take within the write timeout fails it (the connection, or the WebSocket it
/// became, closes); the slot goes with it (into the WebSocket after an upgrade).
struct Watched<S> {
    // Released first: the slot is free by the time the socket closes.
    _slot: Slot,
    io: S,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Running while a write is blocked on the peer.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Watched<S> {
    /// Passes a write's outcome on, timing how long the peer has been taking nothing.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.write_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            metrics::counter!("pttbridge_http_timeouts_total", "kind" => "write").increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took nothing written to it within http.write_timeout_ms",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.activity.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.watch_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.watch_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The router as a hyper service that tells the connection's [`Activity`] when a request starts
/// and when its response has been sent (its body dropped), and adds `ConnectInfo`.
#[derive(Clone)]
struct Service {
    router: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    remote: SocketAddr,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.request_started();
        let end = RequestEnd(self.activity.clone());
        req.extensions_mut().insert(ConnectInfo(self.remote));
        let response = hyper::service::Service::call(&self.router, req);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                end.0.upgraded();
            }
            Ok(response.map(|inner| Tracked { inner, _end: end }))
        })
    }
}

/// Marks the request done when dropped (with the response body, once hyper has sent it).
struct RequestEnd(Arc<Activity>);

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body carrying its [`RequestEnd`].
pub struct Tracked {
    inner: Body,
    _end: RequestEnd,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One accepted connection.
struct Connection {
    remote: SocketAddr,
    slot: Slot,
    router: Router,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<Arc<CertStore>>) {
        let Some(tls) = tls else {
            return self.serve(tcp).await;
        };
        let acceptor = tls.acceptor();
        match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => {
                metrics::counter!("pttbridge_http_tls_handshakes_failed_total").increment(1);
                debug!(remote = %self.remote, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                metrics::counter!("pttbridge_http_timeouts_total", "kind" => "tls_handshake")
                    .increment(1);
                debug!(remote = %self.remote, "TLS handshake timed out");
            }
        }
    }

    async fn serve<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            remote,
            slot,
            router,
            limits,
            mut shutdown,
        } = self;
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            io,
            activity: activity.clone(),
            _slot: slot,
            write_timeout: limits.write_timeout,
            stalled: None,
        });
        let service = Service {
            router: TowerToHyperService::new(router),
            activity: activity.clone(),
            remote,
        };
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            let deadline = activity.deadline(&limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%remote, error = %e, "HTTP connection ended with an error");
                    }
                    return;
                }
                _ = activity.changed.notified() => {}
                _ = sleep_until(deadline.map(|d| d.0)) => {
                    // The phase may have moved on meanwhile: only a deadline still due counts.
                    if let Some((due, kind)) = activity.deadline(&limits)
                        && due <= Instant::now()
                    {
                        metrics::counter!("pttbridge_http_timeouts_total", "kind" => kind)
                            .increment(1);
                        debug!(%remote, kind, "HTTP connection timed out; closing it");
                        return;
                    }
                }
                _ = stopping(&mut shutdown), if !draining => {
                    // Between requests, or still receiving one's headers: nothing is lost by
                    // closing now. Otherwise the request in progress finishes first.
                    if activity.deadline(&limits).is_some() {
                        return;
                    }
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ---- TLS certificate, reloaded when its files change ----

/// The served certificate and where it comes from.
struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' modification times and sizes when last read (or tried).
    seen: Mutex<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

/// ALPN: HTTP/1.1 only (WebSockets need it; no h2 here).
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// `pttbridge_http_tls_certificate_expiry_timestamp_seconds`: when the served certificate expires
/// (its leaf's notAfter), for an alert well before it does.
fn export_expiry(cert: &std::path::Path) {
    let expiry = crate::tls::load_certs(cert)
        .ok()
        .and_then(|chain| crate::tls::not_after(chain.first()?.as_ref()));
    if let Some(at) = expiry {
        metrics::gauge!("pttbridge_http_tls_certificate_expiry_timestamp_seconds").set(at as f64);
    }
}

impl CertStore {
    /// The files' certificate and key; the error names the config key of the file at fault.
    fn load(cert: PathBuf, key: PathBuf) -> io::Result<Arc<Self>> {
        let seen = stamp(&cert, &key);
        let config = crate::tls::server_config(&cert, &key, ALPN).map_err(|e| {
            let k = match e.part {
                crate::tls::Part::Cert => "http.tls_cert",
                crate::tls::Part::Key => "http.tls_key",
            };
            io::Error::new(io::ErrorKind::InvalidInput, format!("{k}: {e}"))
        })?;
        info!(cert = %cert.display(), "HTTPS: certificate loaded");
        export_expiry(&cert);
        Ok(Arc::new(Self {
            cert,
            key,
            current: RwLock::new(config),
            seen: Mutex::new(seen),
        }))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(config.clone())
    }

    /// Re-reads the files; keeps the current certificate if they are not usable.
    fn reload(&self, why: &str) {
        let now = stamp(&self.cert, &self.key);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
        match crate::tls::server_config(&self.cert, &self.key, ALPN) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                export_expiry(&self.cert);
                metrics::counter!("pttbridge_http_tls_reloads_total", "result" => "ok")
                    .increment(1);
                info!(cert = %self.cert.display(), trigger = why, "HTTPS: certificate reloaded");
            }
            Err(e) => {
                metrics::counter!("pttbridge_http_tls_reloads_total", "result" => "failed")
                    .increment(1);
                warn!(trigger = why, error = %e,
                    "HTTPS: new certificate files not usable; still serving the previous certificate");
            }
        }
    }

    /// Reloads when the files change (checked every [`RELOAD_EVERY`]) and on SIGHUP, until
    /// shutdown.
    async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = tick.tick() => {
                    let now = stamp(&self.cert, &self.key);
                    let changed = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != now;
                    if changed {
                        self.reload("files changed");
                    }
                }
                _ = hangup => self.reload("SIGHUP"),
                _ = stopping(&mut shutdown) => return,
            }
        }
    }
}

fn stamp(cert: &std::path::Path, key: &std::path::Path) -> Stamp {
    let one = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    };
    [one(cert), one(key)]
}

// ---- plain HTTP → HTTPS ----

/// Where the redirect listener sends clients.
#[derive(Debug, Clone)]
struct RedirectTarget {
    /// `[http] public_url` (https://…), used as is when set.
    public_url: Option<String>,
    /// Otherwise the request's host with this port.
    https_port: u16,
}

impl RedirectTarget {
    /// The `Location` for a request, or `None` when the request names no usable host.
    fn location(&self, headers: &HeaderMap, uri: &Uri) -> Option<String> {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let base = match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = headers.get(header::HOST)?.to_str().ok()?;
                let authority: axum::http::uri::Authority = host.parse().ok()?;
                match self.https_port {
                    443 => format!("https://{}", authority.host()),
                    port => format!("https://{}:{port}", authority.host()),
                }
            }
        };
        Some(format!("{base}{path}"))
    }
}

fn redirect_router(target: RedirectTarget) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| {
        let target = target.clone();
        async move {
            match target
                .location(&headers, &uri)
                .and_then(|l| HeaderValue::from_str(&l).ok())
            {
                Some(location) => (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, location)],
                    "use HTTPS\n",
                )
                    .into_response(),
                None => (StatusCode::BAD_REQUEST, "no usable Host header\n").into_response(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_release() {
        let config = HttpConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..HttpConfig::default()
        };
        let limits = Limits::new(&config);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "third from one address");
        let _b1 = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "fourth in all");
        drop(a1);
        let _b2 = limits.admit(b).unwrap();
        // An IPv4-mapped IPv6 address is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(limits.admit(mapped).is_none());
        assert_eq!(limits.open.lock().unwrap().0, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits::new(&HttpConfig::default());
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut w = Watched {
            _slot: limits.admit([10, 0, 0, 1].into()).unwrap(),
            io: ours,
            activity: Arc::new(Activity::new()),
            write_timeout: Duration::from_secs(30),
            stalled: None,
        };
        // A reading peer: no timeout however long it takes in all.
        for _ in 0..4 {
            w.write_all(&[1; 64]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(20)).await;
            let mut buf = [0; 64];
            tokio::io::AsyncReadExt::read_exact(&mut theirs, &mut buf)
                .await
                .unwrap();
        }
        // Then it stops reading: the write that cannot go out fails after the timeout.
        w.write_all(&[2; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = w.write_all(&[3; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn phases_give_the_deadlines() {
        let limits = Limits::new(&HttpConfig::default());
        let a = Activity::new();
        assert_eq!(a.deadline(&limits).unwrap().1, "header");
        a.request_started();
        assert!(a.deadline(&limits).is_none(), "no timeout while answering");
        a.on_read();
        assert!(
            a.deadline(&limits).is_none(),
            "a request body is not a new request"
        );
        a.request_ended();
        assert_eq!(a.deadline(&limits).unwrap().1, "idle");
        a.on_read();
        assert_eq!(a.deadline(&limits).unwrap().1, "header");
        a.request_started();
        a.upgraded();
        a.request_ended();
        assert!(
            a.deadline(&limits).is_none(),
            "a WebSocket is not timed out here"
        );
    }

    #[test]
    fn redirects_go_to_the_https_port_or_the_public_url() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("bridge.test:8080"));
        let uri: Uri = "/a/b?c=1".parse().unwrap();
        let t = RedirectTarget {
            public_url: None,
            https_port: 8443,
        };
        assert_eq!(
            t.location(&headers, &uri).unwrap(),
            "https://bridge.test:8443/a/b?c=1"
        );
        let t = RedirectTarget {
            public_url: None,
            https_port: 443,
        };
        headers.insert(header::HOST, HeaderValue::from_static("[::1]:80"));
        assert_eq!(t.location(&headers, &uri).unwrap(), "https://[::1]/a/b?c=1");
        headers.insert(header::HOST, HeaderValue::from_static("bad host/x"));
        assert!(t.location(&headers, &uri).is_none());
        let t = RedirectTarget {
            public_url: Some("https://pub.example/".into()),
            https_port: 443,
        };
        assert_eq!(
            t.location(&headers, &uri).unwrap(),
            "https://pub.example/a/b?c=1"
        );
    }
}
