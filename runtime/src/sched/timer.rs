//! Timers in the scheduler: one part 11 [`TimerHeap`] per P behind its own mutex, what its
//! tokens stand for, who runs the expired ones, and the M that sleeps until the next one.
//! Go: `p.timers`, `checkTimers`, `wakeNetPoller` and the timer half of `findRunnable`
//! (`runtime/time.go`, `proc.go`).
//!
//! ## Who runs a P's timers
//!
//! 1. The P's own M, each time it looks for work (`find_runnable`, Go: `checkTimers` at the
//!    top of `findRunnable`): a G that yields never holds its P's timers back.
//! 2. A thief, in the last stealing round, for a victim whose earliest timer is due (Go:
//!    `stealWork`): a P whose M runs a long G does not keep its timers waiting.
//! 3. The timer sleeper: one parked M (no P needed, the heaps are behind mutexes) sleeps
//!    until the earliest deadline of every P, then runs what is due everywhere. It stands
//!    in for Go's M blocked in `netpoll(delay)`, and once a socket made the netpoller it
//!    is that M: [`Shared::idle_sleep`] blocks in `Poller::poll` (`netpoll.rs`).
//!
//! Running a timer only readies Gs (`Shared::ready`): a sleeping G goes back to its own M,
//! which is woken with a P if it is parked. No user code runs under a heap's lock.
//!
//! ## A new earlier timer wakes the sleeper ("Sleeper without lost wake-up")
//!
//! The sleeper stores [`COMPUTING`] in `sleep_until`, reads every P's `next`, stores the
//! earliest and sleeps until then; `arm` stores the P's `next` and then reads `sleeper` and
//! `sleep_until` (all SeqCst). So either the sleeper's read sees the new deadline, or `arm`
//! sees `COMPUTING` or a later deadline and unparks it, and wakes its poll (`unpark_m`; Go:
//! `wakeNetPoller` -> `netpollBreak`). With no sleeper, `arm` calls `wakep`, whose M becomes the sleeper when it
//! finds nothing to run.
//!
//! ## The runtime checks the learner's heap
//!
//! Each arming of a timer gets a token never used before, and the P's `entries` map holds
//! the armed ones. A token that `run_expired` hands out is looked up and removed: one that
//! is not there fired twice or after its cancel, one due later than `now` fired early, one
//! due before the previous token fired out of order; after each add, cancel and run, `len`
//! must equal the entries' count (the error names that call), and after a run
//! `next_deadline` must be past `now`. Each is a [`TimerError`] that stops the runtime
//! naming the rule (`Shared::fail`), never a G woken by mistake.
//!
//! Not here: the heap itself (part 11); `sleep`, `Ticker` and `timeout` (`time.rs`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use super::m::with_m;
use crate::g::Waiter;
use crate::lock;
use crate::parts::timer::{TimerHeap, TimerId, Token};

/// No deadline: a P with no timer, a sleeper with nothing to wait for.
pub(crate) const NEVER: u64 = u64::MAX;
/// `sleep_until` while the sleeper reads the Ps' deadlines: any new timer unparks it.
const COMPUTING: u64 = 0;
/// How many retired tokens a P remembers, to name a late duplicate precisely.
const RETIRED_KEPT: usize = 256;

/// One timer as its user holds it: what to wake, and (for a ticker) how often.
pub(crate) struct Timer {
    /// The P whose heap holds it, fixed at creation (Go: `t.pp`, here never moved).
    pub(crate) p: usize,
    /// Nanoseconds between ticks; 0 for a one-shot timer.
    period: u64,
    /// The token of its current arming, 0 when it waits in no heap. Written under the P's
    /// heap lock.
    token: AtomicU64,
    /// Set by `disarm`: a ticker is not armed again.
    stopped: AtomicBool,
    /// How many times it fired. Release on fire pairs with the Acquire of its waiter.
    fired: AtomicU64,
    /// Who to wake when it fires. Taken alone (after the heap lock is released).
    waiter: Mutex<Option<Waiter>>,
}

impl Timer {
    /// A timer on P `p` that wakes `waiter`; `period` > 0 makes it a ticker.
    pub(crate) fn new(p: usize, period: Duration, waiter: Option<Waiter>) -> Arc<Timer> {
        Arc::new(Timer {
            p,
            period: nanos(period).max(u64::from(!period.is_zero())),
            token: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            fired: AtomicU64::new(0),
            waiter: Mutex::new(waiter),
        })
    }

    /// How many times it has fired so far.
    pub(crate) fn fired(&self) -> u64 {
        self.fired.load(SeqCst)
    }

    /// The G or thread to wake from now on.
    pub(crate) fn set_waiter(&self, waiter: Waiter) {
        *lock(&self.waiter) = Some(waiter);
    }

    /// Nobody waits any more: later firings wake nobody (a ticker between reads).
    pub(crate) fn clear_waiter(&self) {
        *lock(&self.waiter) = None;
    }

    /// Counts a firing, then wakes the waiter: a waiter checks `fired` after it registered,
    /// so it either sees the count or gets the wake-up (part 06 keeps a wake-up that comes
    /// before the park).
    fn fire(&self) {
        self.fired.fetch_add(1, SeqCst);
        let waiter = lock(&self.waiter).clone();
        if let Some(w) = waiter {
            w.wake_owned();
        }
    }
}

/// A duration in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
}

/// One P's timers. Go: `p.timers` (with its lock and `minWhen`).
pub(crate) struct PTimers {
    /// The earliest deadline in `state.heap`, or [`NEVER`]: read without the lock by the
    /// P's M, thieves and the sleeper. Stored (SeqCst) under the lock after every change;
    /// pairs with the sleeper's loads (see "Sleeper without lost wake-up").
    next: AtomicU64,
    /// Locked by whoever adds, cancels or runs this P's timers; nothing else is taken under
    /// it, and no user code runs under it, so poison only means a reported bug.
    state: Mutex<TimerState>,
}

struct TimerState {
    heap: TimerHeap,
    /// Every armed timer by its token: what the heap must hand back exactly once.
    entries: HashMap<u64, Entry, BuildHasherDefault<TokenHasher>>,
    /// The last tokens that fired or were cancelled, to name a duplicate precisely.
    retired: VecDeque<(u64, Retired)>,
}

/// Hashes a timer token, a number the runtime counts up from 1 (never chosen by a caller,
/// so nobody can aim collisions at it): one multiply, where std's SipHash, built to resist
/// chosen keys, took a few hundred instructions per arm and fire.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the key is a u64); fold anything else in, byte by byte.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, token: u64) {
        // Fibonacci hashing: spreads consecutive tokens over the table's top bits, which
        // hashbrown uses for its control bytes.
        self.0 = token.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Entry {
    when: u64,
    id: TimerId,
    timer: Arc<Timer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retired {
    Fired,
    Cancelled,
}

/// The heap call just before a check of `len`, so its error names the call that broke it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Add {
        when: u64,
    },
    /// A `cancel` that returned true.
    Cancel,
    RunExpired {
        now: u64,
    },
}

/// A rule of part 11 that a P's heap broke, found by the runtime.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimerError {
    /// `run_expired` handed out a token that had fired already.
    FiredTwice { token: u64 },
    /// `run_expired` handed out a token whose timer was cancelled.
    FiredAfterCancel { token: u64 },
    /// A token no arming ever had (or retired too long ago to say which).
    Unknown { token: u64 },
    /// A token due later than the `now` it fired at.
    Early { token: u64, when: u64, now: u64 },
    /// A token due before the one `run_expired` fired just before it.
    OutOfOrder { token: u64, when: u64, before: u64 },
    /// `run_expired` returned another count than it handed to `fire`.
    Count { returned: usize, handed: usize },
    /// `len` disagrees with the timers armed and not fired or cancelled, right `after` a call.
    Len {
        len: usize,
        armed: usize,
        after: Call,
    },
    /// After `run_expired(now)`, `next_deadline` still says a timer is due.
    LeftDue {
        next: Option<u64>,
        now: u64,
        armed: usize,
    },
    /// `cancel` of an armed timer returned false.
    CancelRefused { token: u64 },
    /// `next_deadline` disagrees with what is armed: `None` with timers armed, a deadline
    /// with none, or later than a timer just added (`added`).
    Next {
        next: Option<u64>,
        armed: usize,
        added: Option<u64>,
    },
    /// A method of the heap panicked (a `todo!()` left in, say).
    Panicked {
        method: &'static str,
        message: String,
    },
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TimerError::*;
        match *self {
            FiredTwice { token } => write!(
                f,
                "token {token} fired twice: run_expired handed it out again after it had \
                 fired (take each timer out of the heap before firing it, and call fire once \
                 per timer; book: ch11-timer.html#step-2)"
            ),
            FiredAfterCancel { token } => write!(
                f,
                "token {token} fired after its timer was cancelled: cancel returned true but \
                 left it in the heap (book: ch11-timer.html#step-3)"
            ),
            Unknown { token } => write!(
                f,
                "token {token} fired, but no timer armed now has it: it fired twice, after a \
                 cancel, or was never added (book: ch11-timer.html#step-2)"
            ),
            Early { token, when, now } => write!(
                f,
                "token {token} fired before its deadline: due at {when} ns, fired by \
                 run_expired({now}) (fire only timers with when <= now; book: \
                 ch11-timer.html#step-2)"
            ),
            OutOfOrder {
                token,
                when,
                before,
            } => write!(
                f,
                "token {token} (due at {when} ns) fired after a timer due at {before} ns: \
                 run_expired fires earliest first (book: ch11-timer.html#step-2)"
            ),
            Count { returned, handed } => write!(
                f,
                "run_expired returned {returned} but handed {handed} tokens to fire (book: \
                 ch11-timer.html#step-2)"
            ),
            Len {
                len,
                armed,
                after: Call::Add { when },
            } => write!(
                f,
                "after add({when}), len() is {len} but {armed} timers are armed and neither \
                 fired nor cancelled: add puts exactly one timer in (book: \
                 ch11-timer.html#step-1)"
            ),
            Len {
                len,
                armed,
                after: Call::Cancel,
            } if len == armed + 1 => write!(
                f,
                "after cancel(id) returned true, len() is still {len}: the timer stayed in \
                 the heap ({armed} timers are armed now); a cancel that returns true takes \
                 that timer out (book: ch11-timer.html#step-3)"
            ),
            Len {
                len,
                armed,
                after: Call::Cancel,
            } => write!(
                f,
                "after cancel(id) returned true, len() is {len} but {armed} timers are armed: \
                 a cancel takes out exactly the one timer it names (book: \
                 ch11-timer.html#step-3)"
            ),
            Len {
                len,
                armed,
                after: Call::RunExpired { now },
            } => write!(
                f,
                "after run_expired({now}), len() is {len} but {armed} timers are armed and \
                 neither fired nor cancelled: each timer it fires leaves the heap, the others \
                 stay (book: ch11-timer.html#step-2)"
            ),
            LeftDue { next, now, armed } => write!(
                f,
                "after run_expired({now}), next_deadline() is {next:?} with {armed} timers \
                 armed: a due timer was left in the heap, or next_deadline is wrong (book: \
                 ch11-timer.html#step-2)"
            ),
            CancelRefused { token } => write!(
                f,
                "cancel of the armed timer with token {token} returned false: the heap lost \
                 it, or its id names another timer (book: ch11-timer.html#step-3)"
            ),
            Next {
                next,
                armed,
                added: Some(added),
            } => write!(
                f,
                "next_deadline() is {next:?} just after add({added}) with {armed} timers \
                 armed: the earliest deadline can be no later than the one just added \
                 (book: ch11-timer.html#step-1)"
            ),
            Next {
                next,
                armed,
                added: None,
            } => write!(
                f,
                "next_deadline() is {next:?} with {armed} timers armed: it must be Some \
                 exactly when a timer is armed, or the runtime would sleep past it (book: \
                 ch11-timer.html#step-1)"
            ),
            Panicked {
                method,
                ref message,
            } => write!(
                f,
                "{method} panicked: {message} (the runtime calls it with the P's heap \
                 locked; book: ch11-timer.html)"
            ),
        }
    }
}

/// Runs a method of the learner's heap, turning a panic into a named error: a panic there
/// would unwind through the runtime with the P's heap locked (or, from a `Ticker`'s drop
/// during an unwind, abort the process).
fn heap_call<R>(method: &'static str, f: impl FnOnce() -> R) -> Result<R, TimerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        TimerError::Panicked {
            method,
            message: crate::task::payload_message(&*payload)
                .unwrap_or("a non-string payload")
                .to_string(),
        }
    })
}

impl TimerState {
    /// `next_deadline`, checked against what the runtime knows is armed (and, after an
    /// `add`, against the deadline just added): a wrong answer would let the runtime sleep
    /// past a due timer without any error.
    fn checked_next(&mut self, added: Option<u64>) -> Result<u64, TimerError> {
        let next = heap_call("next_deadline", || self.heap.next_deadline())?;
        let armed = self.entries.len();
        let wrong = next.is_some() == self.entries.is_empty()
            || matches!((next, added), (Some(n), Some(a)) if n > a);
        if wrong {
            return Err(TimerError::Next { next, armed, added });
        }
        Ok(next.unwrap_or(NEVER))
    }

    fn new() -> TimerState {
        TimerState {
            heap: TimerHeap::new(),
            entries: HashMap::default(),
            retired: VecDeque::new(),
        }
    }

    fn retire(&mut self, token: u64, how: Retired) {
        if self.retired.len() == RETIRED_KEPT {
            self.retired.pop_front();
        }
        self.retired.push_back((token, how));
    }

    /// Takes the entry of a fired `token` (after one due at `before`), or names the rule the
    /// heap broke.
    fn take_fired(&mut self, token: u64, now: u64, before: u64) -> Result<Entry, TimerError> {
        let Some(entry) = self.entries.remove(&token) else {
            return Err(match self.retired.iter().rev().find(|(t, _)| *t == token) {
                Some((_, Retired::Fired)) => TimerError::FiredTwice { token },
                Some((_, Retired::Cancelled)) => TimerError::FiredAfterCancel { token },
                None => TimerError::Unknown { token },
            });
        };
        let when = entry.when;
        if when > now {
            return Err(TimerError::Early { token, when, now });
        }
        if when < before {
            return Err(TimerError::OutOfOrder {
                token,
                when,
                before,
            });
        }
        self.retire(token, Retired::Fired);
        Ok(entry)
    }

    /// `len` must match the armed timers, right `after` that call.
    fn check_len(&self, after: Call) -> Result<(), TimerError> {
        let len = heap_call("len", || self.heap.len())?;
        let armed = self.entries.len();
        if len == armed {
            Ok(())
        } else {
            Err(TimerError::Len { len, armed, after })
        }
    }
}

impl PTimers {
    pub(crate) fn new() -> PTimers {
        PTimers {
            next: AtomicU64::new(NEVER),
            state: Mutex::new(TimerState::new()),
        }
    }
}

/// The runtime's timer state besides the Ps' heaps (in `Shared::timers`).
pub(crate) struct Sleeper {
    /// The clock's zero: deadlines are nanoseconds since then.
    epoch: Instant,
    /// The next token (never reused, so a late duplicate is never mistaken for a new one).
    next_token: AtomicU64,
    /// The M that sleeps until the next deadline, as index + 1; 0 when none does. It is
    /// also the M that blocks in the netpoller (`netpoll.rs`).
    pub(super) m: AtomicUsize,
    /// The deadline it sleeps until, [`COMPUTING`] while it reads them, [`NEVER`] for none.
    until: AtomicU64,
}

impl Sleeper {
    pub(crate) fn new() -> Sleeper {
        Sleeper {
            epoch: Instant::now(),
            next_token: AtomicU64::new(1),
            m: AtomicUsize::new(0),
            until: AtomicU64::new(NEVER),
        }
    }
}

impl Shared {
    /// Now, in nanoseconds on the runtime's clock.
    pub(crate) fn now_ns(&self) -> u64 {
        nanos(self.sleeper.epoch.elapsed())
    }

    /// `at` on the runtime's clock (0 for instants before the runtime started).
    pub(crate) fn ns_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.sleeper.epoch))
    }

    /// P `p`'s timers, made on first use.
    fn p_timers(&self, p: usize) -> &PTimers {
        self.timers[p].get_or_init(|| Box::new(PTimers::new()))
    }

    /// The P the calling G runs on (0 outside a G, where no P is held).
    pub(crate) fn current_p(&self) -> usize {
        with_m(self.id, |m| m.p.as_ref().map(|p| p.id))
            .flatten()
            .unwrap_or(0)
    }

    /// Arms `timer` to fire at `when` (ns on the runtime's clock). Go: `addtimer`, then
    /// `wakeNetPoller`. Any thread.
    pub(crate) fn arm(&self, timer: &Arc<Timer>, when: u64) {
        let pt = self.p_timers(timer.p);
        let mut st = lock(&pt.state);
        self.arm_locked(pt, &mut st, timer, when);
        drop(st);
        self.timer_armed(when);
    }

    /// `arm` with P `timer.p`'s heap locked (also how a ticker is armed again).
    fn arm_locked(&self, pt: &PTimers, st: &mut TimerState, timer: &Arc<Timer>, when: u64) {
        let token = self.sleeper.next_token.fetch_add(1, Relaxed);
        let nz = NonZeroU64::new(token).expect("tokens start at 1");
        let id = heap_call("add", || st.heap.add(when, Token::new(nz)))
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        st.entries.insert(
            token,
            Entry {
                when,
                id,
                timer: timer.clone(),
            },
        );
        timer.token.store(token, Relaxed);
        if let Err(e) = st.check_len(Call::Add { when }) {
            self.fail(format!("timer (part 11): {e}"));
        }
        let next = st
            .checked_next(Some(when))
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        pt.next.store(next, SeqCst);
    }

    /// Takes `timer` out of its heap if it is armed; `true` if it was (it will not fire).
    /// Stops a ticker for good. Go: `deltimer`. Any thread.
    pub(crate) fn disarm(&self, timer: &Timer) -> bool {
        timer.stopped.store(true, SeqCst);
        let pt = self.p_timers(timer.p);
        let mut st = lock(&pt.state);
        let token = timer.token.load(Relaxed);
        let Some(id) = st.entries.get(&token).map(|entry| entry.id) else {
            return false; // fired already (or never armed)
        };
        // The heap first, the entry after: if the learner's cancel panics or refuses, the
        // runtime still knows the timer is armed and names the error for it.
        let cancelled = heap_call("cancel", || st.heap.cancel(id))
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        if !cancelled {
            self.fail(format!(
                "timer (part 11): {}",
                TimerError::CancelRefused { token }
            ));
        }
        st.entries.remove(&token);
        timer.token.store(0, Relaxed);
        st.retire(token, Retired::Cancelled);
        if let Err(e) = st.check_len(Call::Cancel) {
            self.fail(format!("timer (part 11): {e}"));
        }
        let next = st
            .checked_next(None)
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        pt.next.store(next, SeqCst);
        true
    }

    /// Runs P `p`'s timers if one is due. One atomic load when none is: the hot path of
    /// every look for work. Go: `checkTimers`'s early return on `timers.wakeTime`.
    pub(crate) fn run_due_timers(&self, p: usize) {
        let Some(pt) = self.timers.get(p).and_then(|t| t.get()) else {
            return;
        };
        let next = pt.next.load(SeqCst);
        if next == NEVER {
            return;
        }
        let now = self.now_ns();
        if next <= now {
            self.run_timers(p, now);
        }
    }

    /// Runs P `p`'s expired timers: takes them out of the heap and checks each (see "The
    /// runtime checks the learner's heap"), arms tickers again, then, with the lock
    /// released, wakes their waiters. Returns how many fired. Go: `checkTimers`. Any
    /// thread: the P's M, a thief, the sleeper.
    pub(crate) fn run_timers(&self, p: usize, now: u64) -> usize {
        let Some(pt) = self.timers[p].get() else {
            return 0;
        };
        if pt.next.load(SeqCst) > now {
            return 0;
        }
        let mut st = lock(&pt.state);
        let mut tokens = Vec::new();
        let returned = heap_call("run_expired", || {
            st.heap.run_expired(now, |t| tokens.push(t.get().get()))
        })
        .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        let fired = self
            .check_fired(&mut st, &tokens, returned, now)
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        let mut rearmed = NEVER;
        for (timer, when) in &fired {
            if timer.period > 0 && !timer.stopped.load(SeqCst) {
                // Go: the next tick is a whole number of periods after this one; ticks a
                // slow reader missed are skipped, not bunched.
                let missed = (now - when) / timer.period;
                let next = when.saturating_add(timer.period.saturating_mul(missed + 1));
                self.arm_locked(pt, &mut st, timer, next);
                rearmed = rearmed.min(next);
            }
        }
        let next = st
            .checked_next(None)
            .unwrap_or_else(|e| self.fail(format!("timer (part 11): {e}")));
        pt.next.store(next, SeqCst);
        drop(st);
        if rearmed != NEVER {
            self.timer_armed(rearmed);
        }
        for (timer, _) in &fired {
            timer.fire();
        }
        fired.len()
    }

    /// The entries of the `tokens` that `run_expired(now)` fired (it returned `returned`),
    /// each checked; then `len` and `next_deadline` checked against what is left armed.
    fn check_fired(
        &self,
        st: &mut TimerState,
        tokens: &[u64],
        returned: usize,
        now: u64,
    ) -> Result<Vec<(Arc<Timer>, u64)>, TimerError> {
        if returned != tokens.len() {
            return Err(TimerError::Count {
                returned,
                handed: tokens.len(),
            });
        }
        let mut before = 0;
        let mut fired = Vec::with_capacity(tokens.len());
        for &token in tokens {
            let entry = st.take_fired(token, now, before)?;
            before = entry.when;
            entry.timer.token.store(0, Relaxed);
            fired.push((entry.timer, entry.when));
        }
        st.check_len(Call::RunExpired { now })?;
        let next = heap_call("next_deadline", || st.heap.next_deadline())?;
        if next.is_some_and(|n| n <= now) || next.is_none() != st.entries.is_empty() {
            return Err(TimerError::LeftDue {
                next,
                now,
                armed: st.entries.len(),
            });
        }
        Ok(fired)
    }

    /// The Ps whose timers were ever made, by id.
    fn timer_ps(&self) -> impl Iterator<Item = (usize, &PTimers)> {
        // SeqCst: a P is counted before it exists, so a sleeper that does not see P `p` here
        // read the count before any timer on `p` was armed, and the armer then sees COMPUTING
        // or a later `until` (and wakes it, or finds it awake).
        self.timers[..self.ps_made.load(SeqCst)]
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.get().map(|t| (i, &**t)))
    }

    /// The earliest deadline of every P, or [`NEVER`].
    pub(super) fn earliest_timer(&self) -> u64 {
        self.timer_ps()
            .map(|(_, pt)| pt.next.load(SeqCst))
            .min()
            .unwrap_or(NEVER)
    }

    /// Runs the expired timers of every P (the sleeper, which holds no P).
    fn run_all_timers(&self) {
        let now = self.now_ns();
        for (p, _) in self.timer_ps() {
            self.run_timers(p, now);
        }
    }

    /// A timer due at `when` was armed: wake the sleeper if it sleeps past `when`, or, with
    /// no sleeper, start an M that will become one. Go: `wakeNetPoller`.
    pub(super) fn timer_armed(&self, when: u64) {
        let m = self.sleeper.m.load(SeqCst);
        if m == 0 {
            self.wakep();
            return;
        }
        let until = self.sleeper.until.load(SeqCst);
        if until == COMPUTING || when < until {
            self.unpark_m(m - 1);
        }
    }

    /// M `index`, parked with no P, sleeps: as the timer sleeper until the earliest
    /// deadline if no other M is it (then runs every P's expired timers), else until
    /// unparked. Returns after any wake-up; the caller checks for a P and parks again.
    /// Go: the end of `findRunnable`: `netpoll(delay)` for one M, `stopm` for the others.
    pub(super) fn idle_sleep(&self, index: usize) {
        let me = &self.ms[index];
        let mine = index + 1;
        let sleeper = self.sleeper.m.load(SeqCst);
        if sleeper != mine
            && (sleeper != 0
                || self
                    .sleeper
                    .m
                    .compare_exchange(0, mine, SeqCst, SeqCst)
                    .is_err())
        {
            me.idle.park();
            return;
        }
        // "Sleeper without lost wake-up": announce, then read every P's deadline.
        self.sleeper.until.store(COMPUTING, SeqCst);
        let until = self.earliest_timer();
        self.sleeper.until.store(until, SeqCst);
        let now = self.now_ns();
        if until > now {
            // Once a socket made the poller, this M blocks in it, with the next deadline as
            // its timeout (Go: `netpoll(delay)`); `unpark_m` ends that wait (`netpollBreak`).
            if !self.poll_idle(index, until) {
                if until == NEVER {
                    me.idle.park();
                } else {
                    let _ = me.idle.park_timeout(Duration::from_nanos(until - now));
                }
            }
        }
        if !self.shutdown.load(Relaxed) {
            self.run_all_timers();
        }
    }

    /// M `index` leaves its idle loop (handed a P, or shutdown). If it was the sleeper, the
    /// role is free again; if timers or Gs on sockets wait, wake another parked M to take it (Go's sysmon
    /// starts an M for overdue timers instead).
    pub(super) fn leave_idle(&self, index: usize) {
        if self
            .sleeper
            .m
            .compare_exchange(index + 1, 0, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        self.sleeper.until.store(NEVER, SeqCst);
        if self.earliest_timer() == NEVER && !self.netpoll_waiting() {
            return;
        }
        // Not an M back from a blocking call waiting for a P (`wants_p`, set under this
        // lock): it parks on its Parker until handed one and would never take the role.
        let other = lock(&self.sched)
            .midle
            .iter()
            .copied()
            .find(|&m| m != index && !self.ms[m].wants_p.load(Relaxed));
        if let Some(other) = other {
            self.unpark_m(other);
        }
    }

    /// At shutdown, after the Gs were torn down: drops every armed timer. Each holds its
    /// waiter, often a G, which holds this runtime: a cycle the drop must break, as
    /// `gtable.drain` does for the Gs themselves.
    pub(crate) fn clear_timers(&self) {
        for (_, pt) in self.timer_ps() {
            let mut st = lock(&pt.state);
            let armed = std::mem::take(&mut st.entries);
            st.heap = TimerHeap::new();
            pt.next.store(NEVER, SeqCst);
            drop(st);
            drop(armed);
        }
    }

    /// For dumps: each P's timer count and next deadline from now, and the sleeper.
    pub(super) fn timer_summary(&self) -> String {
        let now = self.now_ns();
        let ps: Vec<String> = self
            .timer_ps()
            .filter_map(|(p, pt)| {
                // A dump is what a watchdog prints about a stuck program: it must not wait
                // for a heap lock that a stuck heap method holds.
                let n = match pt.state.try_lock() {
                    Ok(st) => st.entries.len(),
                    Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().entries.len(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        return Some(format!("P{p}: heap lock held (a heap method running)"));
                    }
                };
                let next = pt.next.load(SeqCst);
                (n > 0).then(|| {
                    let due = if next <= now {
                        format!("due {:.1} ms ago", (now - next) as f64 / 1e6)
                    } else {
                        format!("next in {:.1} ms", (next - now) as f64 / 1e6)
                    };
                    format!("P{p}: {n} ({due})")
                })
            })
            .collect();
        let sleeper = match self.sleeper.m.load(SeqCst) {
            0 => "no M sleeps for them".to_string(),
            m => format!("M{} sleeps until the next", m - 1),
        };
        if ps.is_empty() {
            format!("timers: none, {sleeper}")
        } else {
            format!("timers: {}; {sleeper}", ps.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(when: u64) -> Entry {
        Entry {
            when,
            id: TimerHeap::new().add(when, Token::new(NonZeroU64::new(1).unwrap())),
            timer: Timer::new(0, Duration::ZERO, None),
        }
    }

    #[test]
    fn each_broken_heap_rule_has_its_own_error_naming_the_book_section() {
        let mut st = TimerState::new();
        st.entries.insert(5, entry(100));
        st.entries.insert(6, entry(50));
        st.retire(1, Retired::Fired);
        st.retire(2, Retired::Cancelled);
        let cases = [
            (st.take_fired(1, 200, 0).err(), "fired twice", "step-2"),
            (
                st.take_fired(2, 200, 0).err(),
                "after its timer was cancelled",
                "step-3",
            ),
            (
                st.take_fired(9, 200, 0).err(),
                "no timer armed now has it",
                "step-2",
            ),
            (
                st.take_fired(5, 99, 0).err(),
                "before its deadline",
                "step-2",
            ),
            (
                st.take_fired(6, 200, 60).err(),
                "fires earliest first",
                "step-2",
            ),
        ];
        for (err, says, step) in cases {
            let msg = err.expect("each case breaks a rule").to_string();
            assert!(msg.contains(says) && msg.contains(step), "{msg}");
        }
        // The entries that failed a check are gone from the table: a second look fails too.
        assert!(st.take_fired(5, 200, 0).is_err());
        let twice = TimerError::FiredTwice { token: 1 }.to_string();
        assert!(twice.contains("call fire once per timer"), "{twice}");
        // A count check names the call it follows, and the step that call belongs to.
        let len = |len, armed, after| TimerError::Len { len, armed, after }.to_string();
        let cases = [
            (
                len(3, 2, Call::Add { when: 40 }),
                "after add(40), len() is 3 but 2 timers",
                "step-1",
            ),
            (
                len(3, 2, Call::Cancel),
                "after cancel(id) returned true, len() is still 3",
                "step-3",
            ),
            (
                len(1, 2, Call::Cancel),
                "after cancel(id) returned true, len() is 1 but 2 timers",
                "step-3",
            ),
            (
                len(2, 0, Call::RunExpired { now: 70 }),
                "after run_expired(70), len() is 2 but 0 timers",
                "step-2",
            ),
            (
                TimerError::Count {
                    returned: 3,
                    handed: 2,
                }
                .to_string(),
                "run_expired returned 3 but handed 2 tokens",
                "step-2",
            ),
        ];
        for (msg, says, step) in cases {
            assert!(msg.contains(says) && msg.contains(step), "{msg}");
        }
        // And the check itself: after a cancel that returned true but kept the timer.
        let mut st = TimerState::new();
        st.heap.add(10, Token::new(NonZeroU64::new(3).unwrap()));
        assert_eq!(
            st.check_len(Call::Cancel),
            Err(TimerError::Len {
                len: 1,
                armed: 0,
                after: Call::Cancel
            })
        );
    }

    /// A `next_deadline` that disagrees with what is armed would let the runtime sleep past
    /// a due timer with no error at all; the runtime checks it where it reads it.
    #[test]
    fn a_next_deadline_that_hides_an_armed_timer_is_a_named_error() {
        let mut st = TimerState::new();
        // Armed in the runtime's table, absent from the heap: the heap says None.
        st.entries.insert(7, entry(100));
        let msg = st.checked_next(None).unwrap_err().to_string();
        assert!(
            msg.contains("must be Some exactly when a timer is armed") && msg.contains("step-1"),
            "{msg}"
        );
        // In the heap at 500, then "added" at 100: a correct heap could never answer 500.
        let id = st.heap.add(500, Token::new(NonZeroU64::new(8).unwrap()));
        let msg = st.checked_next(Some(100)).unwrap_err().to_string();
        assert!(msg.contains("no later than the one just added"), "{msg}");
        // And a correct answer passes.
        assert_eq!(st.checked_next(Some(600)).unwrap(), 500);
        assert!(st.heap.cancel(id));
        // A heap method that panics is named, not unwound through the runtime.
        let msg = heap_call("cancel", || -> bool { panic!("not yet") })
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cancel panicked: not yet"), "{msg}");
    }

    /// A G asleep at shutdown is torn down, and its armed timer (which holds the G, which
    /// holds the runtime) is dropped too: nothing keeps the runtime alive after its drop.
    /// (The asm engine leaks a torn-down G's stack, and with it what the frames hold, the
    /// runtime included: only corosensei unwinds them; see "Tearing a G down" in `g.rs`.)
    #[test]
    fn a_runtime_with_sleepers_left_at_shutdown_is_freed() {
        let (weak, engine) =
            testkit::watchdog("shutdown with sleepers", testkit::DEFAULT_LIMIT, || {
                let rt = crate::Runtime::builder().procs(2).build().unwrap();
                let (weak, engine) = (Arc::downgrade(&rt.shared), rt.engine());
                rt.block_on(|| {
                    for _ in 0..10 {
                        crate::go(|| crate::time::sleep(Duration::from_secs(3_600)));
                    }
                    crate::time::sleep(Duration::from_millis(5));
                    let (tx, rx) = crate::chan::rendezvous::<()>();
                    crate::go(move || {
                        let _ = rx.recv_timeout(Duration::from_secs(3_600));
                    });
                    drop(tx.clone());
                    std::mem::forget(tx); // the receiver waits on its timer to the end
                });
                drop(rt);
                (weak, engine)
            });
        if engine == crate::Engine::Asm {
            return;
        }
        assert!(
            weak.upgrade().is_none(),
            "the runtime is still alive after its drop: an armed timer kept its G (and so \
             the runtime) alive"
        );
    }

    /// "Sleeper without lost wake-up": an M sleeps until a far deadline; a G then sleeps a
    /// little. Its M parks with no timer of its own to wait for, so only the sleeper can run
    /// the new timer, and it must be woken to sleep until the earlier deadline instead.
    #[test]
    fn a_new_earlier_timer_wakes_the_sleeper() {
        let (waited, woke) = testkit::watchdog_with(
            "a short sleep while an M sleeps until a far deadline",
            testkit::DEFAULT_LIMIT,
            crate::dump_all,
            || {
                let rt = crate::Runtime::builder().procs(2).build().unwrap();
                let out = rt.block_on(|| {
                    crate::go(|| crate::time::sleep(Duration::from_secs(3_600)));
                    // Both Ms park at some point here: one becomes the sleeper, until the far
                    // deadline (or this G's own short sleeps, each woken on time).
                    for _ in 0..20 {
                        crate::time::sleep(Duration::from_millis(1));
                    }
                    let start = Instant::now();
                    crate::time::sleep(Duration::from_millis(20));
                    let waited = start.elapsed();
                    (waited, waited >= Duration::from_millis(20))
                });
                drop(rt);
                out
            },
        );
        assert!(woke, "a 20 ms sleep returned after {waited:?}: early");
        assert!(
            waited < Duration::from_secs(10),
            "a 20 ms sleep took {waited:?}: the sleeper was not woken for the earlier timer"
        );
    }

    #[test]
    fn a_fired_token_is_taken_once_and_then_named_as_fired_twice() {
        let mut st = TimerState::new();
        st.entries.insert(7, entry(10));
        assert!(st.take_fired(7, 10, 0).is_ok());
        assert_eq!(
            st.take_fired(7, 10, 0).err(),
            Some(TimerError::FiredTwice { token: 7 })
        );
    }
}
