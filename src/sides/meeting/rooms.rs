//! The room directory: every open room by id, and the ids handed to new rooms.

use std::collections::HashMap;

use rtcpeer::id::Id;

use super::room::RoomHandle;

/// Room ids start after this (the first room is 600).
const FIRST_ROOM: Id = 600;

/// Open rooms by id.
#[derive(Debug)]
pub struct RoomDirectory {
    rooms: HashMap<Id, RoomHandle>,
    next: Id,
}

impl Default for RoomDirectory {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            next: FIRST_ROOM,
        }
    }
}

impl RoomDirectory {
    /// The id for the next room.
    pub fn next_id(&mut self) -> Id {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Lists an opened room.
    pub fn insert(&mut self, id: Id, handle: RoomHandle) {
        self.rooms.insert(id, handle);
    }

    /// A room stopped.
    pub fn remove(&mut self, id: Id) {
        self.rooms.remove(&id);
    }

    /// The handle of room `id`.
    pub fn get(&self, id: Id) -> Option<&RoomHandle> {
        self.rooms.get(&id)
    }

    /// Whether room `id` is open.
    pub fn contains(&self, id: Id) -> bool {
        self.rooms.contains_key(&id)
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
