//! Datagrams for many peers sent with one system call: a room's fan-out writes the same frame
//! to every listener, each a different address, so UDP GSO (one destination per call) does not
//! apply but `sendmmsg` does — one kernel entry per [`BATCH`] datagrams instead of one each.
//! Elsewhere than Linux each datagram is sent as it comes.
//!
//! Semantics are those of `try_send_to`: a datagram the kernel will not take now (its buffer
//! full) is dropped and counted, never waited for — the audio path does not block.

use std::net::SocketAddr;

use str0m::net::Transmit;
use tokio::net::UdpSocket;

use super::peer_set::Sink;

/// Datagrams gathered before they go out in one call.
pub const BATCH: usize = 64;

/// Largest datagram kept (str0m's MTU is 1150; a bigger one is sent on its own).
const SLOT: usize = 1500;

/// Transmits waiting to be sent together; its buffers are reused, so sending allocates nothing.
pub struct SendBatch {
    data: Vec<u8>,
    lens: Vec<usize>,
    dests: Vec<socket2::SockAddr>,
    /// Datagrams the kernel did not take since the last [`SendBatch::take_failed`].
    failed: u64,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("queued", &self.lens.len())
            .finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        Self {
            data: vec![0; BATCH * SLOT],
            lens: Vec::with_capacity(BATCH),
            dests: Vec::with_capacity(BATCH),
            failed: 0,
        }
    }
}

impl SendBatch {
    /// Queues `t` (sending the batch when it is full); always true: failures are counted.
    pub fn push(&mut self, socket: &UdpSocket, t: &Transmit) -> bool {
        if !cfg!(target_os = "linux") || t.contents.len() > SLOT {
            if socket.try_send_to(&t.contents, t.destination).is_err() {
                self.failed += 1;
            }
            return true;
        }
        let i = self.lens.len();
        self.data[i * SLOT..i * SLOT + t.contents.len()].copy_from_slice(&t.contents);
        self.lens.push(t.contents.len());
        self.dests.push(t.destination.into());
        if self.lens.len() == BATCH {
            self.flush(socket);
        }
        true
    }

    /// Queues a datagram to `to` that `fill` writes straight into the batch's next slot (its
    /// length, or `None`: nothing queued); sends the batch when it is full. True unless the
    /// datagram could not be sent.
    pub fn push_with(
        &mut self,
        socket: &UdpSocket,
        to: SocketAddr,
        fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let i = self.lens.len();
        let Some(n) = fill(&mut self.data[i * SLOT..(i + 1) * SLOT]) else {
            return true;
        };
        if !cfg!(target_os = "linux") {
            let sent = socket
                .try_send_to(&self.data[i * SLOT..i * SLOT + n], to)
                .is_ok();
            if !sent {
                self.failed += 1;
            }
            return sent;
        }
        self.lens.push(n);
        self.dests.push(to.into());
        if self.lens.len() == BATCH {
            self.flush(socket);
        }
        true
    }

    /// Sends what is queued.
    pub fn flush(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.lens.len() {
            match send_many(
                socket,
                &self.data,
                &self.lens[sent..],
                &self.dests[sent..],
                sent,
            ) {
                Ok(n) => sent += n,
                Err(_) => {
                    // The kernel takes no more now (or refused the next one): drop it and
                    // try the rest, as `try_send_to` one by one would.
                    self.failed += 1;
                    sent += 1;
                }
            }
        }
        self.lens.clear();
        self.dests.clear();
    }

    /// Datagrams dropped since the last call.
    pub fn take_failed(&mut self) -> u64 {
        std::mem::take(&mut self.failed)
    }
}

/// A batch and its socket as a peer set's [`Sink`]: str0m's transmits copied in, the fast
/// path's packets written in place.
pub struct BatchSink<'a> {
    /// Where the datagrams leave.
    pub socket: &'a UdpSocket,
    /// What gathers them.
    pub batch: &'a mut SendBatch,
}

impl<T> Sink<T> for BatchSink<'_> {
    fn transmit(&mut self, _: &T, t: &Transmit) -> bool {
        self.batch.push(self.socket, t)
    }

    fn fill(&mut self, to: SocketAddr, fill: &mut dyn FnMut(&mut [u8]) -> Option<usize>) -> bool {
        self.batch.push_with(self.socket, to, fill)
    }
}

/// Sends the datagrams in slots `first..` (lengths `lens`, addresses `dests`); returns how
/// many the kernel took (at least one, else the error).
#[cfg(target_os = "linux")]
fn send_many(
    socket: &UdpSocket,
    data: &[u8],
    lens: &[usize],
    dests: &[socket2::SockAddr],
    first: usize,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: mmsghdr is plain old data; every field used is set below.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let n = lens.len().min(BATCH);
    for k in 0..n {
        let slot = first + k;
        iovs[k] = libc::iovec {
            iov_base: data[slot * SLOT..].as_ptr() as *mut libc::c_void,
            iov_len: lens[k],
        };
        msgs[k].msg_hdr.msg_name = dests[k].as_ptr() as *mut libc::c_void;
        msgs[k].msg_hdr.msg_namelen = dests[k].len();
        msgs[k].msg_hdr.msg_iov = &mut iovs[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: `msgs[..n]` point into `data`, `iovs` and `dests`, all alive for the call;
        // the kernel only reads them.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    })
}

#[cfg(not(target_os = "linux"))]
fn send_many(
    _: &UdpSocket,
    _: &[u8],
    _: &[usize],
    _: &[socket2::SockAddr],
    _: usize,
) -> std::io::Result<usize> {
    unreachable!("only Linux batches")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn transmit(to: SocketAddr, from: SocketAddr, body: &[u8]) -> Transmit {
        Transmit {
            proto: str0m::net::Protocol::Udp,
            source: from,
            destination: to,
            contents: body.to_vec().into(),
        }
    }

    /// Every datagram of a batch that spans several system calls arrives whole, at its own
    /// address, in order per address.
    #[tokio::test]
    async fn a_fan_out_arrives_whole_at_every_address() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A socket the runtime has not yet seen writable takes nothing (as `try_send_to`).
        socket.writable().await.unwrap();
        let from = socket.local_addr().unwrap();
        let listeners: Vec<std::net::UdpSocket> = (0..5)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut batch = SendBatch::default();
        let frames = BATCH * 2 / listeners.len() + 3; // crosses two full batches
        for f in 0..frames {
            for (i, l) in listeners.iter().enumerate() {
                let body = vec![f as u8; 20 + i * 100];
                batch.push(&socket, &transmit(l.local_addr().unwrap(), from, &body));
            }
        }
        batch.flush(&socket);
        assert_eq!(batch.take_failed(), 0);
        for (i, l) in listeners.iter().enumerate() {
            l.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 2000];
            for f in 0..frames {
                let (n, src) = l.recv_from(&mut buf).unwrap();
                assert_eq!(src, from);
                assert_eq!(n, 20 + i * 100, "listener {i} frame {f}: its own length");
                assert!(
                    buf[..n].iter().all(|&b| b == f as u8),
                    "listener {i}: frame {f} in order"
                );
            }
        }
    }
}
