//! Tests for part 10, `netpoll`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 10, so the first failing one names the step to
//! work on: 1, a `PollDesc` on one thread (prepare, park, ready, close); 2, the same
//! descriptor with threads standing in for Gs and for the poller (the lost wake-up); 3, the
//! `Poller` on real loopback sockets (register, poll, write readiness, 1,000 connections); 4, waking the
//! poller and sharing it between threads, and a small stand-in runtime that parks a reader
//! and closes its socket; 5, the error when file descriptors run out.
//! Every socket is on 127.0.0.1; every loop is bounded in rounds and watched by
//! `testkit::watch`, which fails a body that makes no progress for 5 s naming the step.
//!
//! The loom models of the descriptor and of the wake flag are `tests/loom.rs` (chapter 10,
//! "How to check").
//! `whole_runtime_…` tests, at the end, run the gmp runtime on your part (feature
//! `mine-10`): `gmp::net`'s sockets park their Gs on your `PollDesc`, and the runtime's idle
//! M blocks in your `Poller::poll`.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use netpoll::{Closed, Dir, Interest, PollDesc, Poller, Prepared, Ready, State, Token, WakeFlag};
use testkit::{DEFAULT_LIMIT, Progress, Step, watch, watch_with};

testkit::side_by_side!();

const STEP1: &str = "ch10-netpoll.html#step-1";
const STEP2: &str = "ch10-netpoll.html#step-2";
const STEP3: &str = "ch10-netpoll.html#step-3";
const STEP4: &str = "ch10-netpoll.html#step-4";
const STEP5: &str = "ch10-netpoll.html#step-5";

fn tok(v: u64) -> Token {
    Token::new(NonZeroU64::new(v).expect("tests use tokens from 1 on"))
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

// ---------------------------------------------------------------------------------------
// Step 1: one descriptor, one thread.

#[test]
fn step1_prepare_park_ready_then_the_woken_g_consumes_the_readiness() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(
        pd.state(Dir::Read),
        State::Idle,
        "a new descriptor waits for nothing (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Wait,
        "prepare on an idle direction announces the wait (NIL -> WAIT) (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Waiting,
        "after prepare: WAIT (book: {STEP1})"
    );
    assert!(
        pd.park(Dir::Read, tok(5)),
        "park after a Wait with nothing in between must commit the sleep (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Parked(tok(5)),
        "after park: G 5 is parked (book: {STEP1})"
    );
    assert_eq!(
        pd.ready(Dir::Read),
        Some(tok(5)),
        "ready on a parked direction must return the parked G, to be woken (book: {STEP1})"
    );
    assert_eq!(
        pd.ready(Dir::Read),
        None,
        "a second ready must not hand out G 5 again: it was already woken (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Ready,
        "the woken G's prepare must find the readiness ready() left, and consume it (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Idle,
        "consumed readiness leaves NIL (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Wait,
        "and the next wait starts afresh (book: {STEP1})"
    );
}

#[test]
fn step1_readiness_before_anyone_waits_is_kept_once() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(
        pd.ready(Dir::Read),
        None,
        "nobody is parked, so nobody to wake (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Ready,
        "the readiness must be kept for the next prepare (book: {STEP1})"
    );
    assert_eq!(
        pd.ready(Dir::Read),
        None,
        "two events with nobody waiting coalesce (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Ready,
        "prepare must consume the kept readiness: the G tries again instead of sleeping (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Wait,
        "two coalesced events are one try, not two (book: {STEP1})"
    );
}

#[test]
fn step1_readiness_between_prepare_and_park_cancels_the_sleep() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(pd.prepare(Dir::Write), Prepared::Wait, "book: {STEP1}");
    assert_eq!(
        pd.ready(Dir::Write),
        None,
        "the G prepared but has not parked: no G to wake yet (book: {STEP1})"
    );
    assert!(
        !pd.park(Dir::Write, tok(9)),
        "lost wake-up: readiness arrived between prepare and park, and park still committed \
         the sleep; nobody will wake G 9 (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Write),
        Prepared::Ready,
        "after a refused park the G's prepare must find the readiness (book: {STEP1})"
    );
}

#[test]
fn step1_the_two_directions_are_independent() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(pd.prepare(Dir::Read), Prepared::Wait, "book: {STEP1}");
    assert!(pd.park(Dir::Read, tok(1)), "book: {STEP1}");
    assert_eq!(
        pd.ready(Dir::Write),
        None,
        "write readiness must not wake the reader (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Parked(tok(1)),
        "the reader is still parked (book: {STEP1})"
    );
    assert_eq!(
        pd.prepare(Dir::Write),
        Prepared::Ready,
        "the write readiness is kept (book: {STEP1})"
    );
    assert_eq!(pd.prepare(Dir::Write), Prepared::Wait, "book: {STEP1}");
    assert!(
        pd.park(Dir::Write, tok(2)),
        "a writer parks beside the reader (book: {STEP1})"
    );
    assert_eq!(pd.ready(Dir::Write), Some(tok(2)), "book: {STEP1}");
    assert_eq!(pd.ready(Dir::Read), Some(tok(1)), "book: {STEP1}");
}

#[test]
fn step1_a_second_waiter_is_busy_and_a_park_without_prepare_is_refused() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert!(
        !pd.park(Dir::Read, tok(3)),
        "park without a prepare (the word is NIL, not WAIT) must not commit a sleep (book: {STEP1})"
    );
    assert_eq!(
        pd.state(Dir::Read),
        State::Idle,
        "a refused park changes nothing (book: {STEP1})"
    );
    assert_eq!(pd.prepare(Dir::Read), Prepared::Wait, "book: {STEP1}");
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Busy,
        "a second G may not wait in a direction that has a waiter (book: {STEP1})"
    );
    assert!(pd.park(Dir::Read, tok(3)), "book: {STEP1}");
    assert_eq!(
        pd.prepare(Dir::Read),
        Prepared::Busy,
        "G 3 is parked there (book: {STEP1})"
    );
    assert!(
        !pd.park(Dir::Read, tok(4)),
        "a second park must not replace G 3 (book: {STEP1})"
    );
    assert_eq!(
        pd.ready(Dir::Read),
        Some(tok(3)),
        "G 3 is still the one to wake (book: {STEP1})"
    );
}

#[test]
fn step1_close_wakes_both_directions_and_stays_closed() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(pd.prepare(Dir::Read), Prepared::Wait, "book: {STEP1}");
    assert!(pd.park(Dir::Read, tok(11)), "book: {STEP1}");
    assert_eq!(pd.prepare(Dir::Write), Prepared::Wait, "book: {STEP1}");
    assert!(pd.park(Dir::Write, tok(12)), "book: {STEP1}");
    assert!(!pd.is_closed(), "book: {STEP1}");
    assert_eq!(
        pd.close(),
        Closed {
            read: Some(tok(11)),
            write: Some(tok(12))
        },
        "close must hand back both parked Gs, so the runtime wakes them (book: {STEP1})"
    );
    assert!(pd.is_closed(), "book: {STEP1}");
    for dir in [Dir::Read, Dir::Write] {
        assert_eq!(
            pd.prepare(dir),
            Prepared::Closed,
            "{dir:?}: a woken G must learn of the close (book: {STEP1})"
        );
        assert_eq!(
            pd.ready(dir),
            None,
            "{dir:?}: readiness after close wakes nobody (book: {STEP1})"
        );
        assert_eq!(
            pd.prepare(dir),
            Prepared::Closed,
            "{dir:?}: ready must not reopen a closed descriptor (book: {STEP1})"
        );
        assert!(
            !pd.park(dir, tok(13)),
            "{dir:?}: nobody may sleep on a closed descriptor (book: {STEP1})"
        );
    }
    assert_eq!(
        pd.close(),
        Closed::default(),
        "a second close wakes nobody (book: {STEP1})"
    );
}

#[test]
fn step1_close_between_prepare_and_park_refuses_the_park() {
    let _outcome = testkit::record!();
    let pd = PollDesc::new();
    assert_eq!(pd.prepare(Dir::Read), Prepared::Wait, "book: {STEP1}");
    assert_eq!(
        pd.close(),
        Closed::default(),
        "no G had parked yet (book: {STEP1})"
    );
    assert!(
        !pd.park(Dir::Read, tok(21)),
        "lost wake-up: the close came between prepare and park, and park still committed the \
         sleep; nobody will wake G 21 (book: {STEP1})"
    );
    assert_eq!(pd.prepare(Dir::Read), Prepared::Closed, "book: {STEP1}");
}

#[test]
fn step1_every_token_up_to_the_largest_comes_back_intact() {
    let _outcome = testkit::record!();
    for v in [1, 2, 3, 4, 5, 0xdead_beef, Token::MAX - 1, Token::MAX] {
        let pd = PollDesc::new();
        assert_eq!(pd.prepare(Dir::Read), Prepared::Wait, "book: {STEP1}");
        assert!(pd.park(Dir::Read, tok(v)), "book: {STEP1}");
        assert_eq!(
            pd.ready(Dir::Read),
            Some(tok(v)),
            "token {v:#x} must come back as it was parked (a token shares its word with the \
             two state bits) (book: {STEP1})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: threads stand in for Gs and for the poller.

const HANDOFF: Step = Step {
    name: "a reader thread waits for items a writer thread makes ready",
    invariant: "lost wake-up: the reader committed its park after the writer's ready() had \
                already looked, so ready() found no parked G and nobody woke the reader",
    book: STEP2,
};

const CLOSE_PARKED: Step = Step {
    name: "a parked reader thread waits for the close to wake it",
    invariant: "close() must return the parked G, and the G's prepare must then say Closed",
    book: STEP2,
};

/// A stand-in for the runtime: a G is a thread, and waking G `t` bumps its counter and
/// unparks it. Counting lets the tests catch a G woken more often than it slept.
struct Gs {
    woken: Vec<AtomicU64>,
    threads: Mutex<HashMap<u64, thread::Thread>>,
}

impl Gs {
    fn new(n: usize) -> Arc<Gs> {
        Arc::new(Gs {
            woken: (0..=n).map(|_| AtomicU64::new(0)).collect(),
            threads: Mutex::new(HashMap::new()),
        })
    }

    fn enter(&self, g: u64) {
        self.threads.lock().unwrap().insert(g, thread::current());
    }

    fn wake(&self, g: Token) {
        let g = g.get().get();
        self.woken[g as usize].fetch_add(1, SeqCst);
        if let Some(t) = self.threads.lock().unwrap().get(&g) {
            t.unpark();
        }
    }

    /// Sleeps until G `g` has been woken `sleeps` times in all; false if the watchdog fired.
    fn sleep(&self, g: u64, sleeps: u64, progress: &Progress) -> bool {
        while self.woken[g as usize].load(SeqCst) < sleeps {
            if progress.cancelled() {
                return false;
            }
            thread::park_timeout(Duration::from_millis(50));
        }
        true
    }
}

/// One "socket": items the writer makes available and its descriptor.
struct Sock {
    pd: PollDesc,
    avail: AtomicU64,
}

/// The reader's side of [`Sock`], written the way `gmp::net` will read: try, and on "would
/// block" prepare and park. Returns how many times it slept.
fn read_items(sock: &Sock, gs: &Gs, g: u64, items: u64, progress: &Progress) -> u64 {
    gs.enter(g);
    let (mut taken, mut sleeps) = (0, 0);
    while taken < items {
        if progress.cancelled() {
            break;
        }
        // The "read": take one item if there is one.
        let n = sock.avail.load(SeqCst);
        if n > 0 {
            if sock
                .avail
                .compare_exchange(n, n - 1, SeqCst, SeqCst)
                .is_ok()
            {
                taken += 1;
                progress.tick();
            }
            continue;
        }
        // WouldBlock.
        match sock.pd.prepare(Dir::Read) {
            Prepared::Ready => continue,
            Prepared::Wait => {
                // A G switches off its stack between prepare and park: that takes a while.
                if taken % 8 == 0 {
                    thread::yield_now();
                }
                if sock.pd.park(Dir::Read, tok(g)) {
                    sleeps += 1;
                    if !gs.sleep(g, sleeps, progress) {
                        break;
                    }
                }
            }
            other => panic!(
                "reader G {g}: prepare returned {other:?} on an open descriptor with one reader (book: {STEP2})"
            ),
        }
    }
    sleeps
}

#[test]
fn step2_readiness_from_another_thread_is_never_lost() {
    let _outcome = testkit::record!();
    const PAIRS: u64 = 3;
    const ITEMS: u64 = 20_000;
    let gs = Gs::new(PAIRS as usize);
    let socks: Arc<Vec<Sock>> = Arc::new(
        (0..PAIRS)
            .map(|_| Sock {
                pd: PollDesc::new(),
                avail: AtomicU64::new(0),
            })
            .collect(),
    );
    let for_diagnosis = socks.clone();
    watch_with(
        "3 reader threads each take 20,000 items that writer threads make ready one by one",
        DEFAULT_LIMIT,
        HANDOFF,
        move || {
            for_diagnosis
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(
                        "socket {i}: {} items waiting, read side {:?}\n",
                        s.avail.load(SeqCst),
                        s.pd.state(Dir::Read)
                    )
                })
                .collect()
        },
        move |progress: &Progress| {
            let mut threads = Vec::new();
            for i in 0..PAIRS {
                let g = i + 1;
                let (socks_r, gs_r, progress_r) = (socks.clone(), gs.clone(), progress.clone());
                threads.push(thread::spawn(move || {
                    let (socks, gs, progress) = (socks_r, gs_r, progress_r);
                    let sleeps = read_items(&socks[i as usize], &gs, g, ITEMS, &progress);
                    (g, sleeps)
                }));
                let (socks, gs, progress) = (socks.clone(), gs.clone(), progress.clone());
                threads.push(thread::spawn(move || {
                    let sock = &socks[i as usize];
                    for n in 0..ITEMS {
                        if progress.cancelled() {
                            break;
                        }
                        sock.avail.fetch_add(1, SeqCst);
                        if let Some(g) = sock.pd.ready(Dir::Read) {
                            gs.wake(g);
                        }
                        if n % 64 == 0 {
                            thread::yield_now();
                        }
                    }
                    (0, 0)
                }));
            }
            for t in threads {
                let (g, sleeps) = t.join().expect("a reader or writer thread panicked");
                if g == 0 {
                    continue;
                }
                let woken = gs.woken[g as usize].load(SeqCst);
                assert_eq!(
                    woken, sleeps,
                    "G {g} slept {sleeps} times but ready() handed it out {woken} times: a G must \
                     be returned by ready() exactly once per committed park (book: {STEP2})"
                );
            }
        },
    );
}

#[test]
fn step2_close_wakes_a_reader_parked_on_another_thread() {
    let _outcome = testkit::record!();
    watch(
        "close a descriptor 200 times while a reader thread parks on it",
        DEFAULT_LIMIT,
        CLOSE_PARKED,
        |progress: &Progress| {
            let gs = Gs::new(1);
            for round in 0..200u64 {
                let pd = Arc::new(PollDesc::new());
                let (pd2, gs2, progress2) = (pd.clone(), gs.clone(), progress.clone());
                let before = gs.woken[1].load(SeqCst);
                let reader = thread::spawn(move || {
                    gs2.enter(1);
                    let mut slept = false;
                    loop {
                        match pd2.prepare(Dir::Read) {
                            Prepared::Closed => return slept,
                            Prepared::Wait => {
                                if pd2.park(Dir::Read, tok(1)) {
                                    slept = true;
                                    if !gs2.sleep(1, before + 1, &progress2) {
                                        return slept;
                                    }
                                }
                            }
                            other => panic!(
                                "round {round}: prepare returned {other:?} with one reader and no readiness (book: {STEP2})"
                            ),
                        }
                    }
                });
                // Half the rounds close at once (racing the park), half once the reader sleeps.
                if round % 2 == 1 {
                    while pd.state(Dir::Read) != State::Parked(tok(1)) && !progress.cancelled() {
                        thread::yield_now();
                    }
                }
                let closed = pd.close();
                if let Some(g) = closed.read {
                    gs.wake(g);
                }
                assert_eq!(
                    closed.write, None,
                    "round {round}: nobody waited to write (book: {STEP2})"
                );
                let slept = reader.join().expect("the reader thread panicked");
                assert_eq!(
                    slept,
                    closed.read == Some(tok(1)),
                    "round {round}: the reader {} but close returned {:?}: close must return the G \
                 exactly when it committed its park (book: {STEP2})",
                    if slept { "slept" } else { "never slept" },
                    closed.read
                );
                progress.tick();
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// Step 3: the poller on real sockets.

const POLL_LISTENER: Step = Step {
    name: "poll until the listener is readable",
    invariant: "a registered listener with a pending connection must come out of poll as \
                readable under its token",
    book: STEP3,
};

const THOUSAND: Step = Step {
    name: "poll until each of 1,000 connections was readable",
    invariant: "each connection that received a byte must come out of poll once, under its \
                own token",
    book: STEP3,
};

/// Polls (10 ms at a time, at most `rounds` times) until `done(events)`; returns the events.
fn poll_until(
    poller: &Poller,
    rounds: usize,
    progress: &Progress,
    done: impl Fn(&[(Token, Ready)]) -> bool,
) -> Vec<(Token, Ready)> {
    let mut events = Vec::new();
    for _ in 0..rounds {
        if done(&events) || progress.cancelled() {
            break;
        }
        let before = events.len();
        let n = poller
            .poll(Some(Duration::from_millis(10)), &mut events)
            .unwrap_or_else(|e| panic!("poll failed: {e} (book: {STEP3})"));
        assert_eq!(
            n,
            events.len() - before,
            "poll must return the number of events it appended to `out` (book: {STEP3})"
        );
        if n > 0 {
            progress.tick();
        }
    }
    events
}

#[test]
fn step3_a_listener_with_a_pending_connection_is_readable() {
    let _outcome = testkit::record!();
    watch(
        "register a listener, connect, poll",
        DEFAULT_LIMIT,
        POLL_LISTENER,
        |progress: &Progress| {
            let poller =
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})"));
            let mut listener = mio::net::TcpListener::bind(loopback()).expect("bind 127.0.0.1:0");
            let addr = listener.local_addr().expect("local_addr");
            poller
                .register(&mut listener, tok(7), Interest::READABLE)
                .unwrap_or_else(|e| panic!("register failed: {e} (book: {STEP3})"));
            let mut quiet = Vec::new();
            let n = poller.poll(Some(Duration::ZERO), &mut quiet).expect("poll");
            assert_eq!(
                (n, quiet.len()),
                (0, 0),
                "no connection yet, so no event: got {quiet:?} (book: {STEP3})"
            );
            let _client = std::net::TcpStream::connect(addr).expect("connect to our own listener");
            let events = poll_until(&poller, 500, progress, |e| !e.is_empty());
            assert!(
                !events.is_empty(),
                "no event in 500 polls of 10 ms for a pending connection (book: {STEP3})"
            );
            for (t, ready) in &events {
                assert_eq!(
                    *t,
                    tok(7),
                    "the only registered token is 7, got {t:?} (book: {STEP3})"
                );
                assert!(
                    ready.read,
                    "a pending connection makes the listener readable: {ready:?} (book: {STEP3})"
                );
            }
            listener
                .accept()
                .expect("after the readable event, accept must find the connection");
        },
    );
}

#[test]
fn step3_a_deregistered_socket_reports_nothing() {
    let _outcome = testkit::record!();
    watch(
        "register, deregister, connect, poll",
        DEFAULT_LIMIT,
        POLL_LISTENER,
        |_progress: &Progress| {
            let poller =
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})"));
            let mut listener = mio::net::TcpListener::bind(loopback()).expect("bind 127.0.0.1:0");
            let addr = listener.local_addr().expect("local_addr");
            poller
                .register(&mut listener, tok(8), Interest::READABLE)
                .expect("register");
            poller
                .deregister(&mut listener)
                .unwrap_or_else(|e| panic!("deregister failed: {e} (book: {STEP3})"));
            let _client = std::net::TcpStream::connect(addr).expect("connect");
            let mut events = Vec::new();
            for _ in 0..5 {
                poller
                    .poll(Some(Duration::from_millis(10)), &mut events)
                    .expect("poll");
            }
            assert!(
                events.is_empty(),
                "a deregistered listener still reported {events:?} (book: {STEP3})"
            );
            poller
                .register(&mut listener, tok(9), Interest::READABLE)
                .expect("register again");
        },
    );
}

const POLL_WRITABLE: Step = Step {
    name: "poll until a socket registered for read and write is writable",
    invariant: "a socket registered with READABLE | WRITABLE whose send buffer has room \
                must come out of poll with Ready.write (register must pass the whole \
                interest on, and poll must report writability)",
    book: STEP3,
};

#[test]
fn step3_a_socket_registered_for_read_and_write_reports_write_readiness() {
    let _outcome = testkit::record!();
    watch(
        "register a connected socket for read + write, fill it, drain it, poll",
        DEFAULT_LIMIT,
        POLL_WRITABLE,
        |progress: &Progress| {
            let poller =
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})"));
            let listener = std::net::TcpListener::bind(loopback()).expect("bind 127.0.0.1:0");
            let mut peer = std::net::TcpStream::connect(listener.local_addr().expect("local_addr"))
                .expect("connect");
            let (sock, _) = listener.accept().expect("accept");
            sock.set_nonblocking(true).expect("set_nonblocking");
            let mut sock = mio::net::TcpStream::from_std(sock);
            poller
                .register(&mut sock, tok(5), Interest::READABLE | Interest::WRITABLE)
                .unwrap_or_else(|e| panic!("register failed: {e} (book: {STEP3})"));
            let writable = |e: &[(Token, Ready)]| e.iter().any(|(t, r)| *t == tok(5) && r.write);
            let events = poll_until(&poller, 200, progress, writable);
            assert!(
                writable(&events),
                "a fresh connection has room to send, yet 200 polls of 10 ms gave no \
                 Ready.write for token 5, only {events:?}: register must pass on \
                 Interest::WRITABLE, and poll must set `write` (book: {STEP3})"
            );
            // Fill the send buffer until the kernel says "would block" (bounded: 256 MiB).
            let chunk = [7u8; 64 * 1024];
            let mut sent = 0usize;
            loop {
                match sock.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write to a loopback socket failed: {e}"),
                }
                assert!(
                    sent < 256 << 20,
                    "256 MiB sent and the buffer is not full yet"
                );
            }
            progress.tick();
            // Nothing is writable while full; the peer drains, and room comes back once.
            let mut quiet = Vec::new();
            poller.poll(Some(Duration::ZERO), &mut quiet).expect("poll");
            let mut got = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            let mut events = Vec::new();
            for _ in 0..2_000 {
                if writable(&events) || progress.cancelled() {
                    break;
                }
                if got < sent {
                    got += peer.read(&mut buf).expect("peer read");
                    progress.tick();
                }
                poller
                    .poll(Some(Duration::from_millis(1)), &mut events)
                    .expect("poll");
            }
            assert!(
                writable(&events),
                "the peer read {got} of the {sent} bytes that filled the send buffer, yet \
                 poll never said token 5 is writable again: a G writing to this socket \
                 would wait forever (book: {STEP3})"
            );
        },
    );
}

/// `n` connected pairs: the client ends (std, blocking) and the server ends registered with
/// `poller` as tokens 1..=n, readable.
fn connected_pairs(
    poller: &Poller,
    n: u64,
    progress: &Progress,
) -> (Vec<std::net::TcpStream>, Vec<mio::net::TcpStream>) {
    let listener = std::net::TcpListener::bind(loopback()).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let client = std::net::TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("connection {i} of {n}: connect failed: {e}"));
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("set_nonblocking");
        let mut server = mio::net::TcpStream::from_std(server);
        poller
            .register(&mut server, tok(i), Interest::READABLE)
            .unwrap_or_else(|e| panic!("register connection {i}: {e} (book: {STEP3})"));
        clients.push(client);
        servers.push(server);
        progress.tick();
    }
    (clients, servers)
}

/// Fails naming the first token of 1..=n that came out of `events` other than once.
fn assert_each_once(events: &[(Token, Ready)], n: u64, round: &str, step: &str) {
    let mut seen = HashMap::<u64, usize>::new();
    for (t, ready) in events {
        assert!(
            ready.read,
            "{round}: token {t:?} came out not readable: {ready:?} (book: {step})"
        );
        *seen.entry(t.get().get()).or_default() += 1;
    }
    for (&t, &count) in &seen {
        assert!(
            (1..=n).contains(&t),
            "{round}: token {t} was never registered (book: {step})"
        );
        assert_eq!(
            count, 1,
            "{round}: connection {t} came out {count} times for one byte (book: {step})"
        );
    }
    for t in 1..=n {
        assert!(
            seen.contains_key(&t),
            "{round}: connection {t} received a byte but never came out of poll; {} of {n} did \
             (book: {step})",
            seen.len()
        );
    }
}

#[test]
fn step3_a_thousand_connections_each_come_out_once_per_byte() {
    let _outcome = testkit::record!();
    const N: u64 = 1_000;
    watch(
        "1,000 loopback connections, two rounds of one byte each",
        DEFAULT_LIMIT,
        THOUSAND,
        |progress: &Progress| {
            let poller =
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})"));
            let (mut clients, mut servers) = connected_pairs(&poller, N, progress);
            for round in ["round 1", "round 2"] {
                for c in &mut clients {
                    c.write_all(b"x").expect("client write");
                }
                let mut events = poll_until(&poller, 2_000, progress, |e| e.len() as u64 >= N);
                // A little longer, to catch a connection that comes out twice.
                poller
                    .poll(Some(Duration::from_millis(20)), &mut events)
                    .expect("poll");
                assert_each_once(&events, N, round, STEP3);
                // Read each server end until it would block, as a G does before it waits again.
                for (i, s) in servers.iter_mut().enumerate() {
                    let mut buf = [0u8; 16];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => panic!("connection {} closed early", i + 1),
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("read on connection {}: {e}", i + 1),
                        }
                    }
                }
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// Step 4: waking the poller, two threads at it, and a stand-in runtime.

const WAKE_BLOCKED: Step = Step {
    name: "a thread is blocked in poll(None); another calls wake()",
    invariant: "wake() must make the blocked poll return; after a poll consumed a wake, the \
                next wake() must write again (a coalescing flag that is never reset swallows it)",
    book: STEP4,
};

const TWO_POLLERS: Step = Step {
    name: "two threads poll one Poller while 200 connections become readable",
    invariant: "every event comes out exactly once, to one of the two threads; a thread that \
                finds the other inside poll returns instead of waiting for it",
    book: STEP4,
};

const MINI_RUNTIME: Step = Step {
    name: "a reader thread parks on its socket; a poller thread readies it; then a close",
    invariant: "readiness from poll must reach the parked reader through PollDesc::ready, and \
                a close must wake it with Closed",
    book: STEP4,
};

#[test]
fn step4_the_wake_flag_says_write_once_until_a_poll_consumes_it() {
    let _outcome = testkit::record!();
    let flag = WakeFlag::new();
    for round in 1..=2 {
        assert!(
            flag.claim(),
            "round {round}: WakeFlag::claim with no wake pending must return true (this caller \
             writes the eventfd) (book: {STEP4})"
        );
        for _ in 0..2 {
            assert!(
                !flag.claim(),
                "round {round}: WakeFlag::claim with a wake pending must return false (the \
                 pending wake serves this caller too) (book: {STEP4})"
            );
        }
        flag.consume();
    }
    assert!(flag.claim(), "book: {STEP4}");
    flag.unclaim();
    assert!(
        flag.claim(),
        "after unclaim (the write failed), the next claim must write (book: {STEP4})"
    );
}

#[test]
fn step4_wake_unblocks_a_poll_that_waits_forever_every_time() {
    let _outcome = testkit::record!();
    watch(
        "wake a thread blocked in poll(None), three times",
        DEFAULT_LIMIT,
        WAKE_BLOCKED,
        |progress: &Progress| {
            let poller = Arc::new(
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})")),
            );
            for round in 1..=3 {
                let inside = Arc::new(AtomicBool::new(false));
                let (p, inside2) = (poller.clone(), inside.clone());
                let blocked = thread::spawn(move || {
                    let mut events = Vec::new();
                    inside2.store(true, SeqCst);
                    let n = p.poll(None, &mut events);
                    (n.map_err(|e| e.to_string()), events.len())
                });
                while !inside.load(SeqCst) && !progress.cancelled() {
                    thread::yield_now();
                }
                thread::sleep(Duration::from_millis(20));
                // Round 3: several wakes coalesce into one, and that one still arrives.
                for _ in 0..round {
                    poller
                        .wake()
                        .unwrap_or_else(|e| panic!("wake failed: {e} (book: {STEP4})"));
                }
                let (n, len) = blocked.join().expect("the polling thread panicked");
                assert_eq!(
                    n,
                    Ok(0),
                    "round {round}: a poll ended by wake() reports no events (the waker is not a socket) (book: {STEP4})"
                );
                assert_eq!(
                    len, 0,
                    "round {round}: no events were appended (book: {STEP4})"
                );
                progress.step(WAKE_BLOCKED);
            }
        },
    );
}

const SECOND_POLLER: Step = Step {
    name: "one thread waits in poll(None); a second calls poll with an hour's timeout",
    invariant: "a second caller must return Ok(0) at once instead of waiting for the first \
                (try_lock, not lock): a lock() waits until the first returns, and then blocks \
                in epoll itself with nobody left to wake it",
    book: STEP4,
};

#[test]
fn step4_a_second_caller_of_poll_returns_instead_of_waiting() {
    let _outcome = testkit::record!();
    watch(
        "two threads call poll at once, then one wake",
        DEFAULT_LIMIT,
        SECOND_POLLER,
        |progress: &Progress| {
            let poller = Arc::new(
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})")),
            );
            let (p, q) = (poller.clone(), poller.clone());
            let first =
                thread::spawn(move || p.poll(None, &mut Vec::new()).map_err(|e| e.to_string()));
            // Most likely the first is inside by now; if the second gets in first, the roles
            // swap and the test still holds.
            thread::sleep(Duration::from_millis(50));
            let second = thread::spawn(move || {
                q.poll(Some(Duration::from_secs(3600)), &mut Vec::new())
                    .map_err(|e| e.to_string())
            });
            thread::sleep(Duration::from_millis(50));
            progress.tick();
            // One wake ends the one inside; the other must have returned on its own.
            poller
                .wake()
                .unwrap_or_else(|e| panic!("wake failed: {e} (book: {STEP4})"));
            for (who, t) in [("first", first), ("second", second)] {
                let n = t.join().expect("a polling thread panicked");
                assert_eq!(
                    n,
                    Ok(0),
                    "the {who} caller of poll: no socket is registered, so no events (book: {STEP4})"
                );
                progress.tick();
            }
        },
    );
}

#[test]
fn step4_two_threads_polling_one_poller_share_the_events() {
    let _outcome = testkit::record!();
    const N: u64 = 200;
    watch(
        "two threads poll one Poller",
        DEFAULT_LIMIT,
        TWO_POLLERS,
        |progress: &Progress| {
            let poller = Arc::new(
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})")),
            );
            let (mut clients, _servers) = connected_pairs(&poller, N, progress);
            let got = Arc::new(AtomicU64::new(0));
            let mut pollers = Vec::new();
            for _ in 0..2 {
                let (p, got, progress) = (poller.clone(), got.clone(), progress.clone());
                pollers.push(thread::spawn(move || {
                    let mut events = Vec::new();
                    for _ in 0..5_000 {
                        if got.load(SeqCst) >= N || progress.cancelled() {
                            break;
                        }
                        let n = p
                            .poll(Some(Duration::from_millis(10)), &mut events)
                            .expect("poll");
                        if n > 0 {
                            got.fetch_add(n as u64, SeqCst);
                            progress.tick();
                        } else {
                            // The other thread may be inside and return at once: do not spin hot.
                            thread::yield_now();
                        }
                    }
                    events
                }));
            }
            for c in &mut clients {
                c.write_all(b"y").expect("client write");
            }
            let mut all = Vec::new();
            for t in pollers {
                all.extend(t.join().expect("a polling thread panicked"));
            }
            assert_each_once(&all, N, "two pollers", STEP4);
        },
    );
}

#[test]
fn step4_a_parked_reader_is_readied_by_the_poller_and_woken_by_close() {
    let _outcome = testkit::record!();
    watch(
        "a stand-in runtime: one reader, one poller thread",
        DEFAULT_LIMIT,
        MINI_RUNTIME,
        |progress: &Progress| {
            let poller = Arc::new(
                Poller::new().unwrap_or_else(|e| panic!("Poller::new failed: {e} (book: {STEP3})")),
            );
            let listener = std::net::TcpListener::bind(loopback()).expect("bind");
            let mut client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (server, _) = listener.accept().expect("accept");
            server.set_nonblocking(true).expect("nonblocking");
            let mut server = mio::net::TcpStream::from_std(server);
            // The socket's registration token is 100; the reader G is token 1.
            poller
                .register(&mut server, tok(100), Interest::READABLE)
                .expect("register");
            let pd = Arc::new(PollDesc::new());
            let gs = Gs::new(1);
            let stop = Arc::new(AtomicBool::new(false));

            // The poller thread: poll, and hand read readiness on token 100 to the descriptor.
            let (p, pd2, gs2, stop2, progress2) = (
                poller.clone(),
                pd.clone(),
                gs.clone(),
                stop.clone(),
                progress.clone(),
            );
            let netpoller = thread::spawn(move || {
                let mut events = Vec::new();
                while !stop2.load(SeqCst) && !progress2.cancelled() {
                    events.clear();
                    p.poll(None, &mut events).expect("poll");
                    for (t, ready) in &events {
                        if *t == tok(100)
                            && ready.read
                            && let Some(g) = pd2.ready(Dir::Read)
                        {
                            gs2.wake(g);
                        }
                    }
                }
            });

            // The reader G: read 3 messages, then wait until the close.
            let bytes = Arc::new(AtomicU64::new(0));
            let (pd3, gs3, progress3, bytes3) =
                (pd.clone(), gs.clone(), progress.clone(), bytes.clone());
            let reader = thread::spawn(move || {
                gs3.enter(1);
                let (mut got, mut sleeps, mut buf) = (Vec::new(), 0u64, [0u8; 64]);
                loop {
                    if progress3.cancelled() {
                        return (got, Err("cancelled".to_string()));
                    }
                    if got.len() < 3 {
                        match server.read(&mut buf) {
                            Ok(0) => return (got, Err("peer closed early".to_string())),
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                bytes3.store(got.len() as u64, SeqCst);
                                progress3.tick();
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return (got, Err(e.to_string())),
                        }
                    }
                    match pd3.prepare(Dir::Read) {
                        Prepared::Ready => continue,
                        Prepared::Closed => return (got, Ok(sleeps)),
                        Prepared::Wait => {
                            if pd3.park(Dir::Read, tok(1)) {
                                sleeps += 1;
                                gs3.sleep(1, sleeps, &progress3);
                            }
                        }
                        Prepared::Busy => return (got, Err("Busy with one reader".to_string())),
                    }
                }
            });

            // Waits until the reader has read `k` bytes and sleeps again.
            let parked_after = |k: u64| {
                while (bytes.load(SeqCst) != k || pd.state(Dir::Read) != State::Parked(tok(1)))
                    && !progress.cancelled()
                {
                    thread::sleep(Duration::from_millis(1));
                }
            };
            for (k, b) in [b"a", b"b", b"c"].into_iter().enumerate() {
                // Write once the reader sleeps, so each byte is a real wake-up through the poller.
                parked_after(k as u64);
                client.write_all(b).expect("client write");
                progress.tick();
            }
            parked_after(3);
            let closed = pd.close();
            assert_eq!(
                closed.read,
                Some(tok(1)),
                "close must return the parked reader (book: {STEP4})"
            );
            gs.wake(tok(1));
            let (got, outcome) = reader.join().expect("the reader thread panicked");
            stop.store(true, SeqCst);
            poller
                .wake()
                .expect("wake the poller thread so it sees `stop`");
            netpoller.join().expect("the poller thread panicked");
            assert_eq!(
                got, b"abc",
                "the reader must get the three bytes in order (book: {STEP4})"
            );
            let sleeps =
                outcome.unwrap_or_else(|e| panic!("the reader failed: {e} (book: {STEP4})"));
            assert!(
                sleeps >= 4,
                "the reader slept {sleeps} times; it parked before each byte and before the close (book: {STEP4})"
            );
        },
    );
}

// ---------------------------------------------------------------------------------------
// Step 5: out of file descriptors.

#[test]
fn step5_emfile_names_ulimit_and_the_limit() {
    let _outcome = testkit::record!();
    // In a child process: only there is RLIMIT_NOFILE lowered, never in this test process.
    let run = testkit::run_in_child(
        "step5_emfile_names_ulimit_and_the_limit",
        DEFAULT_LIMIT,
        || {
            let open = std::fs::read_dir("/proc/self/fd")
                .map(|d| d.count() as u64)
                .unwrap_or(64);
            let (_, hard) = netpoll::nofile_limit().expect("getrlimit");
            let soft = open + 8;
            let lim = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard.map_or(libc::RLIM_INFINITY, |h| h as libc::rlim_t),
            };
            // SAFETY: setrlimit reads one `struct rlimit` through a pointer to a live value of
            // that layout; it lowers only this child's soft limit.
            let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
            assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
            let mut pollers = Vec::new();
            let err = loop {
                match Poller::new() {
                    Ok(p) => pollers.push(p),
                    Err(e) => break e,
                }
                assert!(
                    pollers.len() < 64,
                    "64 pollers created under a limit of {soft} open files"
                );
            };
            let text = err.to_string();
            assert!(
                text.contains("ulimit -n") && text.contains(&soft.to_string()),
                "Poller::new out of descriptors said \"{text}\"; it must name `ulimit -n` and the \
             limit, {soft} (book: {STEP5})"
            );
            // A failed Poller::new closes what it had opened: use up the last descriptors.
            let mut files = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                files.push(f);
                assert!(
                    files.len() < 64,
                    "64 files opened under a limit of {soft} open files"
                );
            }
            let err = std::net::TcpListener::bind(loopback())
                .map(drop)
                .expect_err("bind with no descriptor left");
            let text = netpoll::fd_limit_error(err, "bind").to_string();
            assert!(
                text.contains("ulimit -n")
                    && text.contains(&soft.to_string())
                    && text.contains("bind"),
                "fd_limit_error(EMFILE from bind, \"bind\") said \"{text}\"; it must name what \
             failed, `ulimit -n` and the limit {soft} (book: {STEP5})"
            );
            println!("fd-limit message: {text}");
        },
    );
    assert!(
        run.success && run.output.contains("fd-limit message:"),
        "the child with a lowered limit failed:\n{}",
        run.output
    );
}

#[test]
fn step5_enfile_and_enospc_name_their_limits_other_errors_pass_through() {
    let _outcome = testkit::record!();
    let (soft, _) = netpoll::nofile_limit().expect("getrlimit");
    let soft = soft.map_or("unlimited".to_string(), |s| s.to_string());
    let cases = [
        (libc::ENFILE, "ENFILE", "accept", "fs.file-max"),
        (libc::ENOSPC, "ENOSPC", "registering", "max_user_watches"),
    ];
    for (code, name, what, limit) in cases {
        let err = netpoll::fd_limit_error(io::Error::from_raw_os_error(code), what);
        let text = err.to_string();
        assert!(
            text.contains(what)
                && text.contains("ulimit -n")
                && text.contains(&soft)
                && text.contains(limit),
            "fd_limit_error({name}, \"{what}\") said \"{text}\"; it must name what failed \
             (\"{what}\"), `ulimit -n` and its value {soft}, and the system-wide limit \
             `{limit}` (book: {STEP5})"
        );
        assert_eq!(
            err.kind(),
            io::Error::from_raw_os_error(code).kind(),
            "fd_limit_error({name}) must keep the error's kind (book: {STEP5})"
        );
    }
    let refused =
        netpoll::fd_limit_error(io::Error::from_raw_os_error(libc::ECONNREFUSED), "connect");
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::ECONNREFUSED),
        "an error that is no descriptor limit must come back unchanged, got \"{refused}\" (book: {STEP5})"
    );
    let other = netpoll::fd_limit_error(io::Error::other("not an OS error"), "connect");
    assert_eq!(other.to_string(), "not an OS error", "book: {STEP5}");
}

// ---------------------------------------------------------------------------------------
// Whole-runtime tests: gmp::net runs on YOUR descriptor and poller (feature mine-10 in the
// exercise). A descriptor that hands a G out twice stops the runtime with a message naming
// the rule; a poller that loses readiness stalls, and the watchdog names the step and
// prints the runtime's dump, where the G waiting on a ready socket is named with it.
// ---------------------------------------------------------------------------------------

const RUNTIME: &str = "ch10-netpoll.html#in-the-runtime";

const SHUTDOWN: Step = Step {
    name: "shutdown: the work is done, the runtime stops its Ms",
    invariant: "shutdown: Poller::wake must end the idle M's poll; a WakeFlag whose consume \
                does nothing swallows that wake (claim finds it pending and writes \
                nothing), so the M blocked in Poller::poll never returns",
    book: RUNTIME,
};

const SLOW_READER: Step = Step {
    name: "a writer G fills its socket's buffer; the peer starts reading 300 ms later",
    invariant: "a G whose write got WouldBlock parks on the write side of its PollDesc and \
                is readied when the poller reports the socket writable again (Ready.write \
                -> PollDesc::ready(Dir::Write)); a writer still waiting while the peer has \
                read everything was never told of the room",
    book: RUNTIME,
};

const ECHO: Step = Step {
    name: "gmp::net echo: 100 client Gs, 20 round trips each, at 2 Ps",
    invariant: "a G that got WouldBlock parks on its PollDesc and is readied when the poller \
                reports its socket (Poller::poll -> PollDesc::ready -> the G): a stall here \
                with a G waiting on a ready socket is readiness your part lost",
    book: RUNTIME,
};

const IDLE_POLLER: Step = Step {
    name: "Gs parked on sockets, both Ps idle; a thread outside the runtime writes to them",
    invariant: "with nothing to run, one idle M blocks in Poller::poll and readies the Gs \
                whose sockets the writes made readable; a G still waiting seconds after its \
                byte arrived was lost between poll and ready (or poll never returned it)",
    book: RUNTIME,
};

#[test]
fn whole_runtime_an_echo_of_100_connections_round_trips() {
    let _outcome = testkit::record!();
    const CLIENTS: usize = 100;
    const ROUNDS: usize = 20;
    let served = watch_with(
        "gmp::net echo on your part",
        DEFAULT_LIMIT,
        ECHO,
        gmp::dump_all,
        |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let listener = gmp::net::TcpListener::bind(loopback()).unwrap();
                let addr = listener.local_addr().unwrap();
                let server = gmp::go(move || {
                    let handlers: Vec<_> = (0..CLIENTS)
                        .map(|_| {
                            let (mut conn, _) = listener.accept().expect("accept");
                            gmp::go(move || {
                                let mut buf = [0u8; 256];
                                loop {
                                    match conn.read(&mut buf) {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => conn.write_all(&buf[..n]).expect("echo"),
                                    }
                                }
                            })
                        })
                        .collect();
                    for h in handlers {
                        h.join().unwrap();
                    }
                });
                let clients: Vec<_> = (0..CLIENTS)
                    .map(|id| {
                        let progress = progress.clone();
                        gmp::go(move || {
                            let mut s = gmp::net::TcpStream::connect(addr).expect("connect");
                            for round in 0..ROUNDS {
                                let msg = format!("client {id:4} round {round:3}");
                                s.write_all(msg.as_bytes()).expect("write");
                                let mut back = vec![0u8; msg.len()];
                                s.read_exact(&mut back).expect("read");
                                assert_eq!(back, msg.as_bytes(), "an echo came back changed");
                                progress.tick();
                            }
                        })
                    })
                    .collect();
                let n = clients.into_iter().map(|c| c.join().unwrap()).count();
                server.join().unwrap();
                progress.step(SHUTDOWN);
                n
            })
        },
    );
    assert_eq!(served, CLIENTS, "every client finishes (book: {RUNTIME})");
}

#[test]
fn whole_runtime_gs_on_sockets_are_woken_by_the_idle_poller() {
    let _outcome = testkit::record!();
    const GS: usize = 50;
    let woke = watch_with(
        "Gs on sockets woken by the idle M's poll",
        DEFAULT_LIMIT,
        IDLE_POLLER,
        gmp::dump_all,
        |progress| {
            let progress = progress.clone();
            // The peers are plain std sockets on a plain thread: nothing in the runtime
            // makes the readers runnable except the poller.
            let peers = std::net::TcpListener::bind(loopback()).unwrap();
            let addr = peers.local_addr().unwrap();
            let writer = thread::spawn(move || {
                let conns: Vec<_> = (0..GS).map(|_| peers.accept().unwrap().0).collect();
                thread::sleep(Duration::from_millis(100)); // the readers park meanwhile
                for (i, mut c) in conns.iter().enumerate() {
                    c.write_all(&[i as u8]).unwrap();
                    thread::sleep(Duration::from_millis(2));
                }
                conns
            });
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            let woke = rt.block_on(move || {
                let readers: Vec<_> = (0..GS)
                    .map(|_| {
                        let s = gmp::net::TcpStream::connect(addr).expect("connect");
                        let progress = progress.clone();
                        gmp::go(move || {
                            let mut b = [0u8; 1];
                            (&s).read_exact(&mut b).expect("read");
                            progress.tick();
                        })
                    })
                    .collect();
                let n = readers.into_iter().map(|r| r.join().unwrap()).count();
                progress.step(SHUTDOWN);
                n
            });
            drop(rt);
            drop(writer.join().unwrap());
            woke
        },
    );
    assert_eq!(woke, GS, "every reader wakes (book: {RUNTIME})");
}

#[test]
fn whole_runtime_a_writer_g_waits_for_room_until_a_slow_reader_drains() {
    let _outcome = testkit::record!();
    const TOTAL: usize = 16 << 20;
    let written = watch_with(
        "a G writes 16 MiB to a reader that starts late",
        DEFAULT_LIMIT,
        SLOW_READER,
        gmp::dump_all,
        |progress| {
            let progress = progress.clone();
            // The reader is a plain std socket on a plain thread: only the poller's write
            // readiness can wake the writer G once its buffer is full.
            let peers = std::net::TcpListener::bind(loopback()).unwrap();
            let addr = peers.local_addr().unwrap();
            let reader_progress = progress.clone();
            let reader = thread::spawn(move || {
                let (mut conn, _) = peers.accept().unwrap();
                thread::sleep(Duration::from_millis(300)); // the writer fills and parks
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0usize;
                while got < TOTAL {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                    reader_progress.tick();
                }
                got
            });
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            let written = rt.block_on(move || {
                let writer = gmp::go(move || {
                    let mut s = gmp::net::TcpStream::connect(addr).expect("connect");
                    let chunk = vec![0x5au8; 64 * 1024];
                    let mut sent = 0usize;
                    while sent < TOTAL {
                        s.write_all(&chunk).expect("write");
                        sent += chunk.len();
                        progress.tick();
                    }
                    progress.step(SHUTDOWN);
                    sent
                });
                writer.join().unwrap()
            });
            drop(rt);
            let read = reader.join().unwrap();
            (written, read)
        },
    );
    assert_eq!(
        written,
        (TOTAL, TOTAL),
        "(written by the G, read by the peer) (book: {RUNTIME})"
    );
}
