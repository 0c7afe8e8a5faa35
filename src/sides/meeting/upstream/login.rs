//! Logging in to an external RTCPeer server (spec 6.1, 6.2): `GET /app/getSign`, then
//! `POST /app/account` with the spec's one `params` field (`method: dockingLogin`, `appkey`,
//! `sign`, ...) → `SID` and our user id there. Two small HTTP/1.1
//! requests through [`crate::http_client`], over TLS for an `https://` upstream. The answers
//! are read as the adapter's [`GetSign`] and [`DockingLogin`].

use std::sync::Arc;

use anyhow::{Context, bail};
use rtcpeer::id::Id;
use rtcpeer::reply::{DockingLogin, GetSign};

use crate::http_client::{BaseUrl, Body, form_encode, request_json};

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
    base: &BaseUrl,
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
    let sign: GetSign = request_json(base, tls, "GET", &path, &[], None)
        .await
        .with_context(|| format!("getSign at {}", base.url("/app/getSign")))?;
    if sign.code != 200 {
        bail!("getSign refused: code {}: {}", sign.code, sign.message);
    }
    let sign = sign.data.context("getSign: no data")?;
    let form = docking_form(app_id, &sign, account, name);
    let login: DockingLogin = request_json(
        base,
        tls,
        "POST",
        "/app/account",
        &[],
        Some(Body::form(&form)),
    )
    .await
    .with_context(|| format!("dockingLogin at {}", base.url("/app/account")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
    fn answers_are_typed() {
        let sign = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":200,\"data\":\"abc\",\"message\":\"OK\"}";
        let sign: GetSign = crate::http_client::parse_response(sign).unwrap();
        assert_eq!(sign.data.as_deref(), Some("abc"));
        let login = b"HTTP/1.1 200 OK\r\n\r\n{\"result\":0,\"method\":\"dockingLogin\",\"module\":\"account\",\"SID\":\"s\",\"user\":{\"id\":\"1001\"}}";
        let login: DockingLogin = crate::http_client::parse_response(login).unwrap();
        assert_eq!(login.user.and_then(|u| u.id), Some(1001));
        // A body of another shape is an error, not a panic.
        let wrong = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":\"200\"}";
        assert!(crate::http_client::parse_response::<GetSign>(wrong).is_err());
    }
}
