//! pttbridge: a protocol gateway between PTT voice servers, dispatch consoles,
//! WebRTC meetings and event platforms.
//!
//! Layout: [`config`] (TOML), [`hub`] (common model and event bus), [`sides`] (one
//! module per protocol side), [`http`] (the one HTTP port), [`probe`] (the PTT
//! diagnostic client) and [`run`] (wiring it all together).

pub mod alloc_count;
pub mod allocator;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod config;
pub mod customers;
pub mod directory;
pub mod events;
pub mod heap;
pub mod http;
pub mod http_client;
pub mod hub;
pub mod metrics_catalog;
pub mod probe;
pub mod recording;
pub mod run;
pub mod sides;
pub mod storage;
pub mod tls;
pub mod wav;
