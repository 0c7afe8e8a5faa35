//! Who is registered (`call.doRegister`) on which signalling connection: where their pushes
//! go and how a platform's kickout reaches the connection.

use std::collections::HashMap;

use rtcpeer::id::Id;
use rtcpeer::push::Push;
use tokio::sync::mpsc;

use super::outbox::{Outbox, push_outbox};

/// A registered user's connection.
#[derive(Debug)]
pub struct Registered {
    /// Connection number.
    pub conn: u64,
    /// Its outbox.
    pub outbox: Outbox,
    /// The device type it registered with.
    pub device_type: Option<String>,
    /// Ends the connection (a platform's kickout, or the user registering elsewhere).
    pub kick: mpsc::Sender<Kick>,
}

/// Why a connection is being ended from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// What the client is told (`doEvent onKickout`'s reason).
    pub reason: String,
    /// Also end its session (SID): a platform's kickout does; a newer registration of the same
    /// user does not (it may be using the same session).
    pub end_session: bool,
}

/// Registered users by id (a user registers from one connection at a time; the last wins).
#[derive(Debug, Default)]
pub struct Registry {
    users: HashMap<Id, Registered>,
}

impl Registry {
    /// Registers `user` on a connection; returns the registration it replaces.
    pub fn insert(&mut self, user: Id, r: Registered) -> Option<Registered> {
        self.users.insert(user, r)
    }

    /// Unregisters `user` if it is still registered from connection `conn`.
    pub fn remove(&mut self, user: Id, conn: u64) -> bool {
        if self.users.get(&user).is_some_and(|r| r.conn == conn) {
            self.users.remove(&user);
            return true;
        }
        false
    }

    /// The registration of `user`.
    pub fn get(&self, user: Id) -> Option<&Registered> {
        self.users.get(&user)
    }

    /// Whether `user` is registered.
    pub fn contains(&self, user: Id) -> bool {
        self.users.contains_key(&user)
    }

    /// How many users are registered.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Sends a push to `user`; false when it is not online or not reading.
    pub fn push(&self, user: Id, msg: &Push) -> bool {
        match self.users.get(&user) {
            Some(r) => push_outbox(&r.outbox, msg.to_value()),
            None => false,
        }
    }
}

/// One signalling connection's view.
#[derive(Debug)]
pub struct Conn {
    /// Connection number.
    pub id: u64,
    /// Its outbox.
    pub outbox: Outbox,
    /// Registered user.
    pub user: Option<Id>,
    /// Display name of the user.
    pub name: Option<String>,
    /// Room it entered.
    pub room: Option<Id>,
    /// The SID it registered with (a kickout ends that session).
    pub sid: Option<String>,
    /// Its session came from an operator's login (`POST /api/meeting/login`): it may moderate
    /// rooms like their compere.
    pub operator: bool,
    /// Kickouts of this connection. The socket task ends it.
    pub kicked: mpsc::Receiver<Kick>,
    /// The sending end handed to the registry.
    pub(super) kick: mpsc::Sender<Kick>,
}

impl Conn {
    /// A fresh connection `id` writing to `outbox`.
    pub fn new(id: u64, outbox: Outbox) -> Self {
        let (kick, kicked) = mpsc::channel(1);
        Self {
            id,
            outbox,
            user: None,
            name: None,
            room: None,
            sid: None,
            operator: false,
            kicked,
            kick,
        }
    }
}
