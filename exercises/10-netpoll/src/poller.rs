//! [`Poller`]: the kernel's side of the netpoller, epoll through mio. Sockets are registered
//! once with a [`Token`]; one thread at a time waits in [`Poller::poll`] for all of them;
//! any thread can break that wait with [`Poller::wake`]. Go: `netpollinit`, `netpollopen`,
//! `netpoll(delay)`, `netpollBreak` (`runtime/netpoll_epoll.go`).

use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Release};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll, Registry, Waker};

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
    /// A wake is on its way and the poll has not consumed it yet. Go: `netpollWakeSig`.
    wake_pending: AtomicBool,
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
        todo!(
            "ch10 step 3: a mio Poll, a clone of its Registry, a Waker on token WAKE; errors through fd_limit_error (book: ch10-netpoll.html#step-3)"
        )
    }

    /// Watches `source` for `interest`; its events come out of [`poll`](Poller::poll) as
    /// `token`. Edge-triggered, like Go's `EPOLLET`: one event per change, so the G reads
    /// until `WouldBlock` before it waits again. Go: `netpollopen`.
    pub fn register<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        todo!(
            "ch10 step 3: register with the registry under mio_token(token); errors through fd_limit_error (book: ch10-netpoll.html#step-3)"
        )
    }

    /// Changes the token or the interest of a registered `source`.
    pub fn reregister<S>(&self, source: &mut S, token: Token, interest: Interest) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        todo!("ch10 step 3: reregister with the registry (book: ch10-netpoll.html#step-3)")
    }

    /// Stops watching `source`. Do it before the socket is closed: the kernel drops a
    /// closed descriptor itself, but only once every duplicate of it is closed too. Go:
    /// `netpollclose`.
    pub fn deregister<S>(&self, source: &mut S) -> io::Result<()>
    where
        S: Source + ?Sized,
    {
        todo!("ch10 step 3: deregister from the registry (book: ch10-netpoll.html#step-3)")
    }

    /// Waits up to `timeout` (`None`: until something happens, `Some(ZERO)`: not at all) for
    /// readiness, appends one `(token, ready)` per event to `out` and returns how many.
    /// Go: `netpoll(delay)`.
    ///
    /// One thread waits at a time. A caller that finds another thread inside returns
    /// `Ok(0)` at once: the thread inside is taking the events, and will return with them.
    /// A [`wake`](Poller::wake), or a signal that interrupts the wait, also ends it with
    /// `Ok(0)` (or fewer events than were ready: the rest come next time).
    pub fn poll(
        &self,
        timeout: Option<Duration>,
        out: &mut Vec<(Token, Ready)>,
    ) -> io::Result<usize> {
        todo!(
            "ch10 step 3: mio poll into the Events, one (Token, Ready) per socket event; step 4: try_lock, and the WAKE event (book: ch10-netpoll.html#step-3)"
        )
    }

    /// Makes a thread blocked in [`poll`](Poller::poll) return now (with `Ok(0)` if
    /// nothing else happened), or the next poll if none is blocked. Wakes coalesce: until a
    /// poll has consumed one, more calls write nothing. Go: `netpollBreak`.
    pub fn wake(&self) -> io::Result<()> {
        todo!(
            "ch10 step 4: wake through the Waker unless a wake is already pending (book: ch10-netpoll.html#step-4)"
        )
    }
}
