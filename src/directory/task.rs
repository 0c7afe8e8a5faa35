//! The task that drives the sans-IO admin client over [`crate::http_client`]: one call at a
//! time, each `POST {url}/ent/?method=NAME` with form fields, answers handed back with the time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use logsafe::esc;
use tokio::sync::{mpsc, oneshot};
use totalk_admin::client::Answer;
use totalk_admin::{AdminError, Client, ClientConfig, Event, OpId, Request};
use tracing::{debug, info, warn};

use super::{Command, Directory, DirectoryConfig, config::PASSWORD_ENV};
use crate::http_client::{BaseUrl, Body, HttpError, form_encode, request_json};

type Waiting = HashMap<OpId, oneshot::Sender<Result<Answer, AdminError>>>;

/// Checks the settings it needs now (URL, password, TLS trust) and starts the task.
pub(super) fn spawn(
    config: &DirectoryConfig,
    dir: Directory,
    commands: mpsc::Receiver<Command>,
) -> anyhow::Result<()> {
    let url = config.url.as_deref().context("directory.url: unset")?;
    let base = BaseUrl::parse(url).context("directory.url")?;
    let trust = if base.tls {
        Some(
            crate::tls::client_config(config.ca_file.as_deref(), &[b"http/1.1"])
                .context("directory.ca_file")?,
        )
    } else {
        None
    };
    let password = config.password().with_context(|| {
        format!("directory.password: required (or {PASSWORD_ENV} in the environment)")
    })?;
    let client = Client::new(
        ClientConfig {
            account: config.account.clone(),
            password,
            page_size: config.page_size,
            refresh_interval: config.refresh_interval(),
            retry_interval: std::time::Duration::from_secs(config.retry_secs),
            max_users: config.max_users,
            max_channels: config.max_channels,
            max_role_queries: config.max_role_queries,
        },
        Instant::now(),
    );
    info!(url = %base.url("/ent/"), account = %esc(&config.account), "directory: reading the Totalk admin API");
    tokio::spawn(run(client, base, trust, dir, commands));
    Ok(())
}

async fn run(
    mut client: Client,
    base: BaseUrl,
    trust: Option<Arc<rustls::ClientConfig>>,
    dir: Directory,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut waiting = Waiting::new();
    loop {
        while let Some(req) = client.poll_request(Instant::now()) {
            let result = send(&base, trust.as_ref(), &req).await;
            let now = Instant::now();
            match result {
                Ok(body) => client.handle_response(now, &body),
                Err(e) => client.handle_failure(now, e),
            }
            events(&mut client, &dir, &mut waiting);
        }
        events(&mut client, &dir, &mut waiting);
        let wake = client
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(1));
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::Refresh) => client.refresh_now(Instant::now()),
                Some(Command::Call(op, reply)) => {
                    let id = client.submit(op);
                    waiting.insert(id, reply);
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// One call; the answer's body (a JSON object: the client reads its code) or why there is none.
async fn send(
    base: &BaseUrl,
    trust: Option<&Arc<rustls::ClientConfig>>,
    req: &Request,
) -> Result<Vec<u8>, AdminError> {
    let form = req
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let answer = request_json::<serde_json::Value>(
        base,
        trust,
        "POST",
        &req.path(),
        &[],
        Some(Body::form(&form)),
    )
    .await;
    match answer {
        Ok(v) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
        Err(HttpError::Json(e)) => Err(AdminError::Malformed(e.to_string())),
        Err(e @ HttpError::TooLarge(_)) => Err(AdminError::TooLarge(e.to_string())),
        Err(e) => Err(AdminError::Transport(e.to_string())),
    }
}

fn events(client: &mut Client, dir: &Directory, waiting: &mut Waiting) {
    while let Some(ev) = client.poll_event() {
        match ev {
            Event::LoggedIn => debug!("directory: logged in to the admin API"),
            Event::Refreshed(d) => {
                info!(
                    users = d.users.len(),
                    channels = d.channels.len(),
                    "directory refreshed"
                );
                dir.refreshed(d);
            }
            Event::RefreshFailed(e) => {
                dir.failed(&e);
                let age = dir.age().map(|a| a.as_secs());
                warn!(error = %esc(&e), kind = e.as_str(), kept_copy_age_s = ?age, "directory refresh failed; the last good copy is kept");
            }
            Event::Answered { id, result } => {
                if let Err(e) = &result {
                    warn!(error = %esc(e), kind = e.as_str(), "admin API call failed");
                }
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(result);
                }
            }
        }
    }
}
