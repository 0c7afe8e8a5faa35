//! Logging in to an external RTCPeer server (spec 6.1, 6.2): `GET /app/getSign`, then
//! `POST /app/account` with the spec's one `params` field (`method: dockingLogin`, `appkey`,
//! `sign`, ...) → `SID` and our user id there. Two small HTTP/1.1
//! requests on a fresh connection each (`Connection: close`), over TLS for an `https://`
//! upstream: a client crate would be a large dependency for two requests a reconnect. The
//! answers are read as the adapter's [`GetSign`] and [`DockingLogin`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rtcpeer::id::Id;
use rtcpeer::reply::{DockingLogin, GetSign};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes read from a login response.
const MAX_RESPONSE: usize = 1 << 20;
/// Each request's deadline.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An upstream's base URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `https://` (TLS for the requests and `wss://` for the signalling socket).
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// The host alone (what its certificate must name), IPv6 without brackets.
    pub host: String,
    /// Path prefix without a trailing `/` (usually empty).
    pub prefix: String,
}

impl Base {
    /// Parses `http(s)://host[:port][/prefix]`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => bail!("{url}: must be http:// or https://"),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
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

    /// The signalling socket's URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}/rtcpeer", self.authority, self.prefix)
    }

    /// A connection to the server: for an `https://` base, TLS with the server's certificate
    /// checked against `trust`.
    pub async fn connect(
        &self,
        trust: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Box<dyn crate::tls::Stream>> {
        let tls = match (self.tls, trust) {
            (false, _) => None,
            (true, Some(config)) => Some((config, self.host.as_str())),
            (true, None) => return Err(std::io::Error::other("https:// but no TLS trust")),
        };
        crate::tls::connect(&self.authority, tls).await
    }
}

/// What a login gives.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// Session id for `call.doRegister`.
    pub sid: String,
    /// Our user id on that server (what its callers dial).
    pub user_id: Id,
}

/// getSign + dockingLogin as `account` (shown as `name`).
pub async fn login(
    base: &Base,
    tls: Option<&Arc<rustls::ClientConfig>>,
    app_id: &str,
    secret: &str,
    account: &str,
    name: &str,
) -> anyhow::Result<LoggedIn> {
    let path = format!(
        "/app/getSign?appId={}&secret={}",
        form_encode(app_id),
        form_encode(secret)
    );
    let sign: GetSign = request(base, tls, "GET", &path, None)
        .await
        .context("getSign")?;
    if sign.code != 200 {
        bail!("getSign refused: code {}: {}", sign.code, sign.message);
    }
    let sign = sign.data.context("getSign: no data")?;
    let form = docking_form(app_id, &sign, account, name);
    let login: DockingLogin = request(base, tls, "POST", "/app/account", Some(form))
        .await
        .context("dockingLogin")?;
    if login.result != 0 {
        bail!(
            "dockingLogin refused: result {}: {}",
            login.result,
            login.message.as_deref().unwrap_or("no message")
        );
    }
    Ok(LoggedIn {
        sid: login.sid.context("dockingLogin: no SID")?,
        user_id: login
            .user
            .and_then(|u| u.id)
            .context("dockingLogin: no user.id")?,
    })
}

/// The `dockingLogin` body as the spec's example sends it (6.2.2.4): one form field `params`
/// holding the fields as JSON, with `appkey` (the company's access key: our `app_id`) and the
/// `sign` from `getSign` (6.2.2.2 marks it required).
fn docking_form(app_id: &str, sign: &str, account: &str, name: &str) -> String {
    let params = serde_json::json!({
        "method": "dockingLogin",
        "account": account,
        "userName": name,
        "appkey": app_id,
        "sign": sign,
    });
    format!("params={}", form_encode(&params.to_string()))
}

/// `application/x-www-form-urlencoded` / query component encoding.
fn form_encode(s: &str) -> String {
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

/// One HTTP exchange, its JSON body read as `T`.
async fn request<T: DeserializeOwned>(
    base: &Base,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    form: Option<String>,
) -> anyhow::Result<T> {
    let scheme = if base.tls { "https" } else { "http" };
    let what = format!(
        "{method} {scheme}://{}{}{path}",
        base.authority, base.prefix
    );
    tokio::time::timeout(TIMEOUT, exchange(base, tls, method, path, form))
        .await
        .with_context(|| format!("{what}: no answer in {TIMEOUT:?}"))?
        .with_context(|| what)
}

async fn exchange<T: DeserializeOwned>(
    base: &Base,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    form: Option<String>,
) -> anyhow::Result<T> {
    let mut stream = base.connect(tls).await?;
    let host = &base.authority;
    let mut req = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n",
        base.prefix
    );
    let body = form.unwrap_or_default();
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let read = (&mut stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut raw)
        .await;
    // A TLS server that closes without close_notify has still sent its whole answer
    // (`Connection: close`): what was read is judged on its own.
    if let Err(e) = read
        && (raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(e.into());
    }
    parse_response(&raw)
}

/// Status 200 and a JSON body (plain or chunked) that reads as `T`.
fn parse_response<T: DeserializeOwned>(raw: &[u8]) -> anyhow::Result<T> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("headers are not text")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    if status != "200" {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    serde_json::from_slice(&body).context("the body is not the expected JSON")
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn base_urls() {
        let b = Base::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(b.authority, "127.0.0.1:8080");
        assert_eq!(b.ws_url(), "ws://127.0.0.1:8080/rtcpeer");
        assert!(!b.tls);
        let b = Base::parse("http://meet.example/api/").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("meet.example:80", "/api")
        );
        let b = Base::parse("https://meet.example").unwrap();
        assert_eq!(
            (b.tls, b.authority.as_str(), b.host.as_str()),
            (true, "meet.example:443", "meet.example")
        );
        assert_eq!(b.ws_url(), "wss://meet.example:443/rtcpeer");
        let b = Base::parse("https://[::1]:8443/x").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.host.as_str(), b.prefix.as_str()),
            ("[::1]:8443", "::1", "/x")
        );
        assert_eq!(Base::parse("https://[::1]").unwrap().authority, "[::1]:443");
        assert!(Base::parse("ftp://x").is_err());
        assert!(Base::parse("http:///x").is_err());
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
        assert!(err.to_string().contains("500"));
        assert!(parse_response::<Value>(b"garbage").is_err());
    }

    #[test]
    fn docking_login_posts_params_with_appkey() {
        let form = docking_form("app 1", "s&g", "ptt-9001", "North");
        let value = form.strip_prefix("params=").expect("one params field");
        assert!(!value.contains(['&', '=']), "{form}");
        let decoded = percent_decode(value);
        let params: Value = serde_json::from_str(&decoded).unwrap();
        assert_eq!(
            params,
            serde_json::json!({"method":"dockingLogin","account":"ptt-9001","userName":"North",
                               "appkey":"app 1","sign":"s&g"})
        );
    }

    fn percent_decode(s: &str) -> String {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn answers_are_typed() {
        let sign = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":200,\"data\":\"abc\",\"message\":\"OK\"}";
        let sign: GetSign = parse_response(sign).unwrap();
        assert_eq!(sign.data.as_deref(), Some("abc"));
        let login = b"HTTP/1.1 200 OK\r\n\r\n{\"result\":0,\"method\":\"dockingLogin\",\"module\":\"account\",\"SID\":\"s\",\"user\":{\"id\":\"1001\"}}";
        let login: DockingLogin = parse_response(login).unwrap();
        assert_eq!(login.user.and_then(|u| u.id), Some(1001));
        // A body of another shape is an error, not a panic.
        let wrong = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":\"200\"}";
        assert!(parse_response::<GetSign>(wrong).is_err());
    }
}
