//! Load tool: the machine's floor under a room's fan-out. One sender sends the same-sized
//! datagram to N receiver sockets every 20 ms through the bridge's own batch
//! ([`SendBatch`], `sendmmsg` per 64) and nothing else: no SRTP, no RTP header, no room. What
//! the sender's thread then spends per datagram is what the kernel (and this VM) charges for
//! one datagram on loopback, including the receiving socket's side, which loopback runs in the
//! sender's system call. The bridge's pass-through cannot do better than this, so its
//! listeners per core are reported beside this figure (BENCHMARKS.md, "The kernel's floor").
//!
//! ```sh
//! cargo build --release --example fanout_floor
//! target/release/examples/fanout_floor 1000                   # N receivers, one sender thread
//! target/release/examples/fanout_floor 1000 --threads 2       # the fan-out split like the bridge's
//! target/release/examples/fanout_floor 1000 --remote          # receivers as if across a network
//! target/release/examples/fanout_floor 1000 --size 120 --seconds 10
//! target/release/examples/fanout_floor 10000 --tcp --rate 10 --size 300   # an EGW event's fan-out
//! ```
//!
//! `--poll-ms M`: the receivers never wait in `epoll_wait`; they sleep M ms, then read what
//! came. On loopback the sender's system call also wakes a receiver asleep in `epoll_wait`,
//! and on a VM waking an idle vCPU is an inter-processor interrupt that costs the sender a VM
//! exit; across a network that wake-up is on the receiver's own machine.
//!
//! `--remote`: every datagram is dropped at loopback's egress (`testkit::egress_drop`; root and
//! nftables) after the sender's whole UDP/IP stack, so the sender no longer pays loopback's
//! delivery to the receiving socket: the floor with the receivers across a network (less the
//! network card's driver), beside `meeting_load --remote`.
//!
//! `--tcp` is the floor under the EGW fan-out instead: N loopback TCP connections, the same
//! frame written to each (one `send` per connection, as the bridge's WebSocket writes do),
//! `--rate` times a second.
//!
//! Prints the sender's CPU per datagram (its thread's CPU clock, user and kernel), the
//! listeners per core that leaves at 50 packets a second, the fan-out's duration (the 20 ms
//! tick to the last datagram handed to the kernel, which on loopback is also when the last
//! receiver's kernel time stamp is taken; and without the timer's lateness, from the first
//! sender's wake-up, as the bridge's fan-out starts when a packet arrives) and what the
//! receivers got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pttbridge::sides::meeting::rtc::send_batch::SendBatch;

/// Packets per second of one Opus talker (20 ms frames).
const PACKETS_PER_SECOND: u64 = 50;

struct Args {
    receivers: usize,
    threads: usize,
    size: usize,
    seconds: u64,
    tcp: bool,
    rate: u64,
    poll_ms: u64,
    remote: bool,
}

fn args() -> Args {
    let mut a = Args {
        receivers: 1000,
        threads: 1,
        size: 100,
        seconds: 10,
        tcp: false,
        rate: PACKETS_PER_SECOND,
        poll_ms: 0,
        remote: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--threads" => a.threads = value("--threads").max(1),
            "--size" => a.size = value("--size").clamp(12, 1400),
            "--seconds" => a.seconds = value("--seconds").max(1) as u64,
            "--rate" => a.rate = value("--rate").clamp(1, 1000) as u64,
            "--tcp" => a.tcp = true,
            "--remote" => a.remote = true,
            "--poll-ms" => a.poll_ms = value("--poll-ms") as u64,
            n => a.receivers = n.parse().expect("N receivers, a number"),
        }
    }
    a
}

/// This thread's CPU time (user and system) so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one sender thread measured.
struct SenderReport {
    cpu: Duration,
    sent: u64,
    failed: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `f` to its end on a single-threaded runtime of this thread's own (the receivers'
/// thread and each sender's).
fn on_own_runtime<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// Where one sender thread sends: datagrams to addresses, or frames into TCP connections.
enum Share {
    Udp(Vec<SocketAddr>),
    Tcp(Vec<std::net::TcpStream>),
}

/// Receives on `sockets` (UDP) or `streams` (TCP), one task each on one thread, as the
/// meeting_load listeners and the events-load clients do; counts what arrives.
fn receive(
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpStream>,
    poll_ms: u64,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Duration {
    on_own_runtime(async move {
        let start = thread_cpu();
        for s in udp {
            s.set_nonblocking(true).unwrap();
            let s = tokio::net::UdpSocket::from_std(s).unwrap();
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while s.recv(&mut buf).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for s in tcp {
            use tokio::io::AsyncReadExt;
            s.set_nonblocking(true).unwrap();
            let mut s = tokio::net::TcpStream::from_std(s).unwrap();
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
        if poll_ms > 0 {
            // Asleep, but not in `epoll_wait`: a delivery wakes nobody (see `--poll-ms`); then
            // the runtime polls the sockets without blocking, as this task is ready at once.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(poll_ms));
                tokio::task::yield_now().await;
            }
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        thread_cpu() - start
    })
}

/// N connected loopback TCP pairs: (the sending ends, the receiving ends).
fn tcp_pairs(n: usize) -> (Vec<std::net::TcpStream>, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = listener.local_addr().unwrap();
    let (mut near, mut far) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = std::net::TcpStream::connect(at).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nodelay(true).unwrap();
        server.set_nonblocking(true).unwrap();
        near.push(server);
        far.push(client);
    }
    (near, far)
}

/// Sends one tick to everything in `share`; counts what the kernel did not take now.
fn send_tick(
    share: &mut Share,
    batch: &mut SendBatch,
    socket: &tokio::net::UdpSocket,
    payload: &[u8],
    failed: &mut u64,
) -> u64 {
    match share {
        Share::Udp(addrs) => {
            for to in addrs.iter() {
                batch.push_with(socket, *to, &mut |buf| {
                    buf[..payload.len()].copy_from_slice(payload);
                    Some(payload.len())
                });
            }
            batch.flush(socket);
            addrs.len() as u64
        }
        Share::Tcp(streams) => {
            use std::io::Write;
            for s in streams.iter_mut() {
                if !matches!(s.write(payload), Ok(n) if n == payload.len()) {
                    *failed += 1;
                }
            }
            streams.len() as u64
        }
    }
}

/// Raises this process's open-file limit to its hard limit (N TCP pairs take 2 N).
fn raise_open_files() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit for the calls to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() {
    let a = args();
    raise_open_files();
    assert!(!(a.tcp && a.remote), "--remote drops UDP (RTP) only");
    let mut drop_rule = None;
    let (udp, tcp, mut shares) = if a.tcp {
        let (near, far) = tcp_pairs(a.receivers);
        let share = a.receivers.div_ceil(a.threads);
        let mut near = near.into_iter();
        let shares: Vec<Share> = (0..a.threads)
            .map(|_| Share::Tcp(near.by_ref().take(share).collect()))
            .collect();
        (Vec::new(), far, shares)
    } else {
        let sockets: Vec<std::net::UdpSocket> = (0..a.receivers)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a receiver"))
            .collect();
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        if a.remote {
            let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
            drop_rule = Some(testkit::egress_drop::EgressDrop::install(&ports));
        }
        let shares = addrs
            .chunks(a.receivers.div_ceil(a.threads))
            .map(|c| Share::Udp(c.to_vec()))
            .collect();
        (sockets, Vec::new(), shares)
    };

    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || receive(udp, tcp, a.poll_ms, received, stop))
    };

    // Senders: each its own socket and batch and its own contiguous share, all on the same
    // tick; a tick's fan-out ends when the slowest share is sent.
    let period = Duration::from_micros(1_000_000 / a.rate);
    let ticks = a.seconds * a.rate;
    let t0 = Instant::now() + Duration::from_millis(200);
    let barrier = Arc::new(std::sync::Barrier::new(shares.len()));
    let senders: Vec<_> = shares
        .drain(..)
        .map(|mut share| {
            let barrier = barrier.clone();
            let size = a.size;
            std::thread::spawn(move || {
                // Driven by this runtime: the socket's readiness is what `SendBatch` asks.
                on_own_runtime(async move {
                    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    socket.writable().await.unwrap();
                    let mut batch = SendBatch::default();
                    let mut ends = Vec::with_capacity(ticks as usize);
                    // An RTP header's first two bytes (version 2, payload type 111), as what
                    // `--remote` drops is RTP.
                    let mut payload = vec![0x5au8; size];
                    payload[..2].copy_from_slice(&[0x80, 111]);
                    let (mut sent, mut failed) = (0u64, 0u64);
                    barrier.wait();
                    let cpu0 = thread_cpu();
                    for k in 0..ticks {
                        let tick = t0 + period * k as u32;
                        tokio::time::sleep_until(tick.into()).await;
                        let woke = tick.elapsed();
                        payload[4..12].copy_from_slice(&k.to_be_bytes());
                        sent += send_tick(&mut share, &mut batch, &socket, &payload, &mut failed);
                        ends.push((woke, tick.elapsed()));
                    }
                    let report = SenderReport {
                        cpu: thread_cpu() - cpu0,
                        sent,
                        failed: failed + batch.take_failed(),
                    };
                    (report, ends)
                })
            })
        })
        .collect();

    let mut cpu = Duration::ZERO;
    let (mut sent, mut failed) = (0, 0);
    // Per tick: the first sender's wake-up and the last datagram, both after the tick.
    let mut spans = vec![(Duration::MAX, Duration::ZERO); ticks as usize];
    for s in senders {
        let (r, ends) = s.join().expect("sender");
        cpu += r.cpu;
        sent += r.sent;
        failed += r.failed;
        for ((first, last), (woke, end)) in spans.iter_mut().zip(ends) {
            *first = (*first).min(woke);
            *last = (*last).max(end);
        }
    }
    let mut slowest: Vec<Duration> = spans.iter().map(|s| s.1).collect();
    let mut sending: Vec<Duration> = spans.iter().map(|s| s.1.saturating_sub(s.0)).collect();
    sending.sort();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let receiver_cpu = receiver.join().expect("receiver");
    slowest.sort();

    let wall = a.seconds as f64;
    let per_send = cpu.as_secs_f64() * 1e6 / sent.max(1) as f64;
    let got = if a.tcp {
        received.load(Ordering::Relaxed) / a.size as u64
    } else {
        received.load(Ordering::Relaxed)
    };
    let (what, unit) = if a.tcp {
        ("TCP connections", "write")
    } else {
        ("UDP receivers", "datagram")
    };
    println!(
        "fan-out floor: {} {what}, {} sender thread(s), {}-byte {unit}s, {} a second, {} s",
        a.receivers, a.threads, a.size, a.rate, a.seconds
    );
    println!(
        "sender CPU {:.1} % of a core: {per_send:.2} µs per {unit}, {:.0} {unit}s per second per core",
        cpu.as_secs_f64() * 100.0 / wall,
        1e6 / per_send,
    );
    if !a.tcp {
        println!(
            "= {:.0} listeners per core at {PACKETS_PER_SECOND} packets a second",
            1e6 / (per_send * PACKETS_PER_SECOND as f64),
        );
    }
    println!(
        "fan-out of one tick (tick → last {unit} handed to the kernel): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        percentile(&slowest, 0.5).as_secs_f64() * 1e3,
        percentile(&slowest, 0.9).as_secs_f64() * 1e3,
        percentile(&slowest, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "of which sending (first sender awake → last {unit} handed to the kernel, without the timer's lateness): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        percentile(&sending, 0.5).as_secs_f64() * 1e3,
        percentile(&sending, 0.9).as_secs_f64() * 1e3,
        percentile(&sending, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "receivers (one thread) {:.1} % of a core; sent {sent}, not taken by the kernel {failed}, received {got}: loss {:.2} %",
        receiver_cpu.as_secs_f64() * 100.0 / wall,
        100.0 * sent.saturating_sub(got) as f64 / sent.max(1) as f64
    );
    if let Some(rule) = &drop_rule {
        println!(
            "--remote: {} dropped at loopback's egress (all of them: the loss above is expected)",
            rule.dropped()
        );
    }
}
