//! Operators: the people and tools that watch and steer the bridge — the web page's live view,
//! `/api/*`, `/events`, `/meeting/links*`, app management (`/v1/app`), `/metrics` and the
//! details of `/healthz`.
//!
//! An operator presents a token: `Authorization: Bearer <token>`, or once through
//! `POST /api/login` (the page's sign-in), which sets an `HttpOnly`, `SameSite=Strict` session
//! cookie that expires. The cookie is its expiry sealed with HMAC-SHA256 under a key derived
//! from the operator token, so a page stays signed in across a restart of the bridge (and is
//! signed out everywhere when the token changes); signing out revokes it. Tokens come from `[operator] token` / `token_sha256`, the
//! `PTTBRIDGE_OPERATOR_TOKEN` environment variable, or — when none is configured — one is
//! generated at first start, kept only as a salted digest in the store and printed once.
//! Failed sign-ins are throttled per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::limiter::FailureLimiter;
use super::secret;

/// Name of the page's session cookie.
pub const COOKIE: &str = "pttbridge_operator";
/// Environment variable with an operator token (takes the place of `[operator] token`).
pub const TOKEN_ENV: &str = crate::config::OPERATOR_TOKEN_ENV;
/// Signed-out sessions remembered at most (beyond, the cookie simply stays valid until it
/// expires).
const MAX_SESSIONS: usize = 4096;

/// Why a sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Not an operator token.
    #[error("wrong operator token")]
    Wrong,
    /// Too many wrong tokens from this address lately.
    #[error("too many failed sign-ins from this address; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
}

/// Where the accepted tokens came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `[operator]` in the config.
    Config,
    /// The environment variable [`TOKEN_ENV`].
    Environment,
    /// Generated at an earlier start and kept (as a digest) in the store.
    Stored,
    /// Generated now: shown this once.
    Generated(String),
}

/// Operator credentials and sessions. See the module docs.
pub struct Operators {
    /// Digests of the accepted tokens.
    tokens: Vec<String>,
    /// Seals session cookies.
    session_key: [u8; 32],
    /// Signed-out cookies (by [`sign_out_key`]) → their expiry (Unix ms), until they would have
    /// expired anyway.
    revoked: Mutex<HashMap<String, u64>>,
    /// Told of every sign-out here, to keep it (and share it with the other cluster nodes).
    on_sign_out: std::sync::OnceLock<Box<dyn Fn(String, u64) + Send + Sync>>,
    session_ttl: Duration,
    failures: FailureLimiter<IpAddr>,
    /// Whether `/metrics` is open to scrapers without a token.
    pub public_metrics: bool,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operators")
            .field("tokens", &self.tokens.len())
            .field("public_metrics", &self.public_metrics)
            .finish_non_exhaustive()
    }
}

/// A session key that outlives restarts as long as the token does: derived from `seed` (the
/// token, or the stored digest of a generated one).
fn derive_key(seed: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"pttbridge operator session v1\0");
    h.update(seed.as_bytes());
    h.finalize().into()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Operators {
    /// Operators from `[operator]` (its `token`), else the environment ([`TOKEN_ENV`]), else
    /// the digests `stored` at earlier starts; with none of them, a token is generated — the
    /// caller keeps its digest and shows it once ([`TokenSource::Generated`]).
    pub fn from_config(
        cfg: &crate::config::OperatorConfig,
        env: Option<String>,
        stored: Vec<String>,
    ) -> (Self, TokenSource) {
        let ttl = Duration::from_secs(cfg.session_hours * 3600);
        let (digests, seed, source) = if let Some(t) = &cfg.token {
            let t = t.trim();
            (vec![secret::digest(t)], t.to_owned(), TokenSource::Config)
        } else if let Some(t) = env.filter(|t| t.trim().len() >= 16) {
            let t = t.trim().to_owned();
            (vec![secret::digest(&t)], t, TokenSource::Environment)
        } else if !stored.is_empty() {
            let seed = stored.join(",");
            (stored, seed, TokenSource::Stored)
        } else {
            let t = secret::token();
            let d = secret::digest(&t);
            (vec![d.clone()], d, TokenSource::Generated(t))
        };
        let mut ops = Self::new(digests, ttl, cfg.public_metrics);
        ops.session_key = derive_key(&seed);
        (ops, source)
    }

    /// The digests of the accepted tokens (to keep a generated one).
    pub fn digests(&self) -> &[String] {
        &self.tokens
    }

    /// Operators who sign in with a token matching one of `digests` (see [`secret::digest`]).
    pub fn new(digests: Vec<String>, session_ttl: Duration, public_metrics: bool) -> Self {
        Self {
            tokens: digests,
            session_key: rand::random(),
            revoked: Mutex::new(HashMap::new()),
            on_sign_out: std::sync::OnceLock::new(),
            session_ttl,
            failures: FailureLimiter::new(10, Duration::from_secs(60), 4096),
            public_metrics,
        }
    }

    /// Whether `token` is an operator token.
    pub fn check_token(&self, token: &str) -> bool {
        // Every digest is checked, so the time taken does not say which one matched.
        self.tokens
            .iter()
            .fold(false, |ok, d| secret::verify(d, token) | ok)
    }

    /// Signs in from `addr` with `token`: a new session id for the cookie.
    pub fn login(
        &self,
        token: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<String, LoginError> {
        self.check_from(token, addr, now)?;
        let expiry = unix_ms() + self.session_ttl.as_millis() as u64;
        Ok(format!("{expiry}.{}", self.seal(expiry)))
    }

    /// Checks `token` presented from `addr` (a sign-in or a request's bearer token), counting
    /// failures per address so that no route lets an address guess tokens quickly.
    pub fn check_from(
        &self,
        token: &str,
        addr: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), LoginError> {
        if let Some(a) = addr
            && let Some(wait) = self.failures.check(&a, now)
        {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "operator", "reason" => "throttled").increment(1);
            return Err(LoginError::Throttled(wait));
        }
        if !self.check_token(token) {
            if let Some(a) = addr {
                self.failures.failed(a, now);
            }
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "operator", "reason" => "wrong_token").increment(1);
            return Err(LoginError::Wrong);
        }
        if let Some(a) = addr {
            self.failures.succeeded(&a);
        }
        Ok(())
    }

    fn seal(&self, expiry: u64) -> String {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.session_key)
            .expect("HMAC takes any key length");
        m.update(expiry.to_string().as_bytes());
        secret::hex(&m.finalize().into_bytes())
    }

    /// Signs a session out (until it would have expired anyway), and tells the sign-out
    /// hook ([`Operators::on_sign_out`]) so the store keeps it and other nodes learn it.
    pub fn logout(&self, sid: &str) {
        let Some((expiry, _)) = sid.split_once('.') else {
            return;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return;
        };
        let key = sign_out_key(sid);
        self.revoke(&key, expiry);
        if let Some(hook) = self.on_sign_out.get() {
            hook(key, expiry);
        }
    }

    /// Takes a sign-out kept or made elsewhere (the store at start, another cluster node):
    /// the session whose [`sign_out_key`] is `key` is refused until `expiry` (Unix ms).
    pub fn revoke(&self, key: &str, expiry: u64) {
        let now = unix_ms();
        if expiry <= now {
            return;
        }
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, exp| *exp > now);
        if revoked.len() < MAX_SESSIONS {
            revoked.insert(key.to_owned(), expiry);
        }
    }

    /// Calls `hook` with `(key, expiry)` of every sign-out on this node (set once, at start).
    pub fn on_sign_out(&self, hook: impl Fn(String, u64) + Send + Sync + 'static) {
        let _ = self.on_sign_out.set(Box::new(hook));
    }

    /// Whether `sid` is a live session cookie: sealed by this bridge's key, not expired, not
    /// signed out.
    pub fn session_valid(&self, sid: &str, _now: Instant) -> bool {
        let Some((expiry, mac)) = sid.split_once('.') else {
            return false;
        };
        let Ok(exp) = expiry.parse::<u64>() else {
            return false;
        };
        exp > unix_ms()
            && secret::same(&self.seal(exp), mac)
            && !self
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&sign_out_key(sid))
    }

    /// Whether a request carries operator credentials: a bearer token or a live session cookie.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        if let Some(t) = bearer(headers) {
            return self.check_token(t);
        }
        cookie(headers, COOKIE).is_some_and(|sid| self.session_valid(sid, Instant::now()))
    }
}

/// What a signed-out session is kept as: the SHA-256 of its cookie value (a sign-out kept or
/// shared never holds the cookie itself).
pub fn sign_out_key(sid: &str) -> String {
    use sha2::Digest as _;
    secret::hex(&sha2::Sha256::digest(sid.as_bytes()))
}

/// The bearer token of `Authorization`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(token: &str) -> Operators {
        Operators::new(
            vec![secret::digest(token)],
            Duration::from_secs(3600),
            false,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_or_session_cookie_and_nothing_else() {
        let o = ops("operator-token-123456");
        assert!(o.authorized(&headers(&[(
            "authorization",
            "Bearer operator-token-123456"
        )])));
        assert!(!o.authorized(&headers(&[("authorization", "Bearer nope")])));
        assert!(!o.authorized(&headers(&[])));
        let now = Instant::now();
        let sid = o.login("operator-token-123456", None, now).unwrap();
        let c = format!("a=b; {COOKIE}={sid}");
        assert!(o.authorized(&headers(&[("cookie", &c)])));
        assert!(!o.authorized(&headers(&[("cookie", &format!("{COOKIE}=forged"))])));
        o.logout(&sid);
        assert!(!o.authorized(&headers(&[("cookie", &c)])));
    }

    #[test]
    fn a_session_outlives_a_restart_with_the_same_token_only() {
        let cfg = crate::config::OperatorConfig {
            token: Some("operator-token-123456".into()),
            ..Default::default()
        };
        let (a, _) = Operators::from_config(&cfg, None, vec![]);
        let sid = a
            .login("operator-token-123456", None, Instant::now())
            .unwrap();
        let (b, _) = Operators::from_config(&cfg, None, vec![]);
        assert!(
            b.session_valid(&sid, Instant::now()),
            "same token, new process"
        );
        let other = crate::config::OperatorConfig {
            token: Some("another-token-7890123".into()),
            ..Default::default()
        };
        let (c, _) = Operators::from_config(&other, None, vec![]);
        assert!(!c.session_valid(&sid, Instant::now()), "token changed");
        let expired = format!("1000.{}", a.seal(1000));
        assert!(!a.session_valid(&expired, Instant::now()), "expired");
    }

    #[test]
    fn wrong_tokens_from_one_address_are_throttled() {
        let o = ops("operator-token-123456");
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(o.login("guess", Some(a), now), Err(LoginError::Wrong));
        }
        assert!(matches!(
            o.login("operator-token-123456", Some(a), now),
            Err(LoginError::Throttled(_))
        ));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(o.login("operator-token-123456", Some(other), now).is_ok());
    }
}
