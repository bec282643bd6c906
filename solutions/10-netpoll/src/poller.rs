//! [`Poller`]: the kernel's side of the netpoller, epoll through mio. Sockets are registered
//! once with a [`Token`]; one thread at a time waits in [`Poller::poll`] for all of them;
//! any thread can break that wait with [`Poller::wake`], whose writes [`WakeFlag`]
//! coalesces. Go: `netpollinit`, `netpollopen`, `netpoll(delay)`, `netpollBreak`,
//! `netpollWakeSig` (`runtime/netpoll_epoll.go`).

use std::io;
use std::num::NonZeroU64;
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Waker};

use crate::sync::AtomicBool;
use crate::sync::Ordering::{AcqRel, Release};
use crate::{Token, fd_limit_error};

/// mio's token for the waker. A [`Token`] is never 0, so no socket can have it.
const WAKE: mio::Token = mio::Token(0);

/// How many events one `poll` takes from the kernel at most; the rest wait for the next
/// call. Go: the 128 of `netpoll`'s `events` array.
pub const EVENTS: usize = 128;

/// What became ready on a registered socket. A closed or failed socket is ready both ways:
/// the G's next read or write returns the end of stream or the error, like any other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// A read (or accept) may not block now: data, a connection, the peer's close, an error.
    pub read: bool,
    /// A write (or a pending connect) may not block now, or it has failed.
    pub write: bool,
    /// The socket reported an error (epoll's `EPOLLERR`); `read` and `write` are set too.
    pub error: bool,
}

/// The part only the polling thread touches: the epoll instance and its event buffer.
struct Waiting {
    poll: Poll,
    events: Events,
}

/// One epoll instance for the whole runtime. `Sync`: any thread registers, deregisters and
/// wakes, while one thread at a time waits in [`poll`](Poller::poll).
pub struct Poller {
    /// The thread inside `poll` holds this; another caller does not wait for it.
    waiting: Mutex<Waiting>,
    /// A second handle on the same epoll instance, for (de)registering during a poll.
    registry: Registry,
    /// Writes to an eventfd the poll watches. Go: `netpollEventFd`.
    waker: Waker,
    /// Whether a wake is on its way. Go: `netpollWakeSig`.
    wake_pending: WakeFlag,
}

/// "A wake is on its way and no poll has consumed it yet": the flag that lets
/// [`Poller::wake`] write the eventfd once for many callers. Go: `netpollWakeSig`. On its
/// own so that the loom models check it without an epoll instance.
///
/// The promise it keeps: a thread that makes work runnable and then calls
/// [`claim`](WakeFlag::claim) either writes the eventfd itself, or the poller that
/// [`consume`](WakeFlag::consume)s the pending wake sees that work when it looks at its
/// queues afterwards. Both sides are read-modify-writes (swaps) for that: a poller that only
/// stored `false` would not synchronise with a `claim` that found `true`, and could miss the
/// work while that waker wrote nothing (a lost wake-up).
#[derive(Debug, Default)]
pub struct WakeFlag(AtomicBool);

impl WakeFlag {
    /// No wake pending.
    pub fn new() -> WakeFlag {
        WakeFlag(AtomicBool::new(false))
    }

    /// The waker's side: `true` if no wake was pending, so this caller must write the
    /// eventfd; `false` if one is on its way, and the poll it ends serves this caller too.
    pub fn claim(&self) -> bool {
        // Release: the work made runnable before the claim is seen by the consuming poller.
        !self.0.swap(true, AcqRel)
    }

    /// The poller's side, when the waker's event came out of `epoll`: the next
    /// [`claim`](WakeFlag::claim) must write again. Afterwards the caller looks at its queues
    /// again: a claim that found the wake pending is ordered before this, so its work is seen.
    pub fn consume(&self) {
        // A swap, not a store: the Acquire half synchronises with the last claim's Release.
        self.0.swap(false, AcqRel);
    }

    /// The waker's side when its write failed after a successful claim: the next claim
    /// tries again. (Given: a plain store is enough here, since no wake is on its way.)
    pub fn unclaim(&self) {
        self.0.store(false, Release);
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("wake_pending", &self.wake_pending)
            .finish_non_exhaustive()
    }
}

fn mio_token(token: Token) -> io::Result<mio::Token> {
    usize::try_from(token.get().get())
        .map(mio::Token)
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "netpoll: token {} does not fit this machine's usize (mio's token); use \
                     smaller tokens",
                    token.get()
                ),
            )
        })
}

/// The [`Token`] a socket was registered with, from mio's; `None` for the waker's 0 and
/// for anything this module never hands out.
fn token_of(t: mio::Token) -> Option<Token> {
    u64::try_from(t.0)
        .ok()
        .and_then(NonZeroU64::new)
        .filter(|v| v.get() <= Token::MAX)
        .map(Token::new)
}

impl Poller {
    /// A poller with its epoll instance and its waker (two file descriptors). Go:
    /// `netpollinit`. Fails with [`fd_limit_error`]'s message when no descriptor is left.
    pub fn new() -> io::Result<Poller> {
        let poll = Poll::new().map_err(|e| fd_limit_error(e, "creating the poller (epoll)"))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| fd_limit_error(e, "creating the poller (registry)"))?;
        let waker = Waker::new(poll.registry(), WAKE)
            .map_err(|e| fd_limit_error(e, "creating the poller's waker (eventfd)"))?;
        Ok(Poller {
            waiting: Mutex::new(Waiting {
                poll,
                events: Events::with_capacity(EVENTS),
            }),
            registry,
            waker,
            wake_pending: WakeFlag::new(),
        })
    }

    /// Watches `source` for `interest`; its events come out of [`poll`](Poller::poll) as
    /// `token`. Edge-triggered, like Go's `EPOLLET`: one event per change, so the G reads
    /// until `WouldBlock` before it waits again. mio registers every source edge-triggered
    /// (there is no flag to ask for it, nor one to turn it off). Go: `netpollopen`.
    pub fn register<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        self.registry
            .register(source, mio_token(token)?, interest)
            .map_err(|e| fd_limit_error(e, "registering a socket with the poller"))
    }

    /// Changes the token or the interest of a registered `source`.
    pub fn reregister<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        self.registry
            .reregister(source, mio_token(token)?, interest)
            .map_err(|e| fd_limit_error(e, "re-registering a socket with the poller"))
    }

    /// Stops watching `source`. Do it before the socket is closed: the kernel drops a
    /// closed descriptor itself, but only once every duplicate of it is closed too. Go:
    /// `netpollclose`.
    pub fn deregister<S>(&self, source: &mut S) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        self.registry.deregister(source)
    }

    /// Waits up to `timeout` (`None`: until something happens, `Some(ZERO)`: not at all) for
    /// readiness, appends one `(token, ready)` per event to `out` and returns how many.
    /// Go: `netpoll(delay)`.
    ///
    /// One thread waits at a time. A caller that finds another thread inside returns
    /// `Ok(0)` at once: the thread inside is taking the events, and will return with them.
    /// So a runtime names one thread its blocking poller (Go: `sched.lastpoll`); the others
    /// poll with `Some(ZERO)` or not at all.
    ///
    /// A [`wake`](Poller::wake) ends the wait with `Ok(0)` (or fewer events than were ready:
    /// the rest come next time), and so does a signal (`EINTR`): the caller computes its
    /// timeout again from the clock and polls again. Every poll that takes the waker's event
    /// consumes the pending wake, `poll(Some(ZERO))` too: mio's eventfd is edge-triggered,
    /// so the event comes out once. Therefore the caller must look at its run queues (and
    /// timers) again after **every** return of `poll`, before it blocks in the next one: the
    /// work a waker made runnable is visible then, and no second wake will come for it.
    pub fn poll(
        &self,
        timeout: Option<Duration>,
        out: &mut Vec<(Token, Ready)>,
    ) -> io::Result<usize> {
        let mut guard = match self.waiting.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Ok(0),
            // A thread panicked inside poll: the epoll instance itself is still sound.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let Waiting { poll, events } = &mut *guard;
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
        let mut n = 0;
        for event in events.iter() {
            if event.token() == WAKE {
                // The next wake() must write again. Go: netpollWakeSig = 0.
                self.wake_pending.consume();
                continue;
            }
            let Some(token) = token_of(event.token()) else {
                continue; // registered by someone else with a token we never hand out
            };
            let error = event.is_error();
            out.push((
                token,
                Ready {
                    read: event.is_readable() || event.is_read_closed() || error,
                    write: event.is_writable() || event.is_write_closed() || error,
                    error,
                },
            ));
            n += 1;
        }
        Ok(n)
    }

    /// Makes a thread blocked in [`poll`](Poller::poll) return now (with `Ok(0)` if
    /// nothing else happened), or the next poll if none is blocked. Wakes coalesce: until a
    /// poll has consumed one, more calls write nothing. Go: `netpollBreak`.
    pub fn wake(&self) -> io::Result<()> {
        if !self.wake_pending.claim() {
            return Ok(()); // one is on its way: the poll it ends serves this caller too
        }
        // Not written: let the next caller try again.
        self.waker
            .wake()
            .inspect_err(|_| self.wake_pending.unclaim())
    }
}
