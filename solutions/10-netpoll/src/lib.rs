//! Part 10, `netpoll`: Go's netpoller, the piece that lets 10,000 connections wait on a
//! handful of threads.
//!
//! What lives here: [`PollDesc`] is the readiness state of one socket, one word per direction
//! (read, write) that says "nobody waits", "readiness arrived", "a G is about to park", "G
//! number t is parked" or "closed". A G that got `WouldBlock` [`prepare`](PollDesc::prepare)s
//! and then commits its sleep with [`park`](PollDesc::park); the poller's thread hands
//! readiness over with [`ready`](PollDesc::ready), which returns the parked G to wake, at
//! most once. The lost wake-up (readiness that arrives between "would block" and "asleep")
//! is decided by one compare-and-swap on that word. [`Poller`] is the kernel side: epoll
//! through mio's `Poll`, `Registry` and `Waker`, so that one thread waits for every socket
//! at once and another thread can wake it ([`Poller::wake`]). [`fd_limit_error`] turns
//! "too many open files" into a message that names `ulimit -n` and the limit.
//!
//! The items are opaque [`Token`]s: the runtime's numbers for parks of its Gs (in a
//! `PollDesc`, a fresh one per park) and for its registered sockets (in the `Poller`), so
//! nothing here needs `unsafe`: a descriptor that loses a wake-up or wakes a G twice is a
//! wrong answer the tests report by name.
//!
//! How the runtime uses it (a G reading a socket registered as `reg`, with descriptor `pd`):
//!
//! ```text
//! loop {
//!     match sock.read(buf) { Err(e) if e.kind() == WouldBlock => {} r => return r }
//!     loop {
//!         match pd.prepare(Dir::Read) {
//!             Prepared::Ready => break,                  // readiness came: read again
//!             Prepared::Closed => return Err(closed),
//!             Prepared::Busy => return Err(another reader waits),
//!             // Go: park runs on the M after the switch; false: resume the G at once.
//!             // gmp: park runs just before the switch (a fresh park token each time):
//!             // chapter 6's park keeps an early wake-up as a permit, so that is safe.
//!             Prepared::Wait => gopark(|g| pd.park(Dir::Read, g)),
//!         }
//!     }
//! }
//! // An M in findRunnable, poller side (only the one blocking poller passes a timeout):
//! poller.poll(timeout, &mut out)?;
//! for (reg, ready) in out { if ready.read { if let Some(g) = pd_of(reg).ready(Dir::Read) { make_runnable(g) } } ... }
//! // then look at the run queues and timers again, whatever poll returned
//! ```
//!
//! Three things the runtime must do around `poll`:
//!
//! - Look at its queues again after **every** return, `Ok(0)` included, before it blocks
//!   again: a [`wake`](Poller::wake) is consumed by the poll that takes its event, also by
//!   `poll(Some(ZERO))` (mio's eventfd is edge-triggered, so the event comes out once), and
//!   the work of a waker whose wake was coalesced into it is visible only then.
//! - Treat `Ok(0)` as "look again", not "the timeout passed": a signal (`EINTR`) and a wake
//!   end the wait early, so the next timeout is computed again from the clock.
//! - Let one thread at a time block in `poll`: a second caller gets `Ok(0)` at once, and an M
//!   that loops on that would spin. Go marks the blocking poller in `sched.lastpoll`; the
//!   other Ms poll with `Some(ZERO)` or not at all.
//!
//! Go: `pollDesc`, `rg`/`wg` with `pdReady`/`pdWait`, `netpollblock`,
//! `netpollblockcommit`, `netpollunblock`, `poll_runtime_pollUnblock`, `netpoll(delay)`,
//! `netpollBreak` (`runtime/netpoll.go`, `runtime/netpoll_epoll.go`).
//!
//! Not here: the map from tokens to Gs and sockets, the `gmp::net` types that park a G on
//! `WouldBlock`, and the place of `poll` in `findRunnable` (the runtime's scheduler).
//!
//! Book: chapter 10, "The netpoller" (`book/src/ch10-netpoll.md`).
#![warn(missing_docs)]

mod limit;
mod pd;
mod poller;
mod sync;

use std::num::NonZeroU64;

pub use limit::{fd_limit_error, nofile_limit};
pub use mio;
pub use mio::Interest;
pub use pd::{Closed, Dir, PollDesc, Prepared, State};
pub use poller::{Poller, Ready, WakeFlag};

/// An opaque number the runtime gives one park of a G (in a [`PollDesc`]) or a registered
/// socket (in a [`Poller`]). At most [`Token::MAX`]: a descriptor keeps a parked G's token and a two-bit
/// state in one 64-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(NonZeroU64);

impl Token {
    /// The largest token: 2^62 - 1 (a runtime that names Gs by a counter reaches it after
    /// 2^62 spawns, over a century at a billion spawns a second).
    pub const MAX: u64 = (1 << 62) - 1;

    /// The token with the value `v`.
    ///
    /// # Panics
    ///
    /// If `v` is above [`Token::MAX`]: the top two bits of a descriptor's word are taken.
    pub const fn new(v: NonZeroU64) -> Token {
        assert!(
            v.get() <= Token::MAX,
            "netpoll::Token::new: a token is at most Token::MAX = 2^62 - 1 (a PollDesc keeps \
             the token and a 2-bit state in one u64); name Gs and sockets by smaller numbers"
        );
        Token(v)
    }

    /// The value this token was made from.
    pub const fn get(self) -> NonZeroU64 {
        self.0
    }
}
