//! The one auth model every surface uses (`docs/security.md` has the threat model and the
//! table of every route and method with what it requires):
//!
//! - [`operator`]: operators (page, `/api/*`, `/events`, `/meeting/links*`, app management,
//!   metrics) with a token or a session cookie; [`web`] the HTTP glue (middleware, sign-in);
//! - [`secret`]: tokens, salted digests at rest, constant-time comparison;
//! - [`sign`]: RTCPeer signs — HMAC-sealed, app-bound, expiring, single use;
//! - [`limiter`]: failed-login throttling per account or address, bounded.
//!
//! Apps (business REST, EGW, RTCPeer `getSign`) are checked against their stored digests with
//! [`secret::verify`]; consoles log in with their own PTT accounts (never the bridge's).

pub mod limiter;
pub mod operator;
pub mod secret;
pub mod sign;
pub mod web;

pub use limiter::FailureLimiter;
pub use operator::Operators;
pub use sign::Signer;
