//! Waiting for time in a G without holding an M: [`sleep`], [`sleep_until`], [`Ticker`] and
//! [`timeout`], on part 11's per-P timer heaps (`sched/timer.rs`). A sleeping G is parked
//! like any waiting G: its M runs other Gs, and 100,000 sleepers cost 100,000 small stacks
//! and heap entries, not 100,000 threads. Go: package `time` (`Sleep`, `NewTicker`,
//! `After`) over the runtime's timers.
//!
//! Outside a G (a plain thread), each of these waits the thread's way, so library code works
//! in both places.
//!
//! Not here: the heap (part 11), who runs the timers and who sleeps until the next one
//! (`sched/timer.rs`), `Receiver::recv_timeout` (`chan.rs`).

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chan::{self, RecvTimeoutError};
use crate::g::{self, TornDown, Waiter};
use crate::parts::g::WaitReason;
use crate::sched::Shared;
use crate::sched::timer::Timer;

/// Parks the calling G for at least `d`. Go: `time.Sleep`. Outside a G it sleeps the
/// thread (`std::thread::sleep`); in a destructor run as the runtime tears its G down
/// (shutdown), it returns at once, as every blocking call does there.
///
/// ```
/// use std::time::{Duration, Instant};
/// gmp::run(|| {
///     let start = Instant::now();
///     gmp::time::sleep(Duration::from_millis(5));
///     assert!(start.elapsed() >= Duration::from_millis(5));
/// });
/// ```
pub fn sleep(d: Duration) {
    match Instant::now().checked_add(d) {
        Some(deadline) => sleep_until(deadline),
        // Beyond what an Instant holds: as good as forever.
        None => loop {
            sleep_until(Instant::now() + Duration::from_secs(86_400 * 365));
            if g::tearing_down() {
                return;
            }
        },
    }
}

/// Parks the calling G until `deadline` has passed (at once if it has). See [`sleep`].
pub fn sleep_until(deadline: Instant) {
    let Some(g) = g::current_g() else {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return;
    };
    g::check_may_wait("gmp::time::sleep");
    let rt = &g.rt;
    let when = rt.ns_at(deadline);
    if when <= rt.now_ns() || g::tearing_down() {
        return;
    }
    let me = Waiter::current();
    let timer = Timer::new(rt.current_p(), Duration::ZERO, Some(me.clone()));
    rt.arm(&timer, when);
    // The timer counts its firing before it wakes us, so a wake-up for anything else (a
    // GHandle::unpark) just parks again.
    while timer.fired() == 0 {
        if me.wait(WaitReason::Sleep).is_err() {
            rt.disarm(&timer);
            return;
        }
    }
}

/// Waits as `waiter` (the caller) until woken or `deadline` has passed, whichever comes
/// first; may return early, so callers loop on their condition. A G arms a one-shot timer
/// on its P and takes it out again after; a thread parks with a timeout.
pub(crate) fn wait_until(
    waiter: &Waiter,
    reason: WaitReason,
    deadline: Instant,
) -> Result<(), TornDown> {
    match waiter {
        Waiter::G(g) => {
            let rt = &g.rt;
            let timer = Timer::new(rt.current_p(), Duration::ZERO, Some(waiter.clone()));
            rt.arm(&timer, rt.ns_at(deadline));
            let waited = waiter.wait(reason);
            rt.disarm(&timer);
            waited
        }
        Waiter::Thread(parker) => {
            let _ = parker.park_timeout(deadline.saturating_duration_since(Instant::now()));
            Ok(())
        }
    }
}

/// Ticks every `period`: [`Ticker::tick`] waits for the next one. A reader too slow to
/// take every tick gets the latest and misses the others, as a Go ticker's channel of one
/// drops them; the ticks stay on the grid of `period` from the start (no drift). Stops
/// when dropped. Go: `time.NewTicker`.
///
/// ```
/// use std::time::{Duration, Instant};
/// gmp::run(|| {
///     // Read the clock first: the grid starts when the ticker is made.
///     let start = Instant::now();
///     let mut ticker = gmp::time::Ticker::new(Duration::from_millis(2));
///     for _ in 0..3 {
///         ticker.tick();
///     }
///     assert!(start.elapsed() >= Duration::from_millis(6));
/// });
/// ```
pub struct Ticker {
    rt: Arc<Shared>,
    timer: Arc<Timer>,
    /// Ticks taken so far (the timer's `fired` count when `tick` last returned).
    seen: u64,
    period: Duration,
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticker {{ period: {:?} }}", self.period)
    }
}

impl Ticker {
    /// A ticker whose first tick is `period` from now, on the calling G's P.
    ///
    /// # Panics
    ///
    /// If `period` is zero (Go: "non-positive interval for NewTicker"), or outside a G.
    pub fn new(period: Duration) -> Ticker {
        assert!(
            !period.is_zero(),
            "gmp::time::Ticker::new: the period is zero; a ticker needs a positive period \
             (use yield_now to give way without waiting)"
        );
        let g = g::running("time::Ticker::new");
        let rt = g.rt.clone();
        let timer = Timer::new(rt.current_p(), period, None);
        let first = rt
            .now_ns()
            .saturating_add(crate::sched::timer::nanos(period));
        rt.arm(&timer, first);
        Ticker {
            rt,
            timer,
            seen: 0,
            period,
        }
    }

    /// Waits for the next tick and returns when it was taken. If ticks came since the
    /// last call, returns at once (one for all of them). Callable from a G or a thread.
    pub fn tick(&mut self) -> Instant {
        let me = Waiter::current();
        self.timer.set_waiter(me.clone());
        let taken = loop {
            let fired = self.timer.fired();
            if fired > self.seen {
                self.seen = fired;
                break Instant::now();
            }
            if me.wait(WaitReason::Sleep).is_err() {
                // Torn down at shutdown: no tick will ever come.
                break Instant::now();
            }
        };
        // Between reads nobody waits: a tick must not wake this G in whatever it waits for
        // next (each such wait would take a spurious wake-up per tick).
        self.timer.clear_waiter();
        taken
    }

    /// Stops the ticker: no tick after this one returns. Go: `Ticker.Stop`.
    pub fn stop(&self) {
        self.rt.disarm(&self.timer);
    }

    /// The period it ticks with.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A second panic here (a broken heap's named error) would abort the process and
            // hide the first message: the runtime has recorded it; let the unwind go on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        } else {
            self.stop();
        }
    }
}

/// [`timeout`]'s limit passed before the work finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(pub Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the work did not finish within {:?} (it goes on in its own G; its result will \
             be dropped)",
            self.0
        )
    }
}

impl std::error::Error for Elapsed {}

/// Runs `f` in a new G and waits for its value at most `limit`: a bounded wait, Go's
/// `select { case v := <-done: ...; case <-time.After(limit): ... }`.
///
/// On time, returns `f`'s value (a panic in `f` continues here, as if `f` had been called).
/// Late, returns [`Elapsed`]: `f` is not stopped, since a G cannot be stopped from outside
/// (chapter 12 adds preemption, not cancellation); it runs to its end in its own G and its
/// value is dropped there. Give `f` a way to notice (a flag, a channel) when it matters.
///
/// ```
/// use std::time::Duration;
/// gmp::run(|| {
///     assert_eq!(gmp::time::timeout(Duration::from_secs(5), || 6 * 7), Ok(42));
///     let slow = gmp::time::timeout(Duration::from_millis(1), || {
///         gmp::time::sleep(Duration::from_millis(50));
///     });
///     assert!(slow.is_err());
/// });
/// ```
///
/// # Errors
///
/// [`Elapsed`] when `limit` passed first, or when the runtime shut down before `f` ran.
///
/// # Panics
///
/// Outside a G (there is no runtime to start `f` in), or if `f` panics.
pub fn timeout<F, T>(limit: Duration, f: F) -> Result<T, Elapsed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = chan::rendezvous();
    crate::go(move || {
        let out = panic::catch_unwind(AssertUnwindSafe(f));
        if let Err(payload) = out {
            if g::tearing_down() {
                // Shutdown is unwinding this G's stack: let it through (see `task.rs`).
                panic::resume_unwind(payload);
            }
            let _ = tx.send(Err(payload));
            return;
        }
        // If the caller gave up, the value comes back here and is dropped by this G.
        let _ = tx.send(out);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Err(Elapsed(limit)),
    }
}
