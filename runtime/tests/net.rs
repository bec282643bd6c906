//! `gmp::net` on the whole runtime: echo servers, 10,000 connections on a handful of
//! threads, timeouts on the runtime's timers, a peer that closes, running out of file
//! descriptors. Loopback only; every loop is bounded in count and every test in time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use gmp::Runtime;
use gmp::net::{TcpListener, TcpStream};
use testkit::{DEFAULT_LIMIT, Progress, Step, watch_with};

const ECHO: Step = Step {
    name: "echo: each client G writes a message and reads it back",
    invariant: "a G parked on WouldBlock is readied when its socket becomes ready (poller -> \
                PollDesc::ready -> the G's M)",
    book: "ch10-netpoll.html#in-the-runtime",
};

const TIMER_BESIDE_POLL: Step = Step {
    name: "sleeps of 10 ms while the idle M blocks in Poller::poll",
    invariant: "a timer armed earlier than the poll's timeout wakes the poll (unpark_m -> \
                Poller::wake, Go: netpollBreak), or the sleeper keeps waiting for sockets",
    book: "ch10-netpoll.html#in-the-runtime",
};

fn watched<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce(&Progress) -> T + Send + 'static,
) -> T {
    watch_with(what, limit, ECHO, gmp::dump_all, f)
}

/// Serves echo on `listener`: one G per connection, until `conns` connections were served.
fn echo_server(
    listener: TcpListener,
    conns: usize,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) {
    let mut handlers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (mut conn, _) = listener.accept().expect("accept");
        let (live, peak) = (live.clone(), peak.clone());
        handlers.push(gmp::go(move || {
            let now = live.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            live.fetch_sub(1, SeqCst);
        }));
    }
    for h in handlers {
        h.join().expect("an echo handler panicked");
    }
}

/// One client: `rounds` round trips of a 64-byte message that names the client and round.
fn echo_client(addr: SocketAddr, id: usize, rounds: usize) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut back = [0u8; 64];
    for round in 0..rounds {
        let mut msg = [b'.'; 64];
        let text = format!("client {id} round {round}");
        msg[..text.len()].copy_from_slice(text.as_bytes());
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        assert_eq!(
            back, msg,
            "client {id} got another message back in round {round}"
        );
    }
    Ok(())
}

#[test]
fn an_echo_server_serves_many_clients_round_trips_on_two_ps() {
    const CLIENTS: usize = 200;
    const ROUNDS: usize = 50;
    let done = watched(
        "echo: 200 clients x 50 round trips",
        DEFAULT_LIMIT,
        |progress| {
            let progress = progress.clone();
            let rt = Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let live = Arc::new(AtomicUsize::new(0));
                let server = gmp::go({
                    let peak = Arc::new(AtomicUsize::new(0));
                    move || echo_server(listener, CLIENTS, live, peak)
                });
                let clients: Vec<_> = (0..CLIENTS)
                    .map(|id| {
                        let progress = progress.clone();
                        gmp::go(move || {
                            let r = echo_client(addr, id, ROUNDS);
                            progress.tick();
                            r
                        })
                    })
                    .collect();
                let mut ok = 0;
                for c in clients {
                    c.join().unwrap().expect("an echo client failed");
                    ok += 1;
                }
                server.join().unwrap();
                ok
            })
        },
    );
    assert_eq!(done, CLIENTS, "every client finishes its round trips");
}

/// Threads of this process whose name starts with `gmp-` (the runtime's Ms and helpers).
fn runtime_threads() -> (usize, usize) {
    let mut gmp = 0;
    let mut all = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        all += 1;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("gmp-") {
            gmp += 1;
        }
    }
    (gmp, all)
}

fn nofile_soft() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` through a pointer to a live local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit");
    lim.rlim_cur
}

/// Raises the soft fd limit to `want` if the hard limit allows; returns the soft limit.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `nofile_soft`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur < want {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: setrlimit reads one `struct rlimit` from a pointer to a live local.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    nofile_soft()
}

const CLIENT_ENV: &str = "GMP_NET_TEST_CLIENT";
const TEN_K: usize = 10_000;

/// The client side of the 10,000-connection test, in a child process (one process cannot
/// hold both ends under a 20,000-descriptor limit): every connection does one round trip,
/// waits until all are connected, does a second, then closes.
fn ten_k_client(addr: SocketAddr) {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let failed = rt.block_on(move || {
        let all_connected = Arc::new(gmp::sync::WaitGroup::new());
        all_connected.add(TEN_K);
        let failed = Arc::new(AtomicUsize::new(0));
        let gs: Vec<_> = (0..TEN_K)
            .map(|id| {
                let (all, failed) = (all_connected.clone(), failed.clone());
                gmp::go(move || {
                    let r = (|| -> io::Result<()> {
                        let mut s = TcpStream::connect(addr)?;
                        let mut back = [0u8; 64];
                        s.write_all(&[7u8; 64])?;
                        s.read_exact(&mut back)?;
                        all.done();
                        all.wait();
                        s.write_all(&[9u8; 64])?;
                        s.read_exact(&mut back)?;
                        if back != [9u8; 64] {
                            return Err(io::Error::other("wrong echo"));
                        }
                        Ok(())
                    })();
                    if let Err(e) = r
                        && failed.fetch_add(1, SeqCst) < 3
                    {
                        eprintln!("client {id}: {e}");
                    }
                })
            })
            .collect();
        for g in gs {
            g.join().unwrap();
        }
        failed.load(SeqCst)
    });
    println!("CLIENT failed={failed}");
}

#[test]
fn ten_thousand_concurrent_echo_connections_are_served_by_a_few_threads() {
    if let Ok(addr) = std::env::var(CLIENT_ENV) {
        raise_nofile(2 * TEN_K as u64);
        ten_k_client(addr.parse().unwrap());
        return;
    }
    // The server in a process of its own: the thread count counts every `gmp-*` thread of
    // the process, and the other tests of this file run runtimes of their own beside it
    // (once 7 where this runtime had at most 4).
    testkit::isolated(
        "ten_thousand_concurrent_echo_connections_are_served_by_a_few_threads",
        Duration::from_secs(300),
        "the runtime crashed serving 10,000 connections",
        ten_k_server,
    );
}

/// The server side of the 10,000-connection test, in its own process (`testkit::isolated`).
fn ten_k_server() {
    let soft = raise_nofile(2 * TEN_K as u64);
    if soft < TEN_K as u64 + 100 {
        eprintln!(
            "SKIPPED: 10,000 connections need `ulimit -n` above {}; it is {soft} and the hard \
             limit allows no more",
            TEN_K + 100
        );
        return;
    }
    const PROCS: usize = 2;
    let (peak, threads, failed) = watch_with(
        "10,000 concurrent echo connections at P=2",
        Duration::from_secs(240),
        ECHO,
        gmp::dump_all,
        |progress| {
            let progress = progress.clone();
            let rt = Runtime::builder().procs(PROCS).build().unwrap();
            rt.block_on(move || {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let live = Arc::new(AtomicUsize::new(0));
                let peak = Arc::new(AtomicUsize::new(0));
                let server = gmp::go({
                    let (live, peak) = (live.clone(), peak.clone());
                    move || echo_server(listener, TEN_K, live, peak)
                });
                let exe = std::env::current_exe().unwrap();
                let mut child = Command::new(exe)
                    .args([
                        "ten_thousand_concurrent_echo_connections_are_served_by_a_few_threads",
                        "--exact",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CLIENT_ENV, addr.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start the client process");
                // Watch the server while the client runs: progress is connections served.
                let mut max_threads = (0, 0);
                let start = Instant::now();
                let status = loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        break Some(status);
                    }
                    if start.elapsed() > Duration::from_secs(200) || progress.cancelled() {
                        let _ = child.kill();
                        break None;
                    }
                    let t = runtime_threads();
                    max_threads = (max_threads.0.max(t.0), max_threads.1.max(t.1));
                    progress.tick();
                    gmp::time::sleep(Duration::from_millis(20));
                };
                let out = child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    status.is_some_and(|s| s.success()),
                    "the client process failed or took over 200 s:\n{text}"
                );
                // libtest may print "test name ... " on the same line first.
                let failed: usize = text
                    .split("CLIENT failed=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("the client printed no result:\n{text}"));
                server.join().unwrap();
                (peak.load(SeqCst), max_threads, failed)
            })
        },
    );
    assert_eq!(failed, 0, "{failed} of {TEN_K} client connections failed");
    assert_eq!(
        peak, TEN_K,
        "all {TEN_K} connections were open at once at the server (the client holds each until \
         all are connected)"
    );
    assert!(
        threads.0 <= PROCS + 4,
        "the runtime served {TEN_K} connections with {} threads of its own (gmp-*), more than \
         P + 4 = {}: a G waiting on a socket must park, not hold an M ({} threads in the \
         process, test harness included)",
        threads.0,
        PROCS + 4,
        threads.1
    );
    eprintln!(
        "10,000 connections at P={PROCS}: at most {} runtime threads ({} in the process)",
        threads.0, threads.1
    );
}

#[test]
fn a_read_timeout_ends_the_wait_with_timed_out_and_the_stream_still_works() {
    watched("read and write timeouts", DEFAULT_LIMIT, |_| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = gmp::go(move || {
                let (conn, _) = listener.accept().unwrap();
                // Say nothing for a while, then one byte, then read until the client closes.
                gmp::time::sleep(Duration::from_millis(300));
                (&conn).write_all(b"x").unwrap();
                let mut sink = Vec::new();
                let _ = (&conn).read_to_end(&mut sink);
            });
            let mut c = TcpStream::connect(addr).unwrap();
            assert!(
                c.set_read_timeout(Some(Duration::ZERO)).is_err(),
                "a zero timeout is an error"
            );
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(50)));
            let start = Instant::now();
            let mut b = [0u8; 1];
            let err = c.read(&mut b).expect_err("nothing to read for 300 ms");
            let waited = start.elapsed();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
            assert!(
                waited >= Duration::from_millis(50),
                "returned early: {waited:?}"
            );
            // The socket still works after a timeout: the byte arrives.
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"x");
            drop(c);
            server.join().unwrap();
        });
    });
}

#[test]
fn a_write_timeout_fires_when_the_peer_reads_nothing() {
    watched("write timeout", DEFAULT_LIMIT, |_| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = gmp::chan::rendezvous::<()>();
            let server = gmp::go(move || {
                let (conn, _) = listener.accept().unwrap();
                // Hold the connection without reading until the client is done.
                let _ = rx.recv();
                drop(conn);
            });
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_write_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let chunk = vec![0u8; 64 * 1024];
            let mut written = 0usize;
            // Bounded: the kernel buffers a few MiB at most on loopback.
            let err = loop {
                match c.write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) => break e,
                }
                assert!(
                    written < 1 << 30,
                    "wrote 1 GiB to a peer that reads nothing"
                );
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
            assert!(written > 0, "some data fits in the buffers first");
            tx.send(()).unwrap();
            server.join().unwrap();
        });
    });
}

#[test]
fn a_peer_that_closes_gives_end_of_stream_and_errors_never_a_panic() {
    watched("peer close", DEFAULT_LIMIT, |_| {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = gmp::go(move || {
                let (conn, peer) = listener.accept().unwrap();
                assert_eq!(conn.peer_addr().unwrap(), peer);
                (&conn).write_all(b"bye").unwrap();
                conn.shutdown(Shutdown::Write).unwrap();
                // Half-closed: the server can still read what the client sends.
                let mut got = [0u8; 2];
                (&conn).read_exact(&mut got).unwrap();
                assert_eq!(&got, b"ok");
                drop(conn); // now fully closed
            });
            let mut c = TcpStream::connect(addr).unwrap();
            assert_eq!(c.peer_addr().unwrap(), addr);
            c.set_nodelay(true).unwrap();
            assert!(c.nodelay().unwrap());
            let mut text = Vec::new();
            c.read_to_end(&mut text).unwrap();
            assert_eq!(
                text, b"bye",
                "read until end of stream after the peer's shutdown"
            );
            c.write_all(b"ok").unwrap();
            server.join().unwrap();
            // The peer is gone: writes fail with an io::Error (reset or broken pipe) within
            // a few tries, reads give end of stream or that error.
            let mut failed = None;
            for _ in 0..100 {
                if let Err(e) = c.write(&[1u8; 1024]) {
                    failed = Some(e);
                    break;
                }
                gmp::time::sleep(Duration::from_millis(5));
            }
            let e = failed.expect("writing to a closed peer fails within 100 tries");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
        });
    });
}

#[test]
fn sockets_outside_a_g_are_a_clear_error() {
    let err = TcpListener::bind("127.0.0.1:0").expect_err("no G here");
    assert!(err.to_string().contains("outside a G"), "{err}");
    let err = TcpStream::connect("127.0.0.1:9").expect_err("no G here");
    assert!(err.to_string().contains("outside a G"), "{err}");
}

#[test]
fn connect_to_a_closed_port_is_an_error_not_a_hang() {
    watched("connect refused", DEFAULT_LIMIT, |_| {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            // A port that was just free: bind, note it, close.
            let addr = {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let err = TcpStream::connect(addr).expect_err("nobody listens");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        });
    });
}

/// In a child process (its own fd limit): lower `ulimit -n` close to what is open, then
/// accept until it runs out: the error names `ulimit -n` and the limit, and the server
/// goes on serving once descriptors are free again.
#[test]
fn running_out_of_descriptors_names_ulimit_and_the_limit() {
    let run = testkit::run_in_child(
        "running_out_of_descriptors_names_ulimit_and_the_limit",
        Duration::from_secs(30),
        || {
            let rt = Runtime::builder().procs(1).build().unwrap();
            rt.block_on(|| {
                // The first socket makes the poller (three descriptors): with one left, the
                // socket opens and the poller cannot; that error is not kept for later.
                let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
                set_nofile(open);
                let e = TcpListener::bind("127.0.0.1:0").expect_err("no room for the poller");
                assert!(e.to_string().contains("ulimit -n"), "{e}");
                println!("POLLER {e}");
                set_nofile(nofile_hard());
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
                let limit = open + 40;
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: nofile_hard(),
                };
                // SAFETY: setrlimit reads one `struct rlimit` from a pointer to a live local.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
                let mut kept = Vec::new();
                let mut error = None;
                // Bounded: each round takes two descriptors, and only `limit` exist.
                for _ in 0..limit {
                    match TcpStream::connect(addr) {
                        Ok(c) => kept.push(c),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                    match listener.accept() {
                        Ok((s, _)) => kept.push(s),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                let e = error.expect("the descriptors ran out");
                let text = e.to_string();
                assert!(
                    text.contains("ulimit -n") && text.contains(&limit.to_string()),
                    "the error names `ulimit -n` and the limit {limit}: {text}"
                );
                println!("FDLIMIT {text}");
                // Free some: the listener still serves.
                kept.clear();
                let c = TcpStream::connect(addr).unwrap();
                let (s, _) = listener.accept().unwrap();
                drop((c, s));
            });
        },
    );
    assert!(run.success, "the child failed:\n{}", run.output);
    assert!(
        run.output.contains("FDLIMIT")
            && run.output.contains("POLLER")
            && run.output.contains("ulimit -n"),
        "{}",
        run.output
    );
}

/// Sets this process's soft descriptor limit (in a child process only).
fn set_nofile(soft: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: nofile_hard(),
    };
    // SAFETY: setrlimit reads one `struct rlimit` from a pointer to a live local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn nofile_hard() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `nofile_soft`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}

/// Once a socket exists, the idle M sleeps in the poller instead of its Parker: a timer
/// armed while it polls (earlier than anything it waits for) must still wake it on time.
#[test]
fn timers_still_fire_while_the_idle_m_blocks_in_the_poller() {
    // At P=2 the other M is the idle one, blocked in poll(None) when the main G arms its
    // timer, so only the timer's wake of that poll (Go: netpollBreak) ends the sleep.
    for procs in [1, 2] {
        watch_with(
            "sleeps beside a socket nobody writes to",
            DEFAULT_LIMIT,
            TIMER_BESIDE_POLL,
            gmp::dump_all,
            move |progress| {
                let progress = progress.clone();
                let rt = Runtime::builder().procs(procs).build().unwrap();
                rt.block_on(move || {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    // A reader that waits the whole test: the poller has a socket to watch.
                    let client = TcpStream::connect(addr).unwrap();
                    let (server, _) = listener.accept().unwrap();
                    let reader = gmp::go(move || {
                        let mut b = [0u8; 1];
                        (&server).read(&mut b)
                    });
                    for _ in 0..20 {
                        let start = Instant::now();
                        gmp::time::sleep(Duration::from_millis(10));
                        let slept = start.elapsed();
                        assert!(slept >= Duration::from_millis(10), "woke early: {slept:?}");
                        progress.tick();
                    }
                    drop(client); // the reader sees end of stream
                    assert_eq!(reader.join().unwrap().unwrap(), 0);
                });
            },
        );
    }
}

#[test]
fn sysmon_polls_the_network_while_the_only_m_never_runs_out_of_work() {
    watched("sysmon's network poll", DEFAULT_LIMIT, |_| {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let got = Arc::new(AtomicUsize::new(0));
            let reader = {
                let got = got.clone();
                gmp::go(move || {
                    let (mut conn, _) = listener.accept().unwrap();
                    let mut b = [0u8; 1];
                    conn.read_exact(&mut b).unwrap();
                    got.store(1, SeqCst);
                })
            };
            // Two Gs that yield to each other keep the one M busy: it never looks for work
            // with nothing to run, so only sysmon polls the sockets. Bounded: 5 s each.
            let busy: Vec<_> = (0..2)
                .map(|_| {
                    let got = got.clone();
                    gmp::go(move || {
                        let until = Instant::now() + Duration::from_secs(5);
                        while got.load(SeqCst) == 0 && Instant::now() < until {
                            gmp::yield_now();
                        }
                        got.load(SeqCst) == 1
                    })
                })
                .collect();
            // The peer is a plain thread: it connects and writes once the Gs are busy.
            let peer = std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                c.write_all(b"x").unwrap();
                std::thread::sleep(Duration::from_millis(100));
            });
            let served: Vec<bool> = busy.into_iter().map(|h| h.join().unwrap()).collect();
            reader.join().unwrap();
            peer.join().unwrap();
            assert_eq!(
                served,
                [true, true],
                "the reader got its byte only after the yielding Gs gave up at 5 s: nobody \
                 polled the network while the M was busy (sysmon's poll, Go: sysmon netpoll)"
            );
        });
    });
}
