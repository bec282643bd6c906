//! `gmp::net` at its edges, from the part-10 soundness review: a peer that resets while a G
//! is parked, timeouts racing readiness, a socket wait inside `gmp::blocking`, shutdown with
//! Gs parked on sockets, sockets that outlive their runtime, descriptors across runtimes,
//! and two Gs reading one socket. Loopback only; every loop bounded.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gmp::Runtime;
use gmp::net::{TcpListener, TcpStream};
use testkit::{DEFAULT_LIMIT, watchdog_with};

fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_with(what, DEFAULT_LIMIT, gmp::dump_all, f)
}

/// A std peer on a plain thread: connects to `addr`, waits `after`, then resets the
/// connection (SO_LINGER 0 and close send an RST, not a FIN).
fn resetting_peer(addr: std::net::SocketAddr, after: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(after);
        let s = socket2::Socket::from(s);
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    })
}

/// A std peer on a plain thread resets the connection (SO_LINGER 0) while a G is parked
/// reading: the read must end promptly with ConnectionReset (or EOF), never hang.
#[test]
fn peer_reset_while_parked_in_read() {
    watched("reset while reading", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = resetting_peer(addr, Duration::from_millis(100));
            let (mut conn, _) = listener.accept().unwrap();
            let start = Instant::now();
            let mut b = [0u8; 16];
            let r = conn.read(&mut b);
            eprintln!("read after reset: {r:?} in {:?}", start.elapsed());
            match r {
                Ok(0) => {}
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
                Ok(n) => panic!("read {n} bytes from a reset peer"),
            }
            // A write afterwards fails, never a panic or SIGPIPE.
            let w = conn.write(b"x");
            eprintln!("write after reset: {w:?}");
            assert!(w.is_err());
            peer.join().unwrap();
        });
    });
}

/// The peer resets while a G is parked writing into full buffers.
#[test]
fn peer_reset_while_parked_in_write() {
    watched("reset while writing", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = resetting_peer(addr, Duration::from_millis(300));
            let (mut conn, _) = listener.accept().unwrap();
            let chunk = vec![7u8; 64 * 1024];
            let start = Instant::now();
            let mut written = 0usize;
            let e = loop {
                match conn.write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) => break e,
                }
                assert!(written < 1 << 30);
            };
            eprintln!(
                "write after reset: {e} ({:?}) after {written} bytes, {:?}",
                e.kind(),
                start.elapsed()
            );
            assert!(matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ));
            peer.join().unwrap();
        });
    });
}

/// Read timeouts that race the data's arrival: every byte the peer sends is read exactly
/// once, in order, whatever the timeouts did, and nothing hangs.
#[test]
fn timeouts_racing_readiness_lose_no_byte() {
    watched("timeouts racing readiness", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            const N: u32 = 400;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = gmp::go(move || {
                let (conn, _) = listener.accept().unwrap();
                conn.set_nodelay(true).unwrap();
                for i in 0..N {
                    // Around the reader's 1 ms timeout.
                    let spin = Instant::now() + Duration::from_micros(500 + (i as u64 % 7) * 150);
                    while Instant::now() < spin {
                        gmp::yield_now();
                    }
                    (&conn).write_all(&[(i % 251) as u8]).unwrap();
                }
                let mut sink = [0u8; 1];
                let _ = (&conn).read(&mut sink);
            });
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let (mut got, mut timeouts) = (0u32, 0u32);
            while got < N {
                let mut b = [0u8; 1];
                match (&c).read(&mut b) {
                    Ok(1) => {
                        assert_eq!(b[0], (got % 251) as u8, "byte {got} out of order");
                        got += 1;
                    }
                    Ok(n) => panic!("read {n}"),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => timeouts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            eprintln!("{N} bytes, {timeouts} timeouts");
            c.shutdown(Shutdown::Both).unwrap();
            drop(c);
            server.join().unwrap();
        });
    });
}

/// A socket op that would block inside gmp::blocking: what happens, and is the socket
/// still usable afterwards?
#[test]
fn net_wait_inside_blocking() {
    watched("net inside blocking", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = gmp::go(move || {
                let (conn, _) = listener.accept().unwrap();
                gmp::time::sleep(Duration::from_millis(200));
                (&conn).write_all(b"xy").unwrap();
                let mut sink = [0u8; 1];
                let _ = (&conn).read(&mut sink);
            });
            let c = Arc::new(TcpStream::connect(addr).unwrap());
            let c2 = c.clone();
            let r = gmp::go(move || {
                let mut b = [0u8; 1];
                gmp::blocking(|| (&*c2).read(&mut b)).map(|r| r.map(|_| b[0]))
            })
            .join();
            match &r {
                Ok(v) => eprintln!("read inside blocking returned {v:?}"),
                Err(p) => eprintln!("read inside blocking panicked: {p}"),
            }
            // Now read on the same socket from a plain G.
            let mut b = [0u8; 1];
            let again = (&*c).read(&mut b);
            eprintln!("read afterwards: {again:?}");
            assert!(
                again.is_ok(),
                "the socket is stuck after a wait inside blocking: {again:?}"
            );
            c.shutdown(Shutdown::Both).unwrap();
            server.join().unwrap();
        });
    });
}

/// Many Gs parked on sockets (some with timeouts) when the runtime shuts down: no hang,
/// no abort, no leaked thread.
#[test]
fn shutdown_with_gs_parked_on_sockets() {
    watched("shutdown with parked Gs", || {
        for round in 0..20 {
            let rt = Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let mut keep = Vec::new();
                for i in 0..20 {
                    let c = TcpStream::connect(addr).unwrap();
                    let (s, _) = listener.accept().unwrap();
                    if i % 2 == 0 {
                        c.set_read_timeout(Some(Duration::from_millis(5 + round)))
                            .unwrap();
                    }
                    gmp::go(move || {
                        let mut b = [0u8; 1];
                        let _ = (&c).read(&mut b);
                        let _ = (&c).read(&mut b);
                    });
                    keep.push(s);
                }
                gmp::time::sleep(Duration::from_millis(round));
                // return with Gs parked; `keep` drops here
            });
            drop(rt);
        }
    });
}

/// A stream made in one runtime, dropped on a plain thread after the runtime is gone.
#[test]
fn a_stream_dropped_after_its_runtime() {
    watched("drop after runtime", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        let (a, b) = rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = listener.accept().unwrap();
            (c, s)
        });
        drop(rt);
        // Data already there is read anywhere; a read that would block is an error.
        (&b).write_all(b"z").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut x = [0u8; 1];
        assert_eq!((&a).read(&mut x).unwrap(), 1);
        let e = (&a).read(&mut x).expect_err("would block outside a G");
        eprintln!("{e}");
        drop(a);
        drop(b);
    });
}

/// The asm engine cannot unwind a G left parked at shutdown: its stack, and the sockets
/// and runtime it holds, are leaked by design (`engine.rs`).
fn asm() -> bool {
    Runtime::builder().procs(1).build().unwrap().engine() == gmp::Engine::Asm
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runtimes that made sockets (G parked at shutdown, socket owned by the G, or held by the
/// caller past the runtime's drop) give every descriptor back: epoll, eventfd, sockets.
#[test]
fn no_descriptor_leak_across_runtimes() {
    if asm() {
        return;
    }
    // In a process of its own: it counts the process's descriptors, which the other tests of
    // this file open and close meanwhile.
    testkit::isolated(
        "no_descriptor_leak_across_runtimes",
        DEFAULT_LIMIT,
        "",
        no_descriptor_leak_across_runtimes_body,
    );
}

fn no_descriptor_leak_across_runtimes_body() {
    watched("fd leak", || {
        // Warm up (std's lazy fds, the test harness).
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| drop(TcpListener::bind("127.0.0.1:0").unwrap()));
        drop(rt);
        let before = open_fds();
        let mut held = Vec::new();
        for i in 0..30 {
            let rt = Runtime::builder().procs(2).build().unwrap();
            let outside = rt.block_on(move || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let c = Arc::new(TcpStream::connect(addr).unwrap());
                let (s, _) = listener.accept().unwrap();
                let c2 = c.clone();
                gmp::go(move || {
                    let mut b = [0u8; 1];
                    let _ = (&*c2).read(&mut b);
                });
                gmp::time::sleep(Duration::from_millis(5));
                if i % 2 == 0 { Some((c, s)) } else { None }
            });
            drop(rt);
            held.push(outside);
        }
        let mid = open_fds();
        drop(held);
        let after = open_fds();
        eprintln!("fds: before {before}, with 15 pairs held {mid}, after {after}");
        assert!(after <= before + 2, "leaked {} fds", after - before);
    });
}

fn leak_case(hold: bool, park: bool, n: usize) -> (usize, usize) {
    let rt = Runtime::builder().procs(1).build().unwrap();
    rt.block_on(|| drop(TcpListener::bind("127.0.0.1:0").unwrap()));
    drop(rt);
    let before = open_fds();
    let mut held = Vec::new();
    for _ in 0..n {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let outside = rt.block_on(move || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let c = Arc::new(TcpStream::connect(addr).unwrap());
            let (s, _) = listener.accept().unwrap();
            if park {
                let c2 = c.clone();
                gmp::go(move || {
                    let mut b = [0u8; 1];
                    let _ = (&*c2).read(&mut b);
                });
                gmp::time::sleep(Duration::from_millis(5));
            }
            if hold { Some((c, s)) } else { None }
        });
        drop(rt);
        held.push(outside);
    }
    drop(held);
    (before, open_fds())
}

#[test]
fn leak_matrix() {
    if asm() {
        return;
    }
    // In a process of its own, as the test above.
    testkit::isolated("leak_matrix", DEFAULT_LIMIT, "", leak_matrix_body);
}

fn leak_matrix_body() {
    watched("leak matrix", || {
        for (hold, park) in [(false, false), (true, false), (false, true), (true, true)] {
            let (b, a) = leak_case(hold, park, 10);
            eprintln!("hold={hold} park={park}: fds before {b}, after 10 runtimes {a}");
            assert_eq!(
                a,
                b,
                "10 runtimes (a socket held past the runtime: {hold}, a G parked on it: {park}) \
                 left {} descriptors open: the poller's epoll fd and eventfd leak when \
                 something keeps the runtime alive",
                a.saturating_sub(b)
            );
        }
    });
}

/// Two Gs read one socket at once (allowed: the second may get ResourceBusy). With a
/// correct descriptor this must never stop the runtime nor hang.
#[test]
fn two_readers_of_one_socket_race() {
    watchdog_with(
        "two readers",
        Duration::from_secs(60),
        gmp::dump_all,
        || {
            let rt = Runtime::builder().procs(2).build().unwrap();
            rt.block_on(|| {
                const BYTES: usize = 200_000;
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let writer = std::thread::spawn(move || {
                    let mut conn = std::net::TcpStream::connect(addr).unwrap();
                    conn.set_nodelay(true).unwrap();
                    for i in 0..BYTES {
                        conn.write_all(&[1u8]).unwrap();
                        if i % 50 == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    drop(conn);
                });
                let c = Arc::new(listener.accept().unwrap().0);
                let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let readers: Vec<_> = (0..2)
                    .map(|_| {
                        let (c, total, busy) = (c.clone(), total.clone(), busy.clone());
                        gmp::go(move || {
                            let mut b = [0u8; 1];
                            while total.load(std::sync::atomic::Ordering::SeqCst) < BYTES {
                                match (&*c).read(&mut b) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        total.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                                    }
                                    Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                                        busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                        gmp::time::sleep(Duration::from_micros(300));
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        })
                    })
                    .collect();
                for r in readers {
                    r.join().unwrap();
                }
                eprintln!(
                    "read {} bytes, {} busy",
                    total.load(std::sync::atomic::Ordering::SeqCst),
                    busy.load(std::sync::atomic::Ordering::SeqCst)
                );
                assert_eq!(
                    total.load(std::sync::atomic::Ordering::SeqCst),
                    BYTES,
                    "two readers of one socket must read every byte between them"
                );
                writer.join().unwrap();
            });
        },
    );
}
