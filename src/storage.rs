//! Embedded storage: one SQLite database (file, or in memory by default) holding the apps of
//! the business gateway, the call records and the meeting side's standing rooms. Calls are
//! short (microseconds to a millisecond); none of them is on an audio path.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

mod meeting;
mod records;
pub use meeting::{AppointmentRow, RoomRow};
pub use records::{Applied, ApplyHook, RecordOp, RecordWriter};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row with this unique value exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The shared record log (cluster mode) could not take or apply the write.
    #[error("shared records: {0}")]
    Replication(String),
}

/// An app row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppRow {
    /// Id.
    pub app_id: String,
    /// The digest of its secret (`auth::secret::digest`): what the store keeps; a plain secret
    /// written here is turned into its digest when the store is next opened.
    pub app_secret: String,
    /// Name.
    pub app_name: String,
    /// `online` / `offline`.
    pub status: String,
    /// Spending limit.
    pub consumption_limit: Option<i64>,
    /// Services: `(service_id, use_limit)`.
    pub services: Vec<(i64, Option<i64>)>,
}

/// A finished call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallRow {
    /// Row id (0 before insertion).
    pub id: i64,
    /// App.
    pub app_id: String,
    /// Group.
    pub group_id: String,
    /// Sides (`ptt`, `console`, `meeting`).
    pub sides: Vec<String>,
    /// Who started it (`<side>:<id>`), or empty.
    pub initiator: String,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End, ms since the epoch.
    pub end_ms: i64,
    /// Audio packets carried.
    pub audio_packets: i64,
    /// Audio payload bytes.
    pub audio_bytes: i64,
    /// Signalling messages/events.
    pub signalling: i64,
    /// How it ended.
    pub end_reason: String,
}

/// One recorded talk burst (the archive's index; the file is in `[recording] dir`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BurstRow {
    /// Row id (0 before insertion).
    pub id: i64,
    /// File name inside the recording directory (never a path).
    pub file: String,
    /// Tenant.
    pub app_id: String,
    /// The talker's side (`ptt`, ...).
    pub side: String,
    /// Server id (PTT server), or empty.
    pub server: String,
    /// Channel or room name.
    pub channel: String,
    /// The hub group (`ptt:<server>:<channel path>`).
    pub group_id: String,
    /// Who talked (display name).
    pub talker: String,
    /// The talker's stable id on their side.
    pub talker_id: String,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// Audio length, ms.
    pub duration_ms: i64,
    /// File size, bytes.
    pub size_bytes: i64,
    /// `opus` (Ogg Opus).
    pub codec: String,
    /// Opus packets.
    pub packets: i64,
}

/// What to list of the archive; `None` = any.
#[derive(Debug, Clone, Default)]
pub struct BurstQuery {
    /// Channel (or room) name, exact; or a group id (`ptt:site:North`).
    pub channel: Option<String>,
    /// Talker name, exact; or the talker's id.
    pub talker: Option<String>,
    /// Server id.
    pub server: Option<String>,
    /// Talker name contains this (case-insensitive; the spec's fuzzy `name`).
    pub name_like: Option<String>,
    /// Started at or after, ms.
    pub from_ms: Option<i64>,
    /// Started before, ms.
    pub to_ms: Option<i64>,
    /// Newest first (default oldest first).
    pub newest_first: bool,
}

const BURST_COLUMNS: &str = "id, file, app_id, side, server, channel, group_id, talker, talker_id,
    start_ms, duration_ms, size_bytes, codec, packets";

const BURST_WHERE: &str = "(?1 IS NULL OR channel = ?1 OR group_id = ?1)
    AND (?2 IS NULL OR talker = ?2 OR talker_id = ?2)
    AND (?3 IS NULL OR server = ?3)
    AND (?4 IS NULL OR instr(lower(talker), lower(?4)) > 0)
    AND (?5 IS NULL OR start_ms >= ?5)
    AND (?6 IS NULL OR start_ms < ?6)";

fn burst_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BurstRow> {
    Ok(BurstRow {
        id: r.get(0)?,
        file: r.get(1)?,
        app_id: r.get(2)?,
        side: r.get(3)?,
        server: r.get(4)?,
        channel: r.get(5)?,
        group_id: r.get(6)?,
        talker: r.get(7)?,
        talker_id: r.get(8)?,
        start_ms: r.get(9)?,
        duration_ms: r.get(10)?,
        size_bytes: r.get(11)?,
        codec: r.get(12)?,
        packets: r.get(13)?,
    })
}

/// The database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Cluster mode: where record writes go (`records.rs`).
    replica: Arc<std::sync::OnceLock<Arc<dyn RecordWriter>>>,
    /// Cluster mode: told of each operation applied from the shared log (`records.rs`).
    hooks: Arc<records::Hooks>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    app_secret TEXT NOT NULL,
    app_name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    consumption_limit INTEGER,
    services TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS call_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    sides TEXT NOT NULL,
    initiator TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    audio_packets INTEGER NOT NULL,
    audio_bytes INTEGER NOT NULL,
    signalling INTEGER NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_records_by_time ON call_records (start_ms, app_id);
CREATE TABLE IF NOT EXISTS bursts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL UNIQUE,
    app_id TEXT NOT NULL,
    side TEXT NOT NULL,
    server TEXT NOT NULL,
    channel TEXT NOT NULL,
    group_id TEXT NOT NULL,
    talker TEXT NOT NULL,
    talker_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    codec TEXT NOT NULL,
    packets INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bursts_by_time ON bursts (start_ms);
CREATE TABLE IF NOT EXISTS operator_tokens (
    digest TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_sign_outs (
    key TEXT PRIMARY KEY,
    expiry_ms INTEGER NOT NULL
);
";

/// Tables of customer management (`customers::store` reads and writes them).
const CUSTOMER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    mac TEXT NOT NULL,
    tcphost TEXT NOT NULL,
    tcpport INTEGER NOT NULL,
    webhost TEXT NOT NULL,
    webport INTEGER NOT NULL,
    filehost TEXT NOT NULL,
    fileport INTEGER NOT NULL,
    timeout TEXT NOT NULL,
    contact TEXT NOT NULL,
    ctel TEXT NOT NULL,
    server TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    commit_digest TEXT NOT NULL,
    info_digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS customer_server_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    timeout TEXT NOT NULL,
    count INTEGER NOT NULL,
    updatetimes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_server_commits_by_code ON customer_server_commits (code, id);
CREATE TABLE IF NOT EXISTS customer_user_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    uuid TEXT NOT NULL,
    nickname TEXT NOT NULL,
    onlinetime INTEGER NOT NULL,
    andtimes INTEGER NOT NULL,
    pctimes INTEGER NOT NULL,
    iostimes INTEGER NOT NULL,
    fmsgs INTEGER NOT NULL,
    tmsgs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_user_commits_by_code ON customer_user_commits (code, uuid, id);
CREATE TABLE IF NOT EXISTS customer_group_commits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    code TEXT NOT NULL,
    gid TEXT NOT NULL,
    name TEXT NOT NULL,
    createrid TEXT NOT NULL,
    creatername TEXT NOT NULL,
    ucount INTEGER NOT NULL,
    msgcount INTEGER NOT NULL,
    ctime TEXT NOT NULL,
    fcount INTEGER NOT NULL,
    ncount INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_group_commits_by_code ON customer_group_commits (code, gid, id);
";

/// A secret as the store keeps it: its digest (a digest is kept as it is).
fn as_digest(secret: &str) -> String {
    if crate::auth::secret::is_digest(secret) {
        secret.to_owned()
    } else {
        crate::auth::secret::digest(secret)
    }
}

fn services_json(services: &[(i64, Option<i64>)]) -> String {
    serde_json::to_string(services).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Opens (creating if needed) the database at `path`, or an in-memory one.
    pub fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        let conn = match path {
            Some(p) => {
                let c = Connection::open(p)?;
                // journal_mode answers with the mode now in force.
                let _mode: String =
                    c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
                c.pragma_update(None, "synchronous", "NORMAL")?;
                c
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(CUSTOMER_SCHEMA)?;
        conn.execute_batch(meeting::SCHEMA)?;
        conn.execute_batch(records::SCHEMA)?;
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
            replica: Arc::default(),
            hooks: Arc::default(),
        };
        store.digest_plain_secrets()?;
        Ok(store)
    }

    /// Databases written before secrets were kept as digests hold them in plain text: replace
    /// each with its digest (the apps keep working; nobody can read the secret back).
    fn digest_plain_secrets(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        let plain: Vec<(String, String)> = conn
            .prepare("SELECT app_id, app_secret FROM apps")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .filter_map(Result::ok)
            .filter(|(_, secret): &(String, String)| !crate::auth::secret::is_digest(secret))
            .collect();
        for (app_id, secret) in plain {
            conn.execute(
                "UPDATE apps SET app_secret = ?1 WHERE app_id = ?2",
                rusqlite::params![crate::auth::secret::digest(&secret), app_id],
            )?;
        }
        Ok(())
    }

    /// Digests of operator tokens generated at earlier starts.
    pub fn operator_tokens(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT digest FROM operator_tokens ORDER BY created_ms")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.filter_map(Result::ok).collect())
    }

    /// Keeps the digest of a generated operator token.
    pub fn add_operator_token(&self, digest: &str, created_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO operator_tokens (digest, created_ms) VALUES (?1, ?2)",
            rusqlite::params![digest, created_ms],
        )?;
        Ok(())
    }

    /// Operator sessions signed out that have not expired yet: `(key, expiry ms)` (see
    /// `auth::operator::sign_out_key`).
    pub fn operator_sign_outs(&self, now_ms: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT key, expiry_ms FROM operator_sign_outs WHERE expiry_ms > ?1")?;
        let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.filter_map(Result::ok).collect())
    }

    /// The connection (other modules keep their tables here too: `customers::store`).
    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts an app.
    pub fn insert_app(&self, app: &AppRow) -> Result<(), StoreError> {
        insert_app_on(&self.conn(), app)
    }

    /// Inserts or replaces an app (config seeds).
    pub fn upsert_app(&self, app: &AppRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO apps (app_id, app_secret, app_name, status, consumption_limit, services)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(app_id) DO UPDATE SET app_secret = excluded.app_secret,
                 app_name = excluded.app_name",
            params![
                app.app_id,
                as_digest(&app.app_secret),
                app.app_name,
                app.status,
                app.consumption_limit,
                services_json(&app.services)
            ],
        )?;
        Ok(())
    }

    /// Sets an app's secret digest (rotation); false when there is no such app.
    pub fn set_app_secret(&self, app_id: &str, digest: &str) -> Result<bool, StoreError> {
        set_app_secret_on(&self.conn(), app_id, digest)
    }

    /// Replaces an app's fields (by id, its secret aside); false when there is no such app.
    pub fn update_app(&self, app: &AppRow) -> Result<bool, StoreError> {
        update_app_on(&self.conn(), app)
    }

    /// Deletes an app; false when there was none.
    pub fn delete_app(&self, app_id: &str) -> Result<bool, StoreError> {
        delete_app_on(&self.conn(), app_id)
    }

    /// One app.
    pub fn app(&self, app_id: &str) -> Result<Option<AppRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT app_id, app_secret, app_name, status, consumption_limit, services
                 FROM apps WHERE app_id = ?1",
                params![app_id],
                app_row,
            )
            .optional()?)
    }

    /// Every app, by name.
    pub fn apps(&self) -> Result<Vec<AppRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT app_id, app_secret, app_name, status, consumption_limit, services
             FROM apps ORDER BY app_name",
        )?;
        let rows = st.query_map([], app_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Inserts a finished call; returns its id.
    pub fn insert_call(&self, c: &CallRow) -> Result<i64, StoreError> {
        insert_call_on(&self.conn(), c)
    }

    /// Calls that started in `[start_ms, end_ms)`, optionally of one app, oldest first:
    /// page `page` (from 1) of `page_size`, and the total count.
    pub fn calls(
        &self,
        start_ms: i64,
        end_ms: i64,
        app_id: Option<&str>,
        page: u32,
        page_size: u32,
    ) -> Result<(Vec<CallRow>, i64), StoreError> {
        let conn = self.conn();
        let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM call_records
             WHERE start_ms >= ?1 AND start_ms < ?2 AND (?3 IS NULL OR app_id = ?3)",
            params![start_ms, end_ms, app_id],
            |r| r.get(0),
        )?;
        let mut st = conn.prepare(
            "SELECT id, app_id, group_id, sides, initiator, start_ms, end_ms, audio_packets,
                    audio_bytes, signalling, end_reason
             FROM call_records
             WHERE start_ms >= ?1 AND start_ms < ?2 AND (?3 IS NULL OR app_id = ?3)
             ORDER BY start_ms, id LIMIT ?4 OFFSET ?5",
        )?;
        let rows = st
            .query_map(
                params![start_ms, end_ms, app_id, i64::from(page_size), offset],
                |r| {
                    let sides: String = r.get(3)?;
                    Ok(CallRow {
                        id: r.get(0)?,
                        app_id: r.get(1)?,
                        group_id: r.get(2)?,
                        sides: serde_json::from_str(&sides).unwrap_or_default(),
                        initiator: r.get(4)?,
                        start_ms: r.get(5)?,
                        end_ms: r.get(6)?,
                        audio_packets: r.get(7)?,
                        audio_bytes: r.get(8)?,
                        signalling: r.get(9)?,
                        end_reason: r.get(10)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }
}

impl Store {
    /// Indexes a recorded burst; returns its id. A file indexed already keeps its row.
    pub fn insert_burst(&self, b: &BurstRow) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR IGNORE INTO bursts (file, app_id, side, server, channel, group_id, talker,
                 talker_id, start_ms, duration_ms, size_bytes, codec, packets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                b.file,
                b.app_id,
                b.side,
                b.server,
                b.channel,
                b.group_id,
                b.talker,
                b.talker_id,
                b.start_ms,
                b.duration_ms,
                b.size_bytes,
                b.codec,
                b.packets
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Completes a row inserted when its recording started (a room's server recording):
    /// its length, size and packets once the file is closed. False when the row is gone
    /// (deleted while the recording ran).
    pub fn complete_burst(
        &self,
        id: i64,
        duration_ms: i64,
        size_bytes: i64,
        packets: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE bursts SET duration_ms = ?2, size_bytes = ?3, packets = ?4 WHERE id = ?1",
            params![id, duration_ms, size_bytes, packets],
        )?;
        Ok(n == 1)
    }

    /// Bursts matching `q`, by start time: page `page` (from 1) of `page_size`, and the total.
    pub fn bursts(
        &self,
        q: &BurstQuery,
        page: u32,
        page_size: u32,
    ) -> Result<(Vec<BurstRow>, i64), StoreError> {
        let conn = self.conn();
        let filter = params![
            q.channel,
            q.talker,
            q.server,
            q.name_like,
            q.from_ms,
            q.to_ms
        ];
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM bursts WHERE {BURST_WHERE}"),
            filter,
            |r| r.get(0),
        )?;
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
        let mut st = conn.prepare(&format!(
            "SELECT {BURST_COLUMNS} FROM bursts WHERE {BURST_WHERE}
             ORDER BY start_ms {order}, id {order} LIMIT ?7 OFFSET ?8"
        ))?;
        let rows = st
            .query_map(
                params![
                    q.channel,
                    q.talker,
                    q.server,
                    q.name_like,
                    q.from_ms,
                    q.to_ms,
                    i64::from(page_size),
                    offset
                ],
                burst_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// One burst by id.
    pub fn burst(&self, id: i64) -> Result<Option<BurstRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BURST_COLUMNS} FROM bursts WHERE id = ?1"),
                params![id],
                burst_row,
            )
            .optional()?)
    }

    /// One burst by file name.
    pub fn burst_by_file(&self, file: &str) -> Result<Option<BurstRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BURST_COLUMNS} FROM bursts WHERE file = ?1"),
                params![file],
                burst_row,
            )
            .optional()?)
    }

    /// Removes a burst's row; returns it (its file is the caller's to delete).
    pub fn delete_burst(&self, id: i64) -> Result<Option<BurstRow>, StoreError> {
        let row = self.burst(id)?;
        if row.is_some() {
            self.conn()
                .execute("DELETE FROM bursts WHERE id = ?1", params![id])?;
        }
        Ok(row)
    }

    /// Bytes of every indexed burst.
    pub fn burst_bytes(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(SUM(size_bytes), 0) FROM bursts", [], |r| {
                r.get(0)
            })?)
    }

    /// The oldest bursts (by start, then id), up to `limit`.
    pub fn oldest_bursts(&self, limit: u32) -> Result<Vec<BurstRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {BURST_COLUMNS} FROM bursts ORDER BY start_ms, id LIMIT ?1"
        ))?;
        let rows = st
            .query_map(params![i64::from(limit)], burst_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn app_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRow> {
    let services: String = r.get(5)?;
    Ok(AppRow {
        app_id: r.get(0)?,
        app_secret: r.get(1)?,
        app_name: r.get(2)?,
        status: r.get(3)?,
        consumption_limit: r.get(4)?,
        services: serde_json::from_str(&services).unwrap_or_default(),
    })
}

// The record writes on a connection, so that the shared records apply one and their log
// position in one transaction (`records.rs`).

fn insert_app_on(conn: &Connection, app: &AppRow) -> Result<(), StoreError> {
    let r = conn.execute(
        "INSERT INTO apps (app_id, app_secret, app_name, status, consumption_limit, services)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            app.app_id,
            as_digest(&app.app_secret),
            app.app_name,
            app.status,
            app.consumption_limit,
            services_json(&app.services)
        ],
    );
    match r {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Conflict(format!(
                "app {:?} / name {:?}",
                app.app_id, app.app_name
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn set_app_secret_on(conn: &Connection, app_id: &str, digest: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE apps SET app_secret = ?2 WHERE app_id = ?1",
        params![app_id, as_digest(digest)],
    )?;
    Ok(n > 0)
}

fn update_app_on(conn: &Connection, app: &AppRow) -> Result<bool, StoreError> {
    let r = conn.execute(
        "UPDATE apps SET app_name = ?2, status = ?3, consumption_limit = ?4, services = ?5
         WHERE app_id = ?1",
        params![
            app.app_id,
            app.app_name,
            app.status,
            app.consumption_limit,
            services_json(&app.services)
        ],
    );
    match r {
        Ok(n) => Ok(n > 0),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Conflict(format!("name {:?}", app.app_name)))
        }
        Err(e) => Err(e.into()),
    }
}

fn delete_app_on(conn: &Connection, app_id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM apps WHERE app_id = ?1", params![app_id])? > 0)
}

fn insert_call_on(conn: &Connection, c: &CallRow) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO call_records (app_id, group_id, sides, initiator, start_ms, end_ms,
             audio_packets, audio_bytes, signalling, end_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            c.app_id,
            c.group_id,
            serde_json::to_string(&c.sides).unwrap_or_default(),
            c.initiator,
            c.start_ms,
            c.end_ms,
            c.audio_packets,
            c.audio_bytes,
            c.signalling,
            c.end_reason
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, name: &str) -> AppRow {
        AppRow {
            app_id: id.into(),
            app_secret: "secret".into(),
            app_name: name.into(),
            status: "offline".into(),
            consumption_limit: None,
            services: vec![(4, Some(10))],
        }
    }

    #[test]
    fn apps_crud_and_conflicts() {
        let s = Store::open(None).unwrap();
        s.insert_app(&app("a", "one")).unwrap();
        assert!(matches!(
            s.insert_app(&app("b", "one")),
            Err(StoreError::Conflict(_))
        ));
        let mut a = s.app("a").unwrap().unwrap();
        assert_eq!(a.services, vec![(4, Some(10))]);
        a.status = "online".into();
        assert!(s.update_app(&a).unwrap());
        assert_eq!(s.app("a").unwrap().unwrap().status, "online");
        assert!(s.delete_app("a").unwrap());
        assert!(!s.delete_app("a").unwrap());
        assert!(s.app("a").unwrap().is_none());
    }

    #[test]
    fn calls_page_by_time_and_app() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(Some(&dir.path().join("db.sqlite3"))).unwrap();
        for i in 0..25 {
            s.insert_call(&CallRow {
                id: 0,
                app_id: if i % 5 == 0 { "x" } else { "y" }.into(),
                group_id: "g".into(),
                sides: vec!["ptt".into()],
                initiator: String::new(),
                start_ms: 1000 + i,
                end_ms: 2000 + i,
                audio_packets: i,
                audio_bytes: i * 100,
                signalling: 2,
                end_reason: "idle".into(),
            })
            .unwrap();
        }
        let (page, total) = s.calls(0, 10_000, None, 3, 10).unwrap();
        assert_eq!((page.len(), total), (5, 25));
        assert_eq!(page[0].start_ms, 1020);
        let (page, total) = s.calls(0, 10_000, Some("x"), 1, 100).unwrap();
        assert_eq!((page.len(), total), (5, 5));
        let (page, _) = s.calls(1010, 1012, None, 1, 100).unwrap();
        assert_eq!(page.len(), 2);
        // Reopening the file keeps the rows.
        drop(s);
        let s = Store::open(Some(&dir.path().join("db.sqlite3"))).unwrap();
        assert_eq!(s.calls(0, 10_000, None, 1, 1).unwrap().1, 25);
    }
}
