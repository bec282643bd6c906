//! [`PollDesc`]: one socket's readiness, one atomic word per direction. The G's side is
//! [`prepare`](PollDesc::prepare) then [`park`](PollDesc::park); the poller's side is
//! [`ready`](PollDesc::ready); [`close`](PollDesc::close) ends both. Go: `pollDesc.rg`/`wg`.

use std::num::NonZeroU64;

use crate::Token;
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire};

/// Nobody waits and no readiness is pending. Go: `pdNil`.
const NIL: u64 = 0;
/// Readiness arrived and nobody has consumed it yet. Go: `pdReady`.
const READY: u64 = 1;
/// A G saw `WouldBlock` and is on its way to sleep, not asleep yet. Go: `pdWait`.
const WAIT: u64 = 2;
/// The socket is closed: every wait ends with an error. Go keeps this in `pd.closing`.
const CLOSED: u64 = 3;

/// The word of a parked G: its token above the two state bits, `00` below. Go stores the
/// `*g` itself (pointers are aligned, so they never equal 1 or 2).
fn parked(g: Token) -> u64 {
    g.get().get() << 2
}

/// The G parked in the word `w`, or `None` if `w` is one of the four states.
fn parked_token(w: u64) -> Option<Token> {
    if w & 3 == 0 {
        NonZeroU64::new(w >> 2).map(Token)
    } else {
        None
    }
}

/// Which half of a socket: reading or writing. Each has its own waiter and readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Read (and accept). Go: mode `'r'`, `pd.rg`.
    Read,
    /// Write (and connect). Go: mode `'w'`, `pd.wg`.
    Write,
}

/// What [`PollDesc::prepare`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Readiness had arrived (and is now consumed): try the operation again, do not sleep.
    Ready,
    /// The direction now says "a G is about to park": commit with [`PollDesc::park`].
    Wait,
    /// The socket is closed: the operation fails.
    Closed,
    /// Another G already waits in this direction (two readers of one socket at once). Go's
    /// `fdMutex` keeps that from happening; the caller must serialize or fail.
    Busy,
}

/// A direction's state, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nobody waits, no readiness pending.
    Idle,
    /// Readiness pending.
    Ready,
    /// A G prepared and has not committed its park yet.
    Waiting,
    /// This G is parked.
    Parked(Token),
    /// Closed.
    Closed,
}

/// The Gs that [`PollDesc::close`] took out of their sleep: the runtime wakes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// The G that was parked to read, if any.
    pub read: Option<Token>,
    /// The G that was parked to write, if any.
    pub write: Option<Token>,
}

/// The readiness state of one socket, shared by the G that uses it and the poller's thread.
/// Go: `pollDesc` (its `rg` and `wg`, and `closing`).
///
/// Each direction is one `AtomicU64`: `NIL`, `READY`, `WAIT`, `CLOSED` or a parked G's token.
/// Every change is a compare-and-swap from the value just read, so of two threads that
/// race (a G committing its park, the poller handing readiness over), exactly one wins and
/// the other sees what the winner did.
#[derive(Debug)]
pub struct PollDesc {
    read: AtomicU64,
    write: AtomicU64,
}

impl Default for PollDesc {
    fn default() -> Self {
        PollDesc::new()
    }
}

impl PollDesc {
    /// A descriptor with nobody waiting and nothing ready, in both directions.
    pub fn new() -> PollDesc {
        PollDesc {
            read: AtomicU64::new(NIL),
            write: AtomicU64::new(NIL),
        }
    }

    fn word(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        }
    }

    /// The G's first half, after its operation returned `WouldBlock`: consume pending
    /// readiness ([`Prepared::Ready`]: try again) or announce the wait ([`Prepared::Wait`]:
    /// go on to [`park`](PollDesc::park)). Go: `netpollblock` up to `gopark`.
    ///
    /// Also the G's first step after it was woken: the waker left `READY` (or `CLOSED`),
    /// and this consumes it, so each readiness event makes the G try exactly once.
    pub fn prepare(&self, dir: Dir) -> Prepared {
        let word = self.word(dir);
        // Acquire: readiness seen here is readiness the poller saw, and what it wrote before.
        let mut seen = word.load(Acquire);
        loop {
            let (next, outcome) = match seen {
                READY => (NIL, Prepared::Ready),
                NIL => (WAIT, Prepared::Wait),
                CLOSED => return Prepared::Closed,
                _ => return Prepared::Busy,
            };
            match word.compare_exchange(seen, next, AcqRel, Acquire) {
                Ok(_) => return outcome,
                // The poller or a close changed the word: decide again on what it is now.
                Err(now) => seen = now,
            }
        }
    }

    /// The G's second half (Go: `netpollblockcommit`, the commit function `gopark` runs
    /// once the G is off its stack; gmp runs it just before the switch, safe because its
    /// park keeps an early wake-up as a permit, chapter 6): `WAIT` becomes "`g` is parked". `true`: the G sleeps,
    /// and whoever changes the word next owes it a wake-up. `false`: readiness or a close
    /// came in between, so the G must not sleep; it calls [`prepare`](PollDesc::prepare)
    /// again. Also `false` without a `Prepared::Wait` before it.
    pub fn park(&self, dir: Dir, g: Token) -> bool {
        // Release (in AcqRel): the G's saved state is visible to the poller that takes `g`.
        self.word(dir)
            .compare_exchange(WAIT, parked(g), AcqRel, Acquire)
            .is_ok()
    }

    /// The poller's side: readiness arrived in `dir`. Returns the G to wake if one was
    /// parked (exactly once: the word is `READY` afterwards, so a second call returns
    /// `None`); otherwise leaves `READY` for the next [`prepare`](PollDesc::prepare), which
    /// makes a G that is between `WouldBlock` and its park try again instead of sleeping.
    /// Go: `netpollunblock(pd, mode, ioready=true)`.
    pub fn ready(&self, dir: Dir) -> Option<Token> {
        let word = self.word(dir);
        let mut seen = word.load(Acquire);
        loop {
            if seen == READY || seen == CLOSED {
                // Already pending (events coalesce), or nobody will ever wait again.
                return None;
            }
            // Acquire (in AcqRel): the parked G's saved state is visible before we wake it.
            match word.compare_exchange(seen, READY, AcqRel, Acquire) {
                Ok(_) => return parked_token(seen),
                Err(now) => seen = now,
            }
        }
    }

    /// Closes both directions for good and returns the Gs that were parked: the runtime
    /// wakes them, and their [`prepare`](PollDesc::prepare) returns [`Prepared::Closed`].
    /// A second close returns no Gs. Go: `poll_runtime_pollUnblock`.
    pub fn close(&self) -> Closed {
        Closed {
            read: parked_token(self.read.swap(CLOSED, AcqRel)),
            write: parked_token(self.write.swap(CLOSED, AcqRel)),
        }
    }

    /// Whether [`close`](PollDesc::close) has run.
    pub fn is_closed(&self) -> bool {
        self.read.load(Acquire) == CLOSED
    }

    /// The state of `dir` now (it may change the next instant): for diagnostics and tests.
    pub fn state(&self, dir: Dir) -> State {
        match self.word(dir).load(Acquire) {
            NIL => State::Idle,
            READY => State::Ready,
            WAIT => State::Waiting,
            CLOSED => State::Closed,
            w => match parked_token(w) {
                Some(g) => State::Parked(g),
                None => unreachable!(
                    "netpoll: the word {w:#x} is no state (the low bits are 00 only for a token)"
                ),
            },
        }
    }
}
