//! The hub: the sides' common model (apps, parties, groups), the event bus and floor control.

pub mod bus;
pub mod event;
pub mod floor;

pub use bus::EventBus;
pub use event::{Event, EventKind, Party, Side};
