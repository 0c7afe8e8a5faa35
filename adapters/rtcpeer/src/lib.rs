//! 527meeting RTCPeer signalling, protocol only (no sockets, no clock).
//!
//! The control socket speaks JSON objects with a `module` and a `method` (spec section 5,
//! "Java 接口"). This crate gives every message the bridge handles a type:
//!
//! - [`request`]: what a client sends — `call` (doRegister, doInvite, doAgree, reject, cancel,
//!   doEvent), `room` (newAppRoom, newTempRoom; the room management of [`rooms`]), `account` (logout), `meeting` (new, enter, exit,
//!   finish, publish, play, closePlay, updateMute, muteMsg, muteAll, kickOut, setCompere,
//!   raiseHand, lowerHand (bridge extension), updateClientName, updateMeetingName, chat,
//!   privateChat; the appointments of [`appointments`]).
//! - [`reply`]: the answer to a request: the request's `module`/`method` plus `result`
//!   (0 = success, see [`code`]) and the method's return fields.
//! - [`push`]: events the server pushes unasked, in the same shape, `method` being the JS event
//!   name (doInvite, doAgree, reject, cancel, doEvent, EnterRoom, ExitRoom, onPublished, onFinish,
//!   onChat, onPrivateChat, memberTalking, onMute, onMuteAll, tiren, onCompere, onRaiseHand,
//!   onUpdateClient, onUpdateMeeting; the bridge's onLowerHand and onHandFloor). **A push never
//!   has `result`; a reply always has it** — that is how a client tells them apart.
//! - [`bean`]: User, Company, Room, Client, Appointment (spec section 8).
//! - [`call`]: the sans-IO call state machine (idle → inviting → ringing/busy → agreed →
//!   connected → ended) with reject, cancel and the no-answer timeout.
//!
//! SDP is not in the spec: `meeting.publish` and `meeting.play` carry the client's offer in an
//! `sdp` field and the reply carries the server's answer in `sdp` (see `docs/rtcpeer.md` in the
//! repository for the whole wire contract).

pub mod appointments;
pub mod bean;
pub mod call;
pub mod code;
pub mod frame;
pub mod id;
pub mod push;
pub mod reply;
pub mod request;
pub mod rooms;

pub use frame::{Frame, FrameError};
pub use request::Request;
