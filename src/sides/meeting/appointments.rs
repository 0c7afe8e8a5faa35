//! Appointments — scheduled meetings (spec 2.19–2.24, 2.33 and `meeting.new` of 5.12), kept
//! in the store. Each has a room: a standing room made for it (gone with it), or for
//! `meeting.new` a room of the creator's it names. Its invitees (members with a user id here)
//! become the room's members; anyone else enters with its random invite code
//! (`getRoomByInviteCode`, between its start and end).
//!
//! Who may see an appointment: its creator, an operator's user, and those its room admits
//! (owner, members, invitees, password holders). Others are answered as for an unknown one.
//! Changing or deleting it is the creator's (or an operator's user's).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rtcpeer::appointments::{
    self as appt, AppointmentFields, AppointmentFound, AppointmentRequest, Appointments,
    InvitedRoom, Invitee, Scheduled, Topic, When,
};
use rtcpeer::bean::{Appointment, User};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::reply::{self, MeetingCreated};
use rtcpeer::request::MeetingNew;
use rtcpeer::rooms::RoomFields;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use super::refusal::Refusal;
use super::registrar::Conn;
use super::room::valid_name;
use super::switchboard::Switchboard;
use crate::events::rfc3339;
use crate::storage::{AppointmentRow, RecordOp, StoreError};

type Answer = Result<Value, Refusal>;

/// Most invitees and sub-topics of one appointment.
const MAX_LIST: usize = 200;
/// Longest description or topic text, in characters.
const MAX_TEXT: usize = 1024;
/// Longest appointment: 31 days.
const MAX_LENGTH_MS: i64 = 31 * 86_400_000;
/// Most appointments one `queryAppointments` looks through (then filtered and paged).
const MAX_SCAN: usize = 2000;
/// Invite codes are drawn from this range (eight digits).
const CODES: std::ops::RangeInclusive<i64> = 10_000_000..=99_999_999;
/// Appointment ids are drawn from this range (nine digits, as room ids).
const IDS: std::ops::RangeInclusive<i64> = 100_000_000..=999_999_999;

/// What the store keeps of an appointment besides its row's columns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    #[serde(rename = "type")]
    meeting_type: i64,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    topics: Vec<Topic>,
    /// The creator's display name when it was made: a node the creator never logged in to
    /// shows it too (the names of logins are each node's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_name: Option<String>,
}

/// Where an appointment is held.
enum Room {
    /// An existing room (`meeting.new`'s `roomId`).
    Existing(Id),
    /// A standing room made for it: public or not, with `meeting.new`'s `pin` as password.
    New { public: bool, pin: Option<String> },
}

/// An appointment's fields, checked.
struct Checked {
    details: Details,
    start_ms: i64,
    end_ms: i64,
    invitees: Vec<Invitee>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::new(code::BAD_FIELDS, msg)
}

/// The same answer for an unknown appointment and one the user may not see.
fn no_meeting(id: Id) -> Refusal {
    Refusal::new(code::NOT_FOUND, format!("no meeting {id}"))
}

fn stored(e: StoreError) -> Refusal {
    tracing::warn!(error = %e, "appointment store failed");
    Refusal::new(code::INTERNAL, "the meeting could not be stored")
}

/// A time as ms since the epoch (422 naming `field` when it is not one).
fn when_ms(w: &When, field: &str) -> Result<i64, Refusal> {
    let ms = match w {
        When::Ms(ms) => Some(*ms),
        // Digits are `yyyyMMddHHmmss` only: "2024" is a mistake, not 2 s after 1970.
        When::Text(t) if t.bytes().all(|b| b.is_ascii_digit()) && t.len() != 14 => None,
        When::Text(t) => crate::http::archive::parse_time(t, false),
    };
    ms.filter(|ms| (0..=253_402_300_799_999).contains(ms))
        .ok_or_else(|| {
            bad(format!(
                "{field}: not a time (RFC 3339, yyyyMMddHHmmss UTC or ms since 1970)"
            ))
        })
}

/// An invitee string `"memberId,name,email,id,Etc/GMT+8,role"` (2.19's example has one more
/// empty field before the e-mail: the fields are read from both ends).
fn invitee(s: &str) -> Result<Invitee, Refusal> {
    let p: Vec<&str> = s.split(',').map(str::trim).collect();
    if p.len() < 6 || s.chars().any(char::is_control) || s.len() > MAX_TEXT {
        return Err(bad(format!(
            "members: {s:?} is not \"memberId,name,email,id,Etc/GMT+8,role\""
        )));
    }
    let n = p.len();
    let text = |t: &str| (!t.is_empty()).then(|| t.to_owned());
    let id = match p[n - 3] {
        "" => None,
        t => Some(
            t.parse::<Id>()
                .map_err(|_| bad(format!("members: id {t:?} is not a number")))?,
        ),
    };
    // Whatever lies between the name and the id is the e-mail (empty fields dropped).
    let email: Vec<&str> = p[2..n - 3]
        .iter()
        .copied()
        .filter(|e| !e.is_empty())
        .collect();
    Ok(Invitee {
        code_id: text(p[0]),
        name: text(p[1]),
        email: text(&email.join(",")),
        role: text(p[n - 1]),
        id: id.filter(|i| *i > 0),
    })
}

/// Checks an appointment's fields; `old` gives what is not sent (an update).
fn check(f: AppointmentFields, old: Option<&AppointmentRow>) -> Result<Checked, Refusal> {
    let old_details: Option<Details> = old.and_then(|o| serde_json::from_str(&o.info).ok());
    let name = match (&f.name, &old_details) {
        (Some(n), _) => valid_name(n, "name")?,
        (None, Some(d)) => d.name.clone(),
        (None, None) => "即时会议".to_owned(),
    };
    let meeting_type = f
        .meeting_type
        .or(old_details.as_ref().map(|d| d.meeting_type))
        .unwrap_or(1);
    if !(1..=3).contains(&meeting_type) {
        return Err(bad(
            "type must be 1 (audio), 2 (web meeting) or 3 (training)",
        ));
    }
    for (t, field) in [
        (&f.description, "description"),
        (&f.definition, "definition"),
    ] {
        if t.as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TEXT || t.chars().any(char::is_control))
        {
            return Err(bad(format!(
                "{field} must be at most {MAX_TEXT} characters, without control characters"
            )));
        }
    }
    let start_ms = match (&f.start_time, old) {
        (Some(w), _) => when_ms(w, "startTime")?,
        (None, Some(o)) => o.start_ms,
        (None, None) => now_ms(),
    };
    let end_ms = match (&f.end_time, old) {
        (Some(w), _) => when_ms(w, "endTime")?,
        (None, Some(o)) if f.start_time.is_none() => o.end_ms,
        _ => start_ms + 3_600_000,
    };
    if end_ms <= start_ms || end_ms - start_ms > MAX_LENGTH_MS {
        return Err(bad(
            "endTime must be after startTime, and at most 31 days after it",
        ));
    }
    let members = match f.members {
        Some(m) => m,
        None => old_details
            .as_ref()
            .map(|d| d.members.clone())
            .unwrap_or_default(),
    };
    let topics = match f.topics {
        Some(t) => t,
        None => old_details
            .as_ref()
            .map(|d| d.topics.clone())
            .unwrap_or_default(),
    };
    if members.len() > MAX_LIST || topics.len() > MAX_LIST {
        return Err(bad(format!(
            "at most {MAX_LIST} members and {MAX_LIST} topics"
        )));
    }
    if topics.iter().any(|t| {
        t.title.chars().count() > MAX_TEXT
            || t.content
                .as_ref()
                .is_some_and(|c| c.chars().count() > MAX_TEXT)
    }) {
        return Err(bad(format!(
            "topics: title and content at most {MAX_TEXT} characters"
        )));
    }
    let invitees = members
        .iter()
        .map(|m| invitee(m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Checked {
        details: Details {
            name,
            description: f
                .description
                .or(old_details.as_ref().and_then(|d| d.description.clone())),
            definition: f
                .definition
                .or(old_details.as_ref().and_then(|d| d.definition.clone())),
            meeting_type,
            members,
            topics,
            owner_name: old_details.and_then(|d| d.owner_name),
        },
        start_ms,
        end_ms,
        invitees,
    })
}

impl Switchboard {
    /// Answers one appointment request of `me`.
    pub(super) async fn appointment_request(
        self: &Arc<Self>,
        conn: &Conn,
        me: Id,
        req: AppointmentRequest,
    ) -> Answer {
        let m = req.method();
        let op = conn.operator;
        match req {
            AppointmentRequest::Create(f) => {
                let s = self
                    .schedule(
                        me,
                        check(f, None)?,
                        Room::New {
                            public: false,
                            pin: None,
                        },
                    )
                    .await?;
                Ok(reply::ok_with("meeting", m, &s))
            }
            AppointmentRequest::Instant(i) => {
                let f = AppointmentFields {
                    name: Some(i.name),
                    meeting_type: Some(i.meeting_type),
                    start_time: i.start_time,
                    end_time: i.end_time,
                    ..AppointmentFields::default()
                };
                let s = self
                    .schedule(
                        me,
                        check(f, None)?,
                        Room::New {
                            public: i.is_public,
                            pin: None,
                        },
                    )
                    .await?;
                Ok(reply::ok_with("meeting", m, &s))
            }
            AppointmentRequest::QueryById(r) => {
                let row = self.visible(me, op, r.meeting_id)?;
                let details: Details = serde_json::from_str(&row.info).unwrap_or_default();
                let members = details
                    .members
                    .iter()
                    .filter_map(|s| invitee(s).ok())
                    .collect();
                let topics = details.topics.clone();
                let meeting = self.bean(&row, &details);
                Ok(reply::ok_with(
                    "meeting",
                    m,
                    &AppointmentFound {
                        meeting,
                        members,
                        topics,
                    },
                ))
            }
            AppointmentRequest::Update(u) => {
                let row = self.visible(me, op, u.meeting_id)?;
                owner_only(&row, me, op)?;
                let c = check(u.fields, Some(&row))?;
                let new = AppointmentRow {
                    start_ms: c.start_ms,
                    end_ms: c.end_ms,
                    info: serde_json::to_string(&c.details).unwrap_or_default(),
                    ..row.clone()
                };
                self.store()?
                    .write(RecordOp::PutAppointment {
                        appointment: new.clone(),
                        new: false,
                    })
                    .await
                    .map_err(stored)?;
                self.furnish_room(&new, &c).await?;
                Ok(reply::ok_with(
                    "meeting",
                    m,
                    &Scheduled {
                        room_id: row.room_id,
                        meeting_id: row.id,
                    },
                ))
            }
            AppointmentRequest::Delete(r) => {
                let row = self.visible(me, op, r.meeting_id)?;
                owner_only(&row, me, op)?;
                if row.own_room && self.room_in_use(row.room_id).await {
                    return Ok(reply::error(
                        "meeting",
                        m,
                        appt::IN_USE,
                        "the meeting is in use: it can be deleted once everyone has left",
                    ));
                }
                let store = self.store()?;
                store
                    .write(RecordOp::DeleteAppointment { id: row.id })
                    .await
                    .map_err(stored)?;
                if row.own_room && store.appointments_of_room(row.room_id).map_err(stored)? == 0 {
                    // Its own room goes with it (a room emptied meanwhile is still refused).
                    let _ = self.delete_standing(me, true, row.room_id).await;
                }
                info!(meeting = row.id, by = me, "appointment deleted");
                Ok(reply::ok("meeting", m))
            }
            AppointmentRequest::Query(q) => {
                let day = now_ms().div_euclid(86_400_000) * 86_400_000;
                let from = q
                    .start_time
                    .as_ref()
                    .map(|w| when_ms(w, "startTime"))
                    .transpose()?
                    .unwrap_or(day);
                let to = q
                    .end_time
                    .as_ref()
                    .map(|w| when_ms(w, "endTime"))
                    .transpose()?
                    .unwrap_or(from + 72 * 3_600_000);
                let page = q.page_no.unwrap_or(0).max(0) as usize;
                let size = q.page_size.unwrap_or(20).clamp(1, 100) as usize;
                let rows = self
                    .store()?
                    .appointments(from, to, MAX_SCAN)
                    .map_err(stored)?;
                let meetings = rows
                    .into_iter()
                    .filter(|r| self.may_see(r, me, op))
                    .skip(page * size)
                    .take(size)
                    .map(|r| {
                        let d: Details = serde_json::from_str(&r.info).unwrap_or_default();
                        self.bean(&r, &d)
                    })
                    .collect();
                Ok(reply::ok_with("meeting", m, &Appointments { meetings }))
            }
            AppointmentRequest::ByInviteCode(c) => {
                self.by_invite_code(me, op, c.code, c.invite_code)
            }
        }
    }

    /// `meeting.new` (5.12): an appointment stored with its room — `roomId` (one of the
    /// creator's rooms) or a new standing room, `pin` its password.
    pub(super) async fn meeting_new(
        self: &Arc<Self>,
        conn: &Conn,
        me: Id,
        r: &MeetingNew,
    ) -> Answer {
        let topics = r
            .topics
            .clone()
            .map(|t| {
                t.into_iter()
                    .map(serde_json::from_value::<Topic>)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|_| bad("topics: each is {\"title\", \"content\"}"))?;
        let f = AppointmentFields {
            name: Some(r.name.clone()),
            meeting_type: Some(r.meeting_type),
            start_time: Some(When::Text(r.start_time.clone())),
            end_time: Some(When::Text(r.end_time.clone())),
            members: r.members.clone(),
            topics,
            ..AppointmentFields::default()
        };
        let c = check(f, None)?;
        if let Some(room) = r.room_id {
            // An existing room: the creator's own (or any, for an operator's user).
            let st = self.state();
            let meta = st
                .rooms
                .meta(room)
                .filter(|x| conn.operator || x.visible_to(me))
                .ok_or_else(|| Refusal::new(code::NOT_FOUND, format!("no room {room}")))?;
            if !conn.operator && meta.owner() != me {
                return Err(Refusal::new(
                    code::FORBIDDEN,
                    format!("room {room} is not yours: a meeting goes in one of your rooms"),
                ));
            }
        }
        let room = match r.room_id {
            Some(id) => Room::Existing(id),
            None => Room::New {
                public: r.is_public,
                pin: r.pin.map(|p| p.to_string()),
            },
        };
        let s = self.schedule(me, c, room).await?;
        Ok(reply::ok_with(
            "meeting",
            "new",
            &MeetingCreated {
                id: s.meeting_id,
                room_id: s.room_id,
            },
        ))
    }

    /// Stores a new appointment of `me` in `room`.
    async fn schedule(
        self: &Arc<Self>,
        me: Id,
        c: Checked,
        room: Room,
    ) -> Result<Scheduled, Refusal> {
        let store = self.store()?;
        let mut c = c;
        c.details.owner_name = self.accounts.lock().name_of(me).map(str::to_owned);
        let (room_id, own_room) = match room {
            Room::Existing(id) => (id, false),
            Room::New { public, pin } => {
                let fields = RoomFields {
                    room_type: c.details.meeting_type,
                    name: c.details.name.clone(),
                    desc: None,
                    pictureuri: None,
                    definition: c.details.definition.clone(),
                    number_limit: self.config.max_room_members as i64,
                    is_public: public,
                    dial_in: None,
                    floor_mode: None,
                };
                let id = self.create_standing(me, fields).await?;
                if let Some(pin) = pin {
                    // 5.12's entry PIN is the new room's password.
                    self.change(me, true, id, "", |r| {
                        r.password = Some(crate::auth::secret::digest(&pin));
                        Ok(())
                    })
                    .await?;
                }
                (id, true)
            }
        };
        let mut row = AppointmentRow {
            id: 0,
            owner: me,
            room_id,
            own_room,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            invite_code: 0,
            info: serde_json::to_string(&c.details).unwrap_or_default(),
        };
        let mut tries = 0;
        loop {
            // Drawn here, by the writer, and carried in the operation: every node keeps these.
            (row.id, row.invite_code) = {
                use rand::Rng;
                let mut rng = rand::rng();
                (rng.random_range(IDS), rng.random_range(CODES))
            };
            let op = RecordOp::PutAppointment {
                appointment: row.clone(),
                new: true,
            };
            match store.write(op).await {
                Ok(_) => break,
                // An id or code drawn twice: draw again.
                Err(StoreError::Conflict(_)) if tries < 8 => tries += 1,
                Err(e) => return Err(stored(e)),
            }
        }
        self.furnish_room(&row, &c).await?;
        metrics::counter!("pttbridge_meeting_appointments_total").increment(1);
        info!(
            meeting = row.id,
            room = room_id,
            owner = me,
            "appointment stored"
        );
        Ok(Scheduled {
            room_id,
            meeting_id: row.id,
        })
    }

    /// The room of appointment `row` names it (`appointmentId`, `appointmentName`) and has
    /// its invitees as members.
    async fn furnish_room(&self, row: &AppointmentRow, c: &Checked) -> Result<(), Refusal> {
        let ids: Vec<Id> = c.invitees.iter().filter_map(|i| i.id).collect();
        let name = c.details.name.clone();
        let own = row.own_room;
        let meeting_type = c.details.meeting_type;
        self.change(row.owner, true, row.room_id, "schedule a meeting in", |r| {
            r.info.appointment_id = Some(row.id);
            r.info.appointment_name = Some(name.clone());
            if own {
                r.info.name = Some(name);
                r.info.room_type = Some(meeting_type);
            }
            for id in ids {
                if r.members.len() < super::rooms::MAX_MEMBERS {
                    r.members.insert(id);
                }
            }
            Ok(())
        })
        .await
    }

    /// `getRoomByInviteCode`: the room and meeting of invite code `invite` (or, without one,
    /// of meeting `code` when `me` may see it); a right code lets `me` enter the room.
    fn by_invite_code(&self, me: Id, op: bool, code: Id, invite: Option<Id>) -> Answer {
        const M: &str = "getRoomByInviteCode";
        let now = Instant::now();
        if let Some(wait) = self.pwd_failures.check(&me, now) {
            return Err(Refusal::new(
                code::TOO_MANY,
                format!(
                    "too many wrong codes; try again in {} s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let store = self.store()?;
        let row = match invite {
            Some(i) => store.appointment_by_code(i).map_err(stored)?,
            None => store
                .appointment(code)
                .map_err(stored)?
                .filter(|r| self.may_see(r, me, op)),
        };
        let Some(row) = row else {
            self.pwd_failures.failed(me, now);
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "invite_code").increment(1);
            return Ok(reply::error(
                "meeting",
                M,
                appt::NOT_FOUND,
                "no such meeting",
            ));
        };
        let t = now_ms();
        if t < row.start_ms {
            return Ok(reply::error(
                "meeting",
                M,
                appt::NOT_STARTED,
                &format!("the meeting starts at {}", rfc3339::format_ms(row.start_ms)),
            ));
        }
        if t >= row.end_ms {
            return Ok(reply::error(
                "meeting",
                M,
                appt::ENDED,
                "the meeting is over",
            ));
        }
        let details: Details = serde_json::from_str(&row.info).unwrap_or_default();
        let room = {
            let mut st = self.state();
            st.rooms.invite(row.room_id, me);
            st.rooms.meta(row.room_id).map(|r| r.bean())
        };
        let Some(room) = room else {
            return Ok(reply::error(
                "meeting",
                M,
                appt::NOT_FOUND,
                "the meeting's room is gone",
            ));
        };
        let meeting = self.bean(&row, &details);
        Ok(reply::ok_with("meeting", M, &InvitedRoom { room, meeting }))
    }

    /// Appointment `id` if `me` may see it (404 otherwise, as for an unknown one).
    fn visible(&self, me: Id, op: bool, id: Id) -> Result<AppointmentRow, Refusal> {
        self.store()?
            .appointment(id)
            .map_err(stored)?
            .filter(|r| self.may_see(r, me, op))
            .ok_or_else(|| no_meeting(id))
    }

    /// Whether `me` may see appointment `r`: its creator, an operator's user, or one its room
    /// admits.
    fn may_see(&self, r: &AppointmentRow, me: Id, op: bool) -> bool {
        op || r.owner == me
            || self
                .state()
                .rooms
                .meta(r.room_id)
                .is_some_and(|m| m.admits(me))
    }

    /// The 8.5 bean of `r` (times as RFC 3339 UTC; `roomId`, `type`, `inviteCode` added).
    fn bean(&self, r: &AppointmentRow, d: &Details) -> Appointment {
        let mut extra = serde_json::Map::new();
        extra.insert("roomId".into(), r.room_id.into());
        extra.insert("type".into(), d.meeting_type.into());
        extra.insert("inviteCode".into(), r.invite_code.into());
        Appointment {
            id: Some(r.id),
            name: Some(d.name.clone()),
            start_time: Some(json!(rfc3339::format_ms(r.start_ms))),
            end_time: Some(json!(rfc3339::format_ms(r.end_ms))),
            from: Some(User {
                id: Some(r.owner),
                name: self
                    .accounts
                    .lock()
                    .name_of(r.owner)
                    .map(str::to_owned)
                    .or_else(|| d.owner_name.clone()),
                ..User::default()
            }),
            time_length: Some((r.end_ms - r.start_ms) / 60_000),
            description: d.description.clone(),
            extra,
        }
    }

    async fn room_in_use(&self, room: Id) -> bool {
        let h = self.state().rooms.get(room).cloned();
        super::room_admin::occupancy(h).await > 0
    }

    fn store(&self) -> Result<&crate::storage::Store, Refusal> {
        self.store.as_ref().ok_or_else(|| {
            Refusal::new(
                code::INTERNAL,
                "meetings need the store (none is configured)",
            )
        })
    }
}

/// Only the creator (or an operator's user) changes or deletes an appointment.
fn owner_only(r: &AppointmentRow, me: Id, op: bool) -> Result<(), Refusal> {
    if op || r.owner == me {
        Ok(())
    } else {
        Err(Refusal::new(
            code::FORBIDDEN,
            format!(
                "only the meeting's creator (user {}) may change it",
                r.owner
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitees_read_both_spec_shapes() {
        let a = invitee("0,ceshi,,,80,Etc/GMT+8,2").unwrap();
        assert_eq!(
            (
                a.code_id.as_deref(),
                a.name.as_deref(),
                a.email,
                a.id,
                a.role.as_deref()
            ),
            (Some("0"), Some("ceshi"), None, Some(80), Some("2"))
        );
        let b = invitee("7,Zhang,z@x.cn,81,Etc/GMT+8,1").unwrap();
        assert_eq!((b.email.as_deref(), b.id), (Some("z@x.cn"), Some(81)));
        assert!(invitee("0,ceshi,80").is_err());
        assert!(invitee("0,a,,x,Etc/GMT+8,2").is_err());
    }

    #[test]
    fn defaults_and_bounds() {
        let c = check(AppointmentFields::default(), None).unwrap();
        assert_eq!(c.details.name, "即时会议");
        assert_eq!(c.end_ms - c.start_ms, 3_600_000);
        let f = AppointmentFields {
            start_time: Some(When::Text("20261207080000".into())),
            end_time: Some(When::Text("20261207070000".into())),
            ..AppointmentFields::default()
        };
        assert!(check(f, None).is_err(), "end before start");
        let f = AppointmentFields {
            start_time: Some(When::Text("tomorrow".into())),
            ..AppointmentFields::default()
        };
        assert!(check(f, None).is_err());
    }
}
