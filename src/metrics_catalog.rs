//! Every Prometheus series the bridge exports, described in one place: its type, unit and what
//! it counts (the `# HELP` line), registered at start when it has no labels so that dashboards
//! and alerts find it from the first scrape, plus `pttbridge_build_info` and the standard
//! `process_*` series (read from `/proc` at each scrape). `tests/metrics.rs` checks that every
//! name the code uses is here, and that a running bridge exports them with HELP and TYPE.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (seconds).
    Histogram,
}

/// One metric: name, kind, unit, help, and whether it carries labels (only unlabelled ones can
/// be registered before their first use).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The series name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit (also in the name's suffix).
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Whether it has labels.
    pub labelled: bool,
}

const fn m(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labelled: bool,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        help,
        labelled,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};
use Unit::{Bytes as B, Count as N, Seconds as S};

/// Every series of the bridge (those of the `count-allocs` feature included).
pub const ALL: &[Metric] = &[
    // HTTP listener
    m(
        "pttbridge_http_connections",
        G,
        N,
        false,
        "TCP connections open on the HTTP listener (WebSockets included).",
    ),
    m(
        "pttbridge_http_connections_refused_total",
        C,
        N,
        true,
        "Connections refused by a cap, by reason (total, per_ip).",
    ),
    m(
        "pttbridge_http_timeouts_total",
        C,
        N,
        true,
        "Connections closed by a timeout, by kind (header, idle, write, tls_handshake).",
    ),
    m(
        "pttbridge_http_tls_handshakes_failed_total",
        C,
        N,
        false,
        "TLS handshakes that failed on the HTTP listener.",
    ),
    m(
        "pttbridge_http_tls_reloads_total",
        C,
        N,
        true,
        "TLS certificate reloads, by result (ok, failed).",
    ),
    m(
        "pttbridge_http_tls_certificate_expiry_timestamp_seconds",
        G,
        S,
        false,
        "When the served TLS certificate expires (notAfter), in Unix seconds.",
    ),
    m(
        "pttbridge_auth_failures_total",
        C,
        N,
        true,
        "Requests refused for their credentials, by surface and reason.",
    ),
    // Events
    m(
        "pttbridge_events_total",
        C,
        N,
        true,
        "Hub events published, by type.",
    ),
    m(
        "pttbridge_event_subscribers_cut_total",
        C,
        N,
        true,
        "Event subscribers cut off, by sink and reason (lagged, slow).",
    ),
    m(
        "pttbridge_egw_connections",
        G,
        N,
        false,
        "EGW WebSocket connections open.",
    ),
    m(
        "pttbridge_egw_events_sent_total",
        C,
        N,
        false,
        "Event frames sent to EGW subscribers.",
    ),
    m(
        "pttbridge_cluster_leases",
        G,
        N,
        true,
        "PTT account and console admin session leases as this cluster node sees them, by state (held by this node, other node, free, unknown).",
    ),
    m(
        "pttbridge_cluster_bad_values_total",
        C,
        N,
        false,
        "Values in the lease bucket that are not lease records (each read of one counts).",
    ),
    m(
        "pttbridge_cluster_takeovers_total",
        C,
        N,
        false,
        "Lapsed leases (PTT accounts, console admin sessions) of another node this node took over.",
    ),
    m(
        "pttbridge_cluster_log_published_total",
        C,
        N,
        true,
        "Entries this node stored in the cluster event log, by whether JetStream saw a duplicate (a re-send).",
    ),
    m(
        "pttbridge_cluster_log_publish_failures_total",
        C,
        N,
        false,
        "Event log publishes that failed and were sent again in order.",
    ),
    m(
        "pttbridge_cluster_log_dropped_total",
        C,
        N,
        true,
        "Drafts not sent to the event log, by reason (outbox_full, too_large).",
    ),
    m(
        "pttbridge_cluster_log_outbox_entries",
        G,
        N,
        false,
        "Drafts waiting to be sent to the event log or for their ack.",
    ),
    m(
        "pttbridge_cluster_log_applied_total",
        C,
        N,
        false,
        "Event log entries (of every node) this node numbered and applied.",
    ),
    m(
        "pttbridge_cluster_log_stale_total",
        C,
        N,
        false,
        "Event log entries dropped because their place in their node's order was filled already (a re-send stored twice, or one that came after it was given up).",
    ),
    m(
        "pttbridge_cluster_log_held_entries",
        G,
        N,
        false,
        "Event log entries held back behind a missing earlier entry of their node (a publish lost with a broken connection and not re-sent yet).",
    ),
    m(
        "pttbridge_cluster_log_given_up_total",
        C,
        N,
        false,
        "Event log entries of a node that were never stored and were given up (its node died before re-sending them); its later entries went on.",
    ),
    m(
        "pttbridge_cluster_log_unreadable_total",
        C,
        N,
        false,
        "Event log stream messages that are not log entries (skipped).",
    ),
    m(
        "pttbridge_cluster_log_lag_entries",
        G,
        N,
        false,
        "Event log entries stored but not yet read by this node (as of the last one read).",
    ),
    m(
        "pttbridge_cluster_log_snapshots_total",
        C,
        N,
        true,
        "Event log snapshots this node wrote, by result (written, failed, too_large).",
    ),
    m(
        "pttbridge_cluster_log_incomplete_total",
        C,
        N,
        false,
        "Times entries this node had not read were discarded from the event log with no snapshot covering them (its versions then differ from the other nodes').",
    ),
    m(
        "pttbridge_cluster_records_written_total",
        C,
        N,
        false,
        "Record writes (apps, call records) this node stored in the shared records stream.",
    ),
    m(
        "pttbridge_cluster_records_applied_total",
        C,
        N,
        false,
        "Shared record operations (of every node) applied to this node's database.",
    ),
    m(
        "pttbridge_cluster_records_refused_total",
        C,
        N,
        false,
        "Shared record operations the database refused (a name taken, a bad entry), alike on every node.",
    ),
    m(
        "pttbridge_cluster_log_consumer_restarts_total",
        C,
        N,
        false,
        "Times this node's event log reader stopped and made a new consumer from its last applied entry.",
    ),
    m(
        "pttbridge_cluster_handovers_total",
        C,
        N,
        true,
        "Leases this node handed over while draining, by whether the account was idle then (no talk burst in its channel; for a console admin session no move in progress) or still busy after cluster.drain_max_wait_ms.",
    ),
    m(
        "pttbridge_cluster_rebalanced_total",
        C,
        N,
        false,
        "PTT account leases this node handed over to rebalance (to a node that joined later: docs/cluster.md, sharing the accounts out).",
    ),
    m(
        "pttbridge_cluster_nodes",
        G,
        N,
        false,
        "Cluster nodes live now as this node sees their presence keys (itself included).",
    ),
    m(
        "pttbridge_cluster_routed_total",
        C,
        N,
        true,
        "Requests this node routed to another node, by kind (rtc: a relayed RTCPeer connection's open, request frame or close; rtc_ping: its heartbeat; command: a platform command scattered to the other nodes; who: which node has a meeting user; move: a console's move or mute sent to the node holding the admin session) and outcome (ok, timeout, no_node, not_connected, failed; for commands refused, not_found; for moves no_holder when no node held the admin session until the move timeout; on the answering node bad_request, overloaded).",
    ),
    m(
        "pttbridge_cluster_route_seconds",
        H,
        S,
        true,
        "Time from sending a routed request to its answer (a command: to the gather's decision), by kind.",
    ),
    m(
        "pttbridge_nats_published_total",
        C,
        N,
        true,
        "Events acknowledged by JetStream, by whether JetStream saw a duplicate.",
    ),
    m(
        "pttbridge_nats_dropped_total",
        C,
        N,
        true,
        "Events dropped before reaching NATS, by reason (outbox full).",
    ),
    m(
        "pttbridge_nats_reconnects_total",
        C,
        N,
        false,
        "Reconnections to NATS.",
    ),
    m(
        "pttbridge_nats_outbox_events",
        G,
        N,
        false,
        "Events waiting in the NATS outbox (NATS away or slow).",
    ),
    m(
        "pttbridge_nats_outbox_limit_events",
        G,
        N,
        false,
        "The outbox's limit (nats.outbox); beyond it the oldest events are dropped.",
    ),
    // directory (Totalk admin API)
    m(
        "pttbridge_directory_age_seconds",
        G,
        S,
        false,
        "Seconds since the directory's last good refresh from the admin API (-1: none yet).",
    ),
    m(
        "pttbridge_directory_users",
        G,
        N,
        false,
        "Users in the directory's last good copy.",
    ),
    m(
        "pttbridge_directory_refreshes_total",
        C,
        N,
        true,
        "Directory refreshes, by result (ok, or why it failed: transport, malformed, too_large, login_failed, ...).",
    ),
    m(
        "pttbridge_nats_retries_total",
        C,
        N,
        false,
        "Publishes re-sent after no acknowledgement in time.",
    ),
    m(
        "pttbridge_call_records_total",
        C,
        N,
        false,
        "Call records written to the store.",
    ),
    m(
        "pttbridge_calls_active",
        G,
        N,
        false,
        "Conversations with a call record open.",
    ),
    m(
        "pttbridge_side_commands_total",
        C,
        N,
        true,
        "Platform commands handed to a side, by side.",
    ),
    m(
        "pttbridge_errors_total",
        C,
        N,
        true,
        "Errors outside a side's own counters, by side and kind.",
    ),
    // PTT
    m(
        "pttbridge_ptt_connected",
        G,
        N,
        true,
        "1 when the PTT account is connected and synced, per server and account.",
    ),
    m(
        "pttbridge_ptt_users",
        G,
        N,
        true,
        "Users the PTT server announces, per server and account.",
    ),
    m(
        "pttbridge_ptt_udp_working",
        G,
        N,
        true,
        "1 when voice goes over UDP (else the TCP tunnel), per server and account.",
    ),
    m(
        "pttbridge_ptt_reconnects_total",
        C,
        N,
        true,
        "Reconnections to the PTT server, per server and account.",
    ),
    m(
        "pttbridge_ptt_disconnects_total",
        C,
        N,
        true,
        "Losses of the PTT connection, per server.",
    ),
    m(
        "pttbridge_ptt_errors_total",
        C,
        N,
        true,
        "PTT protocol faults, per server and kind (bad_protobuf, over_limit, ...).",
    ),
    m(
        "pttbridge_ptt_talk_bursts_total",
        C,
        N,
        true,
        "Talk bursts heard on the PTT side, per server.",
    ),
    m(
        "pttbridge_ptt_voice_packets_total",
        C,
        N,
        true,
        "Voice packets, per server, account, direction and transport.",
    ),
    m(
        "pttbridge_ptt_voice_dropped_total",
        C,
        N,
        true,
        "Voice packets dropped (queue full, bad packet), per account and direction.",
    ),
    m(
        "pttbridge_recordings_total",
        C,
        N,
        false,
        "Talk bursts recorded to Ogg Opus files.",
    ),
    m(
        "pttbridge_recording_errors_total",
        C,
        N,
        false,
        "Recordings that failed to write.",
    ),
    m(
        "pttbridge_recording_dropped_total",
        C,
        N,
        false,
        "Voice packets the recorder could not take in time.",
    ),
    m(
        "pttbridge_recording_disk_full_total",
        C,
        N,
        false,
        "Recordings lost because the disk was full (the burst's partial file is removed).",
    ),
    m(
        "pttbridge_recording_archive_bytes",
        G,
        B,
        false,
        "Bytes of the recorded bursts in the archive's index.",
    ),
    m(
        "pttbridge_recording_archive_deleted_total",
        C,
        N,
        false,
        "Recorded bursts deleted by the retention (retention_days, max_total_bytes).",
    ),
    // Customer management (seed 002)
    m(
        "pttbridge_customer_commits_received_total",
        C,
        N,
        true,
        "Customer commits stored, by kind (server, user, group).",
    ),
    m(
        "pttbridge_customer_commits_refused_total",
        C,
        N,
        true,
        "Customer commits refused, by kind and reason (unauthorized, bad_request, unknown_customer, throttled).",
    ),
    m(
        "pttbridge_customer_commits_sent_total",
        C,
        N,
        true,
        "This site's usage commits sent to the management server, by kind and result (ok, failed).",
    ),
    m(
        "pttbridge_customer_usage_events_missed_total",
        C,
        N,
        false,
        "Hub events the usage committer missed because it fell behind (its counts are short by these).",
    ),
    // Consoles
    m(
        "pttbridge_console_connections",
        G,
        N,
        false,
        "Console WebSocket connections open (/muicall).",
    ),
    m(
        "pttbridge_console_logins_total",
        C,
        N,
        true,
        "Console logins, by result.",
    ),
    m(
        "pttbridge_console_requests_total",
        C,
        N,
        true,
        "Console requests, by type.",
    ),
    m(
        "pttbridge_console_errors_total",
        C,
        N,
        true,
        "Console requests refused or failed, by kind.",
    ),
    m(
        "pttbridge_console_calls_total",
        C,
        N,
        false,
        "Temporary calls started by consoles.",
    ),
    m(
        "pttbridge_console_calls_active",
        G,
        N,
        false,
        "Console calls in progress.",
    ),
    m(
        "pttbridge_console_floor_total",
        C,
        N,
        true,
        "Console floor requests, by outcome.",
    ),
    m(
        "pttbridge_console_talk_bursts_total",
        C,
        N,
        true,
        "Talk bursts in console calls, by who talked.",
    ),
    m(
        "pttbridge_console_audio_frames_total",
        C,
        N,
        true,
        "Console audio frames, by direction.",
    ),
    m(
        "pttbridge_console_audio_dropped_total",
        C,
        N,
        true,
        "Console audio frames dropped, by reason.",
    ),
    m(
        "pttbridge_console_ptt_faults_total",
        C,
        N,
        true,
        "PTT protocol faults on consoles' own PTT sessions, by kind.",
    ),
    // Meeting
    m(
        "pttbridge_meeting_connections",
        G,
        N,
        false,
        "RTCPeer WebSocket connections open (/rtcpeer).",
    ),
    m(
        "pttbridge_meeting_registered",
        G,
        N,
        false,
        "Meeting users registered (call.doRegister).",
    ),
    m(
        "pttbridge_meeting_requests_total",
        C,
        N,
        false,
        "RTCPeer requests received.",
    ),
    m(
        "pttbridge_meeting_errors_total",
        C,
        N,
        true,
        "RTCPeer requests refused or failed, by kind.",
    ),
    m(
        "pttbridge_meeting_limited_total",
        C,
        N,
        true,
        "Requests refused by a cap, by limit.",
    ),
    m(
        "pttbridge_meeting_pushes_dropped_total",
        C,
        N,
        false,
        "Pushes dropped for clients that do not read.",
    ),
    m(
        "pttbridge_meeting_calls",
        G,
        N,
        false,
        "Meeting calls ringing or connected.",
    ),
    m(
        "pttbridge_meeting_calls_total",
        C,
        N,
        true,
        "Meeting calls started, by kind.",
    ),
    m(
        "pttbridge_meeting_calls_ended_total",
        C,
        N,
        true,
        "Meeting calls ended, by reason.",
    ),
    m(
        "pttbridge_meeting_rooms_total",
        C,
        N,
        false,
        "Rooms opened.",
    ),
    m(
        "pttbridge_meeting_standing_rooms_total",
        C,
        N,
        true,
        "Standing rooms (room.createRoom) created and deleted, by change.",
    ),
    m(
        "pttbridge_meeting_appointments_total",
        C,
        N,
        false,
        "Appointments (scheduled meetings) stored.",
    ),
    m(
        "pttbridge_meeting_members",
        G,
        N,
        false,
        "Members in rooms.",
    ),
    m(
        "pttbridge_meeting_links",
        G,
        N,
        false,
        "PTT channels dialled into rooms now.",
    ),
    m(
        "pttbridge_meeting_links_total",
        C,
        N,
        false,
        "PTT channel links made.",
    ),
    m(
        "pttbridge_meeting_floor_denied_total",
        C,
        N,
        false,
        "Floor requests between a room and its PTT channel that were denied.",
    ),
    m(
        "pttbridge_meeting_peers",
        G,
        N,
        false,
        "WebRTC peers in rooms.",
    ),
    m(
        "pttbridge_meeting_peers_connected",
        G,
        N,
        false,
        "WebRTC peers with media flowing.",
    ),
    m(
        "pttbridge_meeting_lean_listeners",
        G,
        N,
        false,
        "Listening WebRTC peers run by the room without str0m (ICE consent only, own SRTP).",
    ),
    m(
        "pttbridge_meeting_peers_lost_total",
        C,
        N,
        false,
        "WebRTC peers that went silent and were dropped.",
    ),
    m(
        "pttbridge_meeting_rtp_total",
        C,
        N,
        true,
        "RTP packets, by direction.",
    ),
    m(
        "pttbridge_meeting_rtp_dropped_total",
        C,
        N,
        true,
        "RTP packets dropped, by reason.",
    ),
    m(
        "pttbridge_meeting_fanout_shards_total",
        C,
        N,
        true,
        "Shards of rooms' spread fan-outs (meeting.fanout_shard_listeners), by the thread that ran them: room (the room's task) or helper (a fan-out thread).",
    ),
    m(
        "pttbridge_meeting_rtp_out_path_total",
        C,
        N,
        true,
        "RTP packets written to room listeners, by path: own_srtp (the room's own SRTP, sent at once) or str0m (peers without captured keys; sent at the next tick).",
    ),
    m(
        "pttbridge_meeting_jitter_packets_total",
        C,
        N,
        true,
        "Jitter-buffer packet events (late, lost, concealed, dropped), by direction.",
    ),
    m(
        "pttbridge_meeting_jitter_depth_seconds",
        H,
        S,
        true,
        "Jitter-buffer depth of inbound streams, by direction.",
    ),
    m(
        "pttbridge_meeting_bridge_latency_seconds",
        H,
        S,
        true,
        "PTT voice in to its send, by route (mix: the newest audio in the mixed packet), to the last listener's datagram handed to the kernel (listeners on str0m's path get it at the next 20 ms tick).",
    ),
    m(
        "pttbridge_meeting_tick_delay_seconds",
        H,
        S,
        false,
        "How late a room's 20 ms media tick ran.",
    ),
    m(
        "pttbridge_meeting_to_ptt_gaps_total",
        C,
        N,
        false,
        "20 ms frames a meeting talker's audio was missing mid-burst on the way to PTT.",
    ),
    m(
        "pttbridge_meeting_to_ptt_gap_seconds",
        H,
        S,
        false,
        "Length of each gap in a meeting talker's audio on the way to PTT.",
    ),
    // Latency and audio health across sides
    m(
        "pttbridge_ptt_join_seconds",
        H,
        S,
        false,
        "From starting to connect a PTT account to being in its channel (TCP, TLS, login, sync, join).",
    ),
    m(
        "pttbridge_console_mic_to_audio_seconds",
        H,
        S,
        false,
        "From a console's requestMic to its first audio sent into the PTT channel (call set-up and floor included).",
    ),
    m(
        "pttbridge_event_delivery_seconds",
        H,
        S,
        true,
        "From an event's publication to its delivery, by sink (egw and sse: written; nats: acknowledged).",
    ),
    m(
        "pttbridge_talk_burst_impaired_ratio",
        H,
        N,
        true,
        "Share of a talk burst's packets that were lost, late or concealed, one observation per burst, by side and kind.",
    ),
    m(
        "pttbridge_talk_burst_jitter_depth_seconds",
        H,
        S,
        true,
        "Jitter-buffer target depth at the end of each talk burst, by side.",
    ),
    m(
        "pttbridge_meeting_upstream_reconnects_total",
        C,
        N,
        false,
        "Reconnections to external RTCPeer servers (client mode).",
    ),
    m(
        "pttbridge_meeting_upstream_standby_total",
        C,
        N,
        false,
        "Client-mode registrations left because their dial-in's PTT account went to cluster standby (another node registers).",
    ),
    // Process
    m(
        "pttbridge_process_heap_trim_seconds",
        H,
        S,
        false,
        "How long each return of free heap to the OS took.",
    ),
    m(
        "pttbridge_process_allocations_total",
        C,
        N,
        false,
        "Heap allocations (count-allocs builds only).",
    ),
    m(
        "pttbridge_process_heap_live_bytes",
        G,
        B,
        false,
        "Bytes live on the heap (count-allocs builds only).",
    ),
    m(
        "pttbridge_build_info",
        G,
        N,
        true,
        "Always 1; the labels name the build (version).",
    ),
];

/// Histogram bucket bounds, in seconds: fine below 50 ms, where the media paths live (a 20 ms
/// frame, the bridge's own latency), coarse above.
pub const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.007_5, 0.01, 0.015, 0.02, 0.025,
    0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of the ratio histograms (`*_ratio`): a share from 0 to 1, fine where audio
/// is still good (under 5 % lost).
pub const RATIO_BUCKETS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Series that exist only with a feature or a part configured (`count-allocs`, NATS, TLS):
/// not registered at start, where they would read 0 and mean nothing.
pub const CONDITIONAL: [&str; 7] = [
    "pttbridge_directory_age_seconds",
    "pttbridge_directory_users",
    "pttbridge_process_allocations_total",
    "pttbridge_process_heap_live_bytes",
    "pttbridge_nats_outbox_events",
    "pttbridge_nats_outbox_limit_events",
    "pttbridge_http_tls_certificate_expiry_timestamp_seconds",
];

/// Labelled series whose label values are known in advance: registered at start too, so that
/// the alert rules and the dashboard (`deploy/`) have them before the first call or fault.
const KNOWN: &[(&str, &[(&str, &str)])] = &[
    ("pttbridge_meeting_rtp_total", &[("direction", "in")]),
    ("pttbridge_meeting_rtp_total", &[("direction", "out")]),
    ("pttbridge_meeting_rtp_total", &[("direction", "ptt_in")]),
    ("pttbridge_meeting_rtp_total", &[("direction", "ptt_out")]),
    (
        "pttbridge_meeting_rtp_out_path_total",
        &[("path", "own_srtp")],
    ),
    ("pttbridge_meeting_rtp_out_path_total", &[("path", "str0m")]),
    (
        "pttbridge_meeting_jitter_packets_total",
        &[("direction", "ptt_in"), ("kind", "lost")],
    ),
    (
        "pttbridge_meeting_jitter_packets_total",
        &[("direction", "meeting_in"), ("kind", "lost")],
    ),
    (
        "pttbridge_meeting_jitter_depth_seconds",
        &[("direction", "ptt_in")],
    ),
    (
        "pttbridge_meeting_jitter_depth_seconds",
        &[("direction", "meeting_in")],
    ),
    (
        "pttbridge_meeting_bridge_latency_seconds",
        &[("route", "direct")],
    ),
    (
        "pttbridge_meeting_bridge_latency_seconds",
        &[("route", "passthrough")],
    ),
    (
        "pttbridge_meeting_bridge_latency_seconds",
        &[("route", "mix")],
    ),
    (
        "pttbridge_event_subscribers_cut_total",
        &[("sink", "egw"), ("reason", "too_slow")],
    ),
    (
        "pttbridge_event_subscribers_cut_total",
        &[("sink", "egw"), ("reason", "send_timeout")],
    ),
    (
        "pttbridge_event_subscribers_cut_total",
        &[("sink", "egw_feed"), ("reason", "lagged")],
    ),
    ("pttbridge_event_delivery_seconds", &[("sink", "egw")]),
    ("pttbridge_event_delivery_seconds", &[("sink", "sse")]),
    ("pttbridge_event_delivery_seconds", &[("sink", "nats")]),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "ptt"), ("kind", "lost")],
    ),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "ptt"), ("kind", "late")],
    ),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "ptt"), ("kind", "concealed")],
    ),
    (
        "pttbridge_talk_burst_jitter_depth_seconds",
        &[("side", "ptt")],
    ),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "meeting"), ("kind", "lost")],
    ),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "meeting"), ("kind", "late")],
    ),
    (
        "pttbridge_talk_burst_impaired_ratio",
        &[("side", "meeting"), ("kind", "concealed")],
    ),
    (
        "pttbridge_talk_burst_jitter_depth_seconds",
        &[("side", "meeting")],
    ),
    ("pttbridge_nats_dropped_total", &[("reason", "outbox_full")]),
    (
        "pttbridge_http_connections_refused_total",
        &[("reason", "total")],
    ),
    (
        "pttbridge_http_connections_refused_total",
        &[("reason", "per_ip")],
    ),
    ("pttbridge_http_timeouts_total", &[("kind", "header")]),
    ("pttbridge_http_timeouts_total", &[("kind", "idle")]),
    ("pttbridge_http_timeouts_total", &[("kind", "write")]),
];

static STARTED: OnceLock<f64> = OnceLock::new();

/// Describes every series to the recorder and registers the unlabelled ones (and build info).
/// Call once the recorder is installed.
pub fn register() {
    STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
        if !m.labelled && !CONDITIONAL.contains(&m.name) {
            register_series(m.kind, m.name, &[]);
        }
    }
    for (name, labels) in KNOWN {
        if let Some(m) = ALL.iter().find(|m| m.name == *name) {
            register_series(m.kind, name, labels);
        }
    }
    metrics::gauge!("pttbridge_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Creates a series (value 0, or an empty histogram) so it is exported before its first use.
fn register_series(kind: Kind, name: &'static str, labels: &[(&'static str, &'static str)]) {
    match kind {
        Kind::Counter => metrics::counter!(name, labels).increment(0),
        Kind::Gauge => metrics::gauge!(name, labels).increment(0.0),
        Kind::Histogram => drop(metrics::histogram!(name, labels)),
    }
}

/// The standard `process_*` series of this process, in Prometheus text format (read from
/// `/proc` now; empty where there is no `/proc`).
pub fn process_text() -> String {
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    // SAFETY: sysconf only reads configuration values.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (field(14), field(15))
            && tick > 0.0
        {
            put(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (user + system) / tick,
            );
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut it = statm
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0));
        let (virt, res) = (it.next().unwrap_or(0.0), it.next().unwrap_or(0.0));
        put(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            virt * page,
        );
        put(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            res * page,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        put(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            dir.count() as f64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        put(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limit.rlim_cur as f64,
        );
    }
    if let Some(started) = STARTED.get() {
        put(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            *started,
        );
    }
    out
}

/// The cumulative `name_bucket{labels..., le="b"}` counts of a histogram in Prometheus text
/// (`label` a `key="value"` it must carry), sorted by bound: for load tools reading the bridge's
/// own histograms.
pub fn histogram_buckets(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut b: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}
