//! `[meeting]`: the RTCPeer side (signalling server, meeting rooms, PTT dial-in, client mode).

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::room::media::MediaAddress;
pub use crate::bridge::passthrough::PassThrough;
use crate::config::{ConfigError, PttConfig};

/// The meeting side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeetingConfig {
    /// Serve `/rtcpeer`, `/app/getSign` and `/app/account` (server mode).
    pub enabled: bool,
    /// Address of the WebRTC host candidates (one UDP port per room on it).
    pub rtc_ip: IpAddr,
    /// Address the rooms' sockets bind to, when not `rtc_ip` (behind a 1:1 NAT: the private
    /// address or 0.0.0.0, while `rtc_ip` is the public one).
    pub rtc_bind_ip: Option<IpAddr>,
    /// Lowest UDP port a room may take (with `rtc_port_max`; unset: any free port).
    pub rtc_port_min: Option<u16>,
    /// Highest UDP port a room may take.
    pub rtc_port_max: Option<u16>,
    /// Seconds a call may ring unanswered (and wait for onConnected after doAgree).
    pub no_answer_timeout_s: u64,
    /// Dial-in: ms between receiving doInvite and sending onRinging.
    pub ring_delay_ms: u64,
    /// Dial-in: ms between onRinging and doAgree.
    pub answer_delay_ms: u64,
    /// Most members in one room (the spec's newAppRoom allows 200).
    pub max_room_members: usize,
    /// Most rooms open at once (each holds a UDP port).
    pub max_rooms: usize,
    /// Most rooms one user may have open.
    pub max_rooms_per_user: usize,
    /// Most standing rooms (`room.createRoom`, kept in the store) on the bridge.
    pub max_standing_rooms: usize,
    /// Most standing rooms one user may own.
    pub max_standing_rooms_per_user: usize,
    /// Most calls one user may have ringing or connected at once.
    pub max_calls_per_user: usize,
    /// Most `/rtcpeer` connections at once.
    pub max_connections: usize,
    /// Seconds a room with nobody in it stays open (holding its UDP port) before it closes.
    pub empty_room_close_s: u64,
    /// A `/rtcpeer` socket must register (`call.doRegister`) within this many ms, or is closed.
    pub auth_timeout_ms: u64,
    /// Requests one socket may make per second (a burst of `request_burst`); more are
    /// answered 429.
    pub requests_per_second: u32,
    /// Requests one socket may make at once above the rate.
    pub request_burst: u32,
    /// Longest chat `content` (`chat`, `privateChat`), in bytes; longer is answered 422.
    pub max_chat_bytes: usize,
    /// Apps allowed to get a signature: `appId` and `secret`.
    pub apps: Vec<AppCredentials>,
    /// User ids that stand for PTT channels.
    pub dial_in: Vec<DialIn>,
    /// Numbering rule: when set, the PTT account at index i (config order, all servers) is also
    /// callable as `number_base + i`.
    pub number_base: Option<i64>,
    /// Client mode: register at external RTCPeer servers as dial-in users.
    pub upstream: Vec<Upstream>,
    /// How a lone PTT talker reaches the meeting.
    pub passthrough: PassThrough,
    /// Who in a room may take a dialled-in channel's floor: `voice` (default: whoever speaks,
    /// by voice activity; a raised hand also asks for it) or `hand` (hand-raise only: a
    /// member is heard on the channel only while its raised hand holds the floor).
    pub floor: FloorMode,
    /// A room sending a packet to more listeners than this spreads the fan-out over helper
    /// threads in shards of this many (0: the room's task alone, however big). The default,
    /// 512, makes a 1,000-listener room two shards: what measured best on two cores
    /// (BENCHMARKS.md, "Fan-out spread over threads").
    pub fanout_shard_listeners: usize,
    /// Threads that run the rooms, each a single-threaded runtime; a room stays on the one
    /// with the fewest rooms when it opened (0: one per core). Off the shared runtime, a room
    /// does not make idle workers wake up to look for work (BENCHMARKS.md, "Rooms on threads
    /// of their own").
    pub room_threads: usize,
}

/// How a room's members take a dialled-in PTT channel's floor (`meeting.floor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloorMode {
    /// Voice activity takes it (and a raised hand asks for it).
    #[default]
    Voice,
    /// Only a raised hand, once granted: `meeting.raiseHand`, `meeting.lowerHand`.
    Hand,
}

impl Default for MeetingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rtc_ip: IpAddr::from([127, 0, 0, 1]),
            rtc_bind_ip: None,
            rtc_port_min: None,
            rtc_port_max: None,
            no_answer_timeout_s: 30,
            ring_delay_ms: 200,
            answer_delay_ms: 800,
            max_room_members: 200,
            max_rooms: 500,
            max_rooms_per_user: 10,
            max_standing_rooms: 1_000,
            max_standing_rooms_per_user: 20,
            max_calls_per_user: 10,
            max_connections: 2_000,
            empty_room_close_s: 300,
            auth_timeout_ms: 30_000,
            requests_per_second: 20,
            request_burst: 60,
            max_chat_bytes: 4096,
            apps: Vec::new(),
            dial_in: Vec::new(),
            number_base: None,
            upstream: Vec::new(),
            passthrough: PassThrough::default(),
            floor: FloorMode::default(),
            fanout_shard_listeners: 512,
            room_threads: 0,
        }
    }
}

/// `appId` + `secret` for `GET /app/getSign`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCredentials {
    /// App id.
    pub app_id: String,
    /// Its secret.
    pub secret: String,
}

/// How a dial-in id answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerPolicy {
    /// Ring, then agree (busy while already linked).
    #[default]
    Answer,
    /// Always onBusy.
    Busy,
    /// Always reject.
    Reject,
    /// Ring and never answer (the caller cancels or the call times out).
    Ignore,
}

/// One callable PTT channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialIn {
    /// The RTCPeer user id callers dial.
    pub user_id: i64,
    /// PTT server id (`[[ptt.servers]] id`).
    pub server: String,
    /// PTT account username on that server; its channel is the one dialled.
    pub account: String,
    /// Display name in the meeting (default: the channel path).
    #[serde(default)]
    pub name: Option<String>,
    /// How calls are answered.
    #[serde(default)]
    pub policy: AnswerPolicy,
    /// Mic level of meeting speakers on this channel's floor (higher pre-empts).
    #[serde(default = "default_level")]
    pub meeting_level: u8,
    /// Mic level of PTT users on this channel's floor.
    #[serde(default = "default_level")]
    pub ptt_level: u8,
}

fn default_level() -> u8 {
    1
}

/// Client mode: one external RTCPeer server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL of its HTTP API, e.g. `https://host` (`/app/getSign`, `/app/account`,
    /// `/rtcpeer` under it); `https://` is TLS with `wss://` signalling.
    pub url: String,
    /// PEM CA certificate(s) to check an `https://` upstream's certificate with; unset = the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `appId` for getSign.
    pub app_id: String,
    /// Secret for getSign.
    pub secret: String,
    /// Which dial-in ids to register there (their `user_id`s); the server assigns its own user
    /// id to each account at login and that id is what its callers dial.
    pub dial_in: Vec<i64>,
}

impl MeetingConfig {
    /// No-answer timeout.
    pub fn no_answer_timeout(&self) -> Duration {
        Duration::from_secs(self.no_answer_timeout_s)
    }

    /// Where rooms open their ports and what they announce.
    pub fn media_address(&self) -> MediaAddress {
        MediaAddress {
            bind: self.rtc_bind_ip.unwrap_or(self.rtc_ip),
            announce: self.rtc_ip,
            ports: self.rtc_port_min.zip(self.rtc_port_max),
        }
    }

    /// Checks what the types cannot, against the PTT accounts.
    pub fn validate(&self, ptt: &PttConfig) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid { key, reason };
        match (self.rtc_port_min, self.rtc_port_max) {
            (Some(_), None) => {
                return Err(invalid(
                    "meeting.rtc_port_max".into(),
                    "required with meeting.rtc_port_min".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "meeting.rtc_port_min".into(),
                    "required with meeting.rtc_port_max".into(),
                ));
            }
            (Some(min), Some(max)) if min == 0 || min > max => {
                return Err(invalid(
                    "meeting.rtc_port_min".into(),
                    format!("must be from 1 to meeting.rtc_port_max ({max})"),
                ));
            }
            _ => {}
        }
        if self.rtc_ip.is_unspecified() {
            return Err(invalid(
                "meeting.rtc_ip".into(),
                "is announced to clients: an address they can reach, not 0.0.0.0 (bind to it with meeting.rtc_bind_ip)".into(),
            ));
        }
        ConfigError::check_range(
            "meeting.no_answer_timeout_s",
            self.no_answer_timeout_s,
            1..=3600,
        )?;
        ConfigError::check_range(
            "meeting.max_room_members",
            self.max_room_members,
            2..=10_000,
        )?;
        for (key, value, max) in [
            ("max_rooms", self.max_rooms, 20_000),
            ("max_rooms_per_user", self.max_rooms_per_user, 1_000),
            ("max_standing_rooms", self.max_standing_rooms, 1_000_000),
            (
                "max_standing_rooms_per_user",
                self.max_standing_rooms_per_user,
                10_000,
            ),
            ("max_calls_per_user", self.max_calls_per_user, 1_000),
            ("max_connections", self.max_connections, 100_000),
            (
                "empty_room_close_s",
                self.empty_room_close_s as usize,
                86_400,
            ),
            (
                "requests_per_second",
                self.requests_per_second as usize,
                10_000,
            ),
            ("request_burst", self.request_burst as usize, 100_000),
            ("max_chat_bytes", self.max_chat_bytes, 128 * 1024),
        ] {
            ConfigError::check_range(format!("meeting.{key}"), value, 1..=max)?;
        }
        if self.fanout_shard_listeners != 0 {
            ConfigError::check_range(
                "meeting.fanout_shard_listeners",
                self.fanout_shard_listeners,
                1..=100_000,
            )?;
        }
        if self.room_threads != 0 {
            ConfigError::check_range("meeting.room_threads", self.room_threads, 1..=256)?;
        }
        ConfigError::check_range(
            "meeting.auth_timeout_ms",
            self.auth_timeout_ms,
            1_000..=600_000,
        )?;
        let mut ids = std::collections::HashSet::new();
        for (i, d) in self.dial_in.iter().enumerate() {
            let key = |k: &str| format!("meeting.dial_in[{i}].{k}");
            if d.user_id <= 0 {
                return Err(invalid(key("user_id"), "must be positive".into()));
            }
            if !ids.insert(d.user_id) {
                return Err(invalid(
                    key("user_id"),
                    format!("duplicate id {}", d.user_id),
                ));
            }
            let found = ptt
                .servers
                .iter()
                .filter(|s| s.id == d.server)
                .flat_map(|s| &s.accounts)
                .any(|a| a.username == d.account);
            if !found {
                return Err(invalid(
                    key("account"),
                    format!("no PTT account {:?} on server {:?}", d.account, d.server),
                ));
            }
        }
        if let Some(base) = self.number_base
            && base <= 0
        {
            return Err(invalid(
                "meeting.number_base".into(),
                "must be positive".into(),
            ));
        }
        for (i, u) in self.upstream.iter().enumerate() {
            let base = match crate::http_client::BaseUrl::parse(&u.url) {
                Ok(b) => b,
                Err(e) => {
                    return Err(invalid(format!("meeting.upstream[{i}].url"), e.to_string()));
                }
            };
            if let Some(ca) = &u.ca_file {
                if !base.tls {
                    return Err(invalid(
                        format!("meeting.upstream[{i}].ca_file"),
                        "only for an https:// url".into(),
                    ));
                }
                if let Err(e) = crate::tls::client_config(Some(ca), &[]) {
                    return Err(invalid(
                        format!("meeting.upstream[{i}].ca_file"),
                        e.to_string(),
                    ));
                }
            }
            for id in &u.dial_in {
                if !self.dial_in.iter().any(|d| d.user_id == *id) {
                    return Err(invalid(
                        format!("meeting.upstream[{i}].dial_in"),
                        format!("{id} is not a meeting.dial_in user_id"),
                    ));
                }
            }
        }
        Ok(())
    }
}
