//! The HST event gateway (EGW) WebSocket protocol: JSON text frames with a numeric `id`.
//!
//! Pure protocol code, no IO: [`parse_request`] turns a client frame into a [`Request`] (or a
//! [`RequestError`] that already knows its error reply), the `*Reply`/[`Push`] types serialise
//! to the spec's exact shape (fields in the spec examples' order), and [`Session`] is the
//! sans-IO state of one connection (logged in? which apps? subscribed to what?).
//!
//! Ids follow the spec's *examples* (its id table contradicts them): 20000→20001 login,
//! 20002→20003 logout, 20004→20005 subscribe, 20006→20007 unsubscribe, 20008→20009 full sync,
//! 20011→20012 heartbeat; pushed events 20100 join, 20101 leave, 20102 start media, 20103 stop
//! media. Two extensions: 20099 is the error reply to a frame whose request is unknown, and
//! 20110 carries every other bridge event so versions seen on the socket stay contiguous.

pub mod message;
pub mod rest;
pub mod session;

pub use message::{
    AppFilter, BridgeEvent, DirectoryUser, ErrorCode, GroupSync, MediaInfo, Notice, Push, Reply,
    Request, RequestError, SyncReply, UserSync, parse_request,
};
pub use session::{Action, Grant, Session, Subscription};

/// Protocol ids.
pub mod ids {
    /// Login request.
    pub const LOGIN: i64 = 20000;
    /// Login response.
    pub const LOGIN_REPLY: i64 = 20001;
    /// Logout request.
    pub const LOGOUT: i64 = 20002;
    /// Logout response.
    pub const LOGOUT_REPLY: i64 = 20003;
    /// Subscribe request.
    pub const SUBSCRIBE: i64 = 20004;
    /// Subscribe response.
    pub const SUBSCRIBE_REPLY: i64 = 20005;
    /// Unsubscribe request.
    pub const UNSUBSCRIBE: i64 = 20006;
    /// Unsubscribe response.
    pub const UNSUBSCRIBE_REPLY: i64 = 20007;
    /// Full sync request.
    pub const FULL_SYNC: i64 = 20008;
    /// Full sync response (one per app).
    pub const FULL_SYNC_REPLY: i64 = 20009;
    /// Heartbeat request.
    pub const HEARTBEAT: i64 = 20011;
    /// Heartbeat response.
    pub const HEARTBEAT_REPLY: i64 = 20012;
    /// Extension: push a text notice to terminals through the directory's admin API.
    pub const NOTICE: i64 = 20013;
    /// Extension: the notice's response.
    pub const NOTICE_REPLY: i64 = 20014;
    /// Extension: error reply to a frame that is not a known request (not JSON, unknown id).
    pub const ERROR: i64 = 20099;
    /// Pushed: a user joined a group.
    pub const USER_JOINED: i64 = 20100;
    /// Pushed: a user left a group.
    pub const USER_LEFT: i64 = 20101;
    /// Pushed: a user started broadcasting a medium.
    pub const MEDIA_STARTED: i64 = 20102;
    /// Pushed: a user stopped broadcasting a medium.
    pub const MEDIA_STOPPED: i64 = 20103;
    /// Extension, pushed: any other bridge event (calls, links, floor, text, sides).
    pub const BRIDGE_EVENT: i64 = 20110;
}

/// Media types of `media_type`.
pub mod media_type {
    /// Screen sharing.
    pub const SCREEN: u8 = 0;
    /// Video.
    pub const VIDEO: u8 = 1;
    /// Audio (PTT talk, meeting speech).
    pub const AUDIO: u8 = 2;
    /// Whiteboard.
    pub const WHITEBOARD: u8 = 4;

    /// Whether `t` is one of the spec's media types.
    pub fn is_known(t: u8) -> bool {
        matches!(t, SCREEN | VIDEO | AUDIO | WHITEBOARD)
    }
}

/// The value every frame's `business` field must have.
pub const BUSINESS: &str = "EGW";

/// Largest client frame accepted, in bytes (requests are a few hundred bytes).
pub const MAX_FRAME: usize = 64 * 1024;
