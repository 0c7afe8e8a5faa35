//! A test EGW client (tokio-tungstenite) and a client-side replica that applies full syncs and
//! pushed events the way a platform would, checking that versions are contiguous.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How the connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// A close frame.
    Closed { code: u16, reason: String },
    /// The TCP connection ended without a close frame (or with an error).
    Dropped(String),
}

/// One EGW connection.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames received but not yet taken.
    pub pending: VecDeque<Value>,
    /// Send a heartbeat whenever a wait has been idle this long.
    pub heartbeat_every: Option<Duration>,
    seq: u64,
    pub ended: Option<Ended>,
}

impl Client {
    /// Connects to `ws://addr/egw`.
    pub async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/egw"))
            .await
            .expect("EGW WebSocket connects");
        Client {
            ws,
            pending: VecDeque::new(),
            heartbeat_every: Some(Duration::from_millis(500)),
            seq: 0,
            ended: None,
        }
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send to EGW");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send to EGW");
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a heartbeat (its reply is dropped when it arrives).
    pub async fn heartbeat(&mut self) {
        self.seq += 1;
        let seq = format!("hb{}", self.seq);
        self.send(json!({"business": "EGW", "id": 20011, "seq": seq}))
            .await;
    }

    /// The next frame (heartbeat replies skipped), waiting up to `timeout`; `None` on timeout or
    /// when the connection ended (see [`Client::ended`]).
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        self.read(timeout).await
    }

    async fn read(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.ended.is_some() {
                return None;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            let slice = match self.heartbeat_every {
                Some(hb) => hb.min(deadline - now),
                None => deadline - now,
            };
            match tokio::time::timeout(slice, self.ws.next()).await {
                Err(_) => {
                    if self.heartbeat_every.is_some() {
                        self.heartbeat().await;
                    }
                }
                Ok(None) => self.ended = Some(Ended::Dropped("end of stream".into())),
                Ok(Some(Err(e))) => self.ended = Some(Ended::Dropped(e.to_string())),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.ended = Some(match frame {
                        Some(f) => Ended::Closed {
                            code: f.code.into(),
                            reason: f.reason.to_string(),
                        },
                        None => Ended::Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    })
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("EGW sends JSON");
                    if v["id"] == 20012 && v["seq"].as_str().is_some_and(|s| s.starts_with("hb")) {
                        continue;
                    }
                    return Some(v);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for a frame with `id`, keeping the others (pushes) for later.
    pub async fn reply(&mut self, id: i64, timeout: Duration) -> Value {
        if let Some(i) = self.pending.iter().position(|v| v["id"] == id) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Some(v) if v["id"] == id => return v,
                Some(v) => self.pending.push_back(v),
                None => panic!(
                    "no reply {id} within {timeout:?} (ended: {:?}); pending: {:?}",
                    self.ended, self.pending
                ),
            }
        }
    }

    /// Sends `req` and waits for its reply.
    pub async fn request(&mut self, req: Value) -> Value {
        let id = req["id"].as_i64().unwrap() + 1;
        self.send(req).await;
        self.reply(id, Duration::from_secs(10)).await
    }

    /// Logs in; panics unless result 0.
    pub async fn login(&mut self, dev_id: &str, token: &str) {
        let r = self
            .request(json!({"business": "EGW", "dev_id": dev_id, "token": token, "id": 20000}))
            .await;
        assert_eq!(r["result"], 0, "login: {r}");
    }

    /// Subscribes to `apps` (all when `None`); panics unless result 0.
    pub async fn subscribe(&mut self, apps: Option<&[&str]>) {
        let mut req = json!({"business": "EGW", "id": 20004});
        if let Some(apps) = apps {
            req["app_list"] = apps.iter().map(|a| json!({"app_id": a})).collect();
        }
        let r = self.request(req).await;
        assert_eq!(r["result"], 0, "subscribe: {r}");
    }

    /// Full sync of `apps`: one 20009 per app.
    pub async fn full_sync(&mut self, apps: &[&str]) -> Vec<Value> {
        let list: Vec<Value> = apps.iter().map(|a| json!({"app_id": a})).collect();
        self.send(json!({"business": "EGW", "seq": "sync", "id": 20008, "app_list": list}))
            .await;
        let mut out = Vec::new();
        for _ in apps {
            let r = self.reply(20009, Duration::from_secs(10)).await;
            assert_eq!(r["result"], 0, "full sync: {r}");
            out.push(r);
        }
        out
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Stops heartbeats (to be cut off for silence).
    pub fn silent(&mut self) {
        self.heartbeat_every = None;
    }

    /// The underlying stream, to stop reading it entirely.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// A platform's view of one app: group → user → media ids, at a version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replica {
    pub version: u64,
    pub groups: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Frames applied (pushes only).
    pub applied: u64,
}

impl Replica {
    /// The state a 20009 reply describes.
    pub fn from_sync(sync: &Value) -> Replica {
        let mut r = Replica {
            version: sync["version"].as_u64().expect("version"),
            ..Default::default()
        };
        for g in sync["group_list"].as_array().unwrap() {
            let users = r
                .groups
                .entry(g["group_id"].as_str().unwrap().to_string())
                .or_default();
            for u in g["user_list"].as_array().unwrap() {
                let media = u["media_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["media_id"].as_str().unwrap().to_string())
                    .collect();
                users.insert(u["user_id"].as_str().unwrap().to_string(), media);
            }
        }
        r
    }

    /// Applies one pushed frame. Frames at or below the replica's version are ignored (they are
    /// in the sync); a frame that is not exactly the next version is an error (a gap).
    pub fn apply(&mut self, f: &Value) -> Result<(), String> {
        let v = f["version"].as_u64().ok_or("no version")?;
        if v <= self.version {
            return Ok(());
        }
        if v != self.version + 1 {
            return Err(format!("gap: at {} got {v}: {f}", self.version));
        }
        self.version = v;
        self.applied += 1;
        let group = f["group_id"].as_str().unwrap_or_default().to_string();
        let user = f["user_id"].as_str().unwrap_or_default().to_string();
        match f["id"].as_i64() {
            Some(20100) => {
                self.groups
                    .entry(group)
                    .or_default()
                    .entry(user)
                    .or_default();
            }
            Some(20101) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.remove(&user);
                    if g.is_empty() {
                        self.groups.remove(&group);
                    }
                }
            }
            Some(20102) => {
                self.groups
                    .entry(group)
                    .or_default()
                    .entry(user)
                    .or_default()
                    .insert(f["media_id"].as_str().unwrap().to_string());
            }
            Some(20103) => {
                if let Some(u) = self.groups.get_mut(&group).and_then(|g| g.get_mut(&user)) {
                    u.remove(f["media_id"].as_str().unwrap());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Versions of frames of `app` (20100–20103 carry no app: the caller filters by subscription).
pub fn versions(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f["version"].as_u64())
        .collect()
}

/// Groups frames by whether they are pushes.
pub fn is_push(f: &Value) -> bool {
    matches!(f["id"].as_i64(), Some(20100..=20103) | Some(20110))
}

/// Counts per key, for diagnostics.
pub fn count_by<'a>(frames: impl Iterator<Item = &'a Value>, key: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for f in frames {
        *m.entry(f[key].to_string()).or_default() += 1;
    }
    m
}
