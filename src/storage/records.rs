//! Record writes as operations, so a cluster node can send them through a shared log and every
//! node apply them to its own database in the log's order (`docs/cluster.md`, "Shared
//! records"): SQLite becomes a view of the log, and nodes never drift.
//!
//! [`Store::write`] applies an operation here when the store is not replicated (a single node:
//! exactly the old behaviour), else hands it to the [`RecordWriter`], which returns once this
//! node has applied it (read-your-writes) with the result of applying it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::meeting;
use super::{AppRow, AppointmentRow, CallRow, RoomRow, Store, StoreError};
use crate::customers::store::{self, Retention, Secrets};
use crate::customers::{Commits, Customer};

/// The table of the last log sequence this database applied.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shared_log (
    name TEXT PRIMARY KEY,
    applied INTEGER NOT NULL
);
";

/// A write to the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RecordOp {
    /// [`Store::insert_app`].
    InsertApp {
        /// The app.
        app: AppRow,
    },
    /// [`Store::update_app`].
    UpdateApp {
        /// The app.
        app: AppRow,
    },
    /// [`Store::set_app_secret`].
    SetAppSecret {
        /// Which app.
        app_id: String,
        /// The new secret's digest.
        digest: String,
    },
    /// [`Store::delete_app`].
    DeleteApp {
        /// Which app.
        app_id: String,
    },
    /// [`Store::insert_call`].
    InsertCall {
        /// The call.
        call: CallRow,
    },
    /// `Store::insert_customer` (customer management).
    InsertCustomer {
        /// The customer.
        customer: Customer,
        /// Its commit token's digest.
        commit_digest: String,
        /// Its info key's digest.
        info_digest: String,
    },
    /// `Store::remove_customer`, with its commits.
    RemoveCustomer {
        /// The customer's id.
        id: String,
    },
    /// A customer's usage commit: kept as received at `received_ms` (the receiving node's
    /// clock, so every node keeps the same row), then the tables pruned by the receiving node's
    /// retention.
    InsertCommits {
        /// What was committed.
        commits: Commits,
        /// When it was received, ms since the epoch.
        received_ms: i64,
        /// `[customers] retention_days` of the receiving node.
        keep_days: u32,
        /// `[customers] max_commit_rows` of the receiving node.
        keep_rows: u32,
    },
    /// A standing room of the meeting side (`room.createRoom` and its changes), with its
    /// members: `new` refuses an id already taken (the writer drew it), else it replaces.
    PutRoom {
        /// The room.
        room: RoomRow,
        /// Created now rather than changed.
        new: bool,
    },
    /// A standing room deleted (`room.deleteRoom`).
    DeleteRoom {
        /// Its id.
        id: i64,
    },
    /// An appointment (meeting side): `new` refuses an id or invite code already taken (the
    /// writer drew them), else it replaces.
    PutAppointment {
        /// The appointment.
        appointment: AppointmentRow,
        /// Created now rather than changed.
        new: bool,
    },
    /// An appointment deleted.
    DeleteAppointment {
        /// Its id.
        id: i64,
    },
    /// The user id given to a meeting account (the first given to the account, or to the id,
    /// stays).
    AddMeetingAccount {
        /// The account's app.
        app_id: String,
        /// The account.
        account: String,
        /// Its user id.
        user_id: i64,
    },
    /// An operator's page signed out: its session is refused on every node until it would have
    /// expired (the expired ones are dropped as this is applied).
    SignOut {
        /// `auth::operator::sign_out_key` of the session cookie.
        key: String,
        /// When the session would have expired (ms since the Unix epoch).
        expiry_ms: u64,
    },
}

/// Told of an operation applied from the shared log ([`Store::on_applied`]).
pub type ApplyHook = Arc<dyn Fn(&RecordOp) + Send + Sync>;

/// The hooks of a store.
#[derive(Default)]
pub(super) struct Hooks(Mutex<Vec<ApplyHook>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|h| h.len()).unwrap_or_default();
        write!(f, "{n} hooks")
    }
}

/// What applying a [`RecordOp`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Done (an insert of an app).
    Done,
    /// Whether the row existed (update, secret, delete).
    Found(bool),
    /// The new row's id (a call).
    Id(i64),
}

/// Where a replicated store sends its writes.
pub trait RecordWriter: Send + Sync + std::fmt::Debug {
    /// Sends `op` through the shared log and waits until this node applied it; its result.
    fn write(
        &self,
        op: RecordOp,
    ) -> Pin<Box<dyn Future<Output = Result<Applied, StoreError>> + Send + '_>>;
}

impl Store {
    /// Cluster mode: from now on [`write`](Self::write) goes through `writer`. A second call
    /// does nothing.
    pub fn replicate(&self, writer: Arc<dyn RecordWriter>) {
        let _ = self.replica.set(writer);
    }

    /// Whether writes go through a shared log.
    pub fn replicated(&self) -> bool {
        self.replica.get().is_some()
    }

    /// Writes `op`: here, or through the shared log when replicated (returning once this node
    /// has applied it).
    pub async fn write(&self, op: RecordOp) -> Result<Applied, StoreError> {
        match self.replica.get() {
            Some(w) => w.write(op).await,
            None => self.apply(&op),
        }
    }

    /// Applies `op` to this database (in one transaction: some operations are several
    /// statements).
    pub fn apply(&self, op: &RecordOp) -> Result<Applied, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let result = apply_on(&tx, op)?;
        tx.commit()?;
        Ok(result)
    }

    /// Applies `op`, the entry `seq` of log `name`, and records that position, in one
    /// transaction: a node that stops between the two applies nothing twice. The outer error
    /// is the database failing (nothing done); the inner one the operation's own result (a
    /// conflict), which every node meets alike.
    pub fn apply_logged(
        &self,
        name: &str,
        seq: u64,
        op: &RecordOp,
    ) -> Result<Result<Applied, StoreError>, StoreError> {
        let result = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let result = apply_on(&tx, op);
            set_position(&tx, name, seq)?;
            tx.commit()?;
            result
        };
        if result.is_ok() {
            // Outside the connection's lock: a hook may read the store.
            let hooks = self
                .hooks
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for hook in hooks {
                hook(op);
            }
        }
        Ok(result)
    }

    /// Calls `hook` with every operation applied from the shared log from now on (once it
    /// is committed; refused ones are not told): how a node's views kept in memory (the
    /// meeting side's room directory) learn of rows another node wrote. A single node applies
    /// its own writes and tells nobody.
    pub fn on_applied(&self, hook: ApplyHook) {
        self.hooks
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// The last sequence of log `name` this database applied (0: none).
    pub fn log_applied(&self, name: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn()
            .query_row(
                "SELECT applied FROM shared_log WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Records that log `name` is applied up to `seq`.
    pub fn set_log_applied(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        set_position(&self.conn(), name, seq)
    }
}

fn apply_on(conn: &Connection, op: &RecordOp) -> Result<Applied, StoreError> {
    match op {
        RecordOp::InsertApp { app } => super::insert_app_on(conn, app).map(|()| Applied::Done),
        RecordOp::UpdateApp { app } => super::update_app_on(conn, app).map(Applied::Found),
        RecordOp::SetAppSecret { app_id, digest } => {
            super::set_app_secret_on(conn, app_id, digest).map(Applied::Found)
        }
        RecordOp::DeleteApp { app_id } => super::delete_app_on(conn, app_id).map(Applied::Found),
        RecordOp::InsertCall { call } => super::insert_call_on(conn, call).map(Applied::Id),
        RecordOp::InsertCustomer {
            customer,
            commit_digest,
            info_digest,
        } => {
            let secrets = Secrets {
                commit: commit_digest.clone(),
                info: info_digest.clone(),
            };
            store::insert_customer_on(conn, customer, &secrets).map(|()| Applied::Done)
        }
        RecordOp::RemoveCustomer { id } => {
            store::remove_customer_on(conn, id).map(|c| Applied::Found(c.is_some()))
        }
        RecordOp::InsertCommits {
            commits,
            received_ms,
            keep_days,
            keep_rows,
        } => {
            let keep = Retention {
                days: *keep_days,
                max_rows: *keep_rows,
            };
            store::insert_commits_on(conn, commits, *received_ms, keep).map(|()| Applied::Done)
        }
        RecordOp::PutRoom { room, new } => {
            meeting::put_room_on(conn, room, *new).map(|()| Applied::Done)
        }
        RecordOp::DeleteRoom { id } => meeting::delete_room_on(conn, *id).map(Applied::Found),
        RecordOp::SignOut { key, expiry_ms } => {
            // Sessions last at most 30 days (operator.session_hours): one that would expire
            // 31 days before this one has expired — decided by the entry, so every node keeps
            // the same rows.
            const MONTH_MS: i64 = 31 * 86_400_000;
            conn.execute(
                "DELETE FROM operator_sign_outs WHERE expiry_ms < ?1",
                [*expiry_ms as i64 - MONTH_MS],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO operator_sign_outs (key, expiry_ms) VALUES (?1, ?2)",
                rusqlite::params![key, *expiry_ms as i64],
            )?;
            Ok(Applied::Done)
        }
        RecordOp::PutAppointment { appointment, new } => {
            meeting::put_appointment_on(conn, appointment, *new).map(|()| Applied::Done)
        }
        RecordOp::DeleteAppointment { id } => {
            meeting::delete_appointment_on(conn, *id).map(Applied::Found)
        }
        RecordOp::AddMeetingAccount {
            app_id,
            account,
            user_id,
        } => {
            meeting::add_meeting_account_on(conn, app_id, account, *user_id).map(|()| Applied::Done)
        }
    }
}

fn set_position(conn: &Connection, name: &str, seq: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO shared_log (name, applied) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET applied = excluded.applied",
        params![name, seq as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppRow {
        AppRow {
            app_id: "a1".into(),
            app_secret: crate::auth::secret::digest("s"),
            app_name: "one".into(),
            status: "online".into(),
            consumption_limit: None,
            services: vec![(4, None)],
        }
    }

    #[test]
    fn operations_round_trip_and_apply_as_the_methods_do() {
        let store = Store::open(None).unwrap();
        let ops = [
            RecordOp::InsertApp { app: app() },
            RecordOp::UpdateApp {
                app: AppRow {
                    app_name: "renamed".into(),
                    ..app()
                },
            },
            RecordOp::DeleteApp {
                app_id: "none".into(),
            },
        ];
        let results: Vec<Applied> = ops
            .iter()
            .map(|op| {
                let json = serde_json::to_string(op).unwrap();
                let back: RecordOp = serde_json::from_str(&json).unwrap();
                assert_eq!(&back, op, "{json}");
                store.apply(&back).unwrap()
            })
            .collect();
        assert_eq!(
            results,
            [Applied::Done, Applied::Found(true), Applied::Found(false)]
        );
        assert_eq!(store.app("a1").unwrap().unwrap().app_name, "renamed");
        assert!(matches!(
            store.apply(&RecordOp::InsertApp { app: app() }),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.log_applied("records").unwrap(), 0);
        store.set_log_applied("records", 7).unwrap();
        assert_eq!(store.log_applied("records").unwrap(), 7);
        // A refused operation still moves the position, in the same transaction.
        let r = store
            .apply_logged("records", 8, &RecordOp::InsertApp { app: app() })
            .unwrap();
        assert!(matches!(r, Err(StoreError::Conflict(_))));
        assert_eq!(store.log_applied("records").unwrap(), 8);
    }

    #[test]
    fn customer_operations_round_trip_and_apply_as_the_methods_do() {
        let store = Store::open(None).unwrap();
        let customer = Customer {
            id: "5f0c7c1e-0000-4000-8000-000000000001".into(),
            code: "0513001".into(),
            name: "site".into(),
            mac: String::new(),
            tcphost: String::new(),
            tcpport: 0,
            webhost: String::new(),
            webport: 0,
            filehost: String::new(),
            fileport: 0,
            timeout: "2027-09-21".into(),
            contact: String::new(),
            ctel: String::new(),
            server: String::new(),
            created_ms: 1,
        };
        let user = crate::customers::UserCommit {
            code: "0513001".into(),
            uuid: "u1".into(),
            nickname: "one".into(),
            onlinetime: 5,
            andtimes: 0,
            pctimes: 1,
            iostimes: 0,
            fmsgs: 2,
            tmsgs: 3,
        };
        let ops = [
            RecordOp::InsertCustomer {
                customer: customer.clone(),
                commit_digest: crate::auth::secret::digest("token"),
                info_digest: crate::auth::secret::digest("key"),
            },
            RecordOp::InsertCommits {
                commits: Commits::Users(vec![user.clone(), user]),
                received_ms: 1000,
                keep_days: 0,
                keep_rows: 10,
            },
        ];
        for op in &ops {
            let json = serde_json::to_string(op).unwrap();
            let back: RecordOp = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, op, "{json}");
            assert_eq!(store.apply(&back).unwrap(), Applied::Done);
        }
        assert_eq!(store.customers().unwrap(), std::slice::from_ref(&customer));
        assert_eq!(store.commit_rows("0513001").unwrap(), [0, 2, 0]);
        // Every node received it at the same time, so every node keeps the same row.
        assert_eq!(store.latest_users("0513001").unwrap()[0].received_ms, 1000);
        assert!(matches!(store.apply(&ops[0]), Err(StoreError::Conflict(_))));
        let remove = RecordOp::RemoveCustomer {
            id: customer.id.clone(),
        };
        assert_eq!(store.apply(&remove).unwrap(), Applied::Found(true));
        assert_eq!(store.apply(&remove).unwrap(), Applied::Found(false));
        assert_eq!(store.commit_rows("0513001").unwrap(), [0, 0, 0]);
    }

    /// The hook hears what the shared log applied, once committed: not a refused operation,
    /// nor a single node's own direct writes.
    #[test]
    fn hooks_hear_each_operation_the_log_applied() {
        let store = Store::open(None).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        store.on_applied(Arc::new(move |op: &RecordOp| {
            t.lock().unwrap().push(op.clone())
        }));
        let put = RecordOp::PutRoom {
            room: RoomRow {
                id: 123_456_789,
                owner: 1001,
                info: r#"{"name":"briefing"}"#.into(),
                password: None,
                dial_in: vec![],
                members: vec![1002],
            },
            new: true,
        };
        let json = serde_json::to_string(&put).unwrap();
        assert_eq!(
            serde_json::from_str::<RecordOp>(&json).unwrap(),
            put,
            "{json}"
        );
        assert_eq!(
            store.apply_logged("records", 1, &put).unwrap().unwrap(),
            Applied::Done
        );
        assert!(matches!(
            store.apply_logged("records", 2, &put).unwrap(),
            Err(StoreError::Conflict(_))
        ));
        let delete = RecordOp::DeleteRoom { id: 123_456_789 };
        assert_eq!(store.apply(&delete).unwrap(), Applied::Found(true));
        assert_eq!(*told.lock().unwrap(), [put]);
    }

    #[test]
    fn sign_outs_are_kept_until_they_expire_and_pruned_alike_everywhere() {
        let store = Store::open(None).unwrap();
        let now = 1_800_000_000_000u64;
        let day = 86_400_000u64;
        for (key, expiry_ms) in [
            ("old", now - 40 * day),
            ("a", now + day),
            ("b", now + 2 * day),
        ] {
            let op = RecordOp::SignOut {
                key: key.into(),
                expiry_ms,
            };
            let json = serde_json::to_string(&op).unwrap();
            let back: RecordOp = serde_json::from_str(&json).unwrap();
            assert_eq!(store.apply(&back).unwrap(), Applied::Done);
        }
        // "old" expired 41 days before "b": pruned by the entry itself, whatever the clock.
        let rows = store.operator_sign_outs(0).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let live = store.operator_sign_outs((now + day + 1) as i64).unwrap();
        assert_eq!(live, [("b".to_string(), now + 2 * day)]);
    }
}
