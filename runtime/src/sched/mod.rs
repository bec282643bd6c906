//! The scheduler, stage 1: Gs with their own stacks, a global run queue, one M per P, and
//! g0's loop on every M. Idle Ms sleep on a Parker.
//!
//! Go's shape (`proc.go`): `schedule` -> `findRunnable` -> `execute`, here as
//! [`m_main`](m::m_main) -> [`find_runnable`](find::find_runnable) ->
//! [`execute`](m::execute). `execute` switches to the G; when the G switches back (it
//! yielded, parked or finished), g0 finishes what the G started: it requeues a yielded G,
//! completes a park with part 06's `parked`, frees a dead G's stack.
//!
//! Stage 1 has one run queue for all Ps, under one lock; local run queues arrive in
//! chapter 7, stealing in chapter 8. With one P (`procs(1)`) this is chapter 6's picture.
//!
//! Where things live, after Go's files:
//!
//! - here: the runtime's global state, grouped by what guards it, and the lock order;
//!   starting and shutting down ([`Runtime`]); `go`, `enqueue` (Go: `newproc`, `runqput`);
//! - `m.rs`: an M: its state machine, g0's loop (`m_main`) and `execute`;
//! - `find.rs`: `find_runnable`, where an M looks for its next G or goes idle;
//! - `stackalloc.rs`: a G's stack from part 05, charged to the map budget (Go: `stackalloc`);
//! - `dump.rs`: the picture of a runtime that watchdogs print (Go: `schedtrace`).
//!
//! Not here: a G and its thread-local "current G" (`g.rs`), the engine (`engine.rs`).
//!
//! ## Idle M without lost wake-up
//!
//! Rejected: an M that finds the queue empty, unlocks, and then parks. An `enqueue` in
//! between pushes a G, sees no idle M to wake, and the G waits until some M happens to look.
//!
//! Chosen: "the queue is empty, so I am idle" is decided under the same lock that `enqueue`
//! takes to push:
//!
//! 1. An M that finds the queue empty adds itself to `idle` *before* unlocking, then parks.
//! 2. `enqueue` pushes the G and, under the lock, takes one M off `idle`, then unparks it.
//! 3. If that unpark lands before the M's park, the Parker keeps the token (part 03), so the
//!    park returns at once.
//!
//! Shutdown follows the same rule: the flag is set under the lock, then every M is unparked.
//!
//! ## Shutdown
//!
//! When the main G returns, the runtime is dropped: the queue is emptied, every M finishes
//! the G it is running and exits, and then the Gs still alive (waiting forever, say) are
//! torn down on the dropping thread; their joiners get a [`Panic`](crate::Panic) saying so.
//! Go instead exits the process with them still parked.
//!
//! The destructors that run then (a G's unstarted function, the frames corosensei unwinds)
//! run *as that G* (`G::tear_down`, "Tearing a G down" in `g.rs`), never as bare code on the
//! dropping thread: `go` returns a handle whose join reports the shutdown (the new G is torn
//! down at once, in `spawn`), and a blocking call returns instead of waiting for an M that
//! will never run again. So a destructor can neither abort the process (`go` or `park`
//! panicking outside a G, during an unwind) nor hang `drop(rt)`.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use crate::builder::{BuildError, Builder};
use crate::engine::Engine;
use crate::g::{self, G};
use crate::lock;
use crate::maps;
use crate::parts::osthread::{MBuilder, MHandle};
use crate::parts::parker::Parker;
use crate::parts::stack::{self, PoolConfig, StackPool};
use crate::task::{self, JoinHandle};

mod dump;
mod find;
mod m;
mod stackalloc;

pub use dump::{dump, dump_all};
use m::{MSlot, check_m_tids, m_main};
use stackalloc::Refusal;

/// A running runtime. Dropping it shuts it down (see "Shutdown" above).
pub struct Runtime {
    shared: Arc<Shared>,
    ms: Vec<MHandle<()>>,
}

/// A runtime's state, shared by its Ms, its Gs (`G::rt`) and the `Runtime` handle. Fields
/// are grouped by what guards them.
///
/// Lock order: `sched` is a leaf, nothing else is locked while it is held (the channel,
/// join-slot and WaitGroup locks are released before their wakers call `enqueue`, which
/// takes it). `stack_refusal` is held while `maps.rs` takes its `READER`, never the other
/// way round. `broken`, `main_waiter` and `RUNTIMES` are each taken alone.
pub(crate) struct Shared {
    // Set at start, then read without a lock.
    id: u64,
    engine: Engine,
    /// Slab stacks (1 mapping per chunk) rather than guarded ones (2 per stack).
    slab: bool,
    /// One per M (= per P in stage 1). Each slot's atomics are written only by its M.
    ms: Vec<MSlot>,

    // Guarded by the `sched` lock.
    /// Guards the run queue, the idle list, the shutdown flag and the table of Gs together
    /// (see "Idle M without lost wake-up"). Never held while a G runs, so poison means only
    /// a bug already reported (`crate::lock`).
    sched: Mutex<Sched>,

    // Atomic, no lock.
    next_g: AtomicU64,

    // A G's stack (`stackalloc.rs`): atomics, and `stack_refusal` for the slow path.
    /// Every G's stack comes from here (part 05), through `alloc_stack`.
    stacks: StackPool,
    /// Declared after `stacks`, so dropped after it: tells refusals elsewhere that this
    /// pool's mappings may be gone.
    _pool_gone: maps::PoolGone,
    /// Stacks this runtime holds now (taken from the pool, not yet given back): its own
    /// count, so the map budget trusts nothing the pool reports about itself.
    held_stacks: AtomicUsize,
    /// Stacks whose mappings were charged to the map budget: the most ever held at once, or
    /// more if the pool's `stats().mapped` says it mapped more.
    paid_stacks: AtomicUsize,
    /// The last refusal, kept for a while: a pool that must map would only be refused
    /// again, slowly (a count of /proc/self/maps near the limit takes some 30 ms).
    stack_refusal: Mutex<Option<Refusal>>,

    // A broken runtime: each its own lock, taken alone.
    /// Set when an M died of a panic on g0 (a part broke, say): what happened. The thread
    /// in `block_on` watches it, so a broken runtime is a clear error, not a silent hang.
    broken: Mutex<Option<String>>,
    /// The thread waiting in `block_on`, woken when the runtime breaks.
    main_waiter: Mutex<Option<Arc<Parker>>>,
}

/// What the `sched` lock guards.
struct Sched {
    runq: VecDeque<Arc<G>>,
    /// Ms parked (or about to park) on their `MSlot::idle` Parker.
    idle: Vec<usize>,
    shutdown: bool,
    /// Every G that has not finished, so that dumps can list them and shutdown can tear
    /// down the ones nobody will ever wake. Go: `allgs`. A G knows its index (`G::slot`).
    allgs: Vec<Option<Arc<G>>>,
    free_slots: Vec<usize>,
}

thread_local! {
    /// Each thread's own Parker, for waits outside a G. Distinct from an M's idle Parker, so
    /// a join's wake-up can never be mistaken for "there is work".
    static THREAD_PARKER: Arc<Parker> = Arc::new(Parker::new());
}

/// Every runtime alive in this process, for [`dump_all`] (watchdog diagnostics).
static RUNTIMES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

impl Runtime {
    /// Settings for a runtime: P count, stacks, M stack size, pinning.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn start(
        procs: usize,
        m_stack: usize,
        cpus: &[usize],
        stacks: PoolConfig,
        slab: bool,
        engine: Engine,
    ) -> Result<Runtime, BuildError> {
        let stacks = StackPool::new(stacks).map_err(|e| BuildError::Stacks {
            reason: e.to_string(),
        })?;
        stack::install_overflow_handler();
        maps::prepare();
        let shared = Arc::new(Shared {
            id: NEXT_RUNTIME.fetch_add(1, Relaxed),
            sched: Mutex::new(Sched {
                runq: VecDeque::new(),
                idle: Vec::new(),
                shutdown: false,
                allgs: Vec::new(),
                free_slots: Vec::new(),
            }),
            ms: (0..procs).map(|_| MSlot::new()).collect(),
            next_g: AtomicU64::new(1),
            stacks,
            _pool_gone: maps::PoolGone,
            slab,
            held_stacks: AtomicUsize::new(0),
            paid_stacks: AtomicUsize::new(0),
            stack_refusal: Mutex::new(None),
            engine,
            broken: Mutex::new(None),
            main_waiter: Mutex::new(None),
        });
        let mut rt = Runtime {
            shared: shared.clone(),
            ms: Vec::with_capacity(procs),
        };
        for index in 0..procs {
            let mut m = MBuilder::new(format!("gmp-m{index}")).stack_size(m_stack);
            if !cpus.is_empty() {
                m = m.cpus(&[cpus[index % cpus.len()]]);
            }
            let for_m = shared.clone();
            // On error, dropping `rt` shuts down the Ms already started.
            let handle = m
                .spawn(move || m_main(for_m, index))
                .map_err(|e| BuildError::StartM {
                    index,
                    reason: e.to_string(),
                })?;
            shared.ms[index].tid.store(handle.tid(), Relaxed);
            rt.ms.push(handle);
        }
        check_m_tids(&shared.m_tids())?;
        let mut all = lock(&RUNTIMES);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&shared));
        drop(all);
        Ok(rt)
    }

    /// Runs `f` as the main G and waits for it on this thread; returns its value.
    ///
    /// If `f` panics, the panic continues on this thread, as for `std::thread::scope`.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.shared.spawn(f);
        *lock(&self.shared.main_waiter) = Some(thread_parker());
        let joined = handle.join_unless(|| lock(&self.shared.broken).clone());
        *lock(&self.shared.main_waiter) = None;
        match joined {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic.into_payload()),
            Err(broken) => panic!("gmp: the runtime stopped: {broken}"),
        }
    }

    /// Number of Ps.
    pub fn procs(&self) -> usize {
        self.shared.ms.len()
    }

    /// The engine its Gs run on.
    pub fn engine(&self) -> Engine {
        self.shared.engine
    }

    /// A human-readable picture of the runtime: each M, the queue, the live Gs.
    pub fn dump(&self) -> String {
        self.shared.dump()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let (queued, live) = {
            let mut s = lock(&self.shared.sched);
            s.shutdown = true;
            s.free_slots.clear();
            let queued: Vec<Arc<G>> = s.runq.drain(..).collect();
            let live: Vec<Arc<G>> = s.allgs.drain(..).flatten().collect();
            (queued, live)
        };
        drop(queued);
        if std::thread::panicking() {
            // Already unwinding, often because a part panicked (a learner's `todo!()`).
            // A second panic here would abort the process and hide the first message, and
            // joining Ms whose Parker is broken could wait forever: wake them as best we
            // can, let them go, and leave the Gs be.
            for m in &self.shared.ms {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| m.idle.unpark()));
            }
            std::mem::forget(live);
            return;
        }
        for m in &self.shared.ms {
            m.idle.unpark();
        }
        for (i, m) in self.ms.drain(..).enumerate() {
            // G panics are contained, so an M only dies of a panic in a part or the runtime
            // itself; that panic's message was printed when it happened.
            if m.join().is_err() {
                eprintln!("gmp: M{i} died of a panic outside any G (see the message above)");
            }
        }
        if lock(&self.shared.broken).is_some() {
            // A G may have been mid-switch when its M died: leave the Gs alone.
            std::mem::forget(live);
            return;
        }
        for g in live {
            // SAFETY: every M has exited, so no M runs this G or ever will.
            unsafe { g.tear_down() };
        }
    }
}

impl Shared {
    pub(crate) fn spawn<F, T>(self: &Arc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let id = self.next_g.fetch_add(1, Relaxed);
        let (body, cancel, handle) = task::new(id, f);
        let g = Arc::new(G::new(id, self.clone(), body, cancel, self.engine));
        let wake = {
            let mut s = lock(&self.sched);
            if s.shutdown {
                drop(s);
                // SAFETY: the G was never queued, so no M can run it.
                unsafe { g.tear_down() };
                return handle;
            }
            let slot = match s.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    s.allgs.push(None);
                    s.allgs.len() - 1
                }
            };
            g.slot.set(slot);
            s.allgs[slot] = Some(g.clone());
            s.runq.push_back(g);
            s.idle.pop()
        };
        if let Some(index) = wake {
            self.ms[index].idle.unpark();
        }
        handle
    }

    /// Puts a runnable G in the run queue and wakes an idle M for it. Go: `runqput` +
    /// `wakep`.
    pub(crate) fn enqueue(&self, g: Arc<G>) {
        let wake = {
            let mut s = lock(&self.sched);
            if s.shutdown {
                return; // shutdown tears it down with the other live Gs
            }
            s.runq.push_back(g);
            s.idle.pop()
        };
        if let Some(index) = wake {
            self.ms[index].idle.unpark();
        }
    }

    /// A G finished: drop it from the table of live Gs.
    fn forget(&self, g: &G) {
        let mut s = lock(&self.sched);
        let slot = g.slot.get();
        let ours = s
            .allgs
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|other| std::ptr::eq(&**other, g));
        if ours {
            s.allgs[slot] = None;
            s.free_slots.push(slot);
        }
    }

    pub(crate) fn procs(&self) -> usize {
        self.ms.len()
    }
}

/// The calling thread's Parker, for waits outside a G.
pub(crate) fn thread_parker() -> Arc<Parker> {
    THREAD_PARKER.with(Arc::clone)
}

/// Starts `f` as a new G on the current runtime. Go: `go f()` (`newproc`).
///
/// # Panics
///
/// Outside a G (not inside [`run`] or [`Runtime::block_on`]): there is no runtime to put
/// the G in.
pub fn go<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match g::current_g() {
        Some(g) => g.rt.spawn(f),
        None => panic!(
            "gmp::go called outside a runtime: start one with gmp::run(|| ...) and call go \
             from inside it"
        ),
    }
}

/// The runtime the calling G runs in.
pub(crate) fn current() -> Option<Arc<Shared>> {
    g::current_g().map(|g| g.rt.clone())
}

/// Starts a runtime (P count from `GMP_PROCS`, else the CPU count), runs `f` as its main
/// G, shuts the runtime down and returns `f`'s value.
///
/// # Panics
///
/// If the runtime cannot start (the message names the setting and the fix), or if `f`
/// panics. Use [`Runtime::builder`] to handle a [`BuildError`] yourself.
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let rt = match Runtime::builder().build() {
        Ok(rt) => rt,
        Err(e) => panic!("gmp::run: {e}"),
    };
    rt.block_on(f)
}
