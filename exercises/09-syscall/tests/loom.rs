//! The loom models of part 09: loom runs each scenario below under every interleaving of the
//! slot's atomic operations (up to a bound on preemptions), and, for every load, every value
//! the memory model allows it to read. An exit and a retake that can both win one call, or
//! a retake that takes a later call than the one sysmon saw, shows up here with the
//! interleaving that did it.
//!
//! Run them (release: loom explores many interleavings):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ex-09-syscall --release --test loom
//! ```
//!
//! `--cfg loom` makes `src/sync.rs` take its atomics from loom; the separate target dir
//! keeps that build from replacing the normal one. Book: chapter 9, "How to check".
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering::Relaxed};
use loom::thread;
use syscall::{Exit, SyscallSlot};

/// loom's search with a preemption bound: every interleaving with at most this many forced
/// switches. The models are small; 3 covers every order of their few operations.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// The P's own data, which moves with the P: the M writes it before the call (plain,
/// Relaxed), and whoever wins the P reads it. Only the slot's orderings make the write
/// visible to sysmon.
const P_DATA: u64 = 42;

#[test]
fn loom_exit_against_retake_has_exactly_one_winner() {
    let _outcome = testkit::record!();
    model(|| {
        let slot = Arc::new(SyscallSlot::new());
        let p_data = Arc::new(AtomicU64::new(0));
        // Sysmon starts first, so nothing but the slot orders the M's write before its read.
        let sysmon = {
            let (slot, p_data) = (slot.clone(), p_data.clone());
            thread::spawn(move || {
                let Some(seen) = slot.observe() else {
                    return false;
                };
                let won = slot.retake(seen);
                if won {
                    assert_eq!(
                        p_data.load(Relaxed),
                        P_DATA,
                        "sysmon won the P but does not see what its M wrote before the call: \
                         enter must publish (Release) and retake acquire (Acquire) \
                         (book: ch09-syscall.html#step-2)"
                    );
                }
                won
            })
        };
        // The M writes its P's data, then enters the call: the P waits in the slot.
        p_data.store(P_DATA, Relaxed);
        let ticket = slot.enter();
        let m_kept = slot.exit(ticket) == Exit::Kept;
        let sysmon_won = sysmon.join().expect("sysmon panicked");
        assert!(
            m_kept != sysmon_won,
            "call 1 had {}: exactly one of the M's exit and sysmon's retake must win it \
             (book: ch09-syscall.html#step-2)",
            if m_kept { "two winners" } else { "no winner" }
        );
        assert_eq!(
            slot.observe(),
            None,
            "after the race the slot must be out of the call (book: ch09-syscall.html#step-2)"
        );
    });
}

#[test]
fn loom_retake_of_the_previous_call_against_a_new_enter() {
    let _outcome = testkit::record!();
    model(|| {
        let slot = Arc::new(SyscallSlot::new());
        let first = slot.enter();
        // Sysmon's previous look saw call 1.
        let seen = slot.observe().expect("call 1 runs");
        let sysmon = {
            let slot = slot.clone();
            thread::spawn(move || slot.retake(seen))
        };
        // Meanwhile call 1 returns and, if the M kept its P, it enters call 2.
        let kept_first = slot.exit(first) == Exit::Kept;
        let second_kept = if kept_first {
            let second = slot.enter();
            Some(slot.exit(second) == Exit::Kept)
        } else {
            None
        };
        let sysmon_won = sysmon.join().expect("sysmon panicked");
        assert!(
            kept_first != sysmon_won,
            "call 1 had {}: exactly one of exit and retake must win it \
             (book: ch09-syscall.html#step-2)",
            if kept_first {
                "two winners"
            } else {
                "no winner"
            }
        );
        assert_ne!(
            second_kept,
            Some(false),
            "sysmon saw call 1 only, yet call 2 was retaken: the retake must compare the call \
             number, not just \"in a call\" (the ABA case; book: ch09-syscall.html#step-2)"
        );
    });
}

#[test]
fn loom_a_stale_ticket_against_the_next_holders_call() {
    let _outcome = testkit::record!();
    model(|| {
        let slot = Arc::new(SyscallSlot::new());
        // Call 1 was retaken; the P's next holder (another M) enters call 2 while the first
        // M's call 1 returns with its stale ticket.
        let stale = slot.enter();
        let seen = slot.observe().expect("call 1 runs");
        assert!(slot.retake(seen), "retake of running call 1 must win");
        let next_holder = {
            let slot = slot.clone();
            thread::spawn(move || {
                let ticket = slot.enter();
                slot.exit(ticket)
            })
        };
        let stale_exit = slot.exit(stale);
        let next_exit = next_holder.join().expect("the next holder panicked");
        assert_eq!(
            stale_exit,
            Exit::Retaken,
            "a ticket of a retaken call must say Retaken whatever the slot does meanwhile \
             (book: ch09-syscall.html#step-2)"
        );
        assert_eq!(
            next_exit,
            Exit::Kept,
            "nobody retook call 2: the stale exit of call 1 must not end it (book: \
             ch09-syscall.html#step-2)"
        );
    });
}

#[test]
fn loom_two_threads_against_a_bound_of_one() {
    let _outcome = testkit::record!();
    model(|| {
        let bound = syscall::Bound::new(1).expect("1 > 0");
        let other = {
            let bound = bound.clone();
            thread::spawn(move || bound.try_acquire().is_some())
        };
        let mine = bound.try_acquire();
        let other_got = other.join().expect("the other thread panicked");
        // The other thread's permit went back when it ended; ours is still held.
        assert!(
            !(mine.is_some() && other_got && bound.available() > 0),
            "a bound of 1 handed out two permits at once, or counted one back twice: \
             try_acquire must take a permit by one compare-and-swap (book: \
             ch09-syscall.html#step-4)"
        );
        assert!(
            mine.is_some() || other_got,
            "a bound of 1 and two tries: at least one must get the permit (book: \
             ch09-syscall.html#step-4)"
        );
        drop(mine);
        assert_eq!(
            bound.available(),
            1,
            "both permits are back: the bound must have its 1 permit free (book: \
             ch09-syscall.html#step-4)"
        );
    });
}
