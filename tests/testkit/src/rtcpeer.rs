//! A plain RTCPeer (and EGW, and console) JSON WebSocket client with deadlines, and RTCPeer
//! sign-in as the spec gives it (`getSign`, `dockingLogin`, `call.doRegister`), written from the
//! spec's examples (`fixtures/rtcpeer`), not the bridge's types. For the security and abuse
//! tests, which need sockets they control byte by byte (bound to a chosen source address, with a
//! small receive buffer, left unread).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Default wait for a reply.
pub const REPLY: Duration = Duration::from_secs(10);

/// A JSON-over-WebSocket client: text frames in and out, with deadlines.
pub struct Socket {
    ws: WebSocket<TcpStream>,
    /// Frames received that were not what a wait was looking for (pushes, mostly).
    pub seen: Vec<Value>,
}

/// How a socket ended.
#[derive(Debug)]
pub struct Closed {
    /// The close frame's code, if there was one.
    pub code: Option<u16>,
    /// The close frame's reason (or the error that ended the connection).
    pub reason: String,
    /// The last text frames before the close.
    pub last: Vec<Value>,
}

/// A TCP connection to `to` from `from` (any 127/8 address works on loopback, so one test can
/// be many clients to per-address limits), with the receive buffer cut to `recv_buffer` bytes
/// when given (a client that stops reading then stalls the sender quickly).
pub fn tcp_from(
    from: IpAddr,
    to: SocketAddr,
    recv_buffer: Option<usize>,
) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(n) = recv_buffer {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

impl Socket {
    /// Opens `ws://addr{path}` from the default address; panics if it cannot.
    pub fn open(addr: SocketAddr, path: &str) -> Socket {
        let tcp = TcpStream::connect(addr).expect("connect");
        Socket::handshake(tcp, addr, path).expect("WebSocket handshake")
    }

    /// The WebSocket handshake for `path` over `tcp`; the HTTP status when it is refused.
    pub fn handshake(tcp: TcpStream, addr: SocketAddr, path: &str) -> Result<Socket, u16> {
        tcp.set_read_timeout(Some(REPLY)).unwrap();
        match tungstenite::client(format!("ws://{addr}{path}"), tcp) {
            Ok((ws, _)) => {
                // Reads then wait in short steps, so a wait can give up at its deadline.
                ws.get_ref()
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                Ok(Socket {
                    ws,
                    seen: Vec::new(),
                })
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("WebSocket handshake to {path}: {e}"),
        }
    }

    /// Sends `v` as a text frame.
    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).expect("send");
    }

    /// Sends a text frame; `Err` once the connection is gone.
    pub fn send_text(&mut self, text: &str) -> tungstenite::Result<()> {
        self.ws.send(Message::Text(text.into()))
    }

    /// Sets how long a send may block (a peer that stops reading fills the socket).
    pub fn set_write_timeout(&mut self, t: Duration) {
        self.ws.get_ref().set_write_timeout(Some(t)).unwrap();
    }

    /// The next text frame within `timeout`; `Err` when the socket closed.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Value>, Closed> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Ok(Some(serde_json::from_str(&t).expect("JSON frame")));
                }
                Ok(Message::Close(frame)) => {
                    return Err(Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        last: self.seen.split_off(self.seen.len().saturating_sub(3)),
                    });
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    return Err(Closed {
                        code: None,
                        reason: e.to_string(),
                        last: self.seen.split_off(self.seen.len().saturating_sub(3)),
                    });
                }
            }
        }
        Ok(None)
    }

    /// Waits for a frame matching `pred`, keeping the others in `seen`.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + REPLY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Ok(Some(v)) if pred(&v) => return v,
                Ok(Some(v)) => self.seen.push(v),
                Ok(None) => panic!("no {what} within {REPLY:?}; seen {:?}", self.seen),
                Err(c) => panic!("closed waiting for {what}: {c:?}"),
            }
        }
    }

    /// Sends an RTCPeer request and returns its reply (the frame with the same module and
    /// method that carries `result`).
    pub fn request(&mut self, req: Value) -> Value {
        self.send(&req);
        let (module, method) = (req["module"].clone(), req["method"].clone());
        self.wait(&format!("{module}.{method} reply"), |v| {
            v["module"] == module && v["method"] == method && v.get("result").is_some()
        })
    }

    /// Waits until the socket is closed by the server, keeping what came before in `seen`.
    pub fn closed(&mut self, within: Duration) -> Closed {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Ok(Some(v)) => self.seen.push(v),
                Ok(None) => panic!(
                    "still open after {within:?}; {} frames seen, the last {:?}",
                    self.seen.len(),
                    &self.seen[self.seen.len().saturating_sub(3)..]
                ),
                Err(c) => return c,
            }
        }
    }
}

/// An RTCPeer user: signed in through `getSign` and `dockingLogin`, registered on its socket.
pub struct User {
    /// Its user id.
    pub id: i64,
    /// Its session id.
    pub sid: String,
    /// Its registered `/rtcpeer` socket.
    pub ws: Socket,
}

/// `GET /app/getSign` for `app` (id, secret).
pub fn get_sign(addr: SocketAddr, app: (&str, &str)) -> Value {
    let path = format!("/app/getSign?appId={}&secret={}", app.0, app.1);
    crate::http::get(addr, &path).unwrap().json()
}

/// `POST /app/account` `dockingLogin` with `sign`.
pub fn docking_login(addr: SocketAddr, sign: &str, account: &str) -> Value {
    let body =
        json!({"method": "dockingLogin", "account": account, "userName": account, "sign": sign});
    crate::http::request(addr, "POST", "/app/account", Some(&body.to_string()))
        .unwrap()
        .json()
}

/// Signs `account` in for `app` and registers it on a new `/rtcpeer` socket; panics unless
/// every step succeeds.
pub fn sign_in(addr: SocketAddr, app: (&str, &str), account: &str) -> User {
    sign_in_over(
        addr,
        app,
        account,
        TcpStream::connect(addr).expect("connect"),
    )
}

/// [`sign_in`], registering over `tcp` (e.g. from [`tcp_from`]).
pub fn sign_in_over(addr: SocketAddr, app: (&str, &str), account: &str, tcp: TcpStream) -> User {
    let sign = get_sign(addr, app);
    assert_eq!(sign["code"], 200, "{sign}");
    let login = docking_login(addr, sign["data"].as_str().unwrap(), account);
    assert_eq!(login["result"], 0, "{login}");
    let id = login["user"]["id"].as_i64().expect("user.id");
    let sid = login["SID"].as_str().expect("SID").to_string();
    let mut ws = Socket::handshake(tcp, addr, "/rtcpeer").expect("WebSocket handshake");
    let r = ws.request(
        json!({"module":"call","method":"doRegister","SID":sid,"userId":id,"deviceType":"pc"}),
    );
    assert_eq!(r["result"], 0, "{account} registers: {r}");
    User { id, sid, ws }
}

impl User {
    /// `room.newAppRoom` (the reply, whatever its result).
    pub fn try_new_room(&mut self) -> Value {
        self.ws.request(json!({"module":"room","method":"newAppRoom","name":"ops","numberLimit":10,"roomtype":1,"userId":self.id}))
    }

    /// A new room's id; panics unless it was made.
    pub fn new_room(&mut self) -> i64 {
        let r = self.try_new_room();
        assert_eq!(r["result"], 0, "{r}");
        r["roomId"].as_i64().expect("roomId")
    }

    /// `meeting.enter` into `room` (the reply).
    pub fn enter(&mut self, room: i64) -> Value {
        self.ws.request(
            json!({"module":"meeting","method":"enter","userId":self.id,"roomId":room,"roomType":1,"username":"x"}),
        )
    }
}
