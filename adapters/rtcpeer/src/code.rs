//! `result` codes. The spec defines 0 as success and 1 as the generic failure ("用户不在线",
//! "退出失败"); the bridge adds HTTP-like codes for protocol errors so a client can tell a bad
//! request from a refused one. Every non-zero reply also carries a `message`.

/// Success.
pub const OK: i64 = 0;
/// The spec's generic failure: the called user is not online, the operation failed.
pub const FAILED: i64 = 1;
/// The frame is not JSON, not an object, or lacks `module`/`method`.
pub const MALFORMED: i64 = 400;
/// The connection has not registered (`call.doRegister`) or the SID is unknown.
pub const UNAUTHORIZED: i64 = 401;
/// The user may not do that: enter a room it was not invited into, act on another user's
/// session, end or moderate a room it does not own.
pub const FORBIDDEN: i64 = 403;
/// A limit was reached (rooms, calls, connections): try later.
pub const TOO_MANY: i64 = 429;
/// Unknown `module`/`method`, or a room/user/client that does not exist.
pub const NOT_FOUND: i64 = 404;
/// A field is missing or has the wrong type.
pub const BAD_FIELDS: i64 = 422;
/// The request conflicts with the current state (not in a room, no such call, room full).
pub const CONFLICT: i64 = 409;
/// The SDP offer cannot be used.
pub const BAD_SDP: i64 = 488;
/// The server could not carry out a valid request.
pub const INTERNAL: i64 = 500;
