//! The hub: the sides' common model (apps, parties, groups), the event bus, floor control,
//! commands from platforms to sides, and call records.

pub mod bus;
pub mod calls;
pub mod command;
pub mod event;
pub mod floor;

pub use bus::EventBus;
pub use calls::{CallRecorder, CallStart, Calls};
pub use command::{CommandError, CommandRouter, Delivered, SideCommand, SideCommands};
pub use event::{Event, EventKind, Party, Side};
