//! Tests for part 09, `syscall`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 9, so the first failing one names the step to
//! work on: 1, a call entered and ended without sysmon (`enter`, `exit`, `observe`); 2,
//! sysmon's `retake` and the race it runs with `exit`, a million calls against a sysmon on
//! another thread; 3, sysmon's clock (`Sysmon`); 4, the bound on native calls (`Bound`).
//! The threaded tests run under a progress watchdog (`testkit::watch`): a body that makes no
//! progress for 5 s fails naming the step it stalled in and the book section to read.
//!
//! The loom models of the same slot are `tests/loom.rs` (chapter 9, "How to check").
#![cfg(not(loom))]

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use syscall::{Bound, Exit, MAX_CALL, Observed, SyscallSlot, Sysmon};
use testkit::{DEFAULT_LIMIT, Progress, Step, watch_with};

const STEP1: &str = "ch09-syscall.html#step-1";
const STEP2: &str = "ch09-syscall.html#step-2";
const STEP3: &str = "ch09-syscall.html#step-3";
const STEP4: &str = "ch09-syscall.html#step-4";

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

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------
// Step 1: a call without sysmon
// ---------------------------------------------------------------------------------------

#[test]
fn step1_a_new_slot_is_in_no_call() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    assert_eq!(
        slot.observe(),
        None,
        "a new slot's P is held by its M, not in a call: observe must say None (book: {STEP1})"
    );
    assert_eq!(slot.calls(), 0, "no call was entered yet (book: {STEP1})");
}

#[test]
fn step1_enter_then_exit_without_sysmon_keeps_the_p() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    let ticket = slot.enter();
    assert_eq!(
        ticket.call(),
        1,
        "the first call of a slot is call 1 (book: {STEP1})"
    );
    let seen = slot.observe();
    assert_eq!(
        seen.map(Observed::call),
        Some(1),
        "during call 1 sysmon's look must see call 1, got {seen:?} (book: {STEP1})"
    );
    assert_eq!(
        slot.exit(ticket),
        Exit::Kept,
        "nobody retook the P: the M must keep it (book: {STEP1})"
    );
    assert_eq!(
        slot.observe(),
        None,
        "after exit the P is held again, in no call (book: {STEP1})"
    );
    assert_eq!(slot.calls(), 1, "one call was made (book: {STEP1})");
}

#[test]
fn step1_every_call_gets_the_next_number_and_keeps_the_p() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    for n in 1..=10_000u64 {
        let ticket = slot.enter();
        assert_eq!(
            ticket.call(),
            n,
            "call numbers count the calls: 1, 2, 3, ...; the counter is what tells one call \
             from the next (book: {STEP1})"
        );
        assert_eq!(
            slot.observe().map(Observed::call),
            Some(n),
            "during call {n} the look must name call {n} (book: {STEP1})"
        );
        assert_eq!(
            slot.exit(ticket),
            Exit::Kept,
            "call {n}: nobody retook the P, the M must keep it (book: {STEP1})"
        );
        assert_eq!(
            slot.observe(),
            None,
            "after call {n} ended the slot is in no call (book: {STEP1})"
        );
    }
}

#[test]
fn step1_the_call_number_wraps_after_max_call() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new_at(MAX_CALL - 1);
    let last = slot.enter();
    assert_eq!(
        last.call(),
        MAX_CALL,
        "the call after MAX_CALL - 1 (book: {STEP1})"
    );
    assert_eq!(
        slot.exit(last),
        Exit::Kept,
        "call MAX_CALL ends like any other (book: {STEP1})"
    );
    let wrapped = slot.enter();
    assert_eq!(
        wrapped.call(),
        0,
        "after MAX_CALL the number wraps to 0: use next_call, which keeps it in the word's \
         62 bits, not call + 1 (book: {STEP1})"
    );
    assert_eq!(
        slot.observe().map(Observed::call),
        Some(0),
        "the look during the wrapped call names call 0 (book: {STEP1})"
    );
    assert_eq!(
        slot.exit(wrapped),
        Exit::Kept,
        "a call number that did not fit the word would make the exit's compare fail: the \
         M would be told Retaken for a call nobody took (book: {STEP1})"
    );
    assert_eq!(
        slot.enter().call(),
        1,
        "and on: 0, 1, 2, ... (book: {STEP1})"
    );
}

#[test]
fn step1_entering_a_second_call_before_the_first_ends_is_refused_by_name() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    let ticket = slot.enter();
    let message = panic_message(|| {
        let _second = slot.enter();
    });
    assert!(
        message.contains("call 1") && message.contains("ch09-syscall.html#step-1"),
        "a second enter during call 1 must panic naming call 1 and the book section; got: \
         {message}"
    );
    assert_eq!(
        slot.exit(ticket),
        Exit::Kept,
        "the refused enter must leave call 1 as it was (book: {STEP1})"
    );
}

// ---------------------------------------------------------------------------------------
// Step 2: sysmon's retake
// ---------------------------------------------------------------------------------------

#[test]
fn step2_retake_of_an_observed_call_wins_and_the_exit_then_says_retaken() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    let ticket = slot.enter();
    let seen = slot
        .observe()
        .unwrap_or_else(|| panic!("during a call observe must say Some (book: {STEP1})"));
    assert!(
        slot.retake(seen),
        "sysmon saw call 1 and call 1 still runs: the retake must win (book: {STEP2})"
    );
    assert_eq!(
        slot.observe(),
        None,
        "a retaken P no longer waits in a call: observe must say None, or sysmon would take \
         it again (book: {STEP2})"
    );
    assert!(
        !slot.retake(seen),
        "a second retake of call 1 must fail: the P was handed out once already (book: {STEP2})"
    );
    assert_eq!(
        slot.exit(ticket),
        Exit::Retaken,
        "sysmon won call 1: the M's exit must say Retaken, so it looks for another P \
         (book: {STEP2})"
    );
}

#[test]
fn step2_retake_of_a_call_that_ended_fails_and_so_does_it_once_a_new_call_began() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    let first = slot.enter();
    let seen = slot.observe().expect("call 1 runs");
    assert_eq!(
        slot.exit(first),
        Exit::Kept,
        "nobody retook call 1 (book: {STEP1})"
    );
    assert!(
        !slot.retake(seen),
        "call 1 ended with the P kept: a retake of it must fail (book: {STEP2})"
    );
    // The ABA case: the slot is in a call again, but a different one.
    let second = slot.enter();
    assert!(
        !slot.retake(seen),
        "sysmon saw call 1, but the slot is in call 2 now, entered a moment ago: a retake \
         of call 1 must fail, or sysmon steals Ps from short calls. A word with only an \
         \"in a call\" flag cannot tell the two calls apart (book: {STEP2})"
    );
    assert_eq!(
        slot.exit(second),
        Exit::Kept,
        "the failed retake of call 1 must not touch call 2 (book: {STEP2})"
    );
}

#[test]
fn step2_a_stale_ticket_does_not_take_back_a_p_now_in_a_later_call() {
    let _outcome = testkit::record!();
    let slot = SyscallSlot::new();
    // M1 enters call 1; sysmon retakes it and hands the P to M2, which enters call 2.
    let m1 = slot.enter();
    let seen = slot.observe().expect("call 1 runs");
    assert!(
        slot.retake(seen),
        "the retake of running call 1 must win (book: {STEP2})"
    );
    let m2 = slot.enter();
    assert_eq!(
        m2.call(),
        2,
        "the P's next holder enters call 2 after a retake (book: {STEP2})"
    );
    // M1's call returns now, while call 2 runs: its ticket is stale.
    assert_eq!(
        slot.exit(m1),
        Exit::Retaken,
        "M1's ticket is for call 1, which sysmon took; that call 2 is running now must not \
         give M1 the P (book: {STEP2})"
    );
    assert_eq!(
        slot.observe().map(Observed::call),
        Some(2),
        "the stale exit must leave call 2 in progress (book: {STEP2})"
    );
    assert_eq!(
        slot.exit(m2),
        Exit::Kept,
        "M2 keeps the P after its call 2: the stale exit must not have ended it (book: {STEP2})"
    );
    // And once call 2 ended with the P kept, a stale ticket still gets nothing.
    let m3 = slot.enter();
    let seen = slot.observe().expect("call 3 runs");
    assert!(
        slot.retake(seen),
        "the retake of running call 3 must win (book: {STEP2})"
    );
    let m4 = slot.enter();
    assert_eq!(
        slot.exit(m4),
        Exit::Kept,
        "call 4 ended, nobody retook it (book: {STEP2})"
    );
    assert_eq!(
        slot.exit(m3),
        Exit::Retaken,
        "call 3 was retaken; call 4 ended since, with the P held: the stale ticket of call 3 \
         must still say Retaken (book: {STEP2})"
    );
    assert_eq!(
        slot.observe(),
        None,
        "the stale exit must not put the slot in a call"
    );
}

#[test]
fn step2_tickets_and_looks_of_another_slot_are_refused_by_name() {
    let _outcome = testkit::record!();
    let (a, b) = (SyscallSlot::new(), SyscallSlot::new());
    let ta = a.enter();
    let tb = b.enter();
    let seen_a = a.observe().expect("a is in a call");
    let message = panic_message(|| {
        let _ = b.retake(seen_a);
    });
    assert!(
        message.contains("another P's slot"),
        "retake with a look at another slot must panic naming it; got: {message}"
    );
    let message = panic_message(|| {
        let _ = b.exit(ta);
    });
    assert!(
        message.contains("another P's slot"),
        "exit with another slot's ticket must panic naming it; got: {message}"
    );
    assert_eq!(
        b.exit(tb),
        Exit::Kept,
        "b's own call still ends normally (book: {STEP2})"
    );
}

const RACE: Step = Step {
    name: "an M entering and leaving calls against sysmon retaking them",
    invariant: "exit and retake each finish with one compare-and-swap of the slot's word; a \
                loop that retries forever, or an M waiting for a sysmon that stopped looking, \
                makes no progress",
    book: STEP2,
};

const RACE_SLOW_CALLS: Step = Step {
    name: "slow calls: the M stays in each call until sysmon has looked four times",
    invariant: "sysmon's looks (observe) keep going while the M is in a call; a stall here \
                is a sysmon thread that stopped, or an observe that never returns",
    book: STEP2,
};

/// An M makes `fast` calls back to back and then `slow` calls that each last until sysmon has
/// looked four times, while sysmon, on another thread, looks at the slot in a loop and retakes
/// what it sees (now at once, now on its second look of a call as Go does, now with the
/// look before last). Every call must have exactly one winner: the calls the M's exit says
/// were retaken are exactly the calls sysmon's retake won.
fn m_against_sysmon(fast: u64, slow: u64) {
    let slot = Arc::new(SyscallSlot::new());
    let done = Arc::new(AtomicBool::new(false));
    let looks = Arc::new(AtomicU64::new(0));
    let won_so_far = Arc::new(AtomicU64::new(0));
    let for_diagnosis = (slot.clone(), looks.clone(), won_so_far.clone());
    let (m_retaken, sysmon_won) = watch_with(
        &format!("an M making {fast} + {slow} calls against sysmon"),
        DEFAULT_LIMIT,
        RACE,
        move || {
            let (slot, looks, won) = for_diagnosis;
            format!(
                "slot: {slot:?}; sysmon looked {} times and won {} retakes",
                looks.load(SeqCst),
                won.load(SeqCst)
            )
        },
        move |progress: &Progress| {
            let sysmon = {
                let (slot, done, looks, won_so_far, progress) = (
                    slot.clone(),
                    done.clone(),
                    looks.clone(),
                    won_so_far.clone(),
                    progress.clone(),
                );
                thread::spawn(move || {
                    let mut won = Vec::new();
                    let (mut before_last, mut last): (Option<Observed>, Option<Observed>) =
                        (None, None);
                    let mut n = 0u64;
                    while !done.load(SeqCst) && !progress.cancelled() {
                        n += 1;
                        let now = slot.observe();
                        let target = match n % 3 {
                            // At once: the tightest race with the M's exit.
                            0 => now,
                            // Go's rule: the same call on two looks in a row.
                            1 => now.filter(|&o| last == Some(o)),
                            // A stale look: must win only if that call still runs.
                            _ => before_last,
                        };
                        if let Some(seen) = target
                            && slot.retake(seen)
                        {
                            won.push(seen.call());
                            won_so_far.fetch_add(1, SeqCst);
                        }
                        (before_last, last) = (last, now);
                        looks.fetch_add(1, SeqCst);
                    }
                    won
                })
            };
            // Sets `done` even if the M panics, so sysmon stops instead of spinning on.
            struct Stop(Arc<AtomicBool>);
            impl Drop for Stop {
                fn drop(&mut self) {
                    self.0.store(true, SeqCst);
                }
            }
            let stop = Stop(done.clone());
            let mut retaken = Vec::new();
            for n in 1..=fast + slow {
                if progress.cancelled() {
                    break;
                }
                if n == fast + 1 {
                    progress.step(RACE_SLOW_CALLS);
                }
                let ticket = slot.enter();
                assert_eq!(
                    ticket.call(),
                    n,
                    "enter: call numbers must count every call, retaken or not (book: {STEP1})"
                );
                if n > fast {
                    // A slow call: wait for two of sysmon's looks, so Go's rule applies.
                    let start = looks.load(SeqCst);
                    // Four looks: at least three begin after this enter, one of each kind.
                    while looks.load(SeqCst) < start + 4 && !progress.cancelled() {
                        thread::yield_now();
                    }
                } else {
                    // A call of a few spins, longer every 8th, so sysmon sometimes lands
                    // inside it.
                    for _ in 0..(n % 8) * 4 {
                        std::hint::spin_loop();
                    }
                }
                match slot.exit(ticket) {
                    Exit::Kept => {}
                    Exit::Retaken => retaken.push(n),
                }
                if n % 1024 == 0 || n > fast {
                    progress.tick();
                }
                if n % 4096 == 0 {
                    // On a busy machine sysmon may otherwise get a core only at the end.
                    thread::yield_now();
                }
            }
            drop(stop);
            let won = match sysmon.join() {
                Ok(won) => won,
                Err(p) => panic::resume_unwind(p),
            };
            (retaken, won)
        },
    );
    let total = fast + slow;
    let mut seen = HashSet::new();
    for &call in &sysmon_won {
        assert!(
            seen.insert(call),
            "sysmon won call {call} twice: a retake must move the slot out of the call it \
             takes, so the next retake of that call fails (book: {STEP2})"
        );
        assert!(
            (1..=total).contains(&call),
            "sysmon won call {call}, but the M made calls 1 to {total} (book: {STEP2})"
        );
    }
    let by_m: HashSet<u64> = m_retaken.iter().copied().collect();
    if let Some(call) = sysmon_won.iter().find(|c| !by_m.contains(c)) {
        panic!(
            "two winners for call {call}: sysmon's retake won it, and the M's exit said Kept. \
             exit and retake must both decide by one compare-and-swap of the same word \
             (book: {STEP2})"
        );
    }
    if let Some(call) = m_retaken.iter().find(|c| !seen.contains(c)) {
        panic!(
            "no winner for call {call}: the M's exit said Retaken, but sysmon's retake never \
             won it; the P would be lost. exit may say Retaken only when a retake took the \
             call (book: {STEP2})"
        );
    }
    let slow_retaken = m_retaken.iter().filter(|&&c| c > fast).count();
    assert_eq!(
        slow_retaken as u64, slow,
        "sysmon looked at each of the last {slow} calls at least three times while it ran \
         (once retaking at once), yet the M kept some: retake must win for a call that is \
         still running (book: {STEP2})"
    );
    assert!(
        (m_retaken.len() as u64) < total,
        "every one of {total} calls was retaken, even back-to-back calls of a few spins: does \
         exit ever say Kept? (book: {STEP2})"
    );
    // Shown with --nocapture: how the race went (it varies from run to run).
    eprintln!(
        "{total} calls: {} retaken by sysmon ({slow_retaken} of the {slow} slow ones), the \
         rest kept by the M",
        m_retaken.len()
    );
}

#[test]
fn step2_the_m_against_sysmon_a_million_calls_has_one_winner_per_call() {
    let _outcome = testkit::record!();
    m_against_sysmon(1_000_000, 200);
}

// ---------------------------------------------------------------------------------------
// Step 3: sysmon's clock
// ---------------------------------------------------------------------------------------

#[test]
fn step3_sysmon_sleeps_20us_while_it_finds_work_and_after_any_busy_look() {
    let _outcome = testkit::record!();
    let mut sysmon = Sysmon::new();
    for _ in 0..5 {
        assert_eq!(
            sysmon.next_delay(0),
            us(20),
            "a look that found work: sysmon sleeps 20 µs, its shortest (book: {STEP3})"
        );
    }
    for idle in 1..=50 {
        assert_eq!(
            sysmon.next_delay(idle),
            us(20),
            "idle look {idle}: sysmon keeps sleeping 20 µs for the first 50 idle looks (about \
             1 ms), Go's `idle > 50` (book: {STEP3})"
        );
    }
}

#[test]
fn step3_sysmon_doubles_its_sleep_after_50_idle_looks_up_to_10ms_and_resets_on_work() {
    let _outcome = testkit::record!();
    let mut sysmon = Sysmon::new();
    for idle in 0..=50 {
        let _ = sysmon.next_delay(idle);
    }
    let want = [
        40, 80, 160, 320, 640, 1280, 2560, 5120, 10_000, 10_000, 10_000,
    ];
    for (i, &w) in want.iter().enumerate() {
        let idle = 51 + i as u32;
        assert_eq!(
            sysmon.next_delay(idle),
            us(w),
            "idle look {idle}: after 50 idle looks each one doubles the sleep, capped at \
             10 ms; expected the sequence {want:?} µs from look 51 on (book: {STEP3})"
        );
    }
    assert_eq!(
        sysmon.next_delay(0),
        us(20),
        "a look that found work resets the sleep to 20 µs (book: {STEP3})"
    );
    assert_eq!(
        sysmon.next_delay(1),
        us(20),
        "the first idle look after work sleeps 20 µs again (book: {STEP3})"
    );
    let mut long = Sysmon::new();
    for idle in 0..10_000 {
        let d = long.next_delay(idle);
        assert!(
            d >= us(20) && d <= ms(10),
            "idle look {idle}: sleep {d:?} is outside 20 µs..=10 ms (book: {STEP3})"
        );
    }
}

#[test]
fn step3_sysmon_retakes_a_call_seen_for_20us_and_not_sooner() {
    let _outcome = testkit::record!();
    let sysmon = Sysmon::new();
    for (seen_for, want) in [
        (Duration::ZERO, false),
        (us(1), false),
        (Duration::from_nanos(19_999), false),
        (us(20), true),
        (us(21), true),
        (ms(10), true),
        (Duration::from_secs(60), true),
    ] {
        assert_eq!(
            sysmon.should_retake(seen_for),
            want,
            "a call seen in progress for {seen_for:?}: retake from 20 µs on, one sysmon tick \
             at its shortest (book: {STEP3})"
        );
    }
}

#[test]
fn step3_sysmon_polls_the_network_only_after_10ms_without_a_poll() {
    let _outcome = testkit::record!();
    let sysmon = Sysmon::new();
    for (since, want) in [
        (Duration::ZERO, false),
        (ms(1), false),
        (ms(10), false),
        (ms(10) + Duration::from_nanos(1), true),
        (ms(11), true),
        (Duration::from_secs(1), true),
    ] {
        assert_eq!(
            sysmon.should_poll_network(since),
            want,
            "{since:?} since the last poll: sysmon polls only once it is more than 10 ms, \
             Go's `lastpoll+10ms < now` (book: {STEP3})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 4: the bound on native calls
// ---------------------------------------------------------------------------------------

#[test]
fn step4_a_bound_of_zero_permits_is_refused_by_name() {
    let _outcome = testkit::record!();
    match Bound::new(0) {
        Ok(b) => panic!(
            "Bound::new(0) must be an error, not {b:?}: every call would wait forever \
             (book: {STEP4})"
        ),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains('0') && text.contains("at least 1"),
                "the error must name the problem (0 permits) and the fix (at least 1); got: \
                 {text} (book: {STEP4})"
            );
        }
    }
}

#[test]
fn step4_a_bound_hands_out_n_permits_then_none_and_takes_them_back_on_drop() {
    let _outcome = testkit::record!();
    for n in [1usize, 2, 8] {
        let bound = Bound::new(n).expect("n > 0");
        assert_eq!(
            bound.limit(),
            n,
            "limit is what new was given (book: {STEP4})"
        );
        assert_eq!(
            bound.available(),
            n,
            "a new bound has all {n} free (book: {STEP4})"
        );
        let mut permits = Vec::new();
        for i in 0..n {
            permits.push(bound.try_acquire().unwrap_or_else(|| {
                panic!(
                    "permit {} of {n}: refused with {i} out (book: {STEP4})",
                    i + 1
                )
            }));
            assert_eq!(
                bound.available(),
                n - i - 1,
                "after {} permits (book: {STEP4})",
                i + 1
            );
        }
        assert!(
            bound.try_acquire().is_none(),
            "all {n} permits are out: the next try must say None (book: {STEP4})"
        );
        drop(permits.pop());
        assert_eq!(
            bound.available(),
            1,
            "a dropped permit goes back to its bound (book: {STEP4})"
        );
        let again = bound.try_acquire();
        assert!(
            again.is_some(),
            "the permit given back must be handed out again (book: {STEP4})"
        );
        drop(again);
        drop(permits);
        assert_eq!(
            bound.available(),
            n,
            "every permit dropped: all {n} are free again (book: {STEP4})"
        );
    }
}

#[test]
fn step4_clones_of_a_bound_share_its_permits() {
    let _outcome = testkit::record!();
    let bound = Bound::new(2).expect("2 > 0");
    let other = bound.clone();
    let a = bound.try_acquire().expect("first of 2");
    let b = other.try_acquire().expect("second of 2");
    assert!(
        bound.try_acquire().is_none() && other.try_acquire().is_none(),
        "two permits out of a bound of 2, one through each clone: none is left for either \
         (book: {STEP4})"
    );
    drop((a, b));
    assert_eq!(other.available(), 2, "both came back (book: {STEP4})");
}

const BOUND: Step = Step {
    name: "eight threads taking and giving back permits of a bound of 3",
    invariant: "try_acquire returns at once, Some or None; a compare-and-swap loop that \
                never ends makes no progress",
    book: STEP4,
};

#[test]
fn step4_eight_threads_never_hold_more_than_n_permits() {
    let _outcome = testkit::record!();
    const N: usize = 3;
    const TRIES: usize = 100_000;
    let bound = Bound::new(N).expect("3 > 0");
    let in_use = Arc::new(AtomicUsize::new(0));
    let for_diagnosis = (bound.clone(), in_use.clone());
    let (got, most) = watch_with(
        "eight threads against a bound of 3",
        DEFAULT_LIMIT,
        BOUND,
        move || {
            format!(
                "{:?}; permits held by the test now: {}",
                for_diagnosis.0,
                for_diagnosis.1.load(SeqCst)
            )
        },
        move |progress: &Progress| {
            let most = Arc::new(AtomicUsize::new(0));
            // More threads than CPUs and permits: a load-then-store race needs a thread to be
            // preempted between the two, which two CPUs and four threads rarely give.
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let (bound, in_use, most, progress) = (
                        bound.clone(),
                        in_use.clone(),
                        most.clone(),
                        progress.clone(),
                    );
                    thread::spawn(move || {
                        let mut got = 0usize;
                        for i in 0..TRIES {
                            if progress.cancelled() {
                                break;
                            }
                            if i % 1024 == 0 {
                                progress.tick();
                            }
                            let Some(permit) = bound.try_acquire() else {
                                continue;
                            };
                            got += 1;
                            let free = bound.available();
                            assert!(
                                free <= N,
                                "thread {t}: the bound says {free} of {N} permits are free: a \
                                 permit was counted back twice or taken without a \
                                 compare-and-swap (book: {STEP4})"
                            );
                            let now = in_use.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            assert!(
                                now <= N,
                                "thread {t}: {now} permits of a bound of {N} are out at once: \
                                 try_acquire must take a permit by one compare-and-swap of \
                                 the count, never a load and a separate store (book: {STEP4})"
                            );
                            for _ in 0..(i % 16) {
                                std::hint::spin_loop();
                            }
                            // Counted down before the permit goes back, so another thread's
                            // count never includes this one.
                            in_use.fetch_sub(1, SeqCst);
                            drop(permit);
                        }
                        got
                    })
                })
                .collect();
            let mut got = 0usize;
            for t in threads {
                match t.join() {
                    Ok(n) => got += n,
                    Err(p) => panic::resume_unwind(p),
                }
            }
            assert_eq!(
                bound.available(),
                N,
                "every permit was dropped: all {N} must be free again, none lost or counted \
                 twice (book: {STEP4})"
            );
            (got, most.load(SeqCst))
        },
    );
    assert!(
        got > 0,
        "eight threads tried {TRIES} times each and got no permit (book: {STEP4})"
    );
    eprintln!("bound of {N}: {got} permits handed out, at most {most} at once");
}

// ---------------------------------------------------------------------------------------
// Whole-runtime tests: the runtime built on YOUR part (feature mine-09 in the exercise, the
// solution's in the solution crate): `gmp::blocking` parks each P in your SyscallSlot, sysmon
// retakes it on your Sysmon's clock, `gmp::Bound` counts with your Bound.
// ---------------------------------------------------------------------------------------

const HANDOFF: &str = "ch09-syscall.html#in-the-runtime";
const S1_COST: &str = "ch09-syscall.html#s1-cost";

const TICKER: Step = Step {
    name: "one P: a Ticker G ticks while another G is in a 200 ms blocking call",
    invariant: "sysmon retakes the P of a call it saw twice, 20 us apart, and hands it to \
                another M: a P that stays in its slot for the whole call stops every G of it",
    book: HANDOFF,
};

#[test]
fn whole_runtime_a_ticker_keeps_ticking_on_one_p_while_another_g_is_in_a_blocking_call() {
    let _outcome = testkit::record!();
    let (ticks, dump) = watch_with(
        "a Ticker of 10 ms beside a 200 ms blocking call, one P",
        DEFAULT_LIMIT,
        TICKER,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(move || {
                let done = Arc::new(AtomicBool::new(false));
                // Spawned, not yet started: when the call begins it waits in the P's queue,
                // so it runs on whichever M sysmon hands the P to. (A G that had started on
                // the calling M would wait for the call: started Gs stay on their M.)
                let ticker = {
                    let (done, progress) = (done.clone(), progress.clone());
                    gmp::go(move || {
                        let mut ticker = gmp::time::Ticker::new(ms(10));
                        let mut ticks = 0u32;
                        while !done.load(SeqCst) {
                            ticker.tick();
                            ticks += 1;
                            progress.tick();
                        }
                        ticks
                    })
                };
                gmp::blocking(|| thread::sleep(ms(200))).expect("one call is within the cap");
                done.store(true, SeqCst);
                let ticks = ticker.join().unwrap();
                let dump = gmp::dump();
                (ticks, dump)
            })
        },
    );
    eprintln!(
        "one P, a 200 ms blocking call: the Ticker ticked {ticks} times (20 are due during the \
         call; one more may land as it ends)"
    );
    // 20 ticks are due in 200 ms; the first retake may wait for one of sysmon's longest
    // sleeps (10 ms), and a loaded machine merges some ticks (a Ticker drops what a slow
    // reader misses), but a P that is never retaken gives the ticker no tick at all.
    assert!(
        ticks >= 10,
        "the Ticker ticked {ticks} time(s) while the only P's M spent 200 ms in a blocking \
         call: sysmon must retake the P (observe the call, retake it once should_retake says \
         so) and the retake must win against a call still running (book: {HANDOFF}, {STEP2}, \
         {STEP3})\n{dump}"
    );
}

const BOUNDED: Step = Step {
    name: "100 blocking calls of 20 ms through a gmp::Bound of 8, two Ps",
    invariant: "a G waiting for a permit parks; a dropped permit counts back before the next \
                waiter is woken, so no permit is lost or handed out twice",
    book: STEP4,
};

#[test]
fn whole_runtime_100_calls_through_a_bound_of_8_use_about_8_threads() {
    let _outcome = testkit::record!();
    let (ms_started, most) = watch_with(
        "100 blocking calls through a gmp::Bound of 8",
        DEFAULT_LIMIT,
        BOUNDED,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                // The spawner takes each permit and keeps its M to itself, so every call
                // starts in a fresh G on another M (chapter 9, "What S1 costs around a call").
                gmp::lock_os_thread();
                let bound = gmp::Bound::new(8).unwrap();
                let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
                let gs: Vec<_> = (0..100)
                    .map(|_| {
                        let permit = bound.acquire().unwrap();
                        let (now, most, progress) = (now.clone(), most.clone(), progress.clone());
                        gmp::go(move || {
                            let _permit = permit;
                            gmp::blocking(|| {
                                let n = now.fetch_add(1, SeqCst) + 1;
                                most.fetch_max(n, SeqCst);
                                thread::sleep(ms(20));
                                now.fetch_sub(1, SeqCst);
                            })
                            .unwrap();
                            progress.tick();
                        })
                    })
                    .collect();
                for g in gs {
                    g.join().unwrap();
                }
                (gmp::metrics().unwrap().m_tids.len(), most.load(SeqCst))
            })
        },
    );
    assert!(
        most <= 8,
        "{most} calls ran at once through a Bound of 8: try_acquire handed out more permits \
         than it has (book: {STEP4})"
    );
    assert!(
        ms_started <= 8 + 2 + 3,
        "100 calls through a Bound of 8 at 2 Ps started {ms_started} Ms; about 8 + 2 are \
         expected (book: {S1_COST})"
    );
}

#[test]
fn whole_runtime_a_panic_in_a_blocking_call_reaches_the_join_and_the_runtime_goes_on() {
    let _outcome = testkit::record!();
    let (message, after) = testkit::watchdog_with(
        "a panic inside gmp::blocking",
        DEFAULT_LIMIT,
        gmp::dump_all,
        || {
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(|| {
                let failed = gmp::go(|| gmp::blocking(|| panic!("the native call failed")));
                let message = failed
                    .join()
                    .expect_err("the panic must reach the join")
                    .message()
                    .unwrap_or_default()
                    .to_string();
                let after = gmp::go(|| gmp::blocking(|| 7)).join().unwrap().unwrap();
                (message, after)
            })
        },
    );
    assert!(
        message.contains("the native call failed"),
        "the G's join should carry the call's panic, got: {message} (book: {HANDOFF})"
    );
    assert_eq!(
        after, 7,
        "after a call panicked, the next call must end with the P back (book: {STEP1})"
    );
}
