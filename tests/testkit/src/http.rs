//! A tiny blocking HTTP/1.0 client for tests: enough for JSON endpoints and for
//! following a Server-Sent Events stream, without pulling an HTTP stack into tests. An address
//! given to [`use_tls`] is spoken to over TLS (HTTPS), so a bridge serving HTTPS is observed the
//! same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::events::{EventQueue, exit_marker};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// The body parsed as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Addresses spoken to over TLS, with the client config to use.
static TLS: Mutex<Vec<(SocketAddr, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());

/// From now on, requests to `addr` go over TLS with `config` (server name: the address's IP).
pub fn use_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) {
    let mut tls = TLS.lock().unwrap_or_else(|p| p.into_inner());
    tls.retain(|(a, _)| *a != addr);
    tls.push((addr, config));
}

/// A request's connection: TCP, or TLS over it.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A connection to `addr` (TLS if [`use_tls`] named it) with `read_timeout`.
pub fn connect(
    addr: SocketAddr,
    read_timeout: Option<Duration>,
) -> std::io::Result<Box<dyn Stream>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(read_timeout)?;
    let config = TLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, c)| c.clone());
    let Some(config) = config else {
        return Ok(Box::new(s));
    };
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    // Handshake now, so a refused certificate is this call's error.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(Box::new(tls))
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    read_timeout: Option<Duration>,
) -> std::io::Result<Box<dyn Stream>> {
    let mut s = connect(addr, read_timeout)?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some((ctype, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some((_, b)) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    Ok(s)
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Sends a request (with an optional JSON body) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<Response> {
    request_with(addr, method, path, json_body, &[])
}

/// Like [`request`] with extra request headers (e.g. `("X-App-Secret", "...")`).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    request_any(
        addr,
        method,
        path,
        json_body.map(|b| ("application/json", b)),
        headers,
    )
}

/// A request with an optional `(content type, body)`, the whole response read.
fn request_any(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let s = send(
        addr,
        method,
        path,
        body,
        headers,
        Some(Duration::from_secs(30)),
    )?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let mut body = String::new();
    match r.read_to_string(&mut body) {
        Ok(_) => {}
        // A TLS server may close without close_notify after a `Connection: close` response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Like [`request_with`] with a body of any content type (e.g. a form,
/// `application/x-www-form-urlencoded`).
pub fn request_typed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: (&str, &str),
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    request_any(addr, method, path, Some(body), headers)
}

/// A response with a byte body: status, headers (names lowercased) and body.
pub type BytesResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// A request whose response body is bytes (a download).
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<BytesResponse> {
    let s = send(
        addr,
        method,
        path,
        None,
        headers,
        Some(Duration::from_secs(30)),
    )?;
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    let mut body = Vec::new();
    match r.read_to_end(&mut body) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok((status, headers, body))
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, None)
}

/// Follows a Server-Sent Events stream: each `data:` line's JSON becomes one event of the
/// queue (with the SSE event name added as `"sse"`), then the exit marker when it ends.
pub fn sse(addr: SocketAddr, path: &str) -> std::io::Result<EventQueue> {
    sse_with(addr, path, &[])
}

/// [`sse`] with extra request headers (e.g. an operator's `Authorization`).
pub fn sse_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<EventQueue> {
    let s = send(addr, "GET", path, None, headers, None)?;
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r)?;
    if status != 200 {
        return Err(std::io::Error::other(format!("{path}: HTTP {status}")));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in r.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let mut v: Value =
                    serde_json::from_str(d.trim()).unwrap_or(Value::String(d.to_string()));
                if let Some(o) = v.as_object_mut() {
                    o.insert("sse".into(), Value::String(name.clone()));
                }
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(exit_marker());
    });
    Ok(EventQueue::new(rx))
}
