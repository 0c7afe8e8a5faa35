//! The meeting side's lasting state: standing rooms (their fields, password digest, members,
//! dial-ins), appointments (scheduled meetings) and the user ids given to (app, account) pairs, so a standing room's owner and
//! members are the same people after a restart.

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

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
CREATE TABLE IF NOT EXISTS meeting_appointments (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL,
    room_id INTEGER NOT NULL,
    own_room INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    invite_code INTEGER NOT NULL UNIQUE,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS meeting_appointments_by_start ON meeting_appointments (start_ms);
CREATE TABLE IF NOT EXISTS meeting_accounts (
    app_id TEXT NOT NULL,
    account TEXT NOT NULL,
    user_id INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (app_id, account)
);
";

/// A standing room as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// An appointment (a scheduled meeting) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRow {
    /// Appointment id (random).
    pub id: i64,
    /// Creator's user id.
    pub owner: i64,
    /// Its room.
    pub room_id: i64,
    /// The room was made for it (and goes with it).
    pub own_room: bool,
    /// Start, ms since the epoch.
    pub start_ms: i64,
    /// End, ms since the epoch.
    pub end_ms: i64,
    /// Random invite code (enter by code).
    pub invite_code: i64,
    /// The rest of its fields (name, type, members, topics ...) as JSON.
    pub info: String,
}

const APPOINTMENT_COLUMNS: &str =
    "id, owner, room_id, own_room, start_ms, end_ms, invite_code, info";

fn appointment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppointmentRow> {
    Ok(AppointmentRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        room_id: r.get(2)?,
        own_room: r.get(3)?,
        start_ms: r.get(4)?,
        end_ms: r.get(5)?,
        invite_code: r.get(6)?,
        info: r.get(7)?,
    })
}

impl Store {
    /// Appointment `id`.
    pub fn appointment(&self, id: i64) -> Result<Option<AppointmentRow>, StoreError> {
        self.appointment_where("id", id)
    }

    /// The appointment with invite code `code`.
    pub fn appointment_by_code(&self, code: i64) -> Result<Option<AppointmentRow>, StoreError> {
        self.appointment_where("invite_code", code)
    }

    fn appointment_where(
        &self,
        column: &str,
        value: i64,
    ) -> Result<Option<AppointmentRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM meeting_appointments WHERE {column} = ?1"
        ))?;
        let mut rows = st.query_map(params![value], appointment_row)?;
        Ok(rows.next().transpose()?)
    }

    /// Appointments starting in `[from_ms, to_ms)`, earliest first, at most `limit`.
    pub fn appointments(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<AppointmentRow>, StoreError> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {APPOINTMENT_COLUMNS} FROM meeting_appointments
             WHERE start_ms >= ?1 AND start_ms < ?2 ORDER BY start_ms, id LIMIT ?3"
        ))?;
        let rows = st
            .query_map(params![from_ms, to_ms, limit as i64], appointment_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// How many appointments use room `room_id`.
    pub fn appointments_of_room(&self, room_id: i64) -> Result<i64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM meeting_appointments WHERE room_id = ?1",
            params![room_id],
            |r| r.get(0),
        )?)
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
}

/// Writes an appointment (new or changed). A new one whose id or invite code is taken is a
/// [`StoreError::Conflict`] (draw again).
pub(super) fn put_appointment_on(
    conn: &Connection,
    a: &AppointmentRow,
    new: bool,
) -> Result<(), StoreError> {
    let verb = if new { "INSERT" } else { "REPLACE" };
    let r = conn.execute(
        &format!(
            "{verb} INTO meeting_appointments ({APPOINTMENT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            a.id,
            a.owner,
            a.room_id,
            a.own_room,
            a.start_ms,
            a.end_ms,
            a.invite_code,
            a.info
        ],
    );
    conflict_as(r, || format!("appointment {}", a.id))
}

/// Deletes appointment `id`; false when there was none.
pub(super) fn delete_appointment_on(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM meeting_appointments WHERE id = ?1",
        params![id],
    )? > 0)
}

/// Writes a standing room with its members: a `new` one whose id is taken is a
/// [`StoreError::Conflict`] (ids are drawn by the writer, so two nodes may draw one), a
/// changed one replaces the row. The caller's transaction makes it one write.
pub(super) fn put_room_on(conn: &Connection, r: &RoomRow, new: bool) -> Result<(), StoreError> {
    let verb = if new { "INSERT" } else { "INSERT OR REPLACE" };
    let written = conn.execute(
        &format!(
            "{verb} INTO meeting_rooms (id, owner, info, password, dial_in)
             VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        params![
            r.id,
            r.owner,
            r.info,
            r.password,
            serde_json::to_string(&r.dial_in).unwrap_or_else(|_| "[]".into())
        ],
    );
    conflict_as(written, || format!("room {}", r.id))?;
    conn.execute(
        "DELETE FROM meeting_room_members WHERE room_id = ?1",
        params![r.id],
    )?;
    for m in &r.members {
        conn.execute(
            "INSERT OR IGNORE INTO meeting_room_members (room_id, user_id) VALUES (?1, ?2)",
            params![r.id, m],
        )?;
    }
    Ok(())
}

/// Deletes a standing room; false when there was none.
pub(super) fn delete_room_on(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    conn.execute(
        "DELETE FROM meeting_room_members WHERE room_id = ?1",
        params![id],
    )?;
    Ok(conn.execute("DELETE FROM meeting_rooms WHERE id = ?1", params![id])? > 0)
}

/// Remembers the user id given to `account` of `app_id`; an account or id already there
/// keeps its row (the first given wins, on every node alike).
pub(super) fn add_meeting_account_on(
    conn: &Connection,
    app_id: &str,
    account: &str,
    user_id: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO meeting_accounts (app_id, account, user_id) VALUES (?1, ?2, ?3)",
        params![app_id, account, user_id],
    )?;
    Ok(())
}

/// A unique constraint violated by an insert is a [`StoreError::Conflict`] naming `what`.
fn conflict_as(
    r: rusqlite::Result<usize>,
    what: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    match r {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Conflict(what()))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Applied, RecordOp};

    fn put_room(s: &Store, room: &RoomRow, new: bool) -> Result<Applied, StoreError> {
        s.apply(&RecordOp::PutRoom {
            room: room.clone(),
            new,
        })
    }

    fn put_appointment(
        s: &Store,
        appointment: &AppointmentRow,
        new: bool,
    ) -> Result<Applied, StoreError> {
        s.apply(&RecordOp::PutAppointment {
            appointment: appointment.clone(),
            new,
        })
    }

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
        put_room(&s, &row, true).unwrap();
        // A new room drawing a taken id is refused; a change replaces it.
        assert!(matches!(
            put_room(&s, &row, true),
            Err(StoreError::Conflict(_))
        ));
        row.members = vec![1003];
        put_room(&s, &row, false).unwrap();
        let account = |account: &str, user_id| RecordOp::AddMeetingAccount {
            app_id: "app".into(),
            account: account.into(),
            user_id,
        };
        s.apply(&account("alice", 1001)).unwrap();
        // The first id given stays: another for the account, or the id for another, is kept out.
        s.apply(&account("alice", 1002)).unwrap();
        s.apply(&account("bob", 1001)).unwrap();
        drop(s);
        let s = Store::open(Some(&path)).unwrap();
        assert_eq!(s.rooms(10).unwrap(), vec![row]);
        assert_eq!(
            s.meeting_accounts().unwrap(),
            vec![("app".into(), "alice".into(), 1001)]
        );
        let appt = AppointmentRow {
            id: 42,
            owner: 1001,
            room_id: 123_456_789,
            own_room: true,
            start_ms: 1_000,
            end_ms: 2_000,
            invite_code: 7,
            info: "{}".into(),
        };
        put_appointment(&s, &appt, true).unwrap();
        assert!(matches!(
            put_appointment(
                &s,
                &AppointmentRow {
                    id: 43,
                    ..appt.clone()
                },
                true
            ),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.appointment_by_code(7).unwrap(), Some(appt.clone()));
        assert_eq!(s.appointments(0, 1_001, 10).unwrap(), vec![appt.clone()]);
        assert!(s.appointments(1_001, 5_000, 10).unwrap().is_empty());
        assert_eq!(s.appointments_of_room(123_456_789).unwrap(), 1);
        let delete = RecordOp::DeleteAppointment { id: 42 };
        assert_eq!(s.apply(&delete).unwrap(), Applied::Found(true));
        assert!(s.appointment(42).unwrap().is_none());
        let delete = RecordOp::DeleteRoom { id: 123_456_789 };
        assert_eq!(s.apply(&delete).unwrap(), Applied::Found(true));
        assert_eq!(s.apply(&delete).unwrap(), Applied::Found(false));
        assert!(s.rooms(10).unwrap().is_empty());
    }
}
