//! The meeting side's lasting state: standing rooms (their fields, password digest, members,
//! dial-ins) and the user ids given to (app, account) pairs, so a standing room's owner and
//! members are the same people after a restart.

use rusqlite::params;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meeting_rooms (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL,
    info TEXT NOT NULL,
    password TEXT,
    dial_in TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meeting_room_members (
    room_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE IF NOT EXISTS meeting_accounts (
    app_id TEXT NOT NULL,
    account TEXT NOT NULL,
    user_id INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (app_id, account)
);
";

/// A standing room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// Room id (random, see the room directory).
    pub id: i64,
    /// Owner's user id.
    pub owner: i64,
    /// The room's spec fields (the RTCPeer `Room` bean as JSON).
    pub info: String,
    /// Digest of its password (`auth::secret::digest`), if it has one.
    pub password: Option<String>,
    /// Dial-in ids brought in when its first participant enters.
    pub dial_in: Vec<i64>,
    /// Member user ids.
    pub members: Vec<i64>,
}

impl Store {
    /// Writes a standing room (new or changed), members included.
    pub fn put_room(&self, r: &RoomRow) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO meeting_rooms (id, owner, info, password, dial_in)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                r.id,
                r.owner,
                r.info,
                r.password,
                serde_json::to_string(&r.dial_in).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        tx.execute(
            "DELETE FROM meeting_room_members WHERE room_id = ?1",
            params![r.id],
        )?;
        for m in &r.members {
            tx.execute(
                "INSERT OR IGNORE INTO meeting_room_members (room_id, user_id) VALUES (?1, ?2)",
                params![r.id, m],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a standing room; false when there was none.
    pub fn delete_room(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM meeting_room_members WHERE room_id = ?1",
            params![id],
        )?;
        Ok(conn.execute("DELETE FROM meeting_rooms WHERE id = ?1", params![id])? > 0)
    }

    /// Every standing room, at most `limit`.
    pub fn rooms(&self, limit: usize) -> Result<Vec<RoomRow>, StoreError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT id, owner, info, password, dial_in FROM meeting_rooms LIMIT ?1")?;
        let mut rows = st
            .query_map(params![limit as i64], |r| {
                let dial: String = r.get(4)?;
                Ok(RoomRow {
                    id: r.get(0)?,
                    owner: r.get(1)?,
                    info: r.get(2)?,
                    password: r.get(3)?,
                    dial_in: serde_json::from_str(&dial).unwrap_or_default(),
                    members: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT user_id FROM meeting_room_members WHERE room_id = ?1")?;
        for row in &mut rows {
            row.members = st
                .query_map(params![row.id], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(rows)
    }

    /// The user ids given to meeting accounts: `(app id, account, user id)`.
    pub fn meeting_accounts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT app_id, account, user_id FROM meeting_accounts")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Remembers the user id given to `account` of `app_id`.
    pub fn add_meeting_account(
        &self,
        app_id: &str,
        account: &str,
        user_id: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO meeting_accounts (app_id, account, user_id) VALUES (?1, ?2, ?3)",
            params![app_id, account, user_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_rooms_and_accounts_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let s = Store::open(Some(&path)).unwrap();
        let mut row = RoomRow {
            id: 123_456_789,
            owner: 1001,
            info: r#"{"name":"briefing"}"#.into(),
            password: Some("digest".into()),
            dial_in: vec![9001],
            members: vec![1002, 1003],
        };
        s.put_room(&row).unwrap();
        row.members = vec![1003];
        s.put_room(&row).unwrap();
        s.add_meeting_account("app", "alice", 1001).unwrap();
        drop(s);
        let s = Store::open(Some(&path)).unwrap();
        assert_eq!(s.rooms(10).unwrap(), vec![row]);
        assert_eq!(
            s.meeting_accounts().unwrap(),
            vec![("app".into(), "alice".into(), 1001)]
        );
        assert!(s.delete_room(123_456_789).unwrap());
        assert!(!s.delete_room(123_456_789).unwrap());
        assert!(s.rooms(10).unwrap().is_empty());
    }
}
