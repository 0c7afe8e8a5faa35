//! Several bridge nodes sharing one site (issue 22): each PTT account and each console admin
//! session is owned by exactly one node through a lease in a NATS JetStream key-value bucket; see
//! `docs/cluster.md`.

pub mod config;
pub mod entry;
pub mod eventlog;
pub mod lease;
pub mod log;
pub mod node;
pub mod records;
pub mod resource;
pub mod route;
pub mod runs;
pub mod share;
