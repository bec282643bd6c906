//! The runtime's G and what a G can do to itself: park, yield, find out who it is.
//!
//! A G is part 06's [`GState`] plus what it runs: its function (until it starts), its engine
//! (a stack from part 05 and a context: corosensei or part 04), and a way back to g0.
//! Go: `type g struct` in `runtime2.go`: `stack`, `sched` (the gobuf), `atomicstatus`, `goid`.
//!
//! Also here: [`Waiter`], the one way every blocking primitive (join, channels, WaitGroup)
//! waits: a parked G when called on a G, a parked thread elsewhere.
//!
//! ## Tearing a G down
//!
//! A G that will never run again (left at shutdown, or unable to get a stack) still owns
//! user values: its unstarted function, or the frames on its stack, which corosensei
//! unwinds. Their destructors are the G's own code, so they run as that G
//! ([`G::tear_down`]): the runtime's "current G" is the G being torn down, and never g0 or a
//! thread outside every G, where a panic would stop an M and a wait would hang it. What they
//! may do:
//!
//! - `go` at shutdown hands back a [`JoinHandle`](crate::JoinHandle) whose join says the
//!   runtime shut down (no G runs: the new G is torn down at once, the same way);
//! - a blocking call never waits, since no M will ever run this G again to wake it: a
//!   channel reports closed, `join` a [`Panic`](crate::Panic) saying so, `WaitGroup::wait`,
//!   `park` and `yield_now` return at once;
//! - a panic in an unstarted function's destructor is contained, and told by the panic
//!   hook like any G's panic. (One while a stack unwinds aborts the process, as a panic in
//!   any Rust destructor during unwinding does.)
//!
//! Not here: choosing which G runs (`sched/`), results and joins (`task.rs`).

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::engine::{Context, Engine, Suspender, SwitchOut};
use crate::parts::g::{GState, Ready, ReadyError, WaitReason};
use crate::parts::parker::Parker;
use crate::parts::stack::StackInfo;
use crate::sched::Shared;
use crate::task::Runner;

pub(crate) struct G {
    pub(crate) state: GState,
    pub(crate) rt: Arc<Shared>,
    /// Index in the runtime's table of live Gs (`sched/gtable.rs`), set before it is queued.
    pub(crate) slot: AtomicU32,
    /// The M it first ran on, which it stays on (`u32::MAX` until then). Runtime-owned.
    home: AtomicU32,
    /// An M is running it now. Runtime-owned: checked whatever part 06 answers (S2).
    on_m: AtomicBool,
    /// Its `lock_os_thread` calls not yet undone. Go: `g.lockedExt`. Its own code only.
    pub(crate) os_locks: AtomicU32,
    /// Only the M that moved this G to running (part 06's `run`) touches these.
    run: UnsafeCell<Running>,
    /// The G side of the engine; used only by the G's own code.
    suspender: Suspender,
    /// The G's stack, lowest to one past highest address, set by its first run. Outside
    /// `run`: the G's own code reads it (`stack_bounds`) while g0 holds `&mut` to `run`.
    /// (0 until then: a stack is never at address 0.) Atomics rather than a `OnceLock`: set
    /// once per G on the spawn path, where a `Once` costs more than the two stores.
    bounds: (AtomicUsize, AtomicUsize),
}

struct Running {
    /// Declared (so dropped) before `task`: the engine holds the task's body, which borrows
    /// the allocation the task keeps (`Runner::body`). Every path that takes `task` out
    /// takes the engine first, and forgets `task` if the engine leaked the body's stack.
    engine: Option<Context>,
    stack: Option<StackInfo>,
    /// The G's share of its function and join slot: the body for the first run, a cancel
    /// if the G never finishes. Gone once the G ended (or was refused).
    task: Option<Runner>,
}

// SAFETY: `run` is touched only by the M that set `on_m` (`enter_m` admits one M at a
// time, whatever part 06 does) or, at shutdown, by the thread tearing the runtime down after
// every M has stopped; `suspender` only by the G's own code, which runs on one M at a time.
unsafe impl Sync for G {}
// SAFETY: as above; the closures inside are `Send`.
unsafe impl Send for G {}

impl G {
    pub(crate) fn new(id: u64, rt: Arc<Shared>, task: Runner, engine: Engine) -> G {
        G {
            state: GState::new(id),
            rt,
            slot: AtomicU32::new(u32::MAX),
            home: AtomicU32::new(u32::MAX),
            on_m: AtomicBool::new(false),
            os_locks: AtomicU32::new(0),
            run: UnsafeCell::new(Running {
                engine: None,
                stack: None,
                task: Some(task),
            }),
            suspender: Suspender::new(engine),
            bounds: (AtomicUsize::new(0), AtomicUsize::new(0)),
        }
    }

    /// Makes a finished G record, which nobody else holds (`&mut`), a new G: the spawn path
    /// reuses records from its P's free list rather than allocating one. Go: `gfget`.
    pub(crate) fn reuse(&mut self, id: u64, task: Runner, engine: Engine) {
        self.state = GState::new(id);
        *self.slot.get_mut() = u32::MAX;
        *self.home.get_mut() = u32::MAX;
        *self.on_m.get_mut() = false;
        *self.os_locks.get_mut() = 0;
        *self.run.get_mut() = Running {
            engine: None,
            stack: None,
            task: Some(task),
        };
        self.suspender = Suspender::new(engine);
        *self.bounds.0.get_mut() = 0;
        *self.bounds.1.get_mut() = 0;
    }

    pub(crate) fn id(&self) -> u64 {
        self.state.id()
    }

    /// The M a started G stays on; `None` before its first run.
    pub(crate) fn home(&self) -> Option<usize> {
        match self.home.load(Ordering::Acquire) {
            u32::MAX => None,
            m => Some(m as usize),
        }
    }

    /// Makes M `m` this G's home if it has none (`Ok(true)`: it just started), `Ok(false)`
    /// if `m` already is; `Err(home)` if it has another. Called by the M that entered the G
    /// (`enter_m`), the only writer then besides the G's own `rehome`, which runs inside
    /// that M's turn: a load and a store, no read-modify-write on the spawn path.
    pub(crate) fn settle_on(&self, m: usize) -> Result<bool, usize> {
        debug_assert!(
            self.on_m.load(Ordering::Relaxed),
            "settle_on outside enter_m"
        );
        match self.home.load(Ordering::Acquire) {
            u32::MAX => {
                self.home.store(m as u32, Ordering::Release);
                Ok(true)
            }
            home if home as usize == m => Ok(false),
            home => Err(home as usize),
        }
    }

    /// With `migrate_gs`, a G that locks its M (`lock_os_thread`) is queued only on that M
    /// while locked: it becomes the G's home. Called by the G itself, on that M.
    pub(crate) fn rehome(&self, m: usize) {
        self.home.store(m as u32, Ordering::Release);
    }

    /// Claims the G for the calling M; `false` if another M is running it.
    pub(crate) fn enter_m(&self) -> bool {
        !self.on_m.swap(true, Ordering::Acquire)
    }

    /// The M is done with the G for now (it switched back to g0).
    pub(crate) fn leave_m(&self) {
        self.on_m.store(false, Ordering::Release);
    }

    /// On g0, with the G moved to running: runs it until it switches out. The first run
    /// takes a stack from the pool; if there is none, the G ends with that error as its
    /// panic and `Exit` is returned.
    ///
    /// # Safety
    ///
    /// The caller is the M that claimed the G with `enter_m` and has not yet left it.
    pub(crate) unsafe fn resume(self: &Arc<Self>) -> SwitchOut {
        // SAFETY: the caller's promise: we alone touch `run` now.
        let run = unsafe { &mut *self.run.get() };
        if run.engine.is_none() {
            // No engine and no task: the G ended (or never started) already.
            let Some(task) = run.task.as_ref() else {
                return SwitchOut::Exit;
            };
            let made = match self.rt.alloc_stack(self.id()) {
                Ok(stack) => {
                    // SAFETY: the first and only body of this runner (the engine is made
                    // once). It goes into the engine, which every path drops before `task`
                    // (`Running`) or, if it leaks the stack the body is on, never runs
                    // again while `task` is forgotten (`tear_down`); or it is dropped below.
                    let body = unsafe { task.body() };
                    run.stack = Some(stack.info());
                    self.bounds.0.store(stack.bottom(), Ordering::Relaxed);
                    self.bounds.1.store(stack.top(), Ordering::Relaxed);
                    // SAFETY: `suspender` lives in this G beside the engine, which the G
                    // (behind an Arc) keeps in place until the engine is dropped.
                    match unsafe { Context::new(stack, &self.suspender, body) } {
                        Ok(engine) => Ok(engine),
                        Err((why, body)) => {
                            self.rt.stack_returned();
                            // As below: the captures are dropped as this G.
                            as_torn_down(self, || drop_contained(|| body.discard()));
                            Err(why)
                        }
                    }
                }
                Err(why) => {
                    // The function's captures are user values: dropped as this G, not on g0.
                    // SAFETY: no body was made, so none runs.
                    as_torn_down(self, || drop_contained(|| unsafe { task.discard() }));
                    Err(why)
                }
            };
            match made {
                Ok(engine) => run.engine = Some(engine),
                Err(why) => {
                    if let Some(task) = run.task.take() {
                        let why = format!("G {} could not start: {why}", self.id());
                        // SAFETY: this M entered the G (the caller's promise) and its body
                        // never started (its Body was dropped above): nothing else fills
                        // the slot now.
                        unsafe { task.cancel(self.id(), why) };
                    }
                    return SwitchOut::Exit;
                }
            }
        }
        let info = run.stack.expect("set with the engine");
        let why = {
            let _running = info.enter();
            // From the Arc itself, so `arc_of` may take another count through it. Reset on
            // the way out even if the engine panics (a broken part), so g0 is never taken
            // for this G.
            struct Unset;
            impl Drop for Unset {
                fn drop(&mut self) {
                    CURRENT_G.set(ptr::null());
                }
            }
            CURRENT_G.set(Arc::as_ptr(self));
            let _unset = Unset;
            run.engine.as_mut().expect("checked above").resume()
        };
        // Slab stacks have no guard page: an overflow is found here (part 05).
        if let Err(overflow) = info.check_canary() {
            overflow.abort();
        }
        if why == SwitchOut::Exit {
            // The stack goes to the next G (the P's cache) or back to the pool; the joiner
            // was told by the G itself.
            let engine = run.engine.take().expect("checked above");
            self.rt.stack_finished(engine.into_stack());
            // The body filled the slot; the G's side leaves it (after the engine, above).
            run.task = None;
        }
        why
    }

    /// At shutdown (after every M stopped, or from `go` once shutdown began): drops what
    /// the G still holds, as the G (see "Tearing a G down"). corosensei unwinds a suspended
    /// G's stack; the asm engine leaks it. A G that never finished tells its joiner so.
    ///
    /// # Safety
    ///
    /// No M runs this G, and none ever will again.
    pub(crate) unsafe fn tear_down(self: &Arc<Self>) {
        // SAFETY: the caller's promise.
        let run = unsafe { &mut *self.run.get() };
        // The asm engine leaks a suspended G's stack, with the body's frames (and their
        // borrow of the job) on it: the job must then outlive them, so it is leaked too.
        let leaks_body = run.engine.as_ref().is_some_and(Context::leaks_stack);
        as_torn_down(self, || {
            if let Some(task) = &run.task {
                // SAFETY: no M runs this G (the caller's promise): its body does not run.
                drop_contained(|| unsafe { task.discard() });
            }
            // No stack is allocated after shutdown, so a stack the asm engine leaks need
            // not stay counted as held.
            if run.engine.take().is_some() {
                self.rt.stack_returned();
            }
        });
        if let Some(task) = run.task.take() {
            let why = "the runtime shut down before this G finished".to_string();
            // SAFETY: no M runs this G (the caller's promise), and its engine is gone (above),
            // so its body fills nothing now.
            unsafe { task.cancel(self.id(), why) };
            if leaks_body {
                std::mem::forget(task);
            }
        }
    }

    /// A G that will never run (the runtime is shutting down, or its table is full): its
    /// joiner gets `why`.
    ///
    /// # Safety
    ///
    /// The G was never queued, so no M runs it or ever will.
    pub(crate) unsafe fn refuse(self: &Arc<Self>, why: String) {
        // SAFETY: the caller's promise.
        let run = unsafe { &mut *self.run.get() };
        if let Some(task) = run.task.take() {
            // The function's captures are user values: dropped as this G (see `tear_down`).
            // SAFETY: the G was never queued (the caller's promise): its body never runs.
            as_torn_down(self, || drop_contained(|| unsafe { task.discard() }));
            // SAFETY: as above.
            unsafe { task.cancel(self.id(), why) };
        }
    }

    /// From the G's own code: back to g0.
    fn switch_out(&self, why: SwitchOut) {
        // SAFETY: only called through `current_g`, i.e. by the G running on this M.
        unsafe { self.suspender.suspend(why) }
    }
}

thread_local! {
    /// The G this M runs right now, or null on g0 and on threads that are not Ms.
    static CURRENT_G: Cell<*const G> = const { Cell::new(ptr::null()) };
    /// Set while this thread tears a G down (`as_torn_down`): the G's catch_unwind must let
    /// a forced unwind go, and its blocking calls must not wait.
    static TEARING_DOWN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, which drops user values of `g` outside any run of it, as `g`'s own code: `g` is
/// the current G (so `go` and `current` work) and [`tearing_down`] is true (so blocking calls
/// return, see "Tearing a G down"). Restores both after, also when `f` unwinds; nests.
fn as_torn_down<R>(g: &Arc<G>, f: impl FnOnce() -> R) -> R {
    struct Restore(*const G, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT_G.set(self.0);
            TEARING_DOWN.set(self.1);
        }
    }
    // From the Arc itself, so `arc_of` may take another count through it.
    let _restore = Restore(
        CURRENT_G.replace(Arc::as_ptr(g)),
        TEARING_DOWN.replace(true),
    );
    f()
}

/// Drops a torn-down G's unstarted function without letting a panic in a destructor of its
/// captures past: the panic hook has told it, as for any G's panic nobody joins.
fn drop_contained(discard: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(discard)) {
        drop_payload(payload);
    }
}

/// Drops a caught panic's payload, which may itself panic on drop: then leaks that one.
/// Never inlined (see `task::drop_unjoined`).
#[inline(never)]
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// The running G, if the caller is one. Never inlined: a G may resume on another M, and an
/// inlined thread-local address could be reused from before the switch.
#[inline(never)]
pub(crate) fn current_g() -> Option<&'static G> {
    let g = CURRENT_G.get();
    // SAFETY: CURRENT_G is set only while that G runs on this thread (kept alive by the M
    // running it) or is torn down on it (kept alive by `as_torn_down`'s caller's Arc); the
    // 'static is confined to this module's callers, which never keep it past the G's code.
    unsafe { g.as_ref() }
}

/// Is this thread tearing a G down (see "Tearing a G down")? A G's catch_unwind that sees a
/// panic then lets it go: it is the forced unwind of the G's stack (`task.rs` asks).
#[inline(never)]
pub(crate) fn tearing_down() -> bool {
    TEARING_DOWN.get()
}

/// Another `Arc` of the running G.
fn arc_of(g: &'static G) -> Arc<G> {
    let raw: *const G = g;
    // SAFETY: CURRENT_G is only ever set from `Arc::as_ptr` of a live `Arc<G>` that the M
    // keeps while the G runs (G::resume) or the caller keeps while it is torn down
    // (`as_torn_down`), so `raw` is an Arc pointer with a count >= 1.
    unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    }
}

/// The running G, for a public function `what` that must be called on one.
pub(crate) fn running(what: &str) -> &'static G {
    running_g(what)
}

fn running_g(what: &str) -> &'static G {
    current_g().unwrap_or_else(|| {
        panic!(
            "gmp::{what} called outside a G: call it from code started by gmp::run or \
             gmp::go"
        )
    })
}

/// A handle to a G, to wake it from anywhere. Go has no such value; this is the
/// `std::thread::Thread` of gmp.
#[derive(Clone)]
pub struct GHandle {
    pub(crate) g: Arc<G>,
}

impl fmt::Debug for GHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GHandle({:?})", self.g.state)
    }
}

impl GHandle {
    /// The G's id.
    pub fn id(&self) -> u64 {
        self.g.id()
    }

    /// Wakes the G if it is parked in [`park`]; otherwise its next `park` returns at once.
    /// Callable from any thread, inside the runtime or not. Go: `goready`.
    ///
    /// # Errors
    ///
    /// If the G has finished: the wake-up has nobody to go to.
    pub fn unpark(&self) -> Result<(), ReadyError> {
        match self.g.state.ready()? {
            Ready::Enqueue => self.g.rt.ready(self.g.clone()),
            Ready::Pending => {}
        }
        Ok(())
    }
}

/// The G that calls it.
///
/// # Panics
///
/// Outside a G.
pub fn current() -> GHandle {
    GHandle {
        g: arc_of(running_g("current")),
    }
}

/// The calling G's stack, from its lowest usable address to one past its highest (it grows
/// down from `end`), or `None` outside a G. To see how much stack a G uses, compare the
/// address of a local with `end`.
pub fn stack_bounds() -> Option<Range<usize>> {
    // Set before the G first runs, so its own code always finds it.
    // Relaxed: set on this G's M before it first ran (or, migrating, before the queue
    // hand-off that brought it here, which orders it).
    let g = current_g()?;
    match g.bounds.0.load(Ordering::Relaxed) {
        0 => None,
        bottom => Some(bottom..g.bounds.1.load(Ordering::Relaxed)),
    }
}

/// Parks the calling G until [`GHandle::unpark`]. Like `std::thread::park`, it may return
/// without a wake-up meant for this wait (a wake-up left from before); wait in a loop on
/// your own condition. Go: `gopark`.
///
/// In a destructor that runs as the runtime tears its G down (at shutdown), it returns at
/// once: no M will run that G again.
///
/// # Panics
///
/// Outside a G.
pub fn park() {
    let _ = park_current(running_g("park"), WaitReason::Park);
}

/// Gives the P to the next runnable G; this G runs again later. Go: `runtime.Gosched`.
/// Returns at once in a G being torn down (see [`park`]).
///
/// # Panics
///
/// Outside a G.
pub fn yield_now() {
    let g = running_g("yield_now");
    if !tearing_down() && !refuse_in_call("yield_now") {
        g.switch_out(SwitchOut::Yield);
    }
}

/// Refuses, by a panic naming `what`, a wait inside `gmp::blocking` before the waiter
/// registers anywhere (a waiter list, a timer), so the refusal leaves nothing behind to
/// take a wake-up. While a panic unwinds it returns: the wait itself is refused later.
pub(crate) fn check_may_wait(what: &str) {
    let _ = refuse_in_call(what);
}

/// A G inside `gmp::blocking` has no P: switching out would leave its call half done on an
/// M that gives the P away (`sched/syscall.rs`), so a wait there is refused by name. While
/// a panic unwinds out of the call (a destructor that waits), a second panic would abort the
/// process: then returns `true`, and the caller does not wait (as for a torn-down G).
fn refuse_in_call(what: &str) -> bool {
    if !crate::sched::syscall::in_call() {
        return false;
    }
    if std::thread::panicking() {
        return true;
    }
    panic!(
        "gmp: {what} inside gmp::blocking: the G is in a blocking call and has no P, so it \
         cannot wait on the runtime there; wait before or after the call, or use std's \
         blocking waits inside it"
    );
}

/// A wait that can never end: the waiting G is being torn down, no M will run it again.
#[derive(Debug)]
pub(crate) struct TornDown;

fn park_current(g: &G, reason: WaitReason) -> Result<(), TornDown> {
    // Checked before part 06 sees a park: a torn-down G is not running.
    if tearing_down() {
        return Err(TornDown);
    }
    if refuse_in_call("a wait (park, sleep, channel, join, WaitGroup)") {
        return Err(TornDown);
    }
    if g.state.park(reason) {
        g.switch_out(SwitchOut::Park);
    }
    Ok(())
}

/// The caller waits until woken, as `Waiter::current().wait(reason)` would, without a count
/// of itself: for a wait whose `Waiter` sits where its waker takes it (a channel's slot).
pub(crate) fn wait_current(reason: WaitReason) -> Result<(), TornDown> {
    match current_g() {
        Some(g) => park_current(g, reason),
        None => {
            crate::sched::park_thread();
            Ok(())
        }
    }
}

/// Whoever waits in a blocking primitive: a G (parks, freeing its M) or a plain thread
/// (sleeps on its own Parker, part 03).
#[derive(Clone)]
pub(crate) enum Waiter {
    G(Arc<G>),
    Thread(Arc<Parker>),
}

impl Waiter {
    /// The caller, as a waiter.
    pub(crate) fn current() -> Waiter {
        match current_g() {
            Some(g) => Waiter::G(arc_of(g)),
            None => Waiter::Thread(crate::sched::thread_parker()),
        }
    }

    /// Called by the waiter itself: sleeps until `wake` (or returns at once if a wake came
    /// first). May return early; callers loop on their condition.
    ///
    /// # Errors
    ///
    /// The waiter is a G being torn down: nothing will ever wake it, so the caller must
    /// report its wait as failed (closed channel, shutdown) instead of looping.
    pub(crate) fn wait(&self, reason: WaitReason) -> Result<(), TornDown> {
        match self {
            Waiter::G(g) => park_current(g, reason),
            Waiter::Thread(p) => {
                p.park();
                Ok(())
            }
        }
    }

    /// Whether both are the same G, or the same thread.
    pub(crate) fn is(&self, other: &Waiter) -> bool {
        match (self, other) {
            (Waiter::G(a), Waiter::G(b)) => Arc::ptr_eq(a, b),
            (Waiter::Thread(a), Waiter::Thread(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Wakes the waiter, from any thread, handing this count of it over: a G goes into the
    /// run queue with it, no new count taken (`sched::ready_handed`).
    pub(crate) fn wake_owned(self) {
        match self {
            Waiter::G(g) => match g.state.ready() {
                Ok(Ready::Enqueue) => crate::sched::ready_handed(g),
                Ok(Ready::Pending) => {}
                // A stale entry (the G stopped waiting here and has since finished): the
                // wake-up is not needed by anyone.
                Err(ReadyError::Dead { .. }) => {}
            },
            Waiter::Thread(p) => p.unpark(),
        }
    }
}
