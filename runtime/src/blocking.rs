//! Blocking calls from Gs: [`blocking`] (Go: `entersyscall`/`exitsyscall`, what every Go
//! system call and cgo call does) and [`Bound`], a limit on such calls in flight whose
//! waiters park (the "semaphore of 8" of chapter 9).
//!
//! Not here: the hand-off of the P and the M's wait for one (`sched/syscall.rs`), sysmon
//! (`sched/sysmon.rs`), the slot protocol and the permit count themselves (part 09).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::g::{self, Waiter};
use crate::lock;
use crate::parts::g::WaitReason;
use crate::parts::syscall;

/// Why a blocking call did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockingError {
    /// The call could need an M past [`Builder::max_threads`](crate::Builder::max_threads):
    /// the runtime keeps one M per P and one per call in flight. Go stops the process here
    /// ("thread exhaustion"); gmp tells the caller, who may wait and retry or use a
    /// [`Bound`].
    TooManyThreads {
        /// The cap, `Builder::max_threads`.
        max_threads: usize,
        /// The P count.
        procs: usize,
        /// Calls in flight when this one was refused.
        in_flight: usize,
    },
    /// A [`Bound`] of zero permits: every call would wait forever.
    ZeroPermits(String),
    /// The runtime shut down while the G waited for a permit of a [`Bound`].
    ShutDown,
}

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::TooManyThreads {
                max_threads,
                procs,
                in_flight,
            } => write!(
                f,
                "gmp::blocking: {in_flight} blocking call(s) already in flight at {procs} P(s) \
                 use the runtime's whole thread cap, Builder::max_threads({max_threads}) (one \
                 M per P plus one per call); bound the calls with gmp::Bound, or raise \
                 Builder::max_threads"
            ),
            BlockingError::ZeroPermits(why) => write!(f, "gmp::Bound::new: {why}"),
            BlockingError::ShutDown => write!(
                f,
                "gmp::Bound: the runtime shut down while this G waited for a permit"
            ),
        }
    }
}

impl std::error::Error for BlockingError {}

/// Runs `f`, a call that blocks its thread (a system call, a native library, a `std` file
/// or lock), without stopping the other Gs: the calling G keeps its M for the call, and
/// if the call lasts (more than about 20 µs, part 09's `Sysmon`), sysmon hands the G's P
/// to another M that runs the other Gs meanwhile. Afterwards the G goes on on the same M
/// (S1: a started G never changes thread), with its P back if nobody took it, else another
/// one, waiting for one if needed. Go: what every system call does (`entersyscall`,
/// `exitsyscall`).
///
/// Each call in flight can cost an OS thread: bound many of them with a [`Bound`]. Dropping
/// the runtime waits for the calls in flight, as joining a thread waits for its call.
///
/// Outside a G (on a plain thread) it just runs `f`: there is no P to hand on.
///
/// `f` must not wait on the runtime (`park`, `yield_now`, a channel, a join, a sleep of
/// `gmp::time`, [`Bound::acquire`]): the G is in a call and has no P; doing so panics,
/// naming the rule. Use `std::thread::sleep` and friends inside, or end the call first.
///
/// **`f` must not wait (with `std`'s waits) for a G that started on this M**: such a G
/// runs only on this M (S1), which is busy with the call, so the call never ends. Gs not
/// started yet are fine: they ride along with the P. The dump notes an M in a call for
/// over a second while Gs that started on it wait (chapter 9, "What S1 costs around a
/// call").
///
/// `f` runs on the G's own stack ([`Builder::stack_size`](crate::Builder::stack_size),
/// 64 KiB by default), not on a big system stack as Go's cgo calls do (on `g0`): a native
/// call that needs more stack needs a bigger G stack.
///
/// # Errors
///
/// [`BlockingError::TooManyThreads`] when this call could need an M past
/// [`Builder::max_threads`](crate::Builder::max_threads); `f` has not run.
///
/// # Panics
///
/// A panic in `f` goes on in the caller (and so to the G's join), after the M has its P
/// back: the M and the runtime carry on.
pub fn blocking<F, T>(f: F) -> Result<T, BlockingError>
where
    F: FnOnce() -> T,
{
    match g::current_g() {
        Some(g) if !g::tearing_down() => g.rt.call_blocking(f),
        _ => Ok(f()),
    }
}

/// A limit of N blocking calls in flight, shared by its clones: [`Bound::blocking`] waits
/// for one of N permits, then runs the call with [`blocking`]. A G that waits parks (its M
/// runs other Gs), so 100 calls through a `Bound` of 8 cost about 8 threads, not 100.
/// The count is part 09's [`Bound`](syscall::Bound); the waiting is here.
///
/// Acquire before you spawn: a G that waits for a permit has started, so it stays on its M
/// (S1), and when that M is in another G's call the permit waits for that call too. Take
/// the [`Permit`] in the spawner ([`acquire`](Bound::acquire)) and move it into a fresh G,
/// which may start on any M; a spawner that also calls [`lock_os_thread`](crate::lock_os_thread)
/// keeps the calls off its own M. Chapter 9, "What S1 costs around a call", measures the
/// three ways.
///
/// ```
/// gmp::run(|| {
///     let bound = gmp::Bound::new(8).unwrap();
///     let calls: Vec<_> = (0..32)
///         .map(|_| {
///             // Taken here, in the spawner, and moved into a fresh G (see above).
///             let permit = bound.acquire().unwrap();
///             gmp::go(move || {
///                 let nap = std::time::Duration::from_millis(1);
///                 let done = gmp::blocking(|| std::thread::sleep(nap));
///                 drop(permit);
///                 done
///             })
///         })
///         .collect();
///     for c in calls {
///         c.join().unwrap().unwrap();
///     }
/// });
/// ```
#[derive(Clone)]
pub struct Bound {
    inner: Arc<BoundInner>,
}

struct BoundInner {
    permits: syscall::Bound,
    /// Waiters for a permit, oldest first, each with the id of its wait. Taken alone, and
    /// never while a waiter is woken. See "Permit without lost wake-up" at [`Bound::acquire`].
    waiters: Mutex<VecDeque<(u64, Waiter)>>,
    next_wait: AtomicU64,
}

/// One permit of a [`Bound`], given back on drop (waking the longest waiter). `Send`: take
/// it in the spawner and move it into the G (see [`Bound`]).
#[must_use = "a permit dropped at once bounds nothing: hold it across the call"]
pub struct Permit {
    permit: Option<syscall::Permit>,
    inner: Arc<BoundInner>,
}

impl Bound {
    /// A bound of `permits` calls in flight.
    ///
    /// # Errors
    ///
    /// [`BlockingError::ZeroPermits`] for 0 (part 09's message).
    pub fn new(permits: usize) -> Result<Bound, BlockingError> {
        let permits =
            syscall::Bound::new(permits).map_err(|e| BlockingError::ZeroPermits(e.to_string()))?;
        Ok(Bound {
            inner: Arc::new(BoundInner {
                permits,
                waiters: Mutex::new(VecDeque::new()),
                next_wait: AtomicU64::new(1),
            }),
        })
    }

    /// Waits for a permit: a G parks, a plain thread sleeps. Waiters are served oldest
    /// first.
    ///
    /// "Permit without lost wake-up": a waiter lists itself, then tries once more before it
    /// parks; a dropped permit is counted back first, then wakes the oldest listed waiter.
    /// So either the retry sees the permit or the drop sees the waiter. A waiter that stops
    /// waiting (a permit on its retry, a shutdown, a panic) takes itself off the list, or,
    /// if a drop already took it off and woke it, passes that wake-up on, so none is lost
    /// to a waiter that did not need it. A woken waiter that finds the permit taken goes
    /// back to its place in the line (by its wait id), not to its end.
    ///
    /// # Errors
    ///
    /// [`BlockingError::ShutDown`] if the runtime shut down during the wait.
    ///
    /// # Panics
    ///
    /// Inside [`blocking`] (a G in a call cannot wait on the runtime), before it waits.
    pub fn acquire(&self) -> Result<Permit, BlockingError> {
        g::check_may_wait("gmp::Bound::acquire");
        let inner = &self.inner;
        if let Some(permit) = inner.permits.try_acquire() {
            return Ok(self.permit(permit));
        }
        let wait = inner.next_wait.fetch_add(1, Relaxed);
        let me = Waiter::current();
        // From here on every way out (a permit, an error, an unwind) leaves the list clean.
        let _listed = Listed { inner, wait };
        loop {
            {
                let mut waiters = lock(&inner.waiters);
                let at = waiters.partition_point(|(id, _)| *id < wait);
                if waiters.get(at).is_none_or(|(id, _)| *id != wait) {
                    waiters.insert(at, (wait, me.clone()));
                }
            }
            if let Some(permit) = inner.permits.try_acquire() {
                return Ok(self.permit(permit));
            }
            if me.wait(WaitReason::Park).is_err() {
                return Err(BlockingError::ShutDown);
            }
        }
    }

    fn permit(&self, permit: syscall::Permit) -> Permit {
        Permit {
            permit: Some(permit),
            inner: self.inner.clone(),
        }
    }

    /// Waits for a permit, then runs `f` as a [`blocking`] call and gives the permit back.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Bound::acquire) and [`blocking`].
    pub fn blocking<F, T>(&self, f: F) -> Result<T, BlockingError>
    where
        F: FnOnce() -> T,
    {
        let _permit = self.acquire()?;
        blocking(f)
    }

    /// Permits free now (a snapshot).
    pub fn available(&self) -> usize {
        self.inner.permits.available()
    }

    /// The most permits out at once.
    pub fn limit(&self) -> usize {
        self.inner.permits.limit()
    }
}

/// Wait `wait` of an [`Bound::acquire`] in progress: on drop, off the list, or, if a
/// dropped permit already took it off (and woke it), that wake-up goes to the next waiter.
/// Go's `semrelease` hands the permit to the waiter instead; here the waiter takes it.
struct Listed<'a> {
    inner: &'a BoundInner,
    wait: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        let mut waiters = lock(&self.inner.waiters);
        match waiters.iter().position(|(id, _)| *id == self.wait) {
            Some(pos) => {
                waiters.remove(pos);
            }
            None => {
                let next = waiters.pop_front();
                drop(waiters);
                if let Some((_, w)) = next {
                    w.wake_owned();
                }
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Counted back before the waiter is woken ("Permit without lost wake-up").
        drop(self.permit.take());
        let next = lock(&self.inner.waiters).pop_front();
        if let Some((_, w)) = next {
            w.wake_owned();
        }
    }
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gmp::Bound ({} of {} free, {} waiting)",
            self.available(),
            self.limit(),
            lock(&self.inner.waiters).len()
        )
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gmp::Permit (of a bound of {})",
            self.inner.permits.limit()
        )
    }
}
