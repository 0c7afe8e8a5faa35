//! Logging what peers control, so an attacker can neither forge log records nor flood the log.
//!
//! - [`esc`]: text a client, console, PTT server or user, platform or HTTP request controls
//!   (names, reasons, messages, errors that quote their input) goes into a record escaped and
//!   bounded — control characters, line separators, bidi overrides and other invisible
//!   characters as `\u{…}`, at most [`MAX_BYTES`] — so one record stays one line.
//! - [`RateLimit`]: a warning a peer can set off again and again is logged at most so many times
//!   per window, then one line says how many more there were.
//!
//! The bridge and the adapter crates both use it (it depends on nothing but `tracing`).

mod escape;
mod limit;

pub use escape::{Escaped, MAX_BYTES, esc};
pub use limit::{Check, PER_WINDOW, RateLimit, TARGET, WINDOW};
