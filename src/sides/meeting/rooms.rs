//! The room directory: every room the bridge knows — temporary rooms while they are open,
//! standing rooms (`room.createRoom`, kept in the store) always — who owns each, who may
//! enter it, and the ids handed to new rooms. Room ids are random (not the next number): an
//! id seen once says nothing about the others, and knowing one is not enough to enter — only
//! the room's owner, its members, those invited into it (by a call or a platform), and those
//! who give its password may. A public room without a password is open to every registered
//! user.

use std::collections::{HashMap, HashSet};

use rtcpeer::bean::Room;
use rtcpeer::id::Id;

use tracing::{info, warn};

use super::room::RoomHandle;
use crate::storage::{RoomRow, Store};

/// Room ids are drawn from this range (nine digits: fits any JSON number).
const IDS: std::ops::RangeInclusive<Id> = 100_000_000..=999_999_999;
/// Most users invited into one room (beyond: the oldest invitations are not kept).
const MAX_INVITED: usize = 1024;
/// The room field naming its own floor mode (bridge extension; `room.floorMode` in `enter`).
pub const FLOOR_MODE: &str = "floorMode";
/// Most members (`addRoomMan`) of one room.
pub const MAX_MEMBERS: usize = 1024;

/// What the bridge knows of one room, open or not.
#[derive(Debug, Clone)]
pub struct RoomMeta {
    /// The room's fields as the spec's `Room` bean (8.3): id, name, owner, type, limits.
    pub info: Room,
    /// Digest of its password (`auth::secret::digest`): never the password itself.
    pub password: Option<String>,
    /// Members (`addRoomMan`): may enter without the password and see the room listed.
    pub members: HashSet<Id>,
    /// Called into it, or entered with its password: may enter again (not stored).
    pub invited: HashSet<Id>,
    /// Standing (`createRoom`, stored) rather than temporary (gone when it closes).
    pub standing: bool,
    /// Dial-in ids brought in when its first participant enters (standing rooms).
    pub dial_in: Vec<Id>,
}

impl RoomMeta {
    /// A room of `owner` with `info` and nothing else yet.
    pub fn new(info: Room, standing: bool) -> Self {
        Self {
            info,
            password: None,
            members: HashSet::new(),
            invited: HashSet::new(),
            standing,
            dial_in: Vec::new(),
        }
    }

    /// The standing room a store row holds (`None`, logged: its fields do not parse).
    pub fn stored(row: RoomRow) -> Option<Self> {
        let Ok(mut info) = serde_json::from_str::<Room>(&row.info) else {
            warn!(
                room = row.id,
                "a stored room's fields do not parse; skipped"
            );
            return None;
        };
        info.id = Some(row.id);
        info.owner_id = Some(row.owner);
        let mut meta = RoomMeta::new(info, true);
        meta.password = row.password;
        meta.members = row.members.into_iter().collect();
        meta.dial_in = row.dial_in;
        Some(meta)
    }

    /// The owner's user id.
    pub fn owner(&self) -> Id {
        self.info.owner_id.unwrap_or_default()
    }

    /// Whether `user` may enter without a password: its owner, a member, invited, or anyone
    /// when the room is public and has no password.
    pub fn admits(&self, user: Id) -> bool {
        self.owner() == user
            || self.members.contains(&user)
            || self.invited.contains(&user)
            || (self.info.is_public == Some(true) && self.password.is_none())
    }

    /// Whether `user` may look the room up (`getRoomById`, listings): those it admits, and
    /// anyone for a public room (which says it has a password).
    pub fn visible_to(&self, user: Id) -> bool {
        self.admits(user) || self.info.is_public == Some(true)
    }

    /// Whether `given` is its password (false when it has none).
    pub fn password_is(&self, given: &str) -> bool {
        self.password
            .as_deref()
            .is_some_and(|d| crate::auth::secret::verify(d, given))
    }

    /// The `Room` bean to show (`isHasPwd` from the password).
    pub fn bean(&self) -> Room {
        let mut r = self.info.clone();
        r.is_has_pwd = Some(self.password.is_some());
        r
    }
}

/// Rooms by id: what is known of each, and the handles of the open ones.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    meta: HashMap<Id, RoomMeta>,
    open: HashMap<Id, RoomHandle>,
}

impl RoomDirectory {
    /// A fresh id for the next room (random, unused by any known room).
    pub fn next_id(&mut self) -> Id {
        use rand::Rng;
        let mut rng = rand::rng();
        loop {
            let id = rng.random_range(IDS);
            if !self.meta.contains_key(&id) && !self.open.contains_key(&id) {
                return id;
            }
        }
    }

    /// Reads the standing rooms of `store` (at most `limit`) into the directory (at start).
    pub fn load_standing(&mut self, store: &Store, limit: usize) {
        let rows = match store.rooms(limit) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read the standing rooms from the store");
                return;
            }
        };
        let n = rows.len();
        for row in rows {
            let id = row.id;
            if let Some(meta) = RoomMeta::stored(row) {
                self.add(id, meta);
            }
        }
        info!(rooms = n, "standing rooms loaded");
    }

    /// Knows room `id` from now on (not open yet).
    pub fn add(&mut self, id: Id, meta: RoomMeta) {
        self.meta.insert(id, meta);
    }

    /// Lists room `id` (known already) as open.
    pub fn opened(&mut self, id: Id, handle: RoomHandle) {
        self.open.insert(id, handle);
    }

    /// Forgets a standing room (`deleteRoom`); false when there is none. An open one closes
    /// by itself once empty.
    pub fn forget(&mut self, id: Id) -> bool {
        self.meta.remove(&id).is_some()
    }

    /// A room stopped: a temporary one is gone, a standing one stays known.
    pub fn remove(&mut self, id: Id) {
        self.open.remove(&id);
        if self.meta.get(&id).is_some_and(|m| !m.standing) {
            self.meta.remove(&id);
        }
    }

    /// The handle of open room `id`.
    pub fn get(&self, id: Id) -> Option<&RoomHandle> {
        self.open.get(&id)
    }

    /// What is known of room `id`.
    pub fn meta(&self, id: Id) -> Option<&RoomMeta> {
        self.meta.get(&id)
    }

    /// What is known of room `id`, to change it.
    pub fn meta_mut(&mut self, id: Id) -> Option<&mut RoomMeta> {
        self.meta.get_mut(&id)
    }

    /// Rooms `user` may see (listing), at most `limit`.
    pub fn visible_to(&self, user: Id, limit: usize) -> Vec<&RoomMeta> {
        let mut out: Vec<&RoomMeta> = self.meta.values().filter(|m| m.visible_to(user)).collect();
        // By id, so a long list is cut the same way every time.
        out.sort_by_key(|m| m.info.id);
        out.truncate(limit);
        out
    }

    /// Whether room `id` is open.
    pub fn contains(&self, id: Id) -> bool {
        self.open.contains_key(&id)
    }

    /// `user` may enter room `id` from now on (called into it, or gave its password).
    pub fn invite(&mut self, id: Id, user: Id) {
        if let Some(e) = self.meta.get_mut(&id)
            && (e.invited.len() < MAX_INVITED || e.invited.contains(&user))
        {
            e.invited.insert(user);
        }
    }

    /// Whether `user` may enter room `id` without a password (see [`RoomMeta::admits`]).
    pub fn may_enter(&self, id: Id, user: Id) -> bool {
        self.meta.get(&id).is_some_and(|m| m.admits(user))
    }

    /// Open temporary rooms `owner` has.
    pub fn owned_by(&self, owner: Id) -> usize {
        self.open
            .keys()
            .filter_map(|id| self.meta.get(id))
            .filter(|m| !m.standing && m.owner() == owner)
            .count()
    }

    /// Standing rooms `owner` has, and all of them.
    pub fn standing(&self, owner: Id) -> (usize, usize) {
        let all = self.meta.values().filter(|m| m.standing);
        all.fold((0, 0), |(mine, n), m| {
            (mine + usize::from(m.owner() == owner), n + 1)
        })
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(owner: Id, public: bool) -> RoomMeta {
        RoomMeta::new(
            Room {
                owner_id: Some(owner),
                is_public: Some(public),
                ..Room::default()
            },
            true,
        )
    }

    /// The entry rule: owner, members and invitees always; a password lets in whoever knows
    /// it; a public room without one lets in everyone; nobody else, and a stranger does not
    /// see a private room at all.
    #[test]
    fn who_may_enter_and_who_may_see() {
        let mut m = room(1, false);
        m.members.insert(2);
        m.invited.insert(3);
        for u in [1, 2, 3] {
            assert!(m.admits(u) && m.visible_to(u), "{u}");
        }
        assert!(!m.admits(4) && !m.visible_to(4));
        m.password = Some(crate::auth::secret::digest("1234"));
        assert!(m.password_is("1234") && !m.password_is("12345"));
        assert!(!m.admits(4), "a password is not entry by itself");
        assert_eq!(m.bean().is_has_pwd, Some(true));

        let mut p = room(1, true);
        assert!(p.admits(4) && p.visible_to(4));
        p.password = Some(crate::auth::secret::digest("x"));
        assert!(!p.admits(4) && p.visible_to(4));
    }

    #[test]
    fn temporary_rooms_go_when_closed_standing_ones_stay() {
        let mut d = RoomDirectory::default();
        let (a, b) = (d.next_id(), 7);
        let mut temp = room(1, false);
        temp.standing = false;
        d.add(a, temp);
        d.add(b, room(1, false));
        d.remove(a);
        d.remove(b);
        assert!(d.meta(a).is_none());
        assert!(d.meta(b).is_some());
        assert_eq!(d.standing(1), (1, 1));
        assert!(d.forget(b) && !d.forget(b));
    }
}
