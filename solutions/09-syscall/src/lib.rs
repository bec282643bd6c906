//! Part 09, `syscall`: the hand-off of a P around a blocking call, sysmon's clock, and a
//! bound on native calls.
//!
//! What lives here:
//!
//! - [`SyscallSlot`], one per P: the handshake between an M that runs a blocking call
//!   without its P and sysmon, which may take that P away meanwhile. [`SyscallSlot::enter`]
//!   starts a call and returns a [`Ticket`]; [`SyscallSlot::exit`] ends it and says whether
//!   the M kept its P ([`Exit::Kept`]) or sysmon took it ([`Exit::Retaken`]);
//!   [`SyscallSlot::observe`] is sysmon's look and [`SyscallSlot::retake`] its grab.
//! - [`Sysmon`], sysmon's policy without a clock: how long to sleep between looks, when a
//!   call has lasted long enough to take its P, when the network is overdue for a poll.
//! - [`Bound`], a counting limit on native calls in flight (the "semaphore of 8" of the
//!   source articles): [`Bound::try_acquire`] hands out [`Permit`]s, which come back on drop.
//!
//! Go: `entersyscall` and `exitsyscall`/`exitsyscallfast` (the M's side), `retake` and
//! `handoffp` (sysmon's side), `p.status == _Psyscall` and `p.syscalltick`, `sysmon`'s
//! sleep loop (`runtime/proc.go`).
//!
//! # One winner per call
//!
//! When a G enters a blocking call, its M parks its P in the P's slot and runs the call
//! without it. Two parties then race for that P: the M, when the call returns (it wants its
//! P back, Go's `exitsyscallfast`), and sysmon, which takes the P of a call that has lasted
//! (Go's `retake`) and hands it to another M so the P's other Gs keep running. Exactly one of
//! them must win each call, and the loser must learn that it lost. The runtime moves the P
//! only to the winner, and treats two winners, or a winner for a call that is over, as a
//! named error.
//!
//! The slot is one `u64` word, `call << 2 | state`:
//!
//! | state     | meaning                                        | who moves it out        |
//! |-----------|------------------------------------------------|-------------------------|
//! | `HELD`    | an M holds the P, not in a call                | the holder's `enter`    |
//! | `IN_CALL` | call number `call` runs; the P waits in its slot | `exit` or `retake`    |
//! | `RETAKEN` | sysmon took the P from call `call`             | the next holder's `enter` |
//!
//! 1. `enter` moves `(c, HELD or RETAKEN)` to `(c + 1, IN_CALL)`: a new call, a new number.
//! 2. `exit` with the ticket of call `c` moves `(c, IN_CALL)` to `(c, HELD)` by one
//!    compare-and-swap: success is [`Exit::Kept`]; failure means the word moved on, which
//!    only a retake can do while the ticket's holder is in the call: [`Exit::Retaken`].
//! 3. `retake` of an observation of call `c` moves `(c, IN_CALL)` to `(c, RETAKEN)` by one
//!    compare-and-swap: success means sysmon has the P.
//!
//! Both sides compare-and-swap the same expected word, so the first one wins and the other
//! fails: that is the whole protocol.
//!
//! Rejected designs, and why:
//!
//! - *A flag "in a call", no counter.* Sysmon looks, sees a call, sleeps 20 µs, looks again,
//!   sees a call: the same call, it concludes, which has lasted, and takes the P. But the
//!   first call may have returned and a new one begun between the looks, a nanosecond ago.
//!   That is the ABA problem: the word went A, B, A and a compare-and-swap cannot tell.
//!   Sysmon would steal Ps from short calls, each steal costing a thread wake-up.
//! - *The flag and the counter in two atomics.* Sysmon's look reads them one after the
//!   other and may pair the counter of one call with the flag of the next; the retake's
//!   compare-and-swap can cover only one of them.
//! - *A mutex around the P.* It works, but the M would take a lock on every call and
//!   sysmon would contend with it every 20 µs on every P; one word does it lock-free.
//!
//! So the counter lives in the same word as the state. Both compare-and-swaps name the call
//! they are about, so a retake of call 7 cannot succeed against call 8 however the looks and
//! the calls interleave, and a [`Ticket`] of call 7 cannot take back a P that is now in
//! call 8. The counter has 62 bits and wraps: an ABA would need exactly 2^62 calls between
//! two of sysmon's looks, about 146 years at one call a nanosecond.
//!
//! Go does the same with two fields: sysmon remembers `pd.syscalltick` from its previous
//! look and retakes only if `p.syscalltick` has not moved, then wins or loses the P by a
//! compare-and-swap of `p.status` from `_Psyscall` to `_Pidle`; `exitsyscallfast` races it
//! with a compare-and-swap from `_Psyscall` to `_Prunning`. The P's own lock-free fields
//! make that safe in Go; here the one word is the whole state.
//!
//! The learner writes no `unsafe`: the part returns answers, the runtime moves the P (an
//! owned `Box`) and checks them.
//!
//! Not here: moving the P, starting or waking an M to take it (Go's `handoffp`, `startm`),
//! the sysmon thread and its clock, waiting for a permit (the runtime parks the G) — all in
//! `gmp`'s scheduler. The network poll itself is part 10.
//!
//! Book: chapter 9, "Blocking calls and native code" (`book/src/ch09-syscall.md`).
#![warn(missing_docs)]

mod sync;

use std::error::Error;
use std::fmt;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use sync::Ordering::{AcqRel, Acquire, Relaxed, Release};
use sync::{Arc, AtomicU64, AtomicUsize};

// ---------------------------------------------------------------------------------------
// The slot
// ---------------------------------------------------------------------------------------

/// The low bits of the word hold the state, the rest the call number.
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
/// An M holds the P and is not in a call. Go: `_Prunning`.
const HELD: u64 = 0;
/// The P waits in its slot while call `call` runs. Go: `_Psyscall`.
const IN_CALL: u64 = 1;
/// Sysmon took the P from call `call`. Go: `_Pidle` after `retake`, on its way to `handoffp`.
const RETAKEN: u64 = 2;

fn pack(call: u64, state: u64) -> u64 {
    (call << STATE_BITS) | state
}

fn call_of(word: u64) -> u64 {
    word >> STATE_BITS
}

fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

/// The largest call number; the one after it is 0. 62 bits: the rest of the word is state.
pub const MAX_CALL: u64 = u64::MAX >> STATE_BITS;

/// The number after `call`, wrapping within the word's 62 bits (see "One winner per call").
fn next_call(call: u64) -> u64 {
    call.wrapping_add(1) & MAX_CALL
}

fn state_name(state: u64) -> &'static str {
    match state {
        HELD => "held by an M, not in a call",
        IN_CALL => "in a call",
        RETAKEN => "retaken by sysmon",
        _ => "an unknown state (a word the protocol never writes)",
    }
}

/// Names each slot, so a ticket or an observation used on another P's slot is caught.
static NEXT_SLOT_ID: AtomicU32 = AtomicU32::new(1);

/// One P's syscall slot: the word that decides, for each blocking call, whether the M gets
/// its P back or sysmon takes it. See "One winner per call" in the crate docs.
pub struct SyscallSlot {
    /// `call << 2 | state`. Stored by `enter` (the P's holder), compare-and-swapped by
    /// `exit` (the M in the call) and `retake` (sysmon); read by `observe`.
    word: AtomicU64,
    /// This slot's name, in its tickets and observations.
    id: u32,
}

/// The M's proof that it entered call number [`call`](Ticket::call) of a slot: give it back
/// to [`SyscallSlot::exit`]. Not `Clone`: one call, one exit.
#[derive(Debug)]
#[must_use = "a call entered must be ended with SyscallSlot::exit(ticket)"]
pub struct Ticket {
    slot: u32,
    call: u64,
}

impl Ticket {
    /// The number of the call this ticket is for (1 for a slot's first call).
    pub fn call(&self) -> u64 {
        self.call
    }
}

/// What sysmon saw on one look at a slot: the P is in call number [`call`](Observed::call).
/// Two looks that return equal `Observed` saw the same call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    slot: u32,
    call: u64,
}

impl Observed {
    /// The number of the call seen.
    pub fn call(self) -> u64 {
        self.call
    }
}

/// How a call ended for the M that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "on Exit::Retaken the M no longer has its P and must look for another"]
pub enum Exit {
    /// The M has its P back and runs on. Go: `exitsyscallfast` reacquires `oldp`.
    Kept,
    /// Sysmon took the P during the call and gave it to another M: this M must look for
    /// another P, or queue its G and park. Go: `exitsyscall0`.
    Retaken,
}

impl SyscallSlot {
    /// A slot whose P is held by an M, not in a call; no call made yet.
    pub fn new() -> SyscallSlot {
        SyscallSlot::new_at(0)
    }

    /// Like [`new`](SyscallSlot::new), as if `calls` calls had been made: the next call is
    /// `calls + 1`. The tests start near [`MAX_CALL`] to check that the counter wraps
    /// (after 2^62 calls, which no test could make).
    ///
    /// # Panics
    ///
    /// If `calls` is above [`MAX_CALL`]: it would not fit beside the state.
    pub fn new_at(calls: u64) -> SyscallSlot {
        assert!(
            calls <= MAX_CALL,
            "SyscallSlot::new_at({calls}): a call number has 62 bits, at most {MAX_CALL}"
        );
        SyscallSlot {
            word: AtomicU64::new(pack(calls, HELD)),
            // Relaxed: a name, not a synchronisation.
            id: NEXT_SLOT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The M holding this P enters a blocking call: the P now waits in the slot, where
    /// sysmon may take it. Returns the call's ticket for [`exit`](SyscallSlot::exit).
    /// Go: `entersyscall` (`p.status = _Psyscall`, `p.syscalltick++`).
    ///
    /// Only the P's holder calls this, outside a call.
    ///
    /// # Panics
    ///
    /// If the slot is in a call already: an M entered twice without an exit, or two Ms
    /// think they hold this P. Either is a bug of the caller, named in the message.
    pub fn enter(&self) -> Ticket {
        // Acquire: a P that came back from sysmon (RETAKEN) comes with what sysmon did.
        let word = self.word.load(Acquire);
        if state_of(word) == IN_CALL {
            panic!(
                "SyscallSlot::enter: call {} of this P is still running (no exit, no retake): \
                 only the P's holder enters a call, and only outside one (book: \
                 ch09-syscall.html#step-1)",
                call_of(word)
            );
        }
        let call = next_call(call_of(word));
        // Release: what the M did with the P before the call is visible to a sysmon whose
        // retake (Acquire) takes the P. A compare-and-swap, not a store: nobody else writes
        // a word out of a call, so a failure here means two Ms hold the P.
        if let Err(now) = self
            .word
            .compare_exchange(word, pack(call, IN_CALL), Release, Relaxed)
        {
            panic!(
                "SyscallSlot::enter: the slot changed from call {} ({}) to call {} ({}) while \
                 entering: two Ms entered calls on one P at once (book: \
                 ch09-syscall.html#step-1)",
                call_of(word),
                state_name(state_of(word)),
                call_of(now),
                state_name(state_of(now))
            );
        }
        Ticket {
            slot: self.id,
            call,
        }
    }

    /// The M's call returned: it takes its P back unless sysmon took it first. Exactly one
    /// of this and [`retake`](SyscallSlot::retake) wins each call. Go: `exitsyscall`,
    /// `exitsyscallfast`.
    ///
    /// Only the M that entered the call, with its ticket.
    ///
    /// # Panics
    ///
    /// If the ticket is another slot's, or its call already ended with [`Exit::Kept`].
    pub fn exit(&self, ticket: Ticket) -> Exit {
        self.check_slot(ticket.slot, "exit", "ticket");
        let call = ticket.call;
        // Success: only our own enter wrote the word since, so Relaxed would do; Acquire
        // costs nothing on x86. Failure, Acquire: pairs with retake's Release, so the M
        // that lost its P sees the slot as sysmon left it.
        match self
            .word
            .compare_exchange(pack(call, IN_CALL), pack(call, HELD), Acquire, Acquire)
        {
            Ok(_) => Exit::Kept,
            // Out of IN_CALL for our call, and we did not exit it: sysmon retook it (and
            // maybe a later holder has entered calls since).
            Err(now) if call_of(now) != call || state_of(now) == RETAKEN => Exit::Retaken,
            Err(now) => panic!(
                "SyscallSlot::exit: the ticket is for call {call}, which already ended with \
                 the P kept (slot now: call {}, {}); a ticket is given back once (book: \
                 ch09-syscall.html#step-1)",
                call_of(now),
                state_name(state_of(now))
            ),
        }
    }

    /// Sysmon's look: `Some` if the P waits in a call, naming the call; `None` if an M holds
    /// it or sysmon already took it. Two looks returning the same `Observed` saw one call
    /// that lasted between them. Go: `retake` reads `p.status` and `p.syscalltick`.
    ///
    /// Any thread.
    pub fn observe(&self) -> Option<Observed> {
        // Acquire: pairs with enter's Release; a look is only a hint, the retake decides.
        let word = self.word.load(Acquire);
        (state_of(word) == IN_CALL).then_some(Observed {
            slot: self.id,
            call: call_of(word),
        })
    }

    /// Sysmon takes the P, only if it still waits in the very call `seen` names. `true`: the
    /// P is sysmon's, to hand to another M, and the call's exit will say [`Exit::Retaken`].
    /// `false`: the call ended (and maybe a new one began) or was taken already; the P is
    /// not sysmon's. Go: the compare-and-swap of `p.status` in `retake`, guarded by
    /// `p.syscalltick`.
    ///
    /// Sysmon only (any thread that is not the M in the call).
    ///
    /// # Panics
    ///
    /// If `seen` was observed on another slot.
    pub fn retake(&self, seen: Observed) -> bool {
        self.check_slot(seen.slot, "retake", "observation");
        // AcqRel on success: Acquire pairs with enter's Release, so whoever gets the P from
        // sysmon sees what its last M did; Release pairs with exit's failure Acquire.
        self.word
            .compare_exchange(
                pack(seen.call, IN_CALL),
                pack(seen.call, RETAKEN),
                AcqRel,
                Relaxed,
            )
            .is_ok()
    }

    /// The number of the latest call entered (0 before the first), for dumps and tests.
    pub fn calls(&self) -> u64 {
        // Relaxed: a count for display.
        call_of(self.word.load(Relaxed))
    }

    fn check_slot(&self, slot: u32, function: &str, what: &str) {
        assert!(
            slot == self.id,
            "SyscallSlot::{function}: the {what} comes from another P's slot (slot {slot}, \
             this is slot {}); use each slot's own tickets and observations (book: \
             ch09-syscall.html#step-2)",
            self.id
        );
    }
}

impl Default for SyscallSlot {
    fn default() -> Self {
        SyscallSlot::new()
    }
}

impl fmt::Debug for SyscallSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot for display.
        let word = self.word.load(Relaxed);
        write!(
            f,
            "SyscallSlot {} (call {}, {})",
            self.id,
            call_of(word),
            state_name(state_of(word))
        )
    }
}

// ---------------------------------------------------------------------------------------
// Sysmon's clock
// ---------------------------------------------------------------------------------------

/// Sysmon's shortest sleep between looks, while it finds work. Go: `usleep(20)`.
pub const SYSMON_MIN_DELAY: Duration = Duration::from_micros(20);
/// Sysmon's longest sleep between looks, when the runtime is quiet. Go: `10*1000` µs.
pub const SYSMON_MAX_DELAY: Duration = Duration::from_millis(10);
/// Idle looks in a row (about 1 ms of 20 µs sleeps) after which each further idle look
/// doubles the sleep. Go: `idle > 50`.
pub const SYSMON_IDLE_ROUNDS: u32 = 50;
/// How long a call must have been seen in progress before sysmon takes its P: one sysmon
/// tick at its shortest. Go retakes a call seen on two looks in a row, at least 20 µs apart.
pub const RETAKE_AFTER: Duration = Duration::from_micros(20);
/// How long the network may go without a poll before sysmon polls it. Go: `lastpoll +
/// 10*1000*1000 < now`.
pub const POLL_NETWORK_AFTER: Duration = Duration::from_millis(10);

/// Sysmon's policy, without a clock: the runtime measures time and asks. Keeps only the
/// current sleep, so the tests can replay any sequence of looks. Go: the loop in `sysmon`.
#[derive(Clone, Debug)]
pub struct Sysmon {
    delay: Duration,
}

impl Sysmon {
    /// Sysmon as it starts: the next sleep is the shortest.
    pub fn new() -> Sysmon {
        Sysmon {
            delay: SYSMON_MIN_DELAY,
        }
    }

    /// How long to sleep before the next look, given how many looks in a row found nothing
    /// to do (`idle_rounds`, 0 after a look that retook a P or woke someone). 20 µs while
    /// busy and for the first 50 idle looks, then doubling each idle look, up to 10 ms.
    pub fn next_delay(&mut self, idle_rounds: u32) -> Duration {
        if idle_rounds == 0 {
            self.delay = SYSMON_MIN_DELAY;
        } else if idle_rounds > SYSMON_IDLE_ROUNDS {
            self.delay = (self.delay * 2).min(SYSMON_MAX_DELAY);
        }
        self.delay
    }

    /// Should sysmon take the P of a call it has seen in progress for `observed_for` (from
    /// the first look that saw this call to now)? From [`RETAKE_AFTER`] on.
    pub fn should_retake(&self, observed_for: Duration) -> bool {
        observed_for >= RETAKE_AFTER
    }

    /// Should sysmon poll the network, `since_last_poll` after anyone last did? Only once it
    /// is more than [`POLL_NETWORK_AFTER`] (chapter 10's netpoller).
    pub fn should_poll_network(&self, since_last_poll: Duration) -> bool {
        since_last_poll > POLL_NETWORK_AFTER
    }
}

impl Default for Sysmon {
    fn default() -> Self {
        Sysmon::new()
    }
}

// ---------------------------------------------------------------------------------------
// The bound on native calls
// ---------------------------------------------------------------------------------------

/// A limit on native calls in flight: at most [`limit`](Bound::limit) [`Permit`]s are out at
/// once. Clones share the permits. The part only counts; waiting for a permit is the
/// runtime's job (it parks the G, so a wait costs no thread).
#[derive(Clone)]
pub struct Bound {
    inner: Arc<BoundInner>,
}

struct BoundInner {
    /// Permits not handed out. Taken by compare-and-swap, given back by `fetch_add`.
    available: AtomicUsize,
    limit: usize,
}

/// The permission to make one native call; the permit goes back to its [`Bound`] on drop.
#[must_use = "a permit dropped at once bounds nothing: hold it across the call"]
pub struct Permit {
    inner: Arc<BoundInner>,
}

/// [`Bound::new`] was asked for zero permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroPermits;

impl fmt::Display for ZeroPermits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a Bound of 0 permits would make every call wait forever: give at least 1 (the \
             source articles use 8, about the number of cores or connections the native side \
             can serve)"
        )
    }
}

impl Error for ZeroPermits {}

impl Bound {
    /// A bound of `permits` calls in flight.
    ///
    /// # Errors
    ///
    /// [`ZeroPermits`] if `permits` is 0.
    pub fn new(permits: usize) -> Result<Bound, ZeroPermits> {
        if permits == 0 {
            return Err(ZeroPermits);
        }
        Ok(Bound {
            inner: Arc::new(BoundInner {
                available: AtomicUsize::new(permits),
                limit: permits,
            }),
        })
    }

    /// A permit if one is free now, else `None` (the caller waits and tries again). Any
    /// thread.
    pub fn try_acquire(&self) -> Option<Permit> {
        let available = &self.inner.available;
        // Relaxed peek: the compare-and-swap decides.
        let mut free = available.load(Relaxed);
        loop {
            if free == 0 {
                return None;
            }
            // Acquire: pairs with a dropped permit's Release, so the call made under that
            // permit happened before the call made under this one, as with a mutex.
            match available.compare_exchange_weak(free, free - 1, Acquire, Relaxed) {
                Ok(_) => {
                    return Some(Permit {
                        inner: self.inner.clone(),
                    });
                }
                Err(now) => free = now,
            }
        }
    }

    /// How many permits are free now (a snapshot).
    pub fn available(&self) -> usize {
        // Relaxed: a count, not a claim.
        self.inner.available.load(Relaxed)
    }

    /// The most permits out at once, as given to [`Bound::new`].
    pub fn limit(&self) -> usize {
        self.inner.limit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Release: pairs with try_acquire's Acquire (see there).
        let before = self.inner.available.fetch_add(1, Release);
        assert!(
            before < self.inner.limit,
            "Bound: a permit came back while all {} were free: more permits were handed out \
             than taken from the count (book: ch09-syscall.html#step-4)",
            self.inner.limit
        );
    }
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bound ({} of {} free)", self.available(), self.limit())
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permit (of a bound of {})", self.inner.limit)
    }
}
