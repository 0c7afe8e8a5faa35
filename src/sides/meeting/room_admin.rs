//! Room management (`room.*`, spec 2.6–2.18): standing rooms (`createRoom`, kept in the
//! store and opened when someone enters), passwords, members, look-up and listing; and the
//! entry check of `meeting.enter`.
//!
//! Who may do what (docs/security.md): changing a room — its fields, password, members, or
//! deleting it — is its owner's (or an operator's user's); looking it up is for those it
//! admits (owner, members, invitees, password holders) and, for a public room, everyone. A
//! room a user may not see answers exactly as an unknown one (404 "no room N"): ids cannot be
//! probed. Every change to a standing room is written to the store before it takes effect (a
//! new one is in the directory while it is written, counted against the limits); on a cluster
//! node the store is the shared records, and the directory follows what other nodes write
//! (`record_applied`).

use std::sync::Arc;
use std::time::Instant;

use rtcpeer::bean::{Room, User};
use rtcpeer::code;
use rtcpeer::id::Id;
use rtcpeer::reply::{self, RoomCreated};
use rtcpeer::request::Request;
use rtcpeer::rooms::{HasPwd, Moderators, RoomFields, RoomFound, RoomRequest, Rooms, verdict};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::calls::PLATFORM;
use super::refusal::Refusal;
use super::registrar::Conn;
use super::room::{RoomCmd, RoomHandle, valid_name};
use super::rooms::{FLOOR_MODE, MAX_MEMBERS, RoomDirectory, RoomMeta};
use super::switchboard::Switchboard;
use crate::storage::{RecordOp, RoomRow, StoreError};

type Answer = Result<Value, Refusal>;

/// Longest description, logo URI or password, in characters.
const MAX_TEXT: usize = 1024;
/// Longest password, in characters.
const MAX_PASSWORD: usize = 64;
/// Most rooms one `queryMyRooms` lists.
const MAX_LISTED: usize = 500;

/// The same answer for an unknown room and one the user may not see.
fn no_room(id: Id) -> Refusal {
    Refusal::new(code::NOT_FOUND, format!("no room {id}"))
}

/// A text field: at most `max` characters, no control characters (422 naming `field`).
fn text_field(v: Option<String>, field: &str, max: usize) -> Result<Option<String>, Refusal> {
    match v {
        Some(t) if t.chars().count() > max || t.chars().any(char::is_control) => Err(Refusal::new(
            code::BAD_FIELDS,
            format!("{field} must be at most {max} characters, without control characters"),
        )),
        other => Ok(other),
    }
}

impl Switchboard {
    /// Answers one `room.*` management request of `me`.
    pub(super) async fn room_request(
        self: &Arc<Self>,
        conn: &Conn,
        me: Id,
        req: RoomRequest,
    ) -> Answer {
        let m = req.method();
        let op = conn.operator;
        match req {
            RoomRequest::CreateRoom(f) => {
                let room_id = self.create_standing(me, f).await?;
                Ok(reply::ok_with("room", m, &RoomCreated { room_id }))
            }
            RoomRequest::UpdateRoom(u) => {
                let fields = self.checked_fields(u.room_id, me, u.fields)?;
                self.change(me, op, u.room_id, "change", |r| {
                    standing_only(r)?;
                    let (info, dial) = fields;
                    r.info = Room {
                        id: r.info.id,
                        owner_id: r.info.owner_id,
                        ..info
                    };
                    r.dial_in = dial;
                    Ok(())
                })
                .await?;
                Ok(reply::ok_with(
                    "room",
                    m,
                    &RoomCreated { room_id: u.room_id },
                ))
            }
            RoomRequest::DeleteRoom(r) => {
                self.delete_standing(me, op, r.room_id).await?;
                Ok(reply::ok("room", m))
            }
            RoomRequest::ModifyRoomPwd(p) => {
                let pwd = password_field(&p.password)?;
                self.change(me, op, p.room_id, "change the password of", |r| {
                    r.password = pwd.map(|p| crate::auth::secret::digest(&p));
                    Ok(())
                })
                .await?;
                Ok(reply::ok("room", m))
            }
            RoomRequest::CheckRoomPwd(p) => {
                Ok(verdict(m, self.check_password(me, p.room_id, &p.password)?))
            }
            RoomRequest::CheckRoomHasPwd(r) => {
                let st = self.state();
                // A stranger is told a password is needed, whether or not the room exists.
                let is_has_pwd = st
                    .rooms
                    .meta(r.room_id)
                    .filter(|x| x.visible_to(me))
                    .is_none_or(|x| x.password.is_some());
                Ok(reply::ok_with("room", m, &HasPwd { is_has_pwd }))
            }
            RoomRequest::AddRoomMan(a) => {
                if a.user_id <= 0 {
                    return Err(Refusal::new(code::BAD_FIELDS, "userId must be a user id"));
                }
                self.change(me, op, a.room_id, "add members to", |r| {
                    if r.members.len() >= MAX_MEMBERS && !r.members.contains(&a.user_id) {
                        return Err(Refusal::new(
                            code::TOO_MANY,
                            format!("a room has at most {MAX_MEMBERS} members"),
                        ));
                    }
                    r.members.insert(a.user_id);
                    Ok(())
                })
                .await?;
                Ok(reply::ok("room", m))
            }
            RoomRequest::DeleteRoomMen(d) => {
                self.change(me, op, d.room_id, "remove members from", |r| {
                    if !r.members.remove(&d.moderator_id) {
                        return Err(Refusal::new(
                            code::NOT_FOUND,
                            format!(
                                "user {} is not a member of room {}",
                                d.moderator_id, d.room_id
                            ),
                        ));
                    }
                    // Removed means no longer let in by an earlier call or password either.
                    r.invited.remove(&d.moderator_id);
                    Ok(())
                })
                .await?;
                Ok(reply::ok("room", m))
            }
            RoomRequest::QueryRoomMen(r) => {
                let mut ids: Vec<Id> = {
                    let st = self.state();
                    let room = seen(&st.rooms, me, op, r.room_id)?;
                    if !op && !room.admits(me) {
                        return Err(Refusal::new(
                            code::FORBIDDEN,
                            "only the room's owner and members may list its members",
                        ));
                    }
                    room.members.iter().copied().collect()
                };
                ids.sort_unstable();
                // Names of those who logged in since the start (the state lock is let go first).
                let book = self.accounts.lock();
                let moderators = ids
                    .into_iter()
                    .map(|id| User {
                        id: Some(id),
                        name: book.name_of(id).map(str::to_owned),
                        ..User::default()
                    })
                    .collect();
                Ok(reply::ok_with("room", m, &Moderators { moderators }))
            }
            RoomRequest::GetRoomById(r) => {
                let st = self.state();
                let room = seen(&st.rooms, me, op, r.room_id)?;
                Ok(reply::ok_with("room", m, &RoomFound { room: room.bean() }))
            }
            RoomRequest::QueryMyRooms => {
                let st = self.state();
                let rooms = st
                    .rooms
                    .visible_to(me, MAX_LISTED)
                    .into_iter()
                    .map(RoomMeta::bean)
                    .collect();
                Ok(reply::ok_with("room", m, &Rooms { rooms }))
            }
            RoomRequest::CheckActiveRoom(r) => {
                let handle = {
                    let st = self.state();
                    seen(&st.rooms, me, op, r.room_id)?;
                    st.rooms.get(r.room_id).cloned()
                };
                Ok(verdict(m, occupancy(handle).await > 0))
            }
        }
    }

    /// The room fields of a `createRoom`/`updateRoom`, checked: the `Room` bean (owner `me`,
    /// id `id`) and its dial-ins.
    fn checked_fields(&self, id: Id, me: Id, f: RoomFields) -> Result<(Room, Vec<Id>), Refusal> {
        if !(1..=3).contains(&f.room_type) {
            return Err(Refusal::new(
                code::BAD_FIELDS,
                "roomtype must be 1 (audio), 2 (video) or 3 (video return)",
            ));
        }
        let name = valid_name(&f.name, "name")?;
        let dial = f.dial_in.unwrap_or_default();
        // A room links one PTT channel at a time.
        if dial.len() > 1 {
            return Err(Refusal::new(
                code::BAD_FIELDS,
                "dialIn names at most one dial-in id (a room links one PTT channel)",
            ));
        }
        if let Some(d) = dial.iter().find(|d| self.dial_target(**d).is_none()) {
            return Err(Refusal::new(
                code::BAD_FIELDS,
                format!("dialIn: {d} is not a dial-in id"),
            ));
        }
        let limit = f.number_limit.clamp(2, self.config.max_room_members as i64);
        let info = Room {
            id: Some(id),
            name: Some(name),
            owner_id: Some(me),
            room_type: Some(f.room_type),
            definition: text_field(f.definition, "definition", 16)?,
            number_limit: Some(limit),
            is_public: Some(f.is_public),
            logo: text_field(f.pictureuri, "pictureuri", MAX_TEXT)?,
            comment: text_field(f.desc, "desc", MAX_TEXT)?,
            ..Room::default()
        };
        let mut info = info;
        if let Some(m) = f.floor_mode {
            // Kept with the room's fields; read when the room opens.
            info.extra.insert(FLOOR_MODE.into(), m.as_str().into());
        }
        Ok((info, dial))
    }

    /// `createRoom`: a standing room owned by `me`, stored; its id. The room is in the
    /// directory while it is written, so concurrent creations count it against the limits.
    pub(super) async fn create_standing(&self, me: Id, f: RoomFields) -> Result<Id, Refusal> {
        let (id, meta) = {
            let mut st = self.state();
            let (mine, all) = st.rooms.standing(me);
            for (n, max, key) in [
                (all, self.config.max_standing_rooms, "max_standing_rooms"),
                (
                    mine,
                    self.config.max_standing_rooms_per_user,
                    "max_standing_rooms_per_user",
                ),
            ] {
                if n >= max {
                    metrics::counter!("pttbridge_meeting_limited_total", "limit" => key)
                        .increment(1);
                    return Err(Refusal::new(
                        code::TOO_MANY,
                        format!("{n} standing rooms already (meeting.{key})"),
                    ));
                }
            }
            let id = st.rooms.next_id();
            let (info, dial) = self.checked_fields(id, me, f)?;
            let mut meta = RoomMeta::new(info, true);
            meta.dial_in = dial;
            st.rooms.add(id, meta.clone());
            (id, meta)
        };
        match self.save(&meta, true).await {
            Ok(()) => {}
            // Another node drew the same id first: the directory holds its room now.
            Err(e @ StoreError::Conflict(_)) => return Err(stored(e)),
            Err(e) => {
                self.state().rooms.forget(id);
                return Err(stored(e));
            }
        }
        metrics::counter!("pttbridge_meeting_standing_rooms_total", "change" => "created")
            .increment(1);
        info!(room = id, owner = me, "standing room created");
        Ok(id)
    }

    /// `deleteRoom`: a standing room nobody is in is forgotten (and its open, empty actor
    /// finished); one in use is refused, as `checkActiveRoom` would have said.
    pub(super) async fn delete_standing(
        self: &Arc<Self>,
        me: Id,
        op: bool,
        id: Id,
    ) -> Result<(), Refusal> {
        let handle = {
            let st = self.state();
            let room = owned(&st.rooms, me, op, id, "delete")?;
            standing_only(room)?;
            st.rooms.get(id).cloned()
        };
        if occupancy(handle.clone()).await > 0 || self.in_use_elsewhere(id) {
            return Err(Refusal::new(
                code::CONFLICT,
                format!("room {id} is in use: it can be deleted once everyone has left"),
            ));
        }
        if let Some(s) = &self.store {
            s.write(RecordOp::DeleteRoom { id }).await.map_err(stored)?;
        }
        self.state().rooms.forget(id);
        if let Some(h) = handle {
            // Closes it now rather than after meeting.empty_room_close_s.
            let (tx, _) = oneshot::channel();
            let _ = h.try_send(RoomCmd::Request {
                from: me,
                operator: true,
                req: Request::Finish,
                reply: tx,
            });
        }
        metrics::counter!("pttbridge_meeting_standing_rooms_total", "change" => "deleted")
            .increment(1);
        info!(room = id, by = me, "standing room deleted");
        Ok(())
    }

    /// On a cluster node: whether the shared event state has someone in room `id` — open on
    /// another node (this node's own room answers for itself; docs/cluster.md).
    fn in_use_elsewhere(&self, id: Id) -> bool {
        let bus = self.events.bus();
        if !bus.replicated() {
            return false;
        }
        let group = super::events::group_id(id);
        let (_, state) = bus.snapshot(self.events.app(), Some(std::slice::from_ref(&group)));
        state
            .groups
            .get(&group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Applies `f` to room `id` as `me` (its owner, or an operator's user), stores the result
    /// for a standing room, and tells the open room its new fields.
    pub(super) async fn change(
        &self,
        me: Id,
        op: bool,
        id: Id,
        what: &str,
        f: impl FnOnce(&mut RoomMeta) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let room = {
            let st = self.state();
            let mut room = owned(&st.rooms, me, op, id, what)?.clone();
            f(&mut room)?;
            room
        };
        let shared = room.standing && self.store.as_ref().is_some_and(|s| s.replicated());
        if room.standing {
            self.save(&room, false).await.map_err(stored)?;
        }
        // A shared row was shown already, when this node applied it (`record_applied`).
        if !shared {
            let mut st = self.state();
            self.show(&mut st.rooms, id, room);
        }
        Ok(())
    }

    /// Room `id` is `room` from now on; an open one is told its new fields.
    pub(super) fn show(&self, rooms: &mut RoomDirectory, id: Id, room: RoomMeta) {
        let bean = room.bean();
        if let Some(r) = rooms.meta_mut(id) {
            *r = room;
        }
        if let Some(h) = rooms.get(id) {
            let _ = h.try_send(RoomCmd::Update(Box::new(bean)));
        }
    }

    /// An operation applied from the shared records (cluster mode: another node's write, or
    /// this node's own): the directory's standing rooms and the meeting accounts' user ids
    /// follow the store, so a room created, changed or deleted through any node is the same
    /// here.
    pub(super) fn record_applied(&self, op: &RecordOp) {
        match op {
            RecordOp::PutRoom { room, .. } => {
                let Some(mut meta) = RoomMeta::stored(room.clone()) else {
                    return;
                };
                let mut st = self.state();
                match st.rooms.meta(room.id) {
                    Some(old) => {
                        // Who a call or a password let in is this node's, never stored; a
                        // member removed is no longer let in by those either (`deleteRoomMen`).
                        meta.invited = old
                            .invited
                            .iter()
                            .filter(|u| !old.members.contains(u) || meta.members.contains(u))
                            .copied()
                            .collect();
                        self.show(&mut st.rooms, room.id, meta);
                    }
                    None => st.rooms.add(room.id, meta),
                }
            }
            RecordOp::DeleteRoom { id } => {
                // An open room here closes by itself once empty.
                self.state().rooms.forget(*id);
            }
            RecordOp::AddMeetingAccount {
                app_id,
                account,
                user_id,
            } => self.accounts.lock().learn(app_id, account, *user_id, |id| {
                self.dial_target(id).is_some()
            }),
            _ => {}
        }
    }

    /// Writes a standing room to the store (nothing without one): `new`, or a change.
    async fn save(&self, room: &RoomMeta, new: bool) -> Result<(), StoreError> {
        let Some(s) = &self.store else {
            return Ok(());
        };
        let mut members: Vec<Id> = room.members.iter().copied().collect();
        members.sort_unstable();
        let row = RoomRow {
            id: room.info.id.unwrap_or_default(),
            owner: room.owner(),
            info: serde_json::to_string(&room.info).unwrap_or_default(),
            password: room.password.clone(),
            dial_in: room.dial_in.clone(),
            members,
        };
        s.write(RecordOp::PutRoom { room: row, new })
            .await
            .map(|_| ())
    }

    /// `checkRoomPwd`: whether `given` is room `id`'s password (an unknown room: no). A right
    /// one lets `me` enter from now on (the spec's `enter` has no password field); wrong
    /// guesses are throttled per user (429).
    fn check_password(&self, me: Id, id: Id, given: &str) -> Result<bool, Refusal> {
        let now = Instant::now();
        if let Some(wait) = self.pwd_failures.check(&me, now) {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "throttled").increment(1);
            return Err(Refusal::new(
                code::TOO_MANY,
                format!(
                    "too many wrong room passwords; try again in {} s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let mut st = self.state();
        let right = st.rooms.meta(id).is_some_and(|r| r.password_is(given));
        if right {
            st.rooms.invite(id, me);
            self.pwd_failures.succeeded(&me);
        } else {
            self.pwd_failures.failed(me, now);
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "room_password").increment(1);
        }
        Ok(right)
    }

    /// The entry check of `meeting.enter`: `me` may enter room `id` (admitted, or `password`
    /// is its password); the room's handle, opened now if it is a standing room nobody is in.
    /// Refused alike for an unknown room, a private one and a wrong password (403).
    pub(super) fn admit(
        self: &Arc<Self>,
        me: Id,
        id: Id,
        password: Option<&str>,
    ) -> Result<RoomHandle, Refusal> {
        let admitted = self.state().rooms.may_enter(id, me)
            || match password {
                Some(p) => self.check_password(me, id, p)?,
                None => false,
            };
        let mut st = self.state();
        let meta = st.rooms.meta(id).filter(|_| admitted);
        let Some(meta) = meta else {
            metrics::counter!("pttbridge_auth_failures_total", "surface" => "rtcpeer", "reason" => "room").increment(1);
            return Err(Refusal::new(
                code::FORBIDDEN,
                format!(
                    "room {id}: no such room, or you were not invited into it (or the password is wrong)"
                ),
            ));
        };
        if let Some(h) = st.rooms.get(id) {
            return Ok(h.clone());
        }
        // A standing room nobody is in: its actor starts now (a temporary room that is not
        // open is gone, and has no entry here).
        let info = meta.bean();
        if st.rooms.len() >= self.config.max_rooms {
            metrics::counter!("pttbridge_meeting_limited_total", "limit" => "rooms").increment(1);
            return Err(Refusal::new(
                code::TOO_MANY,
                format!(
                    "the bridge has {} rooms open (meeting.max_rooms): try later",
                    self.config.max_rooms
                ),
            ));
        }
        let h = self.spawn_room(info)?;
        st.rooms.opened(id, h.clone());
        Ok(h)
    }

    /// The first participant entered room `id`: a standing room's dial-ins are brought in, as
    /// a dial-in call would bring them, until the room is empty again.
    pub(super) fn dial_standing(&self, id: Id) {
        let dial = self
            .state()
            .rooms
            .meta(id)
            .map(|m| m.dial_in.clone())
            .unwrap_or_default();
        for d in dial {
            let Some(target) = self.dial_target(d).cloned() else {
                continue;
            };
            match self.attach_with(&target, id, PLATFORM, None, true) {
                Ok(()) => info!(
                    room = id,
                    dial = d,
                    "standing room dials its PTT channel in"
                ),
                Err(e) => warn!(room = id, dial = d, error = %e, "standing room cannot dial in"),
            }
        }
    }
}

/// Room `id` if `me` may see it (an operator's user sees every room); 404 otherwise, as for an
/// unknown room.
fn seen(rooms: &RoomDirectory, me: Id, op: bool, id: Id) -> Result<&RoomMeta, Refusal> {
    rooms
        .meta(id)
        .filter(|r| op || r.visible_to(me))
        .ok_or_else(|| no_room(id))
}

/// Room `id` for a change by `me`: its owner, or an operator's user (403 for others who may
/// see it; 404 for those who may not, as for an unknown room).
fn owned<'a>(
    rooms: &'a RoomDirectory,
    me: Id,
    op: bool,
    id: Id,
    what: &str,
) -> Result<&'a RoomMeta, Refusal> {
    let room = seen(rooms, me, op, id)?;
    if !op && room.owner() != me {
        return Err(Refusal::new(
            code::FORBIDDEN,
            format!(
                "only the room's owner (ownerId {}) may {what} it",
                room.owner()
            ),
        ));
    }
    Ok(room)
}

/// Standing rooms only: a temporary room ends when it is finished or empty, with the fields
/// it was made with.
fn standing_only(room: &RoomMeta) -> Result<(), Refusal> {
    if room.standing {
        Ok(())
    } else {
        Err(Refusal::new(
            code::CONFLICT,
            "a temporary room cannot be changed or deleted: it ends when finished or empty",
        ))
    }
}

/// A password field: `""` removes it; else 1 to 64 characters, no control characters.
fn password_field(p: &str) -> Result<Option<String>, Refusal> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.chars().count() > MAX_PASSWORD || p.chars().any(char::is_control) {
        return Err(Refusal::new(
            code::BAD_FIELDS,
            format!(
                "password must be at most {MAX_PASSWORD} characters, without control characters"
            ),
        ));
    }
    Ok(Some(p.to_owned()))
}

/// How many members an open room has (0 when it is not open or does not answer).
pub(super) async fn occupancy(handle: Option<RoomHandle>) -> usize {
    let Some(h) = handle else {
        return 0;
    };
    let (tx, rx) = oneshot::channel();
    if h.send(RoomCmd::Occupancy(tx)).await.is_err() {
        return 0;
    }
    rx.await.unwrap_or(0)
}

/// A store failure, as the protocol says it.
fn stored(e: StoreError) -> Refusal {
    warn!(error = %e, "cannot store a standing room");
    Refusal::new(code::INTERNAL, "the room could not be stored")
}
