//! pttbridge: a protocol gateway between PTT voice servers, dispatch consoles,
//! WebRTC meetings and event platforms.
