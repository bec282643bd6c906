//! Tests for part 07, `runq`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 7, so the first failing one names the step to
//! work on: 1, the owner's ring (push_back, pop, len); 2, overflow of half the ring; 3,
//! runnext; 4, steal-half; 5, the owner against thieves on other threads. Every test checks
//! that each token comes back exactly once: a lost or doubled token fails naming the token.
//! The threaded tests run under a progress watchdog (`testkit::watch`): a body that makes no
//! progress for 5 s fails naming the step it stalled in and the book section to read.
//! `whole_runtime_…` tests, at the end, run the gmp runtime on your ring.
//!
//! The loom model of the same ring is `tests/loom.rs` (chapter 7, "How to check").
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::thread;

use runq::{CAPACITY, Local, Stealer, Token};
use testkit::{DEFAULT_LIMIT, Progress, Step, watch_with};

const STEP1: &str = "ch07-runq.html#step-1";
const STEP2: &str = "ch07-runq.html#step-2";
const STEP3: &str = "ch07-runq.html#step-3";
const STEP4: &str = "ch07-runq.html#step-4";
const STEP5: &str = "ch07-runq.html#step-5";

fn tok(v: u64) -> Token {
    Token::new(NonZeroU64::new(v).expect("tests use tokens from 1 on"))
}

fn val(t: Token) -> u64 {
    t.get().get()
}

/// An overflow callback for pushes that must not overflow.
fn no_overflow(step: &'static str) -> impl FnMut(Token) {
    move |t| {
        panic!(
            "overflow called with token {} although the ring was not full; overflow is only \
             for a push onto a full ring (book: {step})",
            val(t)
        )
    }
}

/// Pops until `None`, at most `limit` times (a ring that never empties fails, not hangs).
fn drain<const N: usize>(local: &mut Local<N>, limit: usize, step: &str) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(t) = local.pop() {
        out.push(val(t));
        assert!(
            out.len() <= limit,
            "pop returned {} tokens, but at most {limit} were pushed; first ones: {:?} \
             (a token handed out twice? book: {step})",
            out.len(),
            &out[..out.len().min(12)]
        );
    }
    out
}

/// Fails naming the first token that is missing or doubled in `got` against `want`.
fn assert_exactly_once(got: &[u64], want: impl IntoIterator<Item = u64>, step: &str) {
    let want: Vec<u64> = want.into_iter().collect();
    let mut seen = std::collections::HashMap::<u64, usize>::new();
    for &t in got {
        *seen.entry(t).or_default() += 1;
    }
    for (&t, &n) in &seen {
        assert!(
            n == 1,
            "runq: token {t} handed out {n} times; each push must come back exactly once \
             (book: {step})"
        );
        assert!(
            want.contains(&t),
            "runq: token {t} came out but was never pushed; a slot read outside [head, tail)? \
             (book: {step})"
        );
    }
    for t in &want {
        assert!(
            seen.contains_key(t),
            "runq: token {t} was pushed and never came back (lost); got {} of {} tokens \
             (book: {step})",
            got.len(),
            want.len()
        );
    }
}

fn panic_message(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("this call must panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".to_string()
    }
}

/// A small deterministic random source (xorshift64*), so a failing script can be rerun.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a run queue must do, written the slow and obvious way: the tests compare the ring
/// against it after every operation.
struct Model<const N: usize> {
    ring: VecDeque<u64>,
    runnext: Option<u64>,
}

impl<const N: usize> Model<N> {
    fn new() -> Self {
        Model {
            ring: VecDeque::new(),
            runnext: None,
        }
    }

    /// The overflow batch, empty when the ring had room.
    fn push_back(&mut self, t: u64) -> Vec<u64> {
        if self.ring.len() < N {
            self.ring.push_back(t);
            return Vec::new();
        }
        let mut batch: Vec<u64> = self.ring.drain(..N / 2).collect();
        batch.push(t);
        batch
    }

    fn push_next(&mut self, t: u64) -> Vec<u64> {
        match self.runnext.replace(t) {
            Some(old) => self.push_back(old),
            None => Vec::new(),
        }
    }

    fn pop(&mut self) -> Option<u64> {
        self.runnext.take().or_else(|| self.ring.pop_front())
    }

    fn len(&self) -> usize {
        self.ring.len() + usize::from(self.runnext.is_some())
    }
}

/// Runs `ops` random pushes and pops on a ring of `N` and on the model, comparing every
/// result, every overflow batch and every length. `next_share` of 4 operations use runnext.
fn against_the_model<const N: usize>(seed: u64, ops: usize, next_share: u64, step: &str) {
    let (mut local, stealer) = runq::new::<N>();
    let mut model = Model::<N>::new();
    let mut rng = Rng(seed);
    let mut next_token = 1;
    for op in 0..ops {
        let roll = rng.below(8);
        if roll < 5 {
            let t = next_token;
            next_token += 1;
            let use_next = rng.below(4) < next_share;
            let mut batch = Vec::new();
            let want = if use_next {
                local.push_next(tok(t), |o| batch.push(val(o)));
                model.push_next(t)
            } else {
                local.push_back(tok(t), |o| batch.push(val(o)));
                model.push_back(t)
            };
            let what = if use_next { "push_next" } else { "push_back" };
            assert_eq!(
                batch,
                want,
                "N = {N}, operation {op} ({what} of token {t}): overflow got the first list, \
                 expected the second (on a full ring: the {} oldest of the ring, then the new \
                 one; seed {seed}; book: {step})",
                N / 2
            );
        } else {
            let got = local.pop().map(val);
            let want = model.pop();
            assert_eq!(
                got, want,
                "N = {N}, operation {op} (pop): got the first, expected the second (runnext \
                 first, then the ring's oldest; seed {seed}; book: {step})"
            );
        }
        assert_eq!(
            local.len(),
            model.len(),
            "N = {N}, after operation {op}: Local::len is wrong (ring items plus runnext; \
             seed {seed}; book: {step})"
        );
        assert_eq!(
            stealer.len(),
            model.len(),
            "N = {N}, after operation {op}: Stealer::len differs from the ring's content \
             while nothing runs concurrently (seed {seed}; book: {STEP1})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 1: the owner's ring. push_back, pop, len. No overflow, no runnext, no thieves.
// ---------------------------------------------------------------------------------------

#[test]
fn step1_a_new_ring_is_empty() {
    let _outcome = testkit::record!();
    let (mut local, stealer) = runq::new::<CAPACITY>();
    assert_eq!(local.len(), 0, "a new ring holds nothing (book: {STEP1})");
    assert!(local.is_empty(), "a new ring is empty (book: {STEP1})");
    assert_eq!(local.pop(), None, "pop on a new ring (book: {STEP1})");
    drop(stealer);
}

#[test]
fn step1_every_fill_level_comes_back_once_in_fifo_order() {
    let _outcome = testkit::record!();
    for fill in 0..=CAPACITY as u64 {
        let (mut local, stealer) = runq::new::<CAPACITY>();
        for t in 1..=fill {
            local.push_back(tok(t), no_overflow(STEP1));
            assert_eq!(
                local.len(),
                t as usize,
                "len after {t} pushes on an empty ring of {CAPACITY} (book: {STEP1})"
            );
        }
        assert_eq!(
            stealer.len(),
            fill as usize,
            "Stealer::len after {fill} pushes, nothing running concurrently (book: {STEP1})"
        );
        let got = drain(&mut local, fill as usize, STEP1);
        assert_exactly_once(&got, 1..=fill, STEP1);
        assert_eq!(
            got,
            (1..=fill).collect::<Vec<_>>(),
            "filled to {fill} of {CAPACITY}: pop must return the tokens in the order pushed \
             (FIFO: take at head, put at tail; book: {STEP1})"
        );
        assert!(
            local.is_empty(),
            "filled to {fill} and popped it all: the ring must be empty (book: {STEP1})"
        );
    }
}

#[test]
fn step1_one_ring_filled_to_every_level_in_turn_wraps_its_slots() {
    let _outcome = testkit::record!();
    // One ring for all levels: head and tail go round the slots many times, at every offset.
    let (mut local, _stealer) = runq::new::<CAPACITY>();
    let mut next = 1;
    for fill in 0..=CAPACITY as u64 {
        let first = next;
        for _ in 0..fill {
            local.push_back(tok(next), no_overflow(STEP1));
            next += 1;
        }
        assert_eq!(
            local.len(),
            fill as usize,
            "len after pushing {fill} onto an empty ring whose head is at {} (book: {STEP1})",
            first - 1
        );
        let got = drain(&mut local, fill as usize, STEP1);
        assert_eq!(
            got,
            (first..next).collect::<Vec<_>>(),
            "filled to {fill} starting at slot {}: FIFO order across the end of the slots \
             (index the slot as counter % N; book: {STEP1})",
            (first - 1) % CAPACITY as u64
        );
    }
}

#[test]
fn step1_the_counters_may_wrap_past_u32_max() {
    let _outcome = testkit::record!();
    // head and tail start 3 short of u32::MAX + 1: pushing 8 crosses the wrap.
    let (mut local, stealer) = runq::new_at::<8>(u32::MAX - 2);
    for t in 1..=8 {
        local.push_back(tok(t), no_overflow(STEP1));
    }
    assert_eq!(
        local.len(),
        8,
        "len with tail past the u32 wrap and head before it: use tail.wrapping_sub(head) \
         (book: {STEP1})"
    );
    assert_eq!(
        stealer.len(),
        8,
        "Stealer::len across the u32 wrap (book: {STEP1})"
    );
    let got = drain(&mut local, 8, STEP1);
    assert_eq!(
        got,
        (1..=8).collect::<Vec<_>>(),
        "FIFO order across the u32 wrap of head and tail: wrapping_add, and the slot is \
         counter % N (book: {STEP1})"
    );
}

#[test]
fn step1_push_and_pop_interleaved_on_a_tiny_ring() {
    let _outcome = testkit::record!();
    let (mut local, _stealer) = runq::new::<4>();
    let mut model = VecDeque::new();
    let mut next = 1;
    for round in 0..2_000u64 {
        // 1 to 4 pushes, then as many pops minus one (but never below empty): the fill level
        // drifts up and down between 0 and 4 while head and tail go round the 4 slots.
        let pushes = (round % 4) + 1;
        for _ in 0..pushes {
            if model.len() == 4 {
                break;
            }
            local.push_back(tok(next), no_overflow(STEP1));
            model.push_back(next);
            next += 1;
        }
        for _ in 0..pushes.saturating_sub(round % 2) {
            let got = local.pop().map(val);
            assert_eq!(
                got,
                model.pop_front(),
                "round {round} on a ring of 4: pop must return the oldest token (book: {STEP1})"
            );
        }
        assert_eq!(
            local.len(),
            model.len(),
            "round {round}: len (book: {STEP1})"
        );
    }
}

#[test]
fn step1_a_capacity_that_is_not_a_power_of_two_is_refused_by_name() {
    let _outcome = testkit::record!();
    for msg in [
        panic_message(|| drop(runq::new::<3>())),
        panic_message(|| drop(runq::new::<1>())),
        panic_message(|| drop(runq::new::<0>())),
        panic_message(|| drop(runq::new::<384>())),
    ] {
        assert!(
            msg.contains("power of two"),
            "expected a message saying the capacity must be a power of two, got: {msg} \
             (book: {STEP1})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: a push onto a full ring moves the older half plus the new token out (runqputslow).
// ---------------------------------------------------------------------------------------

#[test]
fn step2_a_full_ring_hands_out_its_older_half_and_the_new_token() {
    let _outcome = testkit::record!();
    let n = CAPACITY as u64;
    let (mut local, _stealer) = runq::new::<CAPACITY>();
    for t in 1..=n {
        local.push_back(tok(t), no_overflow(STEP2));
    }
    let mut batch = Vec::new();
    local.push_back(tok(n + 1), |t| batch.push(val(t)));
    let mut want: Vec<u64> = (1..=n / 2).collect();
    want.push(n + 1);
    assert_eq!(
        batch,
        want,
        "a push onto a full ring of {n}: overflow must get tokens 1..={} (the older half, \
         oldest first) and then the new token {} (book: {STEP2})",
        n / 2,
        n + 1
    );
    assert_eq!(
        local.len(),
        CAPACITY / 2,
        "after the overflow the ring keeps its newer half (book: {STEP2})"
    );
    let rest = drain(&mut local, CAPACITY, STEP2);
    assert_eq!(
        rest,
        (n / 2 + 1..=n).collect::<Vec<_>>(),
        "after the overflow, pop returns the newer half in order (book: {STEP2})"
    );
}

#[test]
fn step2_pushing_past_full_again_and_again_loses_and_doubles_nothing() {
    let _outcome = testkit::record!();
    // Without pops, a ring of 8 overflows on pushes 9, 14, 19, ...: 4 old + 1 new each time.
    let (mut local, _stealer) = runq::new::<8>();
    let mut out = Vec::new();
    let mut batches = Vec::new();
    for t in 1..=1_000u64 {
        let mut batch = Vec::new();
        local.push_back(tok(t), |o| batch.push(val(o)));
        if !batch.is_empty() {
            assert_eq!(
                batch.len(),
                5,
                "push of token {t} onto a full ring of 8: expected 4 + 1 tokens through \
                 overflow, got {batch:?} (book: {STEP2})"
            );
            assert_eq!(
                batch.last(),
                Some(&t),
                "the new token goes out last, after the older half (book: {STEP2})"
            );
            assert!(
                batch.windows(2).all(|w| w[0] < w[1]),
                "overflow batch {batch:?} is not oldest first (book: {STEP2})"
            );
            out.extend_from_slice(&batch);
            batches.push(t);
        }
        assert!(
            local.len() <= 8,
            "a ring of 8 holds {} tokens after pushing {t} (book: {STEP2})",
            local.len()
        );
    }
    assert_eq!(
        batches.first(),
        Some(&9),
        "the first overflow must come on the 9th push into a ring of 8 (book: {STEP2})"
    );
    out.extend(drain(&mut local, 8, STEP2));
    assert_exactly_once(&out, 1..=1_000, STEP2);
}

#[test]
fn step2_at_every_fill_level_a_ring_of_256_matches_the_model() {
    let _outcome = testkit::record!();
    // Fill to each level, then push one more (overflowing only at the top), then drain.
    for fill in 0..=CAPACITY as u64 {
        let (mut local, _stealer) = runq::new::<CAPACITY>();
        let mut model = Model::<CAPACITY>::new();
        for t in 1..=fill + 1 {
            let mut batch = Vec::new();
            local.push_back(tok(t), |o| batch.push(val(o)));
            assert_eq!(
                batch,
                model.push_back(t),
                "filled to {fill}, push of token {t}: overflow batch (book: {STEP2})"
            );
        }
        let got = drain(&mut local, CAPACITY, STEP2);
        let want: Vec<u64> = model.ring.iter().copied().collect();
        assert_eq!(
            got, want,
            "filled to {fill} plus one: what pop returns (book: {STEP2})"
        );
    }
}

#[test]
fn step2_random_pushes_and_pops_match_the_model() {
    let _outcome = testkit::record!();
    against_the_model::<2>(0x5eed_0002, 20_000, 0, STEP2);
    against_the_model::<4>(0x5eed_0004, 20_000, 0, STEP2);
    against_the_model::<CAPACITY>(0x5eed_0100, 20_000, 0, STEP2);
}

// ---------------------------------------------------------------------------------------
// Step 3: runnext. A pushed-next token runs before the ring; the one it displaces goes to
// the tail.
// ---------------------------------------------------------------------------------------

#[test]
fn step3_push_next_runs_before_the_ring() {
    let _outcome = testkit::record!();
    let (mut local, _stealer) = runq::new::<CAPACITY>();
    local.push_back(tok(1), no_overflow(STEP3));
    local.push_back(tok(2), no_overflow(STEP3));
    local.push_next(tok(3), no_overflow(STEP3));
    assert_eq!(local.len(), 3, "len counts runnext too (book: {STEP3})");
    let got = drain(&mut local, 3, STEP3);
    assert_eq!(
        got,
        vec![3, 1, 2],
        "push_back 1, 2, push_next 3: pop returns runnext first, then the ring in order \
         (book: {STEP3})"
    );
}

#[test]
fn step3_a_second_push_next_sends_the_first_to_the_tail() {
    let _outcome = testkit::record!();
    let (mut local, _stealer) = runq::new::<CAPACITY>();
    local.push_back(tok(1), no_overflow(STEP3));
    local.push_next(tok(2), no_overflow(STEP3));
    local.push_next(tok(3), no_overflow(STEP3));
    assert_eq!(
        local.len(),
        3,
        "len after push_back 1, push_next 2, 3 (book: {STEP3})"
    );
    let got = drain(&mut local, 3, STEP3);
    assert_eq!(
        got,
        vec![3, 1, 2],
        "push_back 1, push_next 2, push_next 3: 3 runs next, 2 was kicked to the tail behind \
         1 (book: {STEP3})"
    );
}

#[test]
fn step3_a_token_kicked_out_of_runnext_onto_a_full_ring_overflows() {
    let _outcome = testkit::record!();
    let n = CAPACITY as u64;
    let (mut local, _stealer) = runq::new::<CAPACITY>();
    for t in 1..=n {
        local.push_back(tok(t), no_overflow(STEP3));
    }
    // runnext is empty: no overflow, even though the ring is full.
    local.push_next(tok(1000), no_overflow(STEP3));
    assert_eq!(
        local.len(),
        CAPACITY + 1,
        "a full ring plus runnext holds N + 1 (book: {STEP3})"
    );
    let mut batch = Vec::new();
    local.push_next(tok(1001), |t| batch.push(val(t)));
    let mut want: Vec<u64> = (1..=n / 2).collect();
    want.push(1000);
    assert_eq!(
        batch, want,
        "push_next 1001 kicks 1000 onto the full ring: overflow gets the older half, then \
         1000 (book: {STEP3})"
    );
    assert_eq!(
        local.pop().map(val),
        Some(1001),
        "1001 is in runnext (book: {STEP3})"
    );
}

#[test]
fn step3_random_operations_with_runnext_match_the_model() {
    let _outcome = testkit::record!();
    against_the_model::<2>(0x5eed_1002, 20_000, 2, STEP3);
    against_the_model::<4>(0x5eed_1004, 20_000, 1, STEP3);
    against_the_model::<8>(0x5eed_1008, 20_000, 3, STEP3);
    against_the_model::<CAPACITY>(0x5eed_1100, 20_000, 1, STEP3);
}

// ---------------------------------------------------------------------------------------
// Step 4: steal-half. A thief moves half the victim's ring (rounded up) into its own and
// runs one of them now.
// ---------------------------------------------------------------------------------------

#[test]
fn step4_stealing_from_an_empty_ring_finds_nothing() {
    let _outcome = testkit::record!();
    let (_victim, stealer) = runq::new::<CAPACITY>();
    let (mut thief, _) = runq::new::<CAPACITY>();
    assert_eq!(
        stealer.len(),
        0,
        "Stealer::len of an empty ring (book: {STEP4})"
    );
    assert!(
        stealer.is_empty(),
        "Stealer::is_empty of an empty ring (book: {STEP4})"
    );
    assert_eq!(
        stealer.steal_into(&mut thief, true),
        None,
        "nothing to steal from an empty ring (book: {STEP4})"
    );
    assert!(
        thief.is_empty(),
        "a steal that found nothing moves nothing (book: {STEP4})"
    );
}

#[test]
fn step4_runnext_is_stolen_only_when_asked_and_the_ring_is_empty() {
    let _outcome = testkit::record!();
    let (mut victim, stealer) = runq::new::<CAPACITY>();
    let (mut thief, _) = runq::new::<CAPACITY>();
    victim.push_next(tok(7), no_overflow(STEP4));
    assert_eq!(
        stealer.len(),
        1,
        "Stealer::len counts runnext (book: {STEP4})"
    );
    assert_eq!(
        stealer.steal_into(&mut thief, false),
        None,
        "runnext_too = false: the victim's runnext stays (book: {STEP4})"
    );
    assert_eq!(
        victim.len(),
        1,
        "runnext must still be there (book: {STEP4})"
    );
    victim.push_back(tok(8), no_overflow(STEP4));
    assert_eq!(
        stealer.steal_into(&mut thief, true).map(val),
        Some(8),
        "the ring has a token: steal from the ring, not runnext (book: {STEP4})"
    );
    assert_eq!(
        stealer.steal_into(&mut thief, true).map(val),
        Some(7),
        "ring empty and runnext_too: take runnext (book: {STEP4})"
    );
    assert!(
        victim.is_empty(),
        "the victim gave everything away (book: {STEP4})"
    );
    assert_eq!(
        victim.pop(),
        None,
        "the victim's runnext is gone (book: {STEP4})"
    );
    assert!(
        thief.is_empty(),
        "single tokens are returned, not queued (book: {STEP4})"
    );
}

#[test]
fn step4_steal_half_rounded_up_at_every_fill_level() {
    let _outcome = testkit::record!();
    for fill in 0..=CAPACITY as u64 {
        let (mut victim, stealer) = runq::new::<CAPACITY>();
        let (mut thief, _) = runq::new::<CAPACITY>();
        for t in 1..=fill {
            victim.push_back(tok(t), no_overflow(STEP4));
        }
        assert_eq!(
            stealer.len(),
            fill as usize,
            "Stealer::len at {fill} (book: {STEP4})"
        );
        let got = stealer.steal_into(&mut thief, false).map(val);
        let half = fill - fill / 2;
        if fill == 0 {
            assert_eq!(got, None, "nothing to steal at fill 0 (book: {STEP4})");
            continue;
        }
        assert_eq!(
            got,
            Some(half),
            "victim holds 1..={fill}: the thief takes the oldest {half} (half, rounded up) and \
             runs the newest of them, {half}, now (book: {STEP4})"
        );
        assert_eq!(
            thief.len(),
            (half - 1) as usize,
            "victim held {fill}: {half} stolen, one returned, so the thief's ring holds {} \
             (book: {STEP4})",
            half - 1
        );
        assert_eq!(
            victim.len(),
            (fill - half) as usize,
            "victim held {fill}, {half} stolen (book: {STEP4})"
        );
        let thiefs = drain(&mut thief, CAPACITY, STEP4);
        assert_eq!(
            thiefs,
            (1..half).collect::<Vec<_>>(),
            "the thief's ring holds the stolen tokens in the victim's order (book: {STEP4})"
        );
        let victims = drain(&mut victim, CAPACITY, STEP4);
        assert_eq!(
            victims,
            (half + 1..=fill).collect::<Vec<_>>(),
            "the victim keeps its newer half in order (book: {STEP4})"
        );
    }
}

#[test]
fn step4_a_steal_into_a_nearly_full_thief_takes_only_what_fits() {
    let _outcome = testkit::record!();
    // The thief's ring has room for 1 more: it may take 2 (one into the ring, one to run).
    let (mut victim, stealer) = runq::new::<8>();
    let (mut thief, _) = runq::new::<8>();
    for t in 1..=8 {
        victim.push_back(tok(t), no_overflow(STEP4));
    }
    for t in 101..=107 {
        thief.push_back(tok(t), no_overflow(STEP4));
    }
    let got = stealer.steal_into(&mut thief, false).map(val);
    assert_eq!(
        got,
        Some(2),
        "the thief has room for one: it takes 1 into its ring and runs 2 (book: {STEP4})"
    );
    assert_eq!(
        thief.len(),
        8,
        "the thief's ring is full now, not over full (book: {STEP4})"
    );
    let mut all = vec![2];
    all.extend(drain(&mut thief, 8, STEP4));
    all.extend(drain(&mut victim, 8, STEP4));
    assert_exactly_once(&all, (1..=8).chain(101..=107), STEP4);
}

#[test]
fn step4_three_rings_stealing_from_each_other_lose_and_double_nothing() {
    let _outcome = testkit::record!();
    // Three rings steal round robin from each other until the tokens are all run: each
    // token must come out exactly once.
    let rings: Vec<(Local<8>, Stealer<8>)> = (0..3).map(|_| runq::new::<8>()).collect();
    let (mut locals, stealers): (Vec<_>, Vec<_>) = rings.into_iter().unzip();
    let mut out = Vec::new();
    let mut overflow = Vec::new();
    for t in 1..=200u64 {
        locals[0].push_back(tok(t), |o| overflow.push(val(o)));
        if t % 3 == 0 {
            let (a, b) = (((t / 3) % 3) as usize, ((t / 3 + 1) % 3) as usize);
            let thief = &mut locals[b];
            if let Some(x) = stealers[a].steal_into(thief, t % 2 == 0) {
                out.push(val(x));
            }
        }
        if t % 5 == 0
            && let Some(x) = locals[(t % 3) as usize].pop()
        {
            out.push(val(x));
        }
    }
    for local in &mut locals {
        out.extend(drain(local, 200, STEP4));
    }
    out.extend(overflow);
    assert_exactly_once(&out, 1..=200, STEP4);
}

#[test]
fn step4_stealing_into_your_own_ring_is_refused_by_name() {
    let _outcome = testkit::record!();
    let (mut local, stealer) = runq::new::<CAPACITY>();
    local.push_back(tok(1), no_overflow(STEP4));
    let msg = panic_message(|| {
        stealer.steal_into(&mut local, true);
    });
    assert!(
        msg.contains("own ring") || msg.contains("same ring"),
        "expected a message saying the thief is the victim's own ring, got: {msg} \
         (book: {STEP4})"
    );
    assert!(
        !msg.contains("not yet implemented"),
        "expected your own message, got the skeleton's todo!(): {msg}"
    );
}

#[test]
fn step4_clones_of_a_stealer_and_local_stealer_see_the_same_ring() {
    let _outcome = testkit::record!();
    let (mut local, first) = runq::new::<CAPACITY>();
    let second = local.stealer();
    let third = first.clone();
    for t in 1..=10 {
        local.push_back(tok(t), no_overflow(STEP4));
    }
    for s in [&first, &second, &third] {
        assert_eq!(
            s.len(),
            10,
            "every stealer of a ring sees its 10 tokens (book: {STEP4})"
        );
    }
    let (mut thief, _) = runq::new::<CAPACITY>();
    assert_eq!(second.steal_into(&mut thief, false).map(val), Some(5));
    assert_eq!(
        third.len(),
        5,
        "a steal through one stealer shows in another (book: {STEP4})"
    );
}

// ---------------------------------------------------------------------------------------
// Step 5: the owner against thieves on other threads. Nothing new to write: this is where
// the memory orderings (and the compare-and-swap that commits every take) are checked.
// ---------------------------------------------------------------------------------------

const STRESS: Step = Step {
    name: "owner pushing and popping while two thieves steal",
    invariant: "every push is taken exactly once; a run that stops making progress is a take \
                that never commits (a compare-and-swap retried forever) or a len that never \
                reaches 0",
    book: STEP5,
};
const STRESS_DRAIN: Step = Step {
    name: "thieves draining the rings after the owner stopped",
    invariant: "a ring whose len stays above 0 while pop and steal find nothing (head or \
                tail out of step with the slots)",
    book: STEP5,
};

/// Counts every token handed out; a second hand-out of one fails at once, naming it.
struct Seen {
    counts: Vec<AtomicU8>,
    total: AtomicUsize,
}

impl Seen {
    fn new(tokens: usize) -> Seen {
        Seen {
            counts: (0..=tokens).map(|_| AtomicU8::new(0)).collect(),
            total: AtomicUsize::new(0),
        }
    }

    fn take(&self, t: Token, who: &str) {
        let v = val(t) as usize;
        assert!(
            v < self.counts.len(),
            "runq: {who} got token {v}, which was never pushed (book: {STEP5})"
        );
        let before = self.counts[v].fetch_add(1, SeqCst);
        assert!(
            before == 0,
            "runq: token {v} handed out twice (the second time to {who}): two takers \
             committed the same item; every take must win a compare-and-swap of head \
             (book: {STEP5})"
        );
        self.total.fetch_add(1, SeqCst);
    }

    fn check_all(&self) {
        let lost: Vec<usize> = (1..self.counts.len())
            .filter(|&v| self.counts[v].load(SeqCst) == 0)
            .collect();
        assert!(
            lost.is_empty(),
            "runq: {} tokens were pushed and never came back (lost), first {:?} \
             (book: {STEP5})",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
}

/// Sets its flag when dropped, on return or on a panic.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// The owner pushes `tokens` tokens (some through runnext) and pops every third time, or, with
/// `bursts`, pushes that many and then pops until empty; meanwhile two thieves steal from it
/// and from each other. Every token must be taken exactly once.
fn owner_against_two_thieves<const N: usize>(tokens: u64, seed: u64, bursts: Option<u64>) {
    let seen = Arc::new(Seen::new(tokens as usize));
    let owner_done = Arc::new(AtomicBool::new(false));
    let (mut owner, owner_stealer) = runq::new::<N>();
    let thief_rings: Vec<(Local<N>, Stealer<N>)> = (0..2).map(|_| runq::new::<N>()).collect();
    let (thief_locals, thief_stealers): (Vec<_>, Vec<_>) = thief_rings.into_iter().unzip();
    let all_stealers: Vec<Stealer<N>> = std::iter::once(owner_stealer.clone())
        .chain(thief_stealers.iter().cloned())
        .collect();
    let for_diagnosis = all_stealers.clone();
    let seen_for_diagnosis = seen.clone();
    watch_with(
        &format!("ring of {N}: owner pushes {tokens} tokens against two thieves"),
        DEFAULT_LIMIT,
        STRESS,
        move || {
            let lens: Vec<usize> = for_diagnosis.iter().map(|s| s.len()).collect();
            format!(
                "ring lengths (owner, thief 1, thief 2): {lens:?}; tokens taken so far: {} of \
                 {tokens}",
                seen_for_diagnosis.total.load(SeqCst)
            )
        },
        move |progress: &Progress| {
            let mut thieves = Vec::new();
            for (i, mut mine) in thief_locals.into_iter().enumerate() {
                let victims: Vec<Stealer<N>> = all_stealers
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i + 1)
                    .map(|(_, s)| s.clone())
                    .collect();
                let (seen, owner_done, progress) =
                    (seen.clone(), owner_done.clone(), progress.clone());
                let who = format!("thief {}", i + 1);
                thieves.push(thread::spawn(move || {
                    let (mut turn, mut taken, mut draining) = (0usize, 0usize, false);
                    loop {
                        if progress.cancelled() {
                            return taken;
                        }
                        // Only a token taken is progress: a thief that spins finding
                        // nothing while a len says there is work must stall the watchdog.
                        if let Some(t) = mine.pop() {
                            seen.take(t, &who);
                            (taken, _) = (taken + 1, progress.tick());
                            continue;
                        }
                        let victim = &victims[turn % victims.len()];
                        turn += 1;
                        if let Some(t) = victim.steal_into(&mut mine, turn.is_multiple_of(3)) {
                            seen.take(t, &who);
                            (taken, _) = (taken + 1, progress.tick());
                            continue;
                        }
                        // Own ring empty and the owner finished: stop once nothing is left
                        // anywhere (the other thief drains its own ring itself).
                        if owner_done.load(SeqCst) && victims.iter().all(|v| v.is_empty()) {
                            if mine.is_empty() {
                                return taken;
                            }
                            if !draining {
                                draining = true;
                                progress.step(STRESS_DRAIN);
                            }
                        }
                        thread::yield_now();
                    }
                }));
            }
            // Set even if the owner panics (a doubled token, say), so the thieves drain and
            // stop instead of spinning under every later test of this binary.
            let _done = SetOnDrop(owner_done.clone());
            let mut rng = Rng(seed);
            let mut overflowed = Vec::new();
            for t in 1..=tokens {
                if progress.cancelled() {
                    return;
                }
                progress.tick();
                let mut overflow = |o: Token| overflowed.push(o);
                if rng.below(4) == 0 {
                    owner.push_next(tok(t), &mut overflow);
                } else {
                    owner.push_back(tok(t), &mut overflow);
                }
                match bursts {
                    // Mixed: a pop every third push; the ring fills and overflows.
                    None => {
                        if t % 3 == 0
                            && let Some(x) = owner.pop()
                        {
                            seen.take(x, "the owner");
                        }
                    }
                    // Bursts: fill, then pop until empty, racing the thieves for the head.
                    Some(burst) => {
                        if t % burst == 0 {
                            while let Some(x) = owner.pop() {
                                seen.take(x, "the owner");
                            }
                        }
                    }
                }
                if t % (2 * N as u64).min(64) == 0 {
                    // Let the thieves at the ring: on a busy machine they may otherwise get a
                    // core only after the owner is done, and the steals go untested.
                    thread::yield_now();
                }
                if t % 1024 == 0 {
                    // The runtime puts overflow on the global queue; here the owner runs it.
                    for o in overflowed.drain(..) {
                        seen.take(o, "the owner's overflow");
                    }
                }
            }
            for o in overflowed.drain(..) {
                seen.take(o, "the owner's overflow");
            }
            while let Some(x) = owner.pop() {
                progress.tick();
                seen.take(x, "the owner");
            }
            owner_done.store(true, SeqCst);
            let mut by_thieves = Vec::new();
            for thief in thieves {
                match thief.join() {
                    Ok(taken) => by_thieves.push(taken),
                    Err(p) => panic::resume_unwind(p),
                }
            }
            seen.check_all();
            // Shown with --nocapture: how the work spread (it varies from run to run).
            eprintln!(
                "ring of {N}: {tokens} tokens, taken by the owner and its overflow {}, by \
                 thieves {by_thieves:?}",
                tokens as usize - by_thieves.iter().sum::<usize>()
            );
        },
    );
}

#[test]
fn step5_owner_against_two_thieves_ring_of_256_a_million_operations() {
    let _outcome = testkit::record!();
    // 500k pushes, ~170k owner pops, the rest taken by steals and overflow: about 10^6
    // operations on the ring in all, counting the thieves' pops and failed steals.
    owner_against_two_thieves::<CAPACITY>(500_000, 0x5eed_5100, None);
}

#[test]
fn step5_owner_against_two_thieves_ring_of_4() {
    let _outcome = testkit::record!();
    // A ring of 4 is full or empty most of the time: overflow, wrap and steals collide.
    owner_against_two_thieves::<4>(100_000, 0x5eed_5004, None);
}

#[test]
fn step5_owner_popping_in_bursts_against_two_thieves_ring_of_8() {
    let _outcome = testkit::record!();
    // The owner's pop and the thieves' steals race for the same head all the time: a pop
    // that moves head without a compare-and-swap hands a token out twice here.
    owner_against_two_thieves::<8>(300_000, 0x5eed_5008, Some(6));
}

// ---------------------------------------------------------------------------------------
// Whole-runtime tests: the gmp runtime on YOUR ring (feature mine-07 in the exercise). Every
// P's queue is your `Local`, every thief your `Stealer`; a token handed out twice stops the
// runtime with "runq (part 07): G <n> handed out twice".
// ---------------------------------------------------------------------------------------

const RUNTIME: Step = Step {
    name: "the gmp runtime running Gs through your ring",
    invariant: "a G queued in your ring never handed out (lost token), or the runtime \
                stopped on a token handed out twice (see the dump and the panic above)",
    book: STEP5,
};

#[test]
fn whole_runtime_a_burst_that_overflows_the_ring_runs_every_g_once() {
    let _outcome = testkit::record!();
    let n = 5_000usize;
    let runs = watch_with(
        "5,000 Gs started at once on one P: the ring overflows to the global queue",
        DEFAULT_LIMIT,
        RUNTIME,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(move || {
                let runs: Arc<Vec<AtomicU8>> = Arc::new((0..n).map(|_| AtomicU8::new(0)).collect());
                let gs: Vec<_> = (0..n)
                    .map(|i| {
                        let runs = runs.clone();
                        gmp::go(move || {
                            runs[i].fetch_add(1, SeqCst);
                        })
                    })
                    .collect();
                for g in gs {
                    g.join().unwrap();
                    progress.tick();
                }
                runs.iter().map(|r| r.load(SeqCst)).collect::<Vec<u8>>()
            })
        },
    );
    let wrong: Vec<(usize, u8)> = runs
        .iter()
        .enumerate()
        .filter(|&(_, &r)| r != 1)
        .map(|(i, &r)| (i, r))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "each G must run exactly once; (G index, runs): {wrong:?} (book: {STEP3})"
    );
}

fn fib_seq(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_seq(n - 1) + fib_seq(n - 2)
    }
}

fn fib_on_gs(
    n: u64,
    threads: &Arc<std::sync::Mutex<Vec<thread::ThreadId>>>,
    progress: &Progress,
) -> u64 {
    if n <= 8 {
        let me = thread::current().id();
        let mut seen = threads.lock().unwrap();
        if !seen.contains(&me) {
            seen.push(me);
        }
        progress.tick();
        return fib_seq(n);
    }
    let (t, p) = (threads.clone(), progress.clone());
    let a = gmp::go(move || fib_on_gs(n - 1, &t, &p));
    let b = fib_on_gs(n - 2, threads, progress);
    a.join().unwrap() + b
}

/// Rounds of the fork-join below before the test gives up on seeing a second M. One round
/// takes a few milliseconds, about as long as a new process takes to get its second M
/// going, so a single round sometimes ends on one M with a working ring; with a ring whose
/// steal never hands anything over, every round does.
const FORK_JOIN_ROUNDS: usize = 10;

#[test]
fn whole_runtime_fork_join_at_two_ps_steals_through_your_ring() {
    let _outcome = testkit::record!();
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = threads.clone();
    let results = watch_with(
        "fib(24) with go/join down to fib(8) at 2 Ps: runnext, overflow and steal-half",
        DEFAULT_LIMIT,
        RUNTIME,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let mut results = Vec::new();
                while results.len() < FORK_JOIN_ROUNDS && seen.lock().unwrap().len() < 2 {
                    results.push(fib_on_gs(24, &seen, &progress));
                }
                results
            })
        },
    );
    for got in &results {
        assert_eq!(*got, fib_seq(24), "fib(24) came out wrong (book: {STEP4})");
    }
    let used = threads.lock().unwrap().len();
    assert!(
        used >= 2,
        "all leaves ran on one M in {} rounds: the idle M never stole from the busy P's \
         ring (Stealer::steal_into) (book: {STEP4})",
        results.len()
    );
}
