//! Customer management (seed 002, `zhongwei-customer-management-api.md`), embedded: customer
//! records and the usage commits of customers' servers, kept in the bridge's SQLite store as
//! time series ([`store`]), checked parameter by parameter ([`params`]); this site's own usage,
//! accumulated from hub events ([`usage`]) and committed on a schedule ([`committer`]).
//!
//! The field names are the seed's, exactly; `docs/customers.md` gives the envelope, the
//! credentials and how usage is counted.

pub mod committer;
pub mod config;
pub mod params;
pub mod store;
pub mod usage;

use serde::{Deserialize, Serialize};

pub use config::{CommitConfig, CustomersConfig};

/// A customer (`/customer/add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// A random UUID, made by the bridge (`/customer/remove?id=`).
    pub id: String,
    /// The customer number, unique (`0513001`).
    pub code: String,
    /// Customer name.
    pub name: String,
    /// The customer server's MAC address.
    pub mac: String,
    /// TCP_Server's public host.
    pub tcphost: String,
    /// TCP_Server's public port (0 = not given).
    pub tcpport: u16,
    /// WEB_Server's public host.
    pub webhost: String,
    /// WEB_Server's public port (0 = not given).
    pub webport: u16,
    /// FILE_Server's public host.
    pub filehost: String,
    /// FILE_Server's public port (0 = not given).
    pub fileport: u16,
    /// Licence expiry, `YYYY-MM-DD`.
    pub timeout: String,
    /// Contact person.
    pub contact: String,
    /// Contact's telephone.
    pub ctel: String,
    /// Who serves this customer.
    pub server: String,
    /// When it was added, ms since the epoch.
    pub created_ms: i64,
}

/// A server commit (`/api/server/commit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCommit {
    /// Customer number.
    pub code: String,
    /// Customer name as the site knows it.
    pub name: String,
    /// The site server's MAC address.
    pub mac: String,
    /// The site server's IP address.
    pub ip: String,
    /// Licence expiry, `YYYY-MM-DD`.
    pub timeout: String,
    /// Users the site has.
    pub count: i64,
    /// Times the site's address book changed.
    pub updatetimes: i64,
}

/// One user of a user commit (`/api/user/commit`, `data=[...]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCommit {
    /// Customer number.
    pub code: String,
    /// The user's id at the site.
    pub uuid: String,
    /// User name.
    pub nickname: String,
    /// Online time, seconds.
    pub onlinetime: i64,
    /// Online time on Android clients, seconds.
    pub andtimes: i64,
    /// Online time on PC clients, seconds.
    pub pctimes: i64,
    /// Online time on iOS clients, seconds.
    pub iostimes: i64,
    /// Messages sent.
    pub fmsgs: i64,
    /// Messages received.
    pub tmsgs: i64,
}

/// One group of a group commit (`/api/group/commit`, `data=[...]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommit {
    /// Customer number.
    pub code: String,
    /// The group's id at the site.
    pub gid: String,
    /// Group name.
    pub name: String,
    /// Creator's id.
    pub createrid: String,
    /// Creator's name.
    pub creatername: String,
    /// Members.
    pub ucount: i64,
    /// Chat messages.
    pub msgcount: i64,
    /// Creation date, `YYYY-MM-DD` (empty: unknown).
    pub ctime: String,
    /// Shared files.
    pub fcount: i64,
    /// Notices.
    pub ncount: i64,
}

/// What one commit request carries, checked: a server commit, or a `data` batch of user or
/// group commits (also a shared records operation's payload on a cluster node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Commits {
    /// `/api/server/commit`.
    Server(ServerCommit),
    /// `/api/user/commit`.
    Users(Vec<UserCommit>),
    /// `/api/group/commit`.
    Groups(Vec<GroupCommit>),
}

impl Commits {
    /// Its kind, as metrics label it (`server`, `user`, `group`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Server(_) => "server",
            Self::Users(_) => "user",
            Self::Groups(_) => "group",
        }
    }

    /// The customer codes its entries name.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            Self::Server(c) => vec![c.code.as_str()],
            Self::Users(rows) => rows.iter().map(|r| r.code.as_str()).collect(),
            Self::Groups(rows) => rows.iter().map(|r| r.code.as_str()).collect(),
        }
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        match self {
            Self::Server(_) => 1,
            Self::Users(rows) => rows.len(),
            Self::Groups(rows) => rows.len(),
        }
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored commit row: what was committed and when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received<T> {
    /// The commit.
    #[serde(flatten)]
    pub commit: T,
    /// When the bridge received it, ms since the epoch.
    pub received_ms: i64,
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
