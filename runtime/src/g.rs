//! The runtime's G and what a G can do to itself: park, yield, find out who it is.
//!
//! A G is part 06's [`GState`] plus what it runs: its function (until it starts), its engine
//! (a stack from part 05 and a context: corosensei or part 04), and a way back to g0.
//! Go: `type g struct` in `runtime2.go`: `stack`, `sched` (the gobuf), `atomicstatus`, `goid`.
//!
//! Also here: [`Waiter`], the one way every blocking primitive (join, channels, WaitGroup)
//! waits: a parked G when called on a G, a parked thread elsewhere.
//!
//! Not here: choosing which G runs (`sched/`), results and joins (`task.rs`).

use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::ops::Range;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::engine::{Body, Context, Engine, Suspender, SwitchOut};
use crate::parts::g::{GState, Ready, ReadyError, WaitReason};
use crate::parts::parker::Parker;
use crate::parts::stack::StackInfo;
use crate::sched::Shared;
use crate::task::Cancel;

pub(crate) struct G {
    pub(crate) state: GState,
    pub(crate) rt: Arc<Shared>,
    /// Index in the runtime's table of live Gs (`sched/gtable.rs`), set before it is queued.
    pub(crate) slot: AtomicU32,
    /// The M it first ran on, which it stays on (`u32::MAX` until then). Runtime-owned.
    home: AtomicU32,
    /// An M is running it now. Runtime-owned: checked whatever part 06 answers (S2).
    on_m: AtomicBool,
    /// Only the M that moved this G to running (part 06's `run`) touches these.
    run: UnsafeCell<Running>,
    /// The G side of the engine; used only by the G's own code.
    suspender: Suspender,
    /// The G's stack, lowest to one past highest address, set by its first run. Outside
    /// `run`: the G's own code reads it (`stack_bounds`) while g0 holds `&mut` to `run`.
    bounds: OnceLock<Range<usize>>,
}

struct Running {
    /// The function, until the first run creates the engine.
    body: Option<Body>,
    engine: Option<Context>,
    stack: Option<StackInfo>,
    /// Fills the joiner's slot with an explanation if the G never finishes.
    cancel: Option<Cancel>,
}

// SAFETY: `run` is touched only by the M that set `on_m` (`enter_m` admits one M at a
// time, whatever part 06 does) or, at shutdown, by the thread tearing the runtime down after
// every M has stopped; `suspender` only by the G's own code, which runs on one M at a time.
unsafe impl Sync for G {}
// SAFETY: as above; the closures inside are `Send`.
unsafe impl Send for G {}

impl G {
    pub(crate) fn new(id: u64, rt: Arc<Shared>, body: Body, cancel: Cancel, engine: Engine) -> G {
        G {
            state: GState::new(id),
            rt,
            slot: AtomicU32::new(u32::MAX),
            home: AtomicU32::new(u32::MAX),
            on_m: AtomicBool::new(false),
            run: UnsafeCell::new(Running {
                body: Some(body),
                engine: None,
                stack: None,
                cancel: Some(cancel),
            }),
            suspender: Suspender::new(engine),
            bounds: OnceLock::new(),
        }
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

    /// Makes M `m` this G's home if it has none; `Err(home)` if it has another.
    pub(crate) fn settle_on(&self, m: usize) -> Result<(), usize> {
        match self
            .home
            .compare_exchange(u32::MAX, m as u32, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(home) if home as usize == m => Ok(()),
            Err(home) => Err(home as usize),
        }
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
            let Some(body) = run.body.take() else {
                return SwitchOut::Exit;
            };
            let made = self.rt.alloc_stack(self.id()).and_then(|stack| {
                run.stack = Some(stack.info());
                let _ = self.bounds.set(stack.bottom()..stack.top());
                // SAFETY: `suspender` lives in this G beside the engine, which the G
                // (behind an Arc) keeps in place until the engine is dropped.
                unsafe { Context::new(stack, &self.suspender, body) }
                    .inspect_err(|_| self.rt.stack_returned())
            });
            match made {
                Ok(engine) => run.engine = Some(engine),
                Err(why) => {
                    if let Some(cancel) = run.cancel.take() {
                        cancel(format!("G {} could not start: {why}", self.id()));
                    }
                    return SwitchOut::Exit;
                }
            }
        }
        let info = run.stack.expect("set with the engine");
        let why = {
            let _running = info.enter();
            // From the Arc itself, so `arc_of` may take another count through it.
            CURRENT_G.set(Arc::as_ptr(self));
            let why = run.engine.as_mut().expect("checked above").resume();
            CURRENT_G.set(ptr::null());
            why
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
            run.cancel = None;
        }
        why
    }

    /// At shutdown, after every M stopped: drops what the G still holds. corosensei unwinds
    /// a suspended G's stack; the asm engine leaks it. A G that never finished tells its
    /// joiner so.
    ///
    /// # Safety
    ///
    /// No M runs this G, and none ever will again.
    pub(crate) unsafe fn tear_down(&self) {
        // SAFETY: the caller's promise.
        let run = unsafe { &mut *self.run.get() };
        run.body = None;
        TEARING_DOWN.set(true);
        // Every M has stopped, so no stack is allocated again: a stack the asm engine leaks
        // need not stay counted as held.
        if run.engine.take().is_some() {
            self.rt.stack_returned();
        }
        TEARING_DOWN.set(false);
        if let Some(cancel) = run.cancel.take() {
            cancel("the runtime shut down before this G finished".to_string());
        }
    }

    /// A G that will never run (the runtime is shutting down, or its table is full): its
    /// joiner gets `why`.
    ///
    /// # Safety
    ///
    /// The G was never queued, so no M runs it or ever will.
    pub(crate) unsafe fn refuse(&self, why: String) {
        // SAFETY: the caller's promise.
        let run = unsafe { &mut *self.run.get() };
        run.body = None;
        if let Some(cancel) = run.cancel.take() {
            cancel(why);
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
    /// Set while a G's stack is unwound at shutdown: its catch_unwind must let go.
    static TEARING_DOWN: Cell<bool> = const { Cell::new(false) };
}

/// The running G, if the caller is one. Never inlined: a G may resume on another M, and an
/// inlined thread-local address could be reused from before the switch.
#[inline(never)]
pub(crate) fn current_g() -> Option<&'static G> {
    let g = CURRENT_G.get();
    // SAFETY: CURRENT_G is set only while that G runs on this thread, and a running G is
    // kept alive by the M running it; the 'static is confined to this module's callers,
    // which never keep it past the G's own code.
    unsafe { g.as_ref() }
}

/// Is the current thread unwinding a G at shutdown? (`task.rs` asks.)
#[inline(never)]
pub(crate) fn tearing_down() -> bool {
    TEARING_DOWN.get()
}

/// Another `Arc` of the running G.
fn arc_of(g: &'static G) -> Arc<G> {
    let raw: *const G = g;
    // SAFETY: CURRENT_G is only ever set from `Arc::as_ptr` of a live `Arc<G>` (G::resume)
    // that the M keeps while the G runs, so `raw` is an Arc pointer with a count >= 1.
    unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    }
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
    current_g()?.bounds.get().cloned()
}

/// Parks the calling G until [`GHandle::unpark`]. Like `std::thread::park`, it may return
/// without a wake-up meant for this wait (a wake-up left from before); wait in a loop on
/// your own condition. Go: `gopark`.
///
/// # Panics
///
/// Outside a G.
pub fn park() {
    park_current(running_g("park"), WaitReason::Park);
}

/// Gives the P to the next runnable G; this G runs again later. Go: `runtime.Gosched`.
///
/// # Panics
///
/// Outside a G.
pub fn yield_now() {
    running_g("yield_now").switch_out(SwitchOut::Yield);
}

fn park_current(g: &G, reason: WaitReason) {
    if g.state.park(reason) {
        g.switch_out(SwitchOut::Park);
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
    pub(crate) fn wait(&self, reason: WaitReason) {
        match self {
            Waiter::G(g) => park_current(g, reason),
            Waiter::Thread(p) => p.park(),
        }
    }

    /// Wakes the waiter, from any thread.
    pub(crate) fn wake(&self) {
        match self {
            Waiter::G(g) => match g.state.ready() {
                Ok(Ready::Enqueue) => g.rt.ready(g.clone()),
                Ok(Ready::Pending) => {}
                // A stale entry (the G stopped waiting here and has since finished): the
                // wake-up is not needed by anyone.
                Err(ReadyError::Dead { .. }) => {}
            },
            Waiter::Thread(p) => p.unpark(),
        }
    }
}
