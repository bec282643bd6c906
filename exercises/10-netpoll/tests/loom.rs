//! The loom models of part 10's `PollDesc` and `WakeFlag`: loom runs each scenario below
//! under every interleaving of their atomic operations (up to a bound on preemptions), and,
//! for every load, every value the memory model allows it to read. A park that is not
//! decided by one compare-and-swap against `ready` or `close` shows up here as a G that
//! sleeps with nobody to wake it (a lost wake-up: an assertion, or loom's "deadlock" when
//! the model's G waits for a wake-up that never comes), or a G handed out to be woken twice.
//! A wake flag that the poller clears with a plain store shows up as a waker whose work
//! the poller never sees.
//!
//! Run it (release: loom explores thousands of interleavings):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ex-10-netpoll --release --test loom
//! ```
//!
//! `--cfg loom` makes `src/sync.rs` take its atomics from loom; the separate target dir
//! keeps that build from replacing the normal one. Book: chapter 10, "How to check".
#![cfg(loom)]

use std::num::NonZeroU64;

use loom::sync::atomic::AtomicUsize;
use loom::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use loom::sync::{Arc, Notify};
use loom::thread;
use netpoll::{Dir, PollDesc, Prepared, Token, WakeFlag};

fn tok(v: u64) -> Token {
    Token::new(NonZeroU64::new(v).expect("the models use tokens from 1 on"))
}

/// loom's search with a preemption bound: every interleaving with at most this many forced
/// switches. The descriptor's operations are short, so 3 covers them all.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// The G's side, once: "would block", prepare, and park if told to wait. Returns whether
/// the G committed its sleep.
fn g_waits(pd: &PollDesc, dir: Dir, g: Token) -> bool {
    match pd.prepare(dir) {
        Prepared::Wait => pd.park(dir, g),
        Prepared::Ready | Prepared::Closed => false,
        Prepared::Busy => {
            panic!("netpoll: Busy with one G waiting (book: ch10-netpoll.html#step-1)")
        }
    }
}

#[test]
fn loom_park_against_ready() {
    let _outcome = testkit::record!();
    model(|| {
        let pd = Arc::new(PollDesc::new());
        let poller = {
            let pd = pd.clone();
            thread::spawn(move || pd.ready(Dir::Read))
        };
        let slept = g_waits(&pd, Dir::Read, tok(1));
        let woken = poller.join().unwrap();
        assert!(
            !(slept && woken.is_none()),
            "netpoll: lost wake-up: the G committed its park, but ready() returned no G to \
             wake (book: ch10-netpoll.html#step-2)"
        );
        assert!(
            slept || woken.is_none(),
            "netpoll: ready() returned G {woken:?}, which never slept: the runtime would wake a \
             running G (book: ch10-netpoll.html#step-2)"
        );
        assert_eq!(
            woken,
            slept.then(|| tok(1)),
            "book: ch10-netpoll.html#step-2"
        );
        // Woken or not, the readiness is there for the G's next prepare, once.
        if slept {
            assert_eq!(
                pd.prepare(Dir::Read),
                Prepared::Ready,
                "the woken G must find the readiness (book: ch10-netpoll.html#step-2)"
            );
        }
    });
}

#[test]
fn loom_park_against_close() {
    let _outcome = testkit::record!();
    model(|| {
        let pd = Arc::new(PollDesc::new());
        let closer = {
            let pd = pd.clone();
            thread::spawn(move || pd.close())
        };
        let slept = g_waits(&pd, Dir::Write, tok(2));
        let closed = closer.join().unwrap();
        assert_eq!(
            closed.write,
            slept.then(|| tok(2)),
            "netpoll: the G {} but close() returned {:?}: close must hand back exactly the G \
             that committed its park (book: ch10-netpoll.html#step-2)",
            if slept { "slept" } else { "did not sleep" },
            closed.write
        );
        assert_eq!(
            closed.read, None,
            "nobody waited to read (book: ch10-netpoll.html#step-2)"
        );
        assert_eq!(
            pd.prepare(Dir::Write),
            Prepared::Closed,
            "after close, prepare says Closed (book: ch10-netpoll.html#step-2)"
        );
    });
}

#[test]
fn loom_park_against_ready_and_close() {
    let _outcome = testkit::record!();
    model(|| {
        let pd = Arc::new(PollDesc::new());
        let poller = {
            let pd = pd.clone();
            thread::spawn(move || pd.ready(Dir::Read))
        };
        let closer = {
            let pd = pd.clone();
            thread::spawn(move || pd.close().read)
        };
        let slept = g_waits(&pd, Dir::Read, tok(3));
        let by_ready = poller.join().unwrap();
        let by_close = closer.join().unwrap();
        let handed_out = [by_ready, by_close].iter().flatten().count();
        assert_eq!(
            handed_out,
            usize::from(slept),
            "netpoll: the G {} and was handed out {handed_out} times (ready: {by_ready:?}, \
             close: {by_close:?}): a parked G is woken exactly once (book: \
             ch10-netpoll.html#step-2)",
            if slept { "slept" } else { "did not sleep" }
        );
        assert_eq!(
            pd.prepare(Dir::Read),
            Prepared::Closed,
            "a close is final, even after a ready (book: ch10-netpoll.html#step-2)"
        );
    });
}

#[test]
fn loom_two_gs_prepare_one_direction_one_waits_one_is_busy() {
    let _outcome = testkit::record!();
    model(|| {
        let pd = Arc::new(PollDesc::new());
        let other = {
            let pd = pd.clone();
            thread::spawn(move || pd.prepare(Dir::Read))
        };
        let mine = pd.prepare(Dir::Read);
        let theirs = other.join().unwrap();
        let waits = [mine, theirs]
            .iter()
            .filter(|p| **p == Prepared::Wait)
            .count();
        assert!(
            waits == 1 && (mine == Prepared::Busy || theirs == Prepared::Busy),
            "netpoll: two Gs prepared to read one socket at once and got {mine:?} and \
             {theirs:?}: exactly one may wait, the other is told Busy (book: \
             ch10-netpoll.html#step-2)"
        );
    });
}

/// One G's whole read loop, as the runtime will run it, against a poller thread that
/// delivers two readiness events. `data` stands in for the socket (a swap is the read, an
/// add is a byte arriving: the kernel's socket lock orders the two). The G sleeps on a
/// `Notify` until `ready` hands it out; the poller also notifies once when it is done, so a
/// G still asleep then, with nobody left to hand it out, is reported as a lost wake-up
/// (instead of a loom deadlock, which aborts the whole test binary).
#[test]
fn loom_a_read_loop_gets_both_of_two_readiness_events() {
    let _outcome = testkit::record!();
    model(|| {
        let pd = Arc::new(PollDesc::new());
        let data = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        let handouts = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let g = tok(7);
        let poller = {
            let (pd, data, wake, handouts, done) = (
                pd.clone(),
                data.clone(),
                wake.clone(),
                handouts.clone(),
                done.clone(),
            );
            thread::spawn(move || {
                for _ in 0..2 {
                    data.fetch_add(1, SeqCst); // a byte arrives, then epoll reports it
                    if let Some(woken) = pd.ready(Dir::Read) {
                        assert_eq!(
                            woken, g,
                            "netpoll: ready() handed out a G that never parked (book: \
                             ch10-netpoll.html#step-2)"
                        );
                        handouts.fetch_add(1, SeqCst);
                        wake.notify();
                    }
                }
                done.store(1, SeqCst);
                wake.notify();
            })
        };
        // A failure is kept and reported after the join: a panic while the poller thread
        // still runs makes loom abort the whole test binary.
        let (mut got, mut parks, mut failure) = (0, 0, None::<String>);
        'reading: while got < 2 {
            let n = data.swap(0, SeqCst); // the read
            if n > 0 {
                got += n;
                continue;
            }
            // WouldBlock: wait for readiness, or take the one that is already there.
            loop {
                match pd.prepare(Dir::Read) {
                    Prepared::Ready => break,
                    Prepared::Wait => {
                        if pd.park(Dir::Read, g) {
                            parks += 1;
                            // Sleep until handed out (loom's Notify may also wake spuriously).
                            while handouts.load(SeqCst) < parks {
                                if done.load(SeqCst) == 1 && handouts.load(SeqCst) < parks {
                                    failure = Some(
                                        "lost wake-up: the G committed its park, and the poller \
                                         delivered its last readiness without handing it out \
                                         (book: ch10-netpoll.html#step-2)"
                                            .to_string(),
                                    );
                                    break 'reading;
                                }
                                wake.wait();
                            }
                        } // false: readiness came first; prepare again consumes it
                    }
                    other => {
                        failure = Some(format!(
                            "the only reader of a socket got {other:?} from prepare (the \
                             direction must be Idle or Ready whenever that G is running) \
                             (book: ch10-netpoll.html#step-1)"
                        ));
                        break 'reading;
                    }
                }
            }
        }
        poller.join().unwrap();
        if let Some(failure) = failure {
            panic!("netpoll: {failure}");
        }
        assert_eq!(
            handouts.load(SeqCst),
            parks,
            "netpoll: the G parked {parks} times and was handed out {} times (book: \
             ch10-netpoll.html#step-2)",
            handouts.load(SeqCst)
        );
    });
}

/// `Poller::wake`'s flag: thread A's wake is on its way and the poller has just taken its
/// event; thread B makes work runnable, then wakes. Either B writes the eventfd, or the
/// poller, which looks at its queues after `consume`, sees B's work.
#[test]
fn loom_wake_flag_against_a_consuming_poll() {
    let _outcome = testkit::record!();
    model(|| {
        let flag = Arc::new(WakeFlag::new());
        assert!(
            flag.claim(),
            "netpoll: WakeFlag::claim on a new flag must say \"write\" (book: \
             ch10-netpoll.html#step-4)"
        );
        let writes = Arc::new(AtomicUsize::new(0)); // eventfd writes after A's
        let work = Arc::new(AtomicUsize::new(0)); // B's runnable G
        let b = {
            let (flag, writes, work) = (flag.clone(), writes.clone(), work.clone());
            thread::spawn(move || {
                work.store(1, Release);
                if flag.claim() {
                    writes.fetch_add(1, SeqCst);
                }
            })
        };
        flag.consume(); // the poller took A's event
        let saw_work = work.load(Acquire) == 1; // and looks at its queues again
        b.join().unwrap();
        assert!(
            saw_work || writes.load(SeqCst) > 0,
            "netpoll: lost wake-up: a waker found the wake pending and wrote nothing, and the \
             poller that consumed the wake did not see its work; consume must synchronise \
             with that claim (a swap, not a store) (book: ch10-netpoll.html#step-4)"
        );
    });
}
