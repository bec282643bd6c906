//! Tests for part 11, `timer`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 11, so the first failing one names the step to
//! work on: 1, `add`, `len` and `next_deadline` (sift up); 2, `run_expired` (take the root out,
//! sift down); 3, `cancel` anywhere in the heap; 4, `reset`; 5, everything at once against a
//! slow and obvious model (a `BTreeMap`). Every test checks that each token fires exactly
//! once, never before its deadline, and in deadline order: a lost, doubled or early token
//! fails naming the token. `whole_runtime_…` tests, at the end, run the gmp runtime on your
//! heap (feature `mine-11`) under a progress watchdog.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use testkit::{DEFAULT_LIMIT, Step, watch_with};
use timer::{TimerHeap, TimerId, Token};

const STEP1: &str = "ch11-timer.html#step-1";
const STEP2: &str = "ch11-timer.html#step-2";
const STEP3: &str = "ch11-timer.html#step-3";
const STEP4: &str = "ch11-timer.html#step-4";
const STEP5: &str = "ch11-timer.html#step-5";

/// The largest heap the sweeps build: five levels of a 4-ary heap (four hold only 85
/// entries), so every sift crosses several levels and the last level is partly full.
const SWEEP: u64 = 300;

fn tok(v: u64) -> Token {
    Token::new(NonZeroU64::new(v).expect("tests use tokens from 1 on"))
}

fn val(t: Token) -> u64 {
    t.get().get()
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

/// The orders the sweeps add deadlines in, each `n` long: the ones a heap finds easiest
/// and hardest (every add climbs to the root; every take sinks to the bottom).
fn orders(n: u64, seed: u64) -> Vec<(&'static str, Vec<u64>)> {
    let mut rng = Rng(seed | 1);
    vec![
        ("ascending", (0..n).map(|i| 1_000 + i * 10).collect()),
        ("descending", (0..n).map(|i| 1_000 + (n - i) * 10).collect()),
        ("all equal", vec![5_000; n as usize]),
        ("random", (0..n).map(|_| rng.below(10_000)).collect()),
        (
            "few values (ties)",
            (0..n).map(|_| rng.below(4) * 100).collect(),
        ),
        // Sawtooth: runs of 5 descending inside ascending blocks, so adds alternate
        // between staying at a leaf and climbing several levels.
        (
            "sawtooth",
            (0..n).map(|i| (i / 5) * 100 + (4 - i % 5)).collect(),
        ),
        (
            "zero and max",
            (0..n)
                .map(|i| if i % 2 == 0 { 0 } else { u64::MAX })
                .collect(),
        ),
    ]
}

/// Adds `whens[i]` with token `i + 1`, checking `len` and `next_deadline` after each add.
fn fill(heap: &mut TimerHeap, whens: &[u64], what: &str, step: &str) -> Vec<TimerId> {
    let mut ids = Vec::new();
    let mut earliest = u64::MAX;
    for (i, &when) in whens.iter().enumerate() {
        ids.push(heap.add(when, tok(i as u64 + 1)));
        earliest = earliest.min(when);
        assert_eq!(
            heap.len(),
            i + 1,
            "{what}: len after {} adds (book: {step})",
            i + 1
        );
        assert_eq!(
            heap.next_deadline(),
            Some(earliest),
            "{what}: after {} adds (the last at {when}), next_deadline must be the smallest \
             deadline so far, {earliest}: the earliest timer belongs at the root (book: {step})",
            i + 1
        );
    }
    ids
}

/// Checks that `fired` holds each token of `want` exactly once, and nothing else.
fn assert_exactly_once(fired: &[u64], want: impl IntoIterator<Item = u64>, what: &str, step: &str) {
    let mut seen = HashMap::<u64, usize>::new();
    for &t in fired {
        *seen.entry(t).or_default() += 1;
    }
    let want: Vec<u64> = want.into_iter().collect();
    for (&t, &n) in &seen {
        assert!(
            n == 1,
            "{what}: token {t} fired {n} times; each timer fires exactly once (book: {step})"
        );
        assert!(
            want.contains(&t),
            "{what}: token {t} fired but was not due (or was cancelled, or never added) \
             (book: {step})"
        );
    }
    for t in &want {
        assert!(
            seen.contains_key(t),
            "{what}: token {t} was due and never fired (lost); {} of {} fired (book: {step})",
            fired.len(),
            want.len()
        );
    }
}

/// Checks that the deadlines of `fired` (looked up in `when_of`) never go down.
fn assert_in_deadline_order(fired: &[u64], when_of: impl Fn(u64) -> u64, what: &str, step: &str) {
    for pair in fired.windows(2) {
        let (a, b) = (when_of(pair[0]), when_of(pair[1]));
        assert!(
            a <= b,
            "{what}: token {} (due at {b}) fired after token {} (due at {a}): run_expired \
             fires earliest first (book: {step})",
            pair[1],
            pair[0]
        );
    }
}

/// Runs `run_expired(now)`, checking its count against what `fire` got.
fn run(heap: &mut TimerHeap, now: u64, what: &str, step: &str) -> Vec<u64> {
    let mut fired = Vec::new();
    let n = heap.run_expired(now, |t| fired.push(val(t)));
    assert_eq!(
        n,
        fired.len(),
        "{what}: run_expired({now}) returned {n} but handed {} tokens to fire (book: {step})",
        fired.len()
    );
    fired
}

// ---------------------------------------------------------------------------------------
// Step 1: add, len, next_deadline. The earliest timer climbs to the root.
// ---------------------------------------------------------------------------------------

#[test]
fn step1_a_new_heap_is_empty() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    assert_eq!(heap.len(), 0, "a new heap holds no timer (book: {STEP1})");
    assert!(heap.is_empty(), "a new heap is empty (book: {STEP1})");
    assert_eq!(
        heap.next_deadline(),
        None,
        "a new heap has no next deadline (book: {STEP1})"
    );
}

#[test]
fn step1_next_deadline_is_the_earliest_after_every_add_in_every_order() {
    let _outcome = testkit::record!();
    for n in 0..=SWEEP {
        for (order, whens) in orders(n, n) {
            let mut heap = TimerHeap::new();
            fill(&mut heap, &whens, &format!("{n} timers, {order}"), STEP1);
        }
    }
}

#[test]
fn step1_ids_of_waiting_timers_are_distinct() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let ids = fill(&mut heap, &orders(SWEEP, 7)[3].1, "300 random", STEP1);
    let mut seen = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        assert!(
            seen.insert(*id),
            "timer {} got the id {id:?} that an earlier waiting timer has: each waiting timer \
             needs its own id, or cancel could not tell them apart (book: {STEP1})",
            i + 1
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: run_expired. Take the root out, fill the hole, sift down.
// ---------------------------------------------------------------------------------------

#[test]
fn step2_an_empty_heap_fires_nothing() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let fired = run(&mut heap, u64::MAX, "an empty heap", STEP2);
    assert!(
        fired.is_empty(),
        "an empty heap fired {fired:?} (book: {STEP2})"
    );
}

#[test]
fn step2_every_size_and_order_fires_each_token_once_in_deadline_order() {
    let _outcome = testkit::record!();
    for n in 0..=SWEEP {
        for (order, whens) in orders(n, n + 1_000) {
            let what = format!("{n} timers, {order}");
            let mut heap = TimerHeap::new();
            fill(&mut heap, &whens, &what, STEP1);
            let fired = run(&mut heap, u64::MAX, &what, STEP2);
            assert_exactly_once(&fired, 1..=n, &what, STEP2);
            assert_in_deadline_order(&fired, |t| whens[t as usize - 1], &what, STEP2);
            assert!(
                heap.is_empty(),
                "{what}: every timer fired, the heap must be empty (book: {STEP2})"
            );
            assert_eq!(
                heap.next_deadline(),
                None,
                "{what}: empty after firing all (book: {STEP2})"
            );
        }
    }
}

#[test]
fn step2_only_due_timers_fire_and_the_rest_stay_exact() {
    let _outcome = testkit::record!();
    for n in [1u64, 2, 4, 5, 16, 17, 21, 64, 85, 86, 300] {
        for (order, whens) in orders(n, n + 2_000) {
            let what = format!("{n} timers, {order}");
            let mut heap = TimerHeap::new();
            fill(&mut heap, &whens, &what, STEP1);
            let mut sorted = whens.clone();
            sorted.sort_unstable();
            sorted.dedup();
            // `now` at each distinct deadline, just below it, and past the end.
            let mut nows: Vec<u64> = sorted
                .iter()
                .flat_map(|&w| [w.saturating_sub(1), w])
                .collect();
            nows.push(u64::MAX);
            let mut fired_all = Vec::new();
            for now in nows {
                let fired = run(&mut heap, now, &what, STEP2);
                for &t in &fired {
                    let when = whens[t as usize - 1];
                    assert!(
                        when <= now,
                        "{what}: token {t} fired at now = {now}, before its deadline {when} \
                         (book: {STEP2})"
                    );
                }
                fired_all.extend(fired);
                let left: Vec<u64> = (1..=n)
                    .filter(|t| !fired_all.contains(t))
                    .map(|t| whens[t as usize - 1])
                    .collect();
                assert!(
                    left.iter().all(|&w| w > now),
                    "{what}: after run_expired({now}) a timer due at {} is still waiting: \
                     every timer with when <= now fires (book: {STEP2})",
                    left.iter()
                        .filter(|&&w| w <= now)
                        .min()
                        .copied()
                        .unwrap_or_default()
                );
                assert_eq!(
                    heap.len(),
                    left.len(),
                    "{what}: len after run_expired({now}) (book: {STEP2})"
                );
                assert_eq!(
                    heap.next_deadline(),
                    left.iter().min().copied(),
                    "{what}: next_deadline after run_expired({now}) (book: {STEP2})"
                );
            }
            assert_exactly_once(&fired_all, 1..=n, &what, STEP2);
        }
    }
}

#[test]
fn step2_timers_added_between_runs_keep_their_order() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let mut rng = Rng(42);
    let mut whens = HashMap::new();
    let mut next = 1;
    let mut now = 0;
    let mut fired_all = Vec::new();
    for round in 0..400 {
        for _ in 0..rng.below(6) {
            let when = now + rng.below(200);
            heap.add(when, tok(next));
            whens.insert(next, when);
            next += 1;
        }
        now += rng.below(60);
        let fired = run(&mut heap, now, &format!("round {round}"), STEP2);
        assert_in_deadline_order(&fired, |t| whens[&t], &format!("round {round}"), STEP2);
        for &t in &fired {
            assert!(
                whens[&t] <= now,
                "round {round}: token {t} fired early (book: {STEP2})"
            );
        }
        fired_all.extend(fired);
    }
    fired_all.extend(run(&mut heap, u64::MAX, "the end", STEP2));
    assert_exactly_once(&fired_all, 1..next, "400 rounds of adds and runs", STEP2);
}

// ---------------------------------------------------------------------------------------
// Step 3: cancel, anywhere in the heap.
// ---------------------------------------------------------------------------------------

#[test]
fn step3_cancel_each_timer_of_every_heap_up_to_64() {
    let _outcome = testkit::record!();
    // Cancelling timer k of n (a fresh heap each time) reaches every position of every
    // heap shape up to 64: the root, inner nodes, leaves, the last entry.
    for n in 1..=64u64 {
        for (order, whens) in orders(n, n + 3_000) {
            for k in 1..=n {
                let what = format!("{n} timers, {order}, cancel token {k}");
                let mut heap = TimerHeap::new();
                let ids = fill(&mut heap, &whens, &what, STEP1);
                assert!(
                    heap.cancel(ids[k as usize - 1]),
                    "{what}: cancel of a waiting timer must return true (book: {STEP3})"
                );
                assert_eq!(
                    heap.len(),
                    n as usize - 1,
                    "{what}: len after the cancel (book: {STEP3})"
                );
                let rest = (1..=n).filter(|&t| t != k);
                assert_eq!(
                    heap.next_deadline(),
                    rest.clone().map(|t| whens[t as usize - 1]).min(),
                    "{what}: next_deadline after the cancel (book: {STEP3})"
                );
                let fired = run(&mut heap, u64::MAX, &what, STEP3);
                assert_exactly_once(&fired, rest, &what, STEP3);
                assert_in_deadline_order(&fired, |t| whens[t as usize - 1], &what, STEP3);
            }
        }
    }
}

#[test]
fn step3_cancel_all_300_in_random_order_keeps_the_heap_exact() {
    let _outcome = testkit::record!();
    for (order, whens) in orders(SWEEP, 77) {
        let what = format!("300 timers, {order}");
        let mut heap = TimerHeap::new();
        let ids = fill(&mut heap, &whens, &what, STEP1);
        let mut left: Vec<u64> = (1..=SWEEP).collect();
        let mut rng = Rng(99);
        while !left.is_empty() {
            let t = left.swap_remove(rng.below(left.len() as u64) as usize);
            assert!(
                heap.cancel(ids[t as usize - 1]),
                "{what}: cancel token {t} (book: {STEP3})"
            );
            assert_eq!(
                heap.len(),
                left.len(),
                "{what}: len after cancelling token {t} (book: {STEP3})"
            );
            assert_eq!(
                heap.next_deadline(),
                left.iter().map(|&t| whens[t as usize - 1]).min(),
                "{what}: next_deadline after cancelling token {t}: the hole must be filled and \
                 the entry moved in sifted up or down (book: {STEP3})"
            );
        }
        assert!(
            run(&mut heap, u64::MAX, &what, STEP3).is_empty(),
            "{what}: all cancelled, yet a timer fired (book: {STEP3})"
        );
    }
}

#[test]
fn step3_cancel_after_fire_or_cancel_returns_false_and_touches_nothing() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let a = heap.add(10, tok(1));
    let b = heap.add(20, tok(2));
    assert!(heap.cancel(b), "cancel of a waiting timer (book: {STEP3})");
    assert!(
        !heap.cancel(b),
        "a second cancel of one timer must return false (book: {STEP3})"
    );
    assert_eq!(run(&mut heap, 15, "after the cancel", STEP3), [1]);
    assert!(
        !heap.cancel(a),
        "cancel of a timer that fired must return false (book: {STEP3})"
    );
    // New timers may reuse the room of the old ones: their ids must still be new.
    let c = heap.add(30, tok(3));
    let d = heap.add(40, tok(4));
    assert!(
        !heap.cancel(a) && !heap.cancel(b),
        "an old id (fired or cancelled) cancelled a new timer that reused its room: give each \
         timer an id no earlier timer had, e.g. a generation per slot (book: {STEP3})"
    );
    assert_eq!(
        heap.len(),
        2,
        "the old ids must leave the new timers alone (book: {STEP3})"
    );
    assert!(
        heap.cancel(d) && heap.cancel(c),
        "cancel of the new timers (book: {STEP3})"
    );
    assert!(heap.is_empty(), "all cancelled (book: {STEP3})");
}

// ---------------------------------------------------------------------------------------
// Step 4: reset, anywhere in the heap, earlier or later.
// ---------------------------------------------------------------------------------------

#[test]
fn step4_reset_each_timer_earlier_and_later_in_every_heap_up_to_64() {
    let _outcome = testkit::record!();
    for n in 1..=64u64 {
        for (order, whens) in orders(n, n + 4_000) {
            for k in 1..=n {
                for (how, to) in [
                    ("to 0", 0u64),
                    ("later", whens[k as usize - 1].saturating_add(5_000)),
                    ("to the same", whens[k as usize - 1]),
                ] {
                    let what = format!("{n} timers, {order}, reset token {k} {how}");
                    let mut heap = TimerHeap::new();
                    let ids = fill(&mut heap, &whens, &what, STEP1);
                    assert!(
                        heap.reset(ids[k as usize - 1], to),
                        "{what}: reset of a waiting timer must return true (book: {STEP4})"
                    );
                    let mut now_whens = whens.clone();
                    now_whens[k as usize - 1] = to;
                    assert_eq!(
                        heap.len(),
                        n as usize,
                        "{what}: reset changes no count (book: {STEP4})"
                    );
                    assert_eq!(
                        heap.next_deadline(),
                        now_whens.iter().min().copied(),
                        "{what}: next_deadline after the reset (book: {STEP4})"
                    );
                    let fired = run(&mut heap, u64::MAX, &what, STEP4);
                    assert_exactly_once(&fired, 1..=n, &what, STEP4);
                    assert_in_deadline_order(&fired, |t| now_whens[t as usize - 1], &what, STEP4);
                }
            }
        }
    }
}

#[test]
fn step4_reset_after_fire_or_cancel_returns_false_and_touches_nothing() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let a = heap.add(10, tok(1));
    let b = heap.add(20, tok(2));
    let c = heap.add(30, tok(3));
    assert!(heap.cancel(b));
    assert!(
        !heap.reset(b, 1),
        "reset of a cancelled timer must return false (book: {STEP4})"
    );
    assert_eq!(run(&mut heap, 10, "first run", STEP4), [1]);
    assert!(
        !heap.reset(a, 1),
        "reset of a fired timer must return false (book: {STEP4})"
    );
    assert_eq!(
        heap.next_deadline(),
        Some(30),
        "the refused resets changed a deadline (book: {STEP4})"
    );
    assert!(heap.reset(c, 5), "reset of a waiting timer (book: {STEP4})");
    assert_eq!(
        run(&mut heap, 5, "after moving token 3 earlier", STEP4),
        [3]
    );
}

// ---------------------------------------------------------------------------------------
// Step 5: everything at once, against a model.
// ---------------------------------------------------------------------------------------

/// What a timer heap must do, written the slow and obvious way: waiting timers by id.
#[derive(Default)]
struct Model {
    waiting: BTreeMap<u64, (u64, TimerId)>,
}

/// Random adds, cancels and resets (of waiting, fired and cancelled ids), and runs at a
/// clock that moves forward, compared with the model after every operation.
fn against_the_model(seed: u64, ops: usize) {
    let mut heap = TimerHeap::new();
    let mut model = Model::default();
    let mut gone: Vec<TimerId> = Vec::new();
    let mut when_of = HashMap::new();
    let mut rng = Rng(seed);
    let mut now = 0u64;
    let mut next = 1u64;
    for op in 0..ops {
        let what = format!("seed {seed}, operation {op}");
        match rng.below(10) {
            0..=3 => {
                // Small spread: many ties.
                let when = now + rng.below(64);
                let id = heap.add(when, tok(next));
                model.waiting.insert(next, (when, id));
                when_of.insert(next, when);
                next += 1;
            }
            4 | 5 if !model.waiting.is_empty() => {
                let pick = *model
                    .waiting
                    .keys()
                    .nth(rng.below(model.waiting.len() as u64) as usize)
                    .unwrap();
                let (_, id) = model.waiting.remove(&pick).unwrap();
                assert!(
                    heap.cancel(id),
                    "{what}: cancel of waiting token {pick} returned false (book: {STEP5})"
                );
                gone.push(id);
            }
            6 if !model.waiting.is_empty() => {
                let pick = *model
                    .waiting
                    .keys()
                    .nth(rng.below(model.waiting.len() as u64) as usize)
                    .unwrap();
                let when = now + rng.below(64);
                let entry = model.waiting.get_mut(&pick).unwrap();
                entry.0 = when;
                when_of.insert(pick, when);
                assert!(
                    heap.reset(entry.1, when),
                    "{what}: reset of waiting token {pick} returned false (book: {STEP5})"
                );
            }
            7 if !gone.is_empty() => {
                let id = gone[rng.below(gone.len() as u64) as usize];
                if rng.below(2) == 0 {
                    assert!(
                        !heap.cancel(id),
                        "{what}: cancel of a gone timer {id:?} returned true (book: {STEP5})"
                    );
                } else {
                    assert!(
                        !heap.reset(id, now),
                        "{what}: reset of a gone timer {id:?} returned true (book: {STEP5})"
                    );
                }
            }
            _ => {
                now += rng.below(40);
                let fired = run(&mut heap, now, &what, STEP5);
                let due: Vec<u64> = model
                    .waiting
                    .iter()
                    .filter(|(_, (w, _))| *w <= now)
                    .map(|(t, _)| *t)
                    .collect();
                assert_exactly_once(
                    &fired,
                    due.iter().copied(),
                    &format!("{what}: run_expired({now})"),
                    STEP5,
                );
                assert_in_deadline_order(&fired, |t| when_of[&t], &what, STEP5);
                for t in due {
                    let (_, id) = model.waiting.remove(&t).unwrap();
                    gone.push(id);
                }
            }
        }
        assert_eq!(
            heap.len(),
            model.waiting.len(),
            "{what}: len (book: {STEP5})"
        );
        assert_eq!(
            heap.is_empty(),
            model.waiting.is_empty(),
            "{what}: is_empty (book: {STEP5})"
        );
        assert_eq!(
            heap.next_deadline(),
            model.waiting.values().map(|(w, _)| *w).min(),
            "{what}: next_deadline (book: {STEP5})"
        );
    }
}

#[test]
fn step5_random_operations_match_a_btreemap_model() {
    let _outcome = testkit::record!();
    for seed in [1, 2, 3, 0x5eed, 0xdead_beef, 0x1234_5678_9abc_def1] {
        against_the_model(seed, 4_000);
    }
}

#[test]
fn step5_many_timers_with_one_deadline_fire_once_each() {
    let _outcome = testkit::record!();
    let mut heap = TimerHeap::new();
    let n = 10_000u64;
    for t in 1..=n {
        heap.add(1_000, tok(t));
    }
    assert_eq!(
        run(&mut heap, 999, "10,000 ties, just before", STEP5),
        Vec::<u64>::new()
    );
    let fired = run(&mut heap, 1_000, "10,000 ties", STEP5);
    assert_exactly_once(&fired, 1..=n, "10,000 timers due at one instant", STEP5);
}

// ---------------------------------------------------------------------------------------
// Whole-runtime tests: gmp's sleep, Ticker and recv_timeout run on YOUR heap (feature
// mine-11 in the exercise). A heap that fires early, twice or after a cancel stops the
// runtime with a message naming the rule; one that loses a timer stalls, and the watchdog
// names the step.
// ---------------------------------------------------------------------------------------

const SLEEPERS: Step = Step {
    name: "10,000 Gs each sleep 50 ms; the watchdog sees each wake-up",
    invariant: "every timer fires once its deadline has passed: a G asleep seconds after its \
                deadline was lost by the heap (run_expired skipped it, or cancel/sift took out \
                the wrong one)",
    book: "ch11-timer.html#step-5",
};

const TICKER: Step = Step {
    name: "one P: a Ticker G ticks while another G yields for 200 ms",
    invariant: "the M runs its P's expired timers each time it looks for work, so a G that \
                only yields never holds a timer back",
    book: "ch11-timer.html#how-the-runtime-uses-it",
};

const RECV: Step = Step {
    name: "recv_timeout: a value before the deadline, then a timeout",
    invariant: "a timer's G is woken once its deadline has passed, and a cancelled timer \
                never fires",
    book: "ch11-timer.html#step-5",
};

#[test]
fn whole_runtime_10k_gs_sleeping_50ms_all_wake_none_early() {
    let _outcome = testkit::record!();
    let n = 10_000usize;
    let (woke, early) = watch_with(
        "10,000 Gs sleeping 50 ms at 2 Ps",
        DEFAULT_LIMIT,
        SLEEPERS,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let woke = Arc::new(AtomicUsize::new(0));
                let early = Arc::new(AtomicU64::new(0));
                let gs: Vec<_> = (0..n)
                    .map(|_| {
                        let (woke, early, progress) =
                            (woke.clone(), early.clone(), progress.clone());
                        gmp::go(move || {
                            let start = Instant::now();
                            gmp::time::sleep(Duration::from_millis(50));
                            let slept = start.elapsed();
                            if slept < Duration::from_millis(50) {
                                early.fetch_add(1, SeqCst);
                            }
                            woke.fetch_add(1, SeqCst);
                            progress.tick();
                        })
                    })
                    .collect();
                for g in gs {
                    g.join().unwrap();
                }
                (woke.load(SeqCst), early.load(SeqCst))
            })
        },
    );
    assert_eq!(
        woke, n,
        "every sleeping G must wake exactly once (book: {STEP5})"
    );
    assert_eq!(
        early, 0,
        "{early} G(s) woke before their 50 ms were up: a timer fired before its deadline \
         (book: {STEP2})"
    );
}

#[test]
fn whole_runtime_a_ticker_keeps_ticking_on_one_p_while_another_g_yields() {
    let _outcome = testkit::record!();
    let (ticks, yields) = watch_with(
        "a Ticker of 10 ms beside a G that yields for 200 ms, one P",
        DEFAULT_LIMIT,
        TICKER,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(move || {
                let done = Arc::new(AtomicUsize::new(0));
                let ticker = {
                    let (done, progress) = (done.clone(), progress.clone());
                    gmp::go(move || {
                        let mut ticker = gmp::time::Ticker::new(Duration::from_millis(10));
                        let mut ticks = 0u32;
                        while done.load(SeqCst) == 0 {
                            ticker.tick();
                            ticks += 1;
                            progress.tick();
                        }
                        ticks
                    })
                };
                // This G never sleeps: it only yields, for 200 ms. (A G blocked in a
                // system call is chapter 9's gmp::blocking; yields keep this test to part 11.)
                let start = Instant::now();
                let mut yields = 0u64;
                while start.elapsed() < Duration::from_millis(200) {
                    gmp::yield_now();
                    yields += 1;
                    if yields.is_multiple_of(1_000) {
                        progress.tick();
                    }
                }
                done.store(1, SeqCst);
                (ticker.join().unwrap(), yields)
            })
        },
    );
    // 20 ticks are due in 200 ms; a slow machine may merge some (a Ticker drops ticks a
    // slow reader misses, as Go's does), but a timer that is never run gives at most one.
    assert!(
        ticks >= 5,
        "the Ticker ticked {ticks} time(s) in the 200 ms another G spent yielding \
         ({yields} yields): the M must run its P's expired timers whenever it looks for \
         work (book: ch11-timer.html#how-the-runtime-uses-it)"
    );
}

const BLOCKED_P: Step = Step {
    name: "two Ps: a Ticker made on P0 ticks for a G on the other M while P0's M is blocked",
    invariant: "a P's due timers are run by other Ms too (a thief, or the M asleep until the \
                next deadline), so a timer never waits behind its own P's long-running G",
    book: "ch11-timer.html#how-the-runtime-uses-it",
};

#[test]
fn whole_runtime_a_ticker_on_a_blocked_p_ticks_for_a_g_on_another_m() {
    let _outcome = testkit::record!();
    let (ticks, other_m) = watch_with(
        "a Ticker on a P whose M blocks for 200 ms, read by a G on the other M, 2 Ps",
        DEFAULT_LIMIT,
        BLOCKED_P,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let here = std::thread::current().id();
                // Made here: its timer lives in this G's P's heap.
                let mut ticker = gmp::time::Ticker::new(Duration::from_millis(10));
                let done = Arc::new(AtomicUsize::new(0));
                let reader = {
                    let (done, progress) = (done.clone(), progress.clone());
                    gmp::go(move || {
                        let mut ticks = 0u32;
                        while done.load(SeqCst) == 0 {
                            ticker.tick();
                            ticks += 1;
                            progress.tick();
                        }
                        (ticks, std::thread::current().id())
                    })
                };
                // This M and its P do nothing else for 200 ms (a call that blocks without
                // chapter 9's gmp::blocking): the idle M steals the reader, and the ticks
                // must come from timers that this P's own M never gets to run.
                std::thread::sleep(Duration::from_millis(200));
                done.store(1, SeqCst);
                let (ticks, reader_thread) = reader.join().unwrap();
                (ticks, reader_thread != here)
            })
        },
    );
    assert!(
        other_m,
        "the reader G ran on the blocked M: the test needs it on the other one (a runtime \
         change, not your heap; book: ch11-timer.html#how-the-runtime-uses-it)"
    );
    assert!(
        ticks >= 5,
        "the Ticker ticked {ticks} time(s) in the 200 ms its P's M was blocked: the other \
         M (a thief, or the M asleep until the next deadline) must run a busy P's due \
         timers (book: ch11-timer.html#how-the-runtime-uses-it)"
    );
}

#[test]
fn whole_runtime_recv_timeout_gets_a_value_in_time_and_times_out_without_one() {
    let _outcome = testkit::record!();
    let (got, waited, timed_out) = watch_with(
        "recv_timeout both ways at 2 Ps",
        DEFAULT_LIMIT,
        RECV,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let (tx, rx) = gmp::chan::rendezvous::<u32>();
                let sender = gmp::go(move || {
                    gmp::time::sleep(Duration::from_millis(10));
                    tx.send(7).unwrap();
                    tx // kept alive: the second receive must time out, not see a closed channel
                });
                let got = rx.recv_timeout(Duration::from_secs(10));
                progress.tick();
                let tx = sender.join().unwrap();
                let start = Instant::now();
                let timed_out = rx.recv_timeout(Duration::from_millis(30));
                let waited = start.elapsed();
                progress.tick();
                drop(tx);
                (got, waited, timed_out)
            })
        },
    );
    assert_eq!(
        got,
        Ok(7),
        "a value sent 10 ms into a 10 s timeout arrives (book: {STEP5})"
    );
    assert_eq!(
        timed_out,
        Err(gmp::chan::RecvTimeoutError::Timeout),
        "no sender sends: recv_timeout must time out (book: {STEP5})"
    );
    assert!(
        waited >= Duration::from_millis(30),
        "recv_timeout(30 ms) returned after {waited:?}: its timer fired early (book: {STEP2})"
    );
}
