//! One module per side: each translates its protocol to and from the hub.

pub mod console;
pub mod meeting;
pub mod ptt;
pub mod ptt_calls;
pub mod ptt_commands;
