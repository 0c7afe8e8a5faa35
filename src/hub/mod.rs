//! The hub: the sides' common model (apps, parties, groups) and the event bus.

pub mod bus;
pub mod event;

pub use bus::EventBus;
pub use event::{Event, EventKind, Party, Side};
