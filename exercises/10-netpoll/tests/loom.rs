//! The loom models of part 10's `PollDesc`: loom runs each scenario below under every
//! interleaving of the descriptor's atomic operations (up to a bound on preemptions), and,
//! for every load, every value the memory model allows it to read. A park that is not
//! decided by one compare-and-swap against `ready` or `close` shows up here as a G that
//! sleeps with nobody to wake it (a lost wake-up), or a G handed out to be woken twice.
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

use loom::sync::Arc;
use loom::thread;
use netpoll::{Dir, PollDesc, Prepared, Token};

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
            !(!slept && woken.is_some()),
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
