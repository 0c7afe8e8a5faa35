//! Outbound HTTP/1.1 for the bridge's few client requests: logging in to an external RTCPeer
//! server, reading a Totalk admin server, committing usage to a management server. Each request
//! is one exchange on a fresh connection (`Connection: close`), over TLS for an `https://` base,
//! with a deadline and a cap on the answer's size. These are a handful of requests a minute, so
//! a pooled client crate would buy nothing but build time.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes read from one response (headers and body).
pub const MAX_RESPONSE: usize = 1 << 20;
/// Each request's deadline, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The base URL is not `http(s)://host[:port][/prefix]`.
    #[error("{url}: {why}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An `https://` base but no TLS trust was given.
    #[error("https:// but no TLS trust configured")]
    NoTrust,
    /// Connecting, TLS or the exchange itself failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No whole answer within [`TIMEOUT`].
    #[error("no answer in {0:?}")]
    Timeout(Duration),
    /// The answer is not an HTTP/1.1 response we can read.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// A status other than 200.
    #[error("HTTP {status}: {excerpt}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body, for the log.
        excerpt: String,
    },
    /// The answer is longer than [`MAX_RESPONSE`].
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
    /// A 200 whose body is not the expected JSON.
    #[error("the body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A server's base URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https://` (TLS for requests, `wss://` for sockets).
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// The host alone (what its certificate must name), IPv6 without brackets.
    pub host: String,
    /// Path prefix without a trailing `/` (usually empty).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http(s)://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err(bad("must be http:// or https://")),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        // A port after the host (an IPv6 literal is in brackets, with colons of its own).
        let host = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        };
        let authority = if host.len() < authority.len() {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Self {
            tls,
            authority,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// A WebSocket URL for `path` on this server (`wss://` for an `https://` base).
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}{path}", self.authority, self.prefix)
    }

    /// `path` on this server as a full URL, for logs.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority, self.prefix)
    }

    /// A connection to the server: for an `https://` base, TLS with the server's certificate
    /// checked against `trust`.
    pub async fn connect(
        &self,
        trust: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Box<dyn crate::tls::Stream>, HttpError> {
        let tls = match (self.tls, trust) {
            (false, _) => None,
            (true, Some(config)) => Some((config, self.host.as_str())),
            (true, None) => return Err(HttpError::NoTrust),
        };
        Ok(crate::tls::connect(&self.authority, tls).await?)
    }
}

/// A request body with its content type.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// `Content-Type`, e.g. `application/x-www-form-urlencoded`.
    pub content_type: &'a str,
    /// The bytes sent.
    pub bytes: &'a [u8],
}

impl<'a> Body<'a> {
    /// A form-encoded body (build it with [`form_encode`]).
    pub fn form(text: &'a str) -> Self {
        Self {
            content_type: "application/x-www-form-urlencoded",
            bytes: text.as_bytes(),
        }
    }

    /// A JSON body.
    pub fn json(text: &'a str) -> Self {
        Self {
            content_type: "application/json",
            bytes: text.as_bytes(),
        }
    }
}

/// One request: `method path` on `base` with extra `headers` and an optional body; a 200
/// answer's JSON body read as `T`.
pub async fn request_json<T: DeserializeOwned>(
    base: &BaseUrl,
    trust: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Body<'_>>,
) -> Result<T, HttpError> {
    let raw = tokio::time::timeout(TIMEOUT, exchange(base, trust, method, path, headers, body))
        .await
        .map_err(|_| HttpError::Timeout(TIMEOUT))??;
    parse_response(&raw)
}

async fn exchange(
    base: &BaseUrl,
    trust: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Body<'_>>,
) -> Result<Vec<u8>, HttpError> {
    let mut stream = base.connect(trust).await?;
    let mut req = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        base.prefix, base.authority
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            body.content_type,
            body.bytes.len()
        ));
    }
    req.push_str("\r\n");
    let mut out = req.into_bytes();
    if let Some(body) = body {
        out.extend_from_slice(body.bytes);
    }
    stream.write_all(&out).await?;
    let mut raw = Vec::new();
    // One byte past the cap tells an answer that is too long from one that just fits.
    let read = (&mut stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .await;
    if raw.len() > MAX_RESPONSE {
        return Err(HttpError::TooLarge(MAX_RESPONSE));
    }
    // A TLS server that closes without close_notify has still sent its whole answer
    // (`Connection: close`): what was read is judged on its own.
    if let Err(e) = read
        && (raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(e.into());
    }
    Ok(raw)
}

/// Status 200 and a JSON body (plain or chunked) that reads as `T`.
pub fn parse_response<T: DeserializeOwned>(raw: &[u8]) -> Result<T, HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed("no end of headers"))?;
    let head =
        std::str::from_utf8(&raw[..split]).map_err(|_| HttpError::Malformed("headers not text"))?;
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed("no status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(&raw[split + 4..])?
    } else {
        raw[split + 4..].to_vec()
    };
    if status != 200 {
        return Err(HttpError::Status {
            status,
            excerpt: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    Ok(serde_json::from_slice(&body)?)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpError::Malformed("no end of chunk size"))?;
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok())
            .ok_or(HttpError::Malformed("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(HttpError::Malformed("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `application/x-www-form-urlencoded` / query component encoding.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(b.authority, "127.0.0.1:8080");
        assert_eq!(b.ws_url("/rtcpeer"), "ws://127.0.0.1:8080/rtcpeer");
        assert!(!b.tls);
        let b = BaseUrl::parse("http://meet.example/api/").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("meet.example:80", "/api")
        );
        assert_eq!(b.url("/x"), "http://meet.example:80/api/x");
        let b = BaseUrl::parse("https://meet.example").unwrap();
        assert_eq!(
            (b.tls, b.authority.as_str(), b.host.as_str()),
            (true, "meet.example:443", "meet.example")
        );
        assert_eq!(b.ws_url("/rtcpeer"), "wss://meet.example:443/rtcpeer");
        let b = BaseUrl::parse("https://[::1]:8443/x").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.host.as_str(), b.prefix.as_str()),
            ("[::1]:8443", "::1", "/x")
        );
        assert_eq!(
            BaseUrl::parse("https://[::1]").unwrap().authority,
            "[::1]:443"
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("http:///x").is_err());
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"code\":200}";
        assert_eq!(parse_response::<Value>(plain).unwrap()["code"], 200);
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_response::<Value>(chunked).unwrap()["a"], 1);
        let err = b"HTTP/1.1 500 Oops\r\n\r\nbroken";
        let err = parse_response::<Value>(err).unwrap_err();
        assert!(
            matches!(err, HttpError::Status { status: 500, .. }),
            "{err}"
        );
        assert!(parse_response::<Value>(b"garbage").is_err());
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response::<Value>(bad_chunk).is_err());
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[tokio::test]
    async fn a_request_carries_headers_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = BaseUrl::parse(&format!("http://{}/p", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Read until the 7-byte body after the blank line has arrived.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"a=1&b=2") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n{\"ok\":true}")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let v: Value = request_json(
            &base,
            None,
            "POST",
            "/commit",
            &[("Authorization", "Bearer t")],
            Some(Body::form("a=1&b=2")),
        )
        .await
        .unwrap();
        assert_eq!(v["ok"], true);
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /p/commit HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nAuthorization: Bearer t\r\n"), "{req}");
        assert!(req.contains("\r\nContent-Length: 7\r\n"), "{req}");
    }
}
