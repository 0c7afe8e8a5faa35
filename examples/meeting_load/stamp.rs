//! The kernel's receive time of each datagram (`SO_TIMESTAMPNS`): the latency a listener sees
//! without this process's own queueing (one thread serves every listener here, so the time it
//! gets to a packet says more about this tool than about the server under test).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel to stamp every datagram `socket` receives.
pub fn enable(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
}

/// Receives one datagram with its kernel time stamp (now, if the kernel gave none).
pub async fn recv(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, SystemTime)> {
    socket
        .async_io(Interest::READABLE, || recv_now(socket, buf))
        .await
}

fn recv_now(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, SystemTime)> {
    // SAFETY: every pointer handed to recvmsg points into a live local of the stated length;
    // the control messages are read with the CMSG macros within `controllen`.
    unsafe {
        let mut from: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut at = SystemTime::now();
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                at = UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let addr = match from.ss_family as libc::c_int {
            libc::AF_INET => {
                let a: libc::sockaddr_in = std::ptr::read_unaligned(
                    (&from as *const _ as *const libc::sockaddr_in).cast(),
                );
                SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                ))
            }
            _ => return Err(std::io::Error::other("not an IPv4 sender")),
        };
        Ok((n as usize, addr, at))
    }
}

/// Latencies in 10 µs buckets up to 100 ms (the last bucket holds everything above).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

const BUCKET: Duration = Duration::from_micros(10);
const BUCKETS: usize = 10_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Counts one latency.
    pub fn record(&self, d: Duration) {
        let i = ((d.as_nanos() / BUCKET.as_nanos()) as usize).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now (to subtract a window's start from its end).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Quantiles `qs` of what was counted between `before` and `after` (bucket upper bounds), or
    /// `None` when nothing was.
    pub fn quantiles(before: &[u64], after: &[u64], qs: &[f64]) -> Option<Vec<Duration>> {
        let window: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let total: u64 = window.iter().sum();
        if total == 0 {
            return None;
        }
        Some(
            qs.iter()
                .map(|q| {
                    let rank = (q * total as f64).ceil() as u64;
                    let mut seen = 0;
                    let i = window
                        .iter()
                        .position(|n| {
                            seen += n;
                            seen >= rank.max(1)
                        })
                        .unwrap_or(BUCKETS - 1);
                    BUCKET * (i as u32 + 1)
                })
                .collect(),
        )
    }
}
