//! The Totalk organisation-admin interface (`/ent/`, seed §5.3) as a client, with no IO.
//!
//! Every call is `POST {base}/ent/?method=NAME` with its parameters as
//! `application/x-www-form-urlencoded` fields, the session token among them (§5.1 note 1,
//! §5.3.1). [`wire`] has the typed requests ([`wire::Request`]: the method and its fields as
//! the seed names them), the typed answers (serde, the seed's field names) and
//! [`wire::AdminError`] for the return codes of §5.1.2. [`Client`] is the sans-IO directory
//! client: it logs in, pages through users and channels, reads each channel member's role,
//! refreshes on an interval or on demand, logs in again when the token times out, and runs
//! one-off calls (`pushNotice`, `getMessagesInPage`) between refreshes. The caller sends what
//! [`Client::poll_request`] gives, hands back the answer's body with
//! [`Client::handle_response`] (or [`Client::handle_failure`]) and reads [`Client::poll_event`].

pub mod client;
pub mod wire;

pub use client::{
    Answer, ChannelEntry, Client, ClientConfig, Directory, Event, Member, OpId, Operation,
};
pub use wire::{AdminError, Channel, Message, NoticeTarget, Page, Request, User};
