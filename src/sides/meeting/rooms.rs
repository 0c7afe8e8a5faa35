//! The room directory: every open room by id, who owns it and who may enter it, and the ids
//! handed to new rooms. Room ids are random (not the next number): an id seen once says
//! nothing about the others, and knowing one is not enough to enter — only the room's owner
//! and those invited into it (by a call or a platform) may.

use std::collections::{HashMap, HashSet};

use rtcpeer::id::Id;

use super::room::RoomHandle;

/// Room ids are drawn from this range (nine digits: fits any JSON number).
const IDS: std::ops::RangeInclusive<Id> = 100_000_000..=999_999_999;
/// Most users invited into one room (beyond: the oldest invitations are not kept).
const MAX_INVITED: usize = 1024;

/// One open room.
#[derive(Debug)]
struct Entry {
    handle: RoomHandle,
    owner: Id,
    invited: HashSet<Id>,
}

/// Open rooms by id.
#[derive(Debug, Default)]
pub struct RoomDirectory {
    rooms: HashMap<Id, Entry>,
}

impl RoomDirectory {
    /// A fresh id for the next room (random, unused).
    pub fn next_id(&mut self) -> Id {
        use rand::Rng;
        let mut rng = rand::rng();
        loop {
            let id = rng.random_range(IDS);
            if !self.rooms.contains_key(&id) {
                return id;
            }
        }
    }

    /// Lists an opened room owned by `owner`.
    pub fn insert(&mut self, id: Id, owner: Id, handle: RoomHandle) {
        self.rooms.insert(
            id,
            Entry {
                handle,
                owner,
                invited: HashSet::new(),
            },
        );
    }

    /// A room stopped.
    pub fn remove(&mut self, id: Id) {
        self.rooms.remove(&id);
    }

    /// The handle of room `id`.
    pub fn get(&self, id: Id) -> Option<&RoomHandle> {
        self.rooms.get(&id).map(|e| &e.handle)
    }

    /// Whether room `id` is open.
    pub fn contains(&self, id: Id) -> bool {
        self.rooms.contains_key(&id)
    }

    /// `user` may enter room `id` from now on (called into it).
    pub fn invite(&mut self, id: Id, user: Id) {
        if let Some(e) = self.rooms.get_mut(&id)
            && (e.invited.len() < MAX_INVITED || e.invited.contains(&user))
        {
            e.invited.insert(user);
        }
    }

    /// Whether `user` may enter room `id`: its owner, or invited.
    pub fn may_enter(&self, id: Id, user: Id) -> bool {
        self.rooms
            .get(&id)
            .is_some_and(|e| e.owner == user || e.invited.contains(&user))
    }

    /// Rooms `owner` has open.
    pub fn owned_by(&self, owner: Id) -> usize {
        self.rooms.values().filter(|e| e.owner == owner).count()
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}
