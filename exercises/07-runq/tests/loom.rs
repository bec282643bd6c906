//! The loom model of part 07: loom runs each scenario below under every interleaving of the
//! ring's atomic operations (up to a bound on preemptions), and, for every load, every value
//! the memory model allows it to read. A take that is not committed by a compare-and-swap,
//! or an ordering too weak to publish a slot, shows up here as a token lost or handed out
//! twice, with the interleaving that did it.
//!
//! Run it (release: loom explores thousands of interleavings):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ex-07-runq --release --test loom
//! ```
//!
//! `--cfg loom` makes `src/sync.rs` take its atomics from loom; the separate target dir
//! keeps that build from replacing the normal one. Book: chapter 7, "How to check".
#![cfg(loom)]

use std::num::NonZeroU64;

use loom::thread;
use runq::{Local, Token};

/// The ring size of every model: small, so a few pushes fill it and the counters wrap the
/// slots, and loom's search stays in seconds.
const N: usize = 4;

fn tok(v: u64) -> Token {
    Token::new(NonZeroU64::new(v).expect("the models use tokens from 1 on"))
}

/// Pops until `None` (a ring of 4 plus runnext can hold at most 5; more is a doubled token).
fn drain(local: &mut Local<N>, out: &mut Vec<u64>) {
    while let Some(t) = local.pop() {
        out.push(t.get().get());
        assert!(out.len() <= 16, "pop keeps returning tokens: {out:?}");
    }
}

/// Each of `1..=pushed` exactly once in `got`, else a message naming the token.
fn assert_exactly_once(mut got: Vec<u64>, pushed: u64) {
    got.sort_unstable();
    for w in got.windows(2) {
        assert!(
            w[0] != w[1],
            "runq: token {} handed out twice (book: ch07-runq.html#step-5)",
            w[0]
        );
    }
    for t in 1..=pushed {
        assert!(
            got.contains(&t),
            "runq: token {t} lost: pushed, never taken; got {got:?} (book: ch07-runq.html#step-5)"
        );
    }
    assert_eq!(
        got.len() as u64,
        pushed,
        "runq: tokens that were never pushed came out: {got:?} (book: ch07-runq.html#step-5)"
    );
}

/// loom's search with a preemption bound: every interleaving with at most this many forced
/// switches. 3 finds the known bugs (a Relaxed tail, a plain store of head) in seconds.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[test]
fn loom_owner_push_and_pop_against_one_thief() {
    let _outcome = testkit::record!();
    model(|| {
        let (mut owner, stealer) = runq::new::<N>();
        let thief = thread::spawn(move || {
            let (mut mine, _) = runq::new::<N>();
            let mut got = Vec::new();
            if let Some(t) = stealer.steal_into(&mut mine, false) {
                got.push(t.get().get());
            }
            drain(&mut mine, &mut got);
            got
        });
        let mut got = Vec::new();
        for t in 1..=3 {
            owner.push_back(tok(t), |_| {
                panic!("a ring of 4 with 3 pushes never overflows")
            });
        }
        if let Some(t) = owner.pop() {
            got.push(t.get().get());
        }
        let stolen = thief.join().expect("the thief panicked");
        drain(&mut owner, &mut got);
        got.extend(stolen);
        assert_exactly_once(got, 3);
    });
}

#[test]
fn loom_overflow_against_one_thief() {
    let _outcome = testkit::record!();
    model(|| {
        let (mut owner, stealer) = runq::new::<N>();
        // Full before the thief starts: the owner's next push overflows, unless the thief
        // commits its steal first and makes room.
        for t in 1..=4 {
            owner.push_back(tok(t), |_| panic!("the ring had room"));
        }
        let thief = thread::spawn(move || {
            let (mut mine, _) = runq::new::<N>();
            let mut got = Vec::new();
            if let Some(t) = stealer.steal_into(&mut mine, false) {
                got.push(t.get().get());
            }
            drain(&mut mine, &mut got);
            got
        });
        let mut got = Vec::new();
        // Overflows, or, after a steal, reuses the stolen slots: the thief must have read
        // them before the owner writes 5 and 6 there.
        owner.push_back(tok(5), |t| got.push(t.get().get()));
        owner.push_back(tok(6), |t| got.push(t.get().get()));
        let stolen = thief.join().expect("the thief panicked");
        drain(&mut owner, &mut got);
        got.extend(stolen);
        assert_exactly_once(got, 6);
    });
}

#[test]
fn loom_overflow_against_one_thief_while_the_counters_wrap() {
    let _outcome = testkit::record!();
    model(|| {
        // head and tail start 2 below u32::MAX: the pushes, the steal's compare-and-swap and
        // the overflow's all cross the wrap, where `tail - head` must still count the ring.
        let (mut owner, stealer) = runq::new_at::<N>(u32::MAX - 1);
        for t in 1..=4 {
            owner.push_back(tok(t), |_| panic!("the ring had room"));
        }
        let thief = thread::spawn(move || {
            let (mut mine, _) = runq::new::<N>();
            let mut got = Vec::new();
            if let Some(t) = stealer.steal_into(&mut mine, false) {
                got.push(t.get().get());
            }
            drain(&mut mine, &mut got);
            got
        });
        let mut got = Vec::new();
        owner.push_back(tok(5), |t| got.push(t.get().get()));
        let stolen = thief.join().expect("the thief panicked");
        drain(&mut owner, &mut got);
        got.extend(stolen);
        assert_exactly_once(got, 5);
    });
}

#[test]
fn loom_runnext_against_a_thief_that_takes_it() {
    let _outcome = testkit::record!();
    model(|| {
        let (mut owner, stealer) = runq::new::<N>();
        let thief = thread::spawn(move || {
            let (mut mine, _) = runq::new::<N>();
            let mut got = Vec::new();
            if let Some(t) = stealer.steal_into(&mut mine, true) {
                got.push(t.get().get());
            }
            drain(&mut mine, &mut got);
            got
        });
        let mut got = Vec::new();
        owner.push_next(tok(1), |_| panic!("runnext was empty"));
        owner.push_next(tok(2), |_| panic!("the ring had room"));
        if let Some(t) = owner.pop() {
            got.push(t.get().get());
        }
        let stolen = thief.join().expect("the thief panicked");
        drain(&mut owner, &mut got);
        got.extend(stolen);
        assert_exactly_once(got, 2);
    });
}

#[test]
fn loom_two_thieves_against_the_owner() {
    let _outcome = testkit::record!();
    model(|| {
        let (mut owner, stealer) = runq::new::<N>();
        let thieves: Vec<_> = (0..2)
            .map(|_| {
                let stealer = stealer.clone();
                thread::spawn(move || {
                    let (mut mine, _) = runq::new::<N>();
                    let mut got = Vec::new();
                    if let Some(t) = stealer.steal_into(&mut mine, true) {
                        got.push(t.get().get());
                    }
                    drain(&mut mine, &mut got);
                    got
                })
            })
            .collect();
        let mut got = Vec::new();
        owner.push_back(tok(1), |_| panic!("the ring had room"));
        owner.push_back(tok(2), |_| panic!("the ring had room"));
        owner.push_next(tok(3), |_| panic!("runnext was empty"));
        if let Some(t) = owner.pop() {
            got.push(t.get().get());
        }
        for thief in thieves {
            got.extend(thief.join().expect("a thief panicked"));
        }
        drain(&mut owner, &mut got);
        assert_exactly_once(got, 3);
    });
}

#[test]
fn loom_the_owner_steals_back_from_a_thief_that_is_publishing() {
    let _outcome = testkit::record!();
    model(|| {
        let (mut owner, owner_stealer) = runq::new::<N>();
        for t in 1..=4 {
            owner.push_back(tok(t), |_| panic!("the ring had room"));
        }
        let (thief_local, thief_stealer) = runq::new::<N>();
        let thief = thread::spawn(move || {
            let mut mine = thief_local;
            let mut got = Vec::new();
            // Takes 1 and 2: 1 into its ring (published by its tail), 2 to run.
            if let Some(t) = owner_stealer.steal_into(&mut mine, false) {
                got.push(t.get().get());
            }
            drain(&mut mine, &mut got);
            got
        });
        let mut got = Vec::new();
        if let Some(t) = owner.pop() {
            got.push(t.get().get());
        }
        // Robs the thief while it may be in the middle of its steal.
        if let Some(t) = thief_stealer.steal_into(&mut owner, true) {
            got.push(t.get().get());
        }
        drain(&mut owner, &mut got);
        got.extend(thief.join().expect("the thief panicked"));
        assert_exactly_once(got, 4);
    });
}
