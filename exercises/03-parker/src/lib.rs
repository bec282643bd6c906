//! Exercise 03, `parker` (skeleton: fill in every `todo!()`).
//!
//! Part 03, `parker`: put a thread to sleep until another wakes it, on a Linux futex.
//!
//! What lives here: [`futex_wait`] and [`futex_wake`], thin wrappers over the `futex(2)`
//! system call, and [`Parker`], a one-token sleep/wake cell built on them. An idle M sleeps
//! on its Parker; whoever gives it work unparks it.
//!
//! Go: `note` with `notesleep` / `notewakeup` / `notetsleep` (`lock_futex.go`), which is the
//! same idea: one word, one sleeper, one wake-up that is never lost.
//!
//! ## Park without lost wake-up
//!
//! Rejected: "check a flag, then sleep". If the waker sets the flag and calls wake *between*
//! the check and the sleep, the wake finds nobody asleep and the sleeper sleeps forever.
//! Rejected: a Mutex + Condvar pair. It works, but costs a lock round trip on every wake and
//! hides the one idea this chapter is about.
//!
//! Chosen: the state word *is* the condition, and `futex_wait(word, PARKED)` sleeps only if
//! the word still says PARKED when the kernel looks, atomically with going to sleep:
//!
//! 1. `park` consumes a token if one is there (NOTIFIED -> EMPTY) and returns at once.
//! 2. Otherwise it announces itself (EMPTY -> PARKED) and calls `futex_wait(PARKED)`.
//! 3. `unpark` swaps the word to NOTIFIED; if it was PARKED, it calls `futex_wake`.
//! 4. A sleeper that wakes consumes the token (NOTIFIED -> EMPTY) and returns; if the word
//!    still says PARKED the wake-up was spurious, and it sleeps again.
//!
//! An `unpark` between steps 2 and the kernel's sleep changes the word, so the kernel's
//! check fails and the sleeper returns at once: no wake-up is lost. Tokens do not count:
//! two unparks before a park leave one token.
//!
//! Invariant: one thread parks on a Parker (its owner); any thread may unpark it.
//!
//! Not here: which M to wake and when (the runtime), user-space Gs parking (part 06).
//!
//! Book: chapter 3, "Kernel context switches" (`book/src/ch03-parker.md`).
#![warn(missing_docs)]
// A skeleton's parameters are unused until you fill it in.
#![allow(unused_variables, dead_code, unused_imports)]

use std::ptr;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

const EMPTY: u32 = 0;
const PARKED: u32 = 1;
const NOTIFIED: u32 = 2;

/// Sleeps while `*word == expected`, until a [`futex_wake`] on `word` or `timeout`.
///
/// Returns `false` only if the timeout passed; `true` otherwise, which includes a spurious
/// return and "the word had already changed". Callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    todo!(
        "ch03 step 1: call futex(FUTEX_WAIT_PRIVATE) through libc::syscall (book: ch03-parker.html#step-1)"
    )
}

/// Wakes up to `count` threads sleeping in [`futex_wait`] on `word`; returns how many woke.
pub fn futex_wake(word: &AtomicU32, count: u32) -> usize {
    todo!(
        "ch03 step 1: call futex(FUTEX_WAKE_PRIVATE) through libc::syscall (book: ch03-parker.html#step-1)"
    )
}

/// How [`Parker::park_timeout`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkResult {
    /// A token was consumed: someone called `unpark`.
    Unparked,
    /// The time ran out with no token.
    TimedOut,
}

/// A one-token sleep/wake cell for one owner thread. See "Park without lost wake-up" above.
#[derive(Debug, Default)]
pub struct Parker {
    /// EMPTY, PARKED or NOTIFIED. Acquire on consuming a token pairs with the Release in
    /// `unpark`, so what the waker wrote before unparking is visible after `park` returns.
    state: AtomicU32,
}

impl Parker {
    /// A Parker with no token.
    pub const fn new() -> Parker {
        Parker {
            state: AtomicU32::new(EMPTY),
        }
    }

    /// Sleeps until a token is there, then consumes it. Returns at once if one already is.
    ///
    /// Owner thread only: two threads parking at once is a broken invariant and panics.
    pub fn park(&self) {
        todo!(
            "ch03 step 2: consume a token or announce PARKED and futex_wait (book: ch03-parker.html#step-2)"
        )
    }

    /// Like [`park`](Self::park), but gives up after `timeout`. Never returns early without
    /// a token: a spurious futex return sleeps again for the time that is left.
    ///
    /// Owner thread only.
    pub fn park_timeout(&self, timeout: Duration) -> ParkResult {
        todo!(
            "ch03 step 3: park with a deadline, never returning early without a token \
             (book: ch03-parker.html#step-3)"
        )
    }

    /// Leaves a token and wakes the owner if it sleeps. Any thread.
    pub fn unpark(&self) {
        todo!(
            "ch03 step 2: leave a token; futex_wake if the owner was PARKED (book: ch03-parker.html#step-2)"
        )
    }
}
