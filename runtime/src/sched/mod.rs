//! The scheduler, stage 2: Go's G-M-P. Each P has its own run queue (part 07, with a small
//! LIFO between `runnext` and the ring: `p.rs`) and each M looks for work in part 08's
//! order, stealing from other Ps when its own are empty; an M with nothing to do gives its P
//! back and parks until another M hands it one.
//!
//! Go's shape (`proc.go`): `schedule` -> `findRunnable` -> `execute`, here as
//! [`m_main`](m::m_main) -> [`find_runnable`](find::find_runnable) ->
//! [`execute`](m::execute). `execute` switches to the G; when the G switches back (it
//! yielded, parked or finished), g0 finishes what the G started: it requeues a yielded G,
//! completes a park with part 06's `parked`, frees a dead G's slot and stack.
//!
//! Where things live, after Go's files:
//!
//! - here: the runtime's global state, grouped by what guards it, and the lock order;
//!   starting and shutting down ([`Runtime`]); `go` and `ready` (Go: `newproc`, `ready`,
//!   `runqput`, `wakep`, `startm`);
//! - `p.rs`: a P, an owned value handed between Ms (Go: `type p`);
//! - `m.rs`: an M: its thread-local context (the P it holds), its state machine, g0's loop
//!   (`m_main`) and `execute`;
//! - `find.rs`: `find_runnable`, where an M looks for its next G or gives its P back and
//!   parks (Go: `findRunnable`, `stopm`, `pidleput`);
//! - `gtable.rs`: the table of live Gs and the tokens that stand for queued Gs (Go: `allgs`);
//!   `live.rs`: its cells, read by dumps without a lock on the path every G takes;
//! - `stackalloc.rs`: a G's stack from part 05, charged to the map budget (Go: `stackalloc`);
//! - `dump.rs`: the picture of a runtime that watchdogs print (Go: `schedtrace`);
//! - `syscall.rs`: an M's blocking call and the P hand-off around it (Go: `entersyscall`,
//!   `exitsyscall`); `sysmon.rs`: the sysmon thread (Go: `sysmon`, `retake`).
//!
//! Not here: a G and its thread-local "current G" (`g.rs`), the engine (`engine.rs`).
//!
//! ## Started Gs stay on their M
//!
//! A G's stack may hold a borrow of a `thread_local!`, an `Rc`, a std `MutexGuard`, or a
//! panic being unwound: values tied to the OS thread that Rust's `Send` cannot see, because
//! the G itself was `Send` when it was spawned. If such a G resumed on another M, it would
//! use the first thread's thread-local from the second thread: a data race in safe code.
//! So by default a G that has run on M `m` is queued only on `m`'s own queue (`MSlot::pinned`)
//! and runs only there; stealing moves only Gs that have not started. Go moves any G (Go
//! code has no thread-locals); `Builder::migrate_gs` is the `unsafe` opt-in to do the same.
//! The price: a started G waits for its own M even when another M is idle.
//!
//! ## Idle Ms and Ps without lost wake-ups
//!
//! Go's "spinning to non-spinning" protocol (`proc.go`, "Worker thread parking/unparking"):
//!
//! 1. Whoever queues a G pushes it, then (after a SeqCst fence) calls `wakep`, which starts
//!    a spinning M if a P is idle and no M spins already.
//! 2. An M that found nothing puts its P on the idle list (counting `npidle`), stops
//!    spinning, and, after a SeqCst fence, looks again at the global queue, its own queue and
//!    (if it was the last spinner) every P's queues (ring and LIFO), before parking.
//! 3. So of a push and an M giving up, at least one sees the other: the pusher sees the idle
//!    P and wakes an M, or the M sees the G and takes a P back.
//! 4. An M is woken only with a P in hand (`Sched::next_p`), given under the `sched` lock
//!    that also takes it off the idle list; a started G queued on a parked M gets its M a P
//!    the same way (`wake_home`, or `release_p` when no P is idle).
//!
//! ## Shutdown
//!
//! When the main G returns, the runtime is dropped: every M finishes
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

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed, fence};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crossbeam_deque::{Injector, Steal};

use crate::builder::{BuildError, Builder, MAX_PROCS};
use crate::engine::Engine;
use crate::g::{self, G};
use crate::lock;
use crate::maps;
use crate::parts::osthread::{MBuilder, MHandle};
use crate::parts::parker::Parker;
use crate::parts::runq::Token;
use crate::parts::stack::{self, PoolConfig, StackPool};
use crate::parts::steal::Spinning;
use crate::task::{self, JoinHandle};

mod dump;
mod find;
mod globrunq;
mod gtable;
mod live;
mod m;
pub(crate) mod netpoll;
mod p;
mod stackalloc;
pub(crate) mod syscall;
mod sysmon;
pub(crate) mod timer;

pub use dump::{dump, dump_all};
use globrunq::GlobalQueue;
use gtable::GTable;
use m::{MAX_MS, MList, check_m_tids, m_main, with_m};
use p::{P, PQueues};
use stackalloc::Refusal;

/// A running runtime. Dropping it shuts it down (see "Shutdown" above).
pub struct Runtime {
    shared: Arc<Shared>,
}

/// A runtime's state, shared by its Ms, its Gs (`G::rt`) and the `Runtime` handle. Fields
/// are grouped by what guards them.
///
/// Lock order: under `sched`, only `m_handles` and `newm_failed` (by `newm`) and the global
/// queue's lock (`retire`) are taken, each a leaf; nothing takes `sched` while holding
/// another (the channel, join-slot and WaitGroup locks are released before their wakers
/// call `ready`, which may take it). A G-table slot's lock (`gtable.rs`) is a leaf too, and so is a P's
/// parking place for blocking calls (`CallP::parked`, `syscall.rs`): sysmon releases it before
/// it takes `sched` to hand the P on. `stack_refusal` is held
/// while `maps.rs` takes its `READER`, never the other way round. `broken`, `main_waiter`
/// and `RUNTIMES` are each taken alone. A P's timer lock (`timer.rs`) is taken alone too,
/// except by `fail`, which takes `sched` under it when a broken heap stops the runtime.
pub(crate) struct Shared {
    // Set at start, then read without a lock.
    id: u64,
    engine: Engine,
    /// Slab stacks (1 mapping per chunk) rather than guarded ones (2 per stack).
    slab: bool,
    /// Started Gs may resume on another M (the `unsafe` opt-in `Builder::migrate_gs`);
    /// otherwise a G stays on the M that first ran it (see "Started Gs stay on their M").
    migrate: bool,
    /// Itself, for starting Ms from code that has only `&Shared` (`newm`).
    me: Weak<Shared>,
    /// Every M started, by index. Each slot's atomics are written only by its M; its
    /// queues by anyone.
    ms: MList,
    /// M stack size and the CPUs to pin Ms to (none: not pinned), for Ms started later.
    m_stack: usize,
    cpus: Vec<usize>,
    /// Go: `gomaxprocs`. Changed by `set_procs` under the `sched` lock.
    procs: AtomicUsize,
    /// The most Ps this runtime has had: every P id ever made is below it. Loops over every
    /// P's timers stop here instead of at `MAX_PROCS` (1,024 empty slots cost an idle M
    /// several microseconds). Raised before a new P exists.
    ps_made: AtomicUsize,
    /// The thieves' end of every P's run queue, by P id, for every P ever made (a P retired
    /// by `set_procs` keeps its slot and is reused). Go: `allp[i].runq`.
    stealers: Box<[OnceLock<PQueues>]>,
    /// How many Gs each P's holder has put in its runnext, by P id: a thief waiting for a
    /// victim's runnext to be run (`find.rs`, `RUNNEXT_GRACE`) sees whether it is still the
    /// same G. Go compares the `runnext` pointer itself; part 07's ring does not show it.
    runnext_puts: Box<[PaddedCounter]>,
    /// Every P's timers (part 11's heap behind its own lock), by P id, made on first use;
    /// a P's heap outlives the P's retirement (`timer.rs`). Go: `allp[i].timers`.
    timers: Box<[OnceLock<Box<timer::PTimers>>]>,
    /// The clock, the token counter and the M that sleeps until the next timer.
    sleeper: timer::Sleeper,
    /// Blocking calls: each P's part 09 slot, the calls in flight, the M cap (`syscall.rs`).
    calls: syscall::Calls,
    /// The sysmon thread and the CPU quota it follows (`sysmon.rs`).
    sysmon: sysmon::SysmonState,
    /// The netpoller (part 10), its socket table and its waiting Gs (`netpoll.rs`).
    netpoll: netpoll::NetPoll,

    // Lock-free.
    /// Go: `sched.runq`, the global run queue (part 07's overflow goes here).
    global: GlobalQueue,
    /// Go: `sched.npidle`. Changed under `sched`, read without it by `wakep`.
    npidle: AtomicUsize,
    /// Go: `sched.nmspinning` and its rules (part 08).
    spinning: Spinning,
    /// Mirrors `Sched::shutdown`, for the hot paths.
    shutdown: AtomicBool,
    /// Every live G, and the runtime's side of every queue (`gtable.rs`).
    gtable: GTable,
    next_g: AtomicU64,

    // Guarded by the `sched` lock.
    /// The idle Ps and Ms and the P hand-offs between them (see "Idle Ms and Ps"). Never
    /// held while a G runs, so poison means only a bug already reported (`crate::lock`).
    sched: Mutex<Sched>,

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
    /// Every M's thread, joined at shutdown. Taken alone.
    m_handles: Mutex<Vec<MHandle<()>>>,
    /// Why the last `newm` failed, for dumps (a thread limit, say).
    newm_failed: Mutex<Option<String>>,
}

/// What the `sched` lock guards. Go: the fields of `schedt` under `sched.lock`.
struct Sched {
    /// Go: `sched.pidle`. Boxed: a P changes hands by pointer, as `Box<Core>` in tokio.
    #[allow(clippy::vec_box)]
    pidle: Vec<Box<P>>,
    /// Ps above the P count since `set_procs` lowered it, empty, for when it rises again.
    #[allow(clippy::vec_box)]
    retired: Vec<Box<P>>,
    /// Ms parked (or about to park) on their idle Parker, with no P. Go: `sched.midle`.
    midle: Vec<usize>,
    /// A P handed to a parked M, by M index, and whether that M starts out spinning.
    /// Go: `m.nextp` (and `startm`'s `spinning`).
    next_p: Vec<Option<(Box<P>, bool)>>,
    shutdown: bool,
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

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        procs: usize,
        follow_quota: bool,
        max_threads: usize,
        m_stack: usize,
        cpus: &[usize],
        stacks: PoolConfig,
        slab: bool,
        migrate: bool,
        engine: Engine,
    ) -> Result<Runtime, BuildError> {
        let stacks = StackPool::new(stacks).map_err(|e| BuildError::Stacks {
            reason: e.to_string(),
        })?;
        stack::install_overflow_handler();
        maps::prepare();
        let id = NEXT_RUNTIME.fetch_add(1, Relaxed);
        let (ps, stealers): (Vec<Box<P>>, Vec<_>) = (0..procs).map(|i| P::new(i, procs)).unzip();
        let shared = Arc::new_cyclic(|me| Shared {
            id,
            engine,
            slab,
            migrate,
            me: me.clone(),
            ms: MList::new(),
            m_stack,
            cpus: cpus.to_vec(),
            procs: AtomicUsize::new(procs),
            ps_made: AtomicUsize::new(procs),
            stealers: (0..MAX_PROCS)
                .map(|i| {
                    stealers
                        .get(i)
                        .cloned()
                        .map_or_else(OnceLock::new, OnceLock::from)
                })
                .collect(),
            runnext_puts: (0..MAX_PROCS).map(|_| PaddedCounter::default()).collect(),
            timers: (0..MAX_PROCS).map(|_| OnceLock::new()).collect(),
            sleeper: timer::Sleeper::new(),
            calls: syscall::Calls::new(max_threads),
            sysmon: sysmon::SysmonState::new(follow_quota, procs),
            netpoll: netpoll::NetPoll::new(),
            global: GlobalQueue::new(),
            npidle: AtomicUsize::new(0),
            spinning: Spinning::new(),
            shutdown: AtomicBool::new(false),
            gtable: GTable::new(),
            next_g: AtomicU64::new(1),
            sched: Mutex::new(Sched {
                pidle: Vec::new(),
                retired: Vec::new(),
                midle: Vec::new(),
                next_p: Vec::new(),
                shutdown: false,
            }),
            stacks,
            _pool_gone: maps::PoolGone,
            held_stacks: AtomicUsize::new(0),
            paid_stacks: AtomicUsize::new(0),
            stack_refusal: Mutex::new(None),
            broken: Mutex::new(None),
            main_waiter: Mutex::new(None),
            m_handles: Mutex::new(Vec::new()),
            newm_failed: Mutex::new(None),
        });
        // On error, dropping `rt` shuts down the Ms already started.
        let rt = Runtime {
            shared: shared.clone(),
        };
        for p in ps {
            let index = p.id;
            let mut s = lock(&shared.sched);
            shared
                .newm(&mut s, Some(p), false)
                .map_err(|reason| BuildError::StartM { index, reason })?;
        }
        check_m_tids(&shared.m_tids())?;
        shared.start_sysmon().map_err(|reason| BuildError::StartM {
            index: shared.ms.len(),
            reason,
        })?;
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
        self.shared.procs()
    }

    /// Changes the number of Ps while the runtime runs; returns the number before. Go:
    /// `runtime.GOMAXPROCS(n)` (`procresize`).
    ///
    /// # Errors
    ///
    /// If `n` is 0 or above [`MAX_PROCS`](crate::builder::MAX_PROCS), or above the
    /// runtime's [`Builder::max_threads`](crate::Builder::max_threads)
    /// ([`BuildError::ProcsAboveMaxThreads`]).
    pub fn set_procs(&self, n: usize) -> Result<usize, BuildError> {
        self.shared.set_procs_by_program(n)
    }

    /// The engine its Gs run on.
    pub fn engine(&self) -> Engine {
        self.shared.engine
    }

    /// A human-readable picture of the runtime: each M, the queues, the live Gs.
    pub fn dump(&self) -> String {
        self.shared.dump()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        if std::thread::panicking() {
            // Already unwinding, often because a part panicked (a learner's `todo!()`).
            // A second panic here would abort the process and hide the first message, and
            // joining Ms whose Parker is broken could wait forever: wake them as best we
            // can, let them go, and leave the Gs be.
            for m in self.shared.ms.iter() {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| m.idle.unpark()));
            }
            let _ = panic::catch_unwind(AssertUnwindSafe(|| self.shared.stop_sysmon(false)));
            let _ = panic::catch_unwind(AssertUnwindSafe(|| self.shared.netpoll_break()));
            std::mem::forget(self.shared.gtable.drain());
            return;
        }
        for m in self.shared.ms.iter() {
            m.idle.unpark();
        }
        // Inside one of its own Gs, sysmon is not joined: it stops at its next look.
        let inside = g::current_g().is_some_and(|g| Arc::ptr_eq(&g.rt, &self.shared));
        self.shared.stop_sysmon(!inside);
        self.shared.netpoll_break();
        if g::current_g().is_some_and(|g| Arc::ptr_eq(&g.rt, &self.shared)) {
            // Dropped inside one of its own Gs: joining the Ms would join the one running
            // this G. The Ms wind down by themselves (each tears down its own Gs); the
            // unstarted Gs are left, not dropped on some thread outside every G.
            if !g::tearing_down() {
                panic!(
                    "gmp: a Runtime was dropped inside one of its own Gs; dropping it waits \
                     for every M, and this G runs on one. Drop it outside the runtime (where \
                     block_on was called)"
                );
            }
            return;
        }
        // No M starts after shutdown began (`newm` checks under the same lock).
        let handles = std::mem::take(&mut *lock(&self.shared.m_handles));
        for (i, m) in handles.into_iter().enumerate() {
            // G panics are contained, so an M only dies of a panic in a part or the runtime
            // itself; that panic's message was printed when it happened.
            if m.join().is_err() {
                eprintln!("gmp: M{i} died of a panic outside any G (see the message above)");
            }
        }
        let live = self.shared.gtable.drain();
        // Ps and their rings go; tokens are plain numbers, their counts were drained above.
        // Dropped outside the lock (a P's stack cache goes back to the pool).
        let ps = {
            let mut s = lock(&self.shared.sched);
            let mut ps = std::mem::take(&mut s.pidle);
            ps.append(&mut s.retired);
            ps.extend(s.next_p.iter_mut().filter_map(Option::take).map(|(p, _)| p));
            ps
        };
        drop(ps);
        if lock(&self.shared.broken).is_some() {
            // A G may have been mid-switch when its M died: leave the Gs alone.
            std::mem::forget(live);
            self.shared.clear_timers();
            return;
        }
        for g in live {
            // SAFETY: every M has exited, so no M runs this G or ever will.
            unsafe { g.tear_down() };
        }
        // Armed timers hold their Gs, which hold this runtime (`timer.rs`).
        self.shared.clear_timers();
    }
}

impl Shared {
    pub(crate) fn spawn<F, T>(self: &Arc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // On an M: a record from its free list, and with a P, an id from the P's batch.
        let (id, mut record) = with_m(self.id, |m| {
            let id = m.p.as_mut().map(|p| p.next_goid(&self.next_g));
            (id, m.free_gs.pop())
        })
        .unwrap_or((None, None));
        let id = id.unwrap_or_else(|| self.next_g.fetch_add(1, Relaxed));
        let (task, handle) = task::new(id, f);
        // A record on the free list was held by nobody else when it was put there, and only
        // this M reaches the list; `get_mut` checks that rather than trusting it.
        let g = match record.as_mut().and_then(Arc::get_mut) {
            Some(free) => {
                free.reuse(id, task, self.engine);
                record.expect("matched above")
            }
            None => Arc::new(G::new(id, self.clone(), task, self.engine)),
        };
        if self.shutdown.load(Ordering::Acquire) {
            let why = match lock(&self.broken).clone() {
                Some(broken) => format!("the runtime stopped: {broken}"),
                None => "the runtime shut down before this G finished".to_string(),
            };
            // SAFETY: the G was never queued, so no M can run it.
            unsafe { g.refuse(why) };
            return handle;
        }
        // On an M with a P (the usual case), a slot from that P's cache.
        let entered = with_m(self.id, |m| {
            let slots = m.p.as_mut().map(|p| &mut p.slots);
            self.gtable.insert(&g, slots)
        })
        .unwrap_or_else(|| self.gtable.insert(&g, None));
        if let Err(why) = entered {
            // SAFETY: the G was never queued, so no M can run it.
            unsafe { g.refuse(why) };
            return handle;
        }
        // Go: `newproc` puts the new G in runnext and wakes an M for it (see `ready`); the G
        // it displaces waits in the P's LIFO (`p.rs`), so a parent's children run depth first.
        self.ready(g);
        handle
    }

    /// Marks `g` queued and returns its token, or stops the runtime naming the G queued
    /// twice.
    fn queue_token(&self, g: Arc<G>) -> Token {
        self.gtable
            .put_queued(g)
            .unwrap_or_else(|why| self.fail(why))
    }

    /// The M a runnable `g` must run on: its home once it has started, unless Gs migrate
    /// (but a locked G stays on its M even then: `lock_os_thread` rehomes it).
    fn home_of(&self, g: &G) -> Option<usize> {
        if self.migrate && g.os_locks.load(Relaxed) == 0 {
            None
        } else {
            g.home()
        }
    }

    /// Puts a G that part 06 said to enqueue (or a new one) where it will run: its M's
    /// queue if it has started (it stays on that M), else runnext of the caller's P (the G
    /// there before goes on top of the P's LIFO, `p.rs`), else the global queue; then wakes
    /// an M for it. Go: `ready` (`runqput(pp, gp, next=true)` + `wakep`).
    pub(crate) fn ready(&self, g: Arc<G>) {
        let home = self.home_of(&g);
        let token = self.queue_token(g);
        match home {
            Some(m) => {
                // Readied on its own M: that M's private queue, no atomics. From elsewhere:
                // the M's shared queue, and wake it if it sleeps.
                let here = with_m(self.id, |me| {
                    (me.index == m).then(|| me.runnable.push_back(token))
                })
                .flatten();
                if here.is_none() {
                    self.ms[m].pinned.push(token);
                    self.wake_home(m);
                }
            }
            None => {
                let local = with_m(self.id, |me| match me.p.as_mut() {
                    Some(p) => {
                        let mut spill = Vec::new();
                        p.runq.push_next(token, &mut spill);
                        // Only this P's holder writes its count: a load and a store, no RMW.
                        let puts = &self.runnext_puts[p.id].0;
                        puts.store(puts.load(Relaxed).wrapping_add(1), Relaxed);
                        self.global.push_batch(&mut spill);
                        true
                    }
                    None => false,
                });
                if local != Some(true) {
                    self.global.push(token);
                }
                // Pairs with the fence an M makes after putting its P on the idle list:
                // either it sees this G, or we see its idle P (see "Idle Ms and Ps").
                // Always, as Go's `newproc` and `ready`: the G that made this one runnable
                // may go on computing (or spin on a flag this one sets), and only another M
                // can run it then. tokio wakes no worker for a task alone in its LIFO slot,
                // which saves a futex wake per spawn at more than one P but leaves that task
                // waiting; gmp has no preemption to rescue it.
                fence(Ordering::SeqCst);
                self.wakep();
            }
        }
    }

    /// A yielded G goes back: to its own M's queue, or (migrating) the global queue, as
    /// Go's `Gosched` does, so every other runnable G gets a turn first.
    fn requeue_yielded(&self, g: Arc<G>) {
        let migrating = self.home_of(&g).is_none();
        let token = self.queue_token(g);
        if migrating {
            self.global.push(token);
            fence(Ordering::SeqCst);
            self.wakep();
        } else {
            // On g0 of the G's own M (`execute`), so the G's home queue is this M's own.
            with_m(self.id, |me| me.yielded.push_back(token))
                .expect("g0 requeues a yielded G between Gs, with its context free");
        }
    }

    /// If a P is idle and no M is spinning, starts one spinning M with that P, to look for
    /// the work just made. Go: `wakep` and `startm(nil, spinning=true)`.
    fn wakep(&self) {
        if self.npidle.load(Ordering::SeqCst) == 0 || !self.spinning.claim_wake() {
            return;
        }
        let mut s = lock(&self.sched);
        let Some(p) = s.pidle.pop() else {
            // Another M took the idle P: it will find the work.
            drop(s);
            self.spinning.stop();
            return;
        };
        self.npidle.fetch_sub(1, Ordering::SeqCst);
        match self.start_m(&mut s, p, true) {
            Ok(Some(m)) => {
                drop(s);
                self.unpark_m(m);
            }
            Ok(None) => {}
            Err(why) => {
                drop(s);
                self.spinning.stop();
                *lock(&self.newm_failed) = Some(why);
            }
        }
    }

    /// Gives `p` to a parked M that may take any work (not one a G locked), or starts a new
    /// M with it. Returns the parked M the caller must unpark, or `None` if a new M took
    /// `p`. Go: `startm`.
    fn start_m(&self, s: &mut Sched, p: Box<P>, spinning: bool) -> Result<Option<usize>, String> {
        let idle = s
            .midle
            .iter()
            .rposition(|&m| !self.ms[m].locked.load(Relaxed));
        match idle {
            Some(pos) => Ok(Some(self.give_p(s, pos, p, spinning))),
            None => self.newm(s, Some(p), spinning).map(|()| None),
        }
    }

    /// Takes the parked M at `pos` in the idle list off it and hands it `p` (Go: `m.nextp`);
    /// returns that M, for the caller to unpark.
    fn give_p(&self, s: &mut Sched, pos: usize, p: Box<P>, spinning: bool) -> usize {
        let m = s.midle.swap_remove(pos);
        s.next_p[m] = Some((p, spinning));
        m
    }

    /// If M `m` is parked on the idle list and a P is idle, takes both off their lists and
    /// returns the P for `m`.
    fn idle_p_for(&self, s: &mut Sched, m: usize) -> Option<Box<P>> {
        let pos = s.midle.iter().position(|&x| x == m)?;
        let p = s.pidle.pop()?;
        self.npidle.fetch_sub(1, Ordering::SeqCst);
        s.midle.swap_remove(pos);
        Some(p)
    }

    /// Where in the idle list a parked M waits with started Gs queued for it, or with its
    /// G back from a blocking call (`syscall.rs`): it can run them nowhere else, so it needs
    /// a P first.
    fn waiting_m(&self, s: &Sched) -> Option<usize> {
        s.midle.iter().position(|&m| {
            let m = &self.ms[m];
            m.wants_p.load(Relaxed) || !m.pinned.is_empty()
        })
    }

    /// Starts an M holding `p` (Go: `newm`); under the `sched` lock, so shutdown (which
    /// sets its flag under it) never misses one. If it cannot start, `p` goes back idle.
    fn newm(&self, s: &mut Sched, p: Option<Box<P>>, spinning: bool) -> Result<(), String> {
        if s.shutdown {
            if let Some(p) = p {
                s.pidle.push(p);
                self.npidle.fetch_add(1, Ordering::SeqCst);
            }
            return Ok(());
        }
        // Through `release_p`: a parked M with started Gs waiting may need this P.
        let give_back = |s: &mut Sched, p: Option<Box<P>>| {
            if let Some(p) = p {
                self.release_p(s, p);
            }
        };
        let cap = self.calls.max_threads.min(MAX_MS);
        let Some(index) = (self.ms.len() < cap).then(|| self.ms.push()).flatten() else {
            give_back(s, p);
            return Err(format!(
                "cannot start M{cap}: this runtime starts at most {cap} Ms \
                 (Builder::max_threads, default {MAX_MS} as Go's); too many Gs have locked \
                 their M (lock_os_thread) or are in blocking calls (gmp::blocking)"
            ));
        };
        s.next_p.push(None);
        let mut m = MBuilder::new(format!("gmp-m{index}")).stack_size(self.m_stack);
        if !self.cpus.is_empty() {
            m = m.cpus(&[self.cpus[index % self.cpus.len()]]);
        }
        let Some(shared) = self.me.upgrade() else {
            give_back(s, p);
            return Ok(()); // the runtime is being dropped
        };
        // The P moves into the thread; if the start fails, the P is lost with the closure,
        // so hand it over through `next_p` instead and let the M take it.
        s.next_p[index] = p.map(|p| (p, spinning));
        match m.spawn(move || m_main(shared, index)) {
            Ok(handle) => {
                self.ms[index].tid.store(handle.tid(), Relaxed);
                lock(&self.m_handles).push(handle);
                Ok(())
            }
            Err(e) => {
                let p = s.next_p[index].take().map(|(p, _)| p);
                give_back(s, p);
                Err(format!("cannot start M{index}: {e}"))
            }
        }
    }

    /// A started G of M `m` was queued there: if `m` is parked, give it a P and wake it.
    /// If no P is idle, the next M to give one up gives it to `m` (`release_p`).
    fn wake_home(&self, m: usize) {
        let mut s = lock(&self.sched);
        // Not parked: it looks at its queue before it parks.
        let Some(p) = self.idle_p_for(&mut s, m) else {
            return;
        };
        s.next_p[m] = Some((p, false));
        drop(s);
        self.unpark_m(m);
    }

    /// Stops everything: no new G is queued, every M parks no more and exits.
    fn begin_shutdown(&self) {
        let mut s = lock(&self.sched);
        s.shutdown = true;
        self.shutdown.store(true, Ordering::Release);
    }

    /// A broken part or a runtime bug that the runtime caught before it could do harm:
    /// the runtime stops with `why`, and the thread in `block_on` reports it.
    pub(crate) fn fail(&self, why: String) -> ! {
        self.stop_broken(why.clone());
        panic!("gmp: {why}");
    }

    /// Records `why` as the reason the runtime broke (the first one stays), stops it and
    /// wakes every M and the thread in `block_on`, which reports it. Any thread.
    pub(crate) fn stop_broken(&self, why: String) {
        lock(&self.broken).get_or_insert(why);
        self.begin_shutdown();
        for m in self.ms.iter() {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| m.idle.unpark()));
        }
        let _ = panic::catch_unwind(AssertUnwindSafe(|| self.netpoll_break()));
        if let Some(waiter) = lock(&self.main_waiter).clone() {
            waiter.unpark();
        }
    }

    /// Takes the G a queue handed out out of the table, or stops the runtime naming the
    /// broken rule (a ring that hands out a token twice, part 07).
    fn take(&self, token: Token) -> Arc<G> {
        self.gtable
            .take_queued(token)
            .unwrap_or_else(|e| self.fail(format!("runq (part 07): {e}")))
    }

    /// One G off a queue of tokens that any thread may push to.
    fn pop_injector(q: &Injector<Token>) -> Option<Token> {
        // Two loads: most looks find these queues empty, and `steal` costs more.
        if q.is_empty() {
            return None;
        }
        loop {
            match q.steal() {
                Steal::Success(t) => return Some(t),
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }

    pub(crate) fn procs(&self) -> usize {
        self.procs.load(Relaxed)
    }

    /// How many Gs P `id`'s holders have put in its runnext (see `runnext_puts`).
    fn runnext_puts(&self, id: usize) -> u64 {
        self.runnext_puts.get(id).map_or(0, |c| c.0.load(Relaxed))
    }

    /// The thieves' end of P `id`'s queue, if that P was ever made.
    fn stealer(&self, id: usize) -> Option<&PQueues> {
        self.stealers.get(id)?.get()
    }

    /// `set_procs` called by the program: from now on the P count no longer follows the
    /// CPU quota (`sysmon.rs`), as in Go once `GOMAXPROCS` is set.
    fn set_procs_by_program(&self, n: usize) -> Result<usize, BuildError> {
        self.set_procs(n, SetBy::Program)
    }

    /// Go: `procresize`. Growing adds Ps to the idle list (new, or retired ones back) and
    /// wakes Ms for them; shrinking lowers the count at once, retires the idle Ps above it
    /// now and each held one at its M's next look for work (`find_runnable`), moving what
    /// their queues hold to the global queue. Go stops the world for this; gmp does not, so
    /// an M in a long G keeps its P above the count until that G switches out.
    ///
    /// The follow flag is cleared (program) or re-checked (quota) under the sched lock, so
    /// a quota change read before the program's `set_procs` cannot undo it.
    pub(super) fn set_procs(&self, n: usize, by: SetBy) -> Result<usize, BuildError> {
        if !(1..=MAX_PROCS).contains(&n) {
            return Err(BuildError::BadProcs {
                from: "set_procs",
                value: n.to_string(),
            });
        }
        // More Ps than Ms allowed: every blocking call would fail (`call_blocking`'s cap).
        if n > self.calls.max_threads {
            return Err(BuildError::ProcsAboveMaxThreads {
                procs: n,
                max_threads: self.calls.max_threads,
            });
        }
        let mut s = lock(&self.sched);
        let old = self.procs();
        match by {
            SetBy::Program => self.sysmon.follow_quota.store(false, Relaxed),
            SetBy::Quota if !self.sysmon.follow_quota.load(Relaxed) => return Ok(old),
            SetBy::Quota => {}
        }
        self.ps_made.fetch_max(n, Ordering::SeqCst);
        self.procs.store(n, Relaxed);
        if n > old {
            for id in old..n {
                let p = match s.retired.iter().position(|p| p.id == id) {
                    Some(pos) => s.retired.swap_remove(pos),
                    // Made before and not retired yet: its M still holds it (or is handing it
                    // over) and keeps it now; a second P `id` would be a P too many.
                    None if self.stealer(id).is_some() => continue,
                    None => {
                        let (p, stealer) = P::new(id, n);
                        let _ = self.stealers[id].set(stealer);
                        p
                    }
                };
                s.pidle.push(p);
                self.npidle.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            let (keep, above): (Vec<_>, Vec<_>) = s.pidle.drain(..).partition(|p| p.id < n);
            s.pidle = keep;
            for p in above {
                self.npidle.fetch_sub(1, Ordering::SeqCst);
                self.retire(&mut s, p);
            }
        }
        drop(s);
        // New Ps, or work moved to the global queue: let Ms look.
        for _ in 0..n.saturating_sub(old).max(1) {
            self.wakep();
        }
        Ok(old)
    }

    /// Empties P `p` (now above the P count) into the global queue and keeps it for later.
    fn retire(&self, s: &mut Sched, mut p: Box<P>) {
        let mut spill: Vec<Token> = std::iter::from_fn(|| p.runq.pop()).collect();
        self.global.push_batch(&mut spill);
        s.retired.push(p);
    }
}

/// The calling thread's Parker, for waits outside a G. Never inlined (see `m::m_ctx_here`).
#[inline(never)]
pub(crate) fn thread_parker() -> Arc<Parker> {
    THREAD_PARKER.with(Arc::clone)
}

/// Sleeps on the calling thread's Parker until it is unparked (`Waiter::Thread`'s wake).
/// Never inlined (see `m::m_ctx_here`).
#[inline(never)]
pub(crate) fn park_thread() {
    THREAD_PARKER.with(|p| p.park());
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

/// Wires the calling G to the M (OS thread) it runs on: until the same number of
/// [`unlock_os_thread`] calls, or the G's end, that M runs no G that has not already started
/// on it, and when this G waits, the M gives its P to another M and sleeps until this G (or
/// one of those) is runnable. Use it around code that changes the thread itself (its
/// signal mask, `setns`, `unshare`, a C library's thread-local state). Go:
/// `runtime.LockOSThread`.
///
/// Every started G already stays on its M (see "Started Gs stay on their M"); what the
/// lock adds is the M's exclusion of new Gs (and, with `Builder::migrate_gs`, that the G
/// itself stays). Unlike Go's, other Gs that started on this M
/// before the lock may still run on it while the locked G waits: gmp cannot move them to
/// another thread (it would race their thread-locals), and making them wait could deadlock
/// a locked G that waits for one of them.
///
/// # Panics
///
/// Outside a G.
pub fn lock_os_thread() {
    let g = g::running("lock_os_thread");
    if g.os_locks.fetch_add(1, Relaxed) == 0 {
        let m = with_m(g.rt.id, |m| {
            m.lockers += 1;
            m.index
        })
        .expect("a running G's M context is free while the G runs");
        if g.rt.migrate {
            g.rehome(m);
        }
        g.rt.ms[m].locked.store(true, Relaxed);
    }
}

/// Undoes one [`lock_os_thread`] of the calling G; at zero, its M takes any G again. A call
/// without a lock does nothing, as in Go. Go: `runtime.UnlockOSThread`.
///
/// # Panics
///
/// Outside a G.
pub fn unlock_os_thread() {
    let g = g::running("unlock_os_thread");
    let held = g
        .os_locks
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .ok();
    if held == Some(1) {
        let (m, last) = with_m(g.rt.id, |m| {
            // Saturating: with `migrate_gs` a locked G may have moved here (not pinned).
            m.lockers = m.lockers.saturating_sub(1);
            (m.index, m.lockers == 0)
        })
        .expect("a running G's M context is free while the G runs");
        if last {
            g.rt.ms[m].locked.store(false, Relaxed);
        }
    }
}

/// Changes the P count of the runtime the calling G runs in; returns the count before.
/// Go: `runtime.GOMAXPROCS(n)`. See [`Runtime::set_procs`].
///
/// # Errors
///
/// If `n` is 0 or above [`MAX_PROCS`](crate::builder::MAX_PROCS), or above the
/// runtime's [`Builder::max_threads`](crate::Builder::max_threads).
///
/// # Panics
///
/// Outside a G.
pub fn set_procs(n: usize) -> Result<usize, BuildError> {
    g::running("set_procs").rt.set_procs_by_program(n)
}

/// Who changes the P count: the program (which stops the quota following) or sysmon
/// following the CPU quota (only while the runtime still follows it).
#[derive(Clone, Copy)]
pub(super) enum SetBy {
    Program,
    Quota,
}

/// `ready` for a G whose count the caller hands over (a waker done with its waiter), so
/// no new count is taken for the queue. The runtime must outlive the call, which `g` does
/// not promise once it is queued (another M may run it to its end): the caller's own G,
/// running in the same runtime, holds it (its `rt`); a caller elsewhere takes a count of
/// the runtime for the call.
pub(crate) fn ready_handed(g: Arc<G>) {
    match g::current_g() {
        Some(me) if Arc::ptr_eq(&me.rt, &g.rt) => me.rt.ready(g),
        _ => {
            let rt = g.rt.clone();
            rt.ready(g);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A part that breaks on a thread of its own (sysmon calling part 05's `release_cold`
    /// a second after a burst) stops the runtime between two `block_on`s: the next one
    /// names that error instead of "the runtime shut down before this G finished".
    #[test]
    fn a_runtime_stopped_between_two_block_ons_names_why_in_the_next() {
        let rt = crate::Runtime::builder().procs(1).build().unwrap();
        assert_eq!(rt.block_on(|| 1), 1);
        rt.shared
            .stop_broken("stack (part 05): StackPool::release_cold panicked: test".to_string());
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(|| 2)))
            .expect_err("block_on on a stopped runtime must not run its G");
        let message = crate::task::payload_message(&*payload)
            .unwrap_or("")
            .to_string();
        assert!(
            message.contains("release_cold panicked"),
            "the next block_on said only: {message:?}"
        );
    }

    /// S2: the runtime's `&mut` access to a running G must not rest on part 06 alone. A
    /// part 06 that answers `Ready::Enqueue` twice for one park would have the runtime queue
    /// the G twice and two Ms resume one coroutine; the runtime refuses the second by name.
    #[test]
    fn a_g_readied_twice_for_one_park_is_a_named_error_not_a_second_run() {
        let out = testkit::watchdog("a G readied twice", testkit::DEFAULT_LIMIT, || {
            let rt = Runtime::builder().procs(1).build().unwrap();
            let shared = rt.shared.clone();
            let ran = panic::catch_unwind(AssertUnwindSafe(|| {
                rt.block_on(move || {
                    let waiting = gmp_go_handle();
                    // What the runtime does when part 06 says "enqueue", twice.
                    shared.ready(waiting.g.clone());
                    shared.ready(waiting.g.clone());
                })
            }));
            drop(rt);
            ran.map_err(|p| task::payload_message(&*p).unwrap_or_default().to_string())
        });
        let why = out.expect_err("the second ready must stop the runtime");
        assert!(
            why.contains("was put in a run queue while already in one") && why.contains("part 06"),
            "{why}"
        );
    }

    /// A fork-join tree runs depth first on one P: each parent's older children wait in its
    /// P's LIFO (`p.rs`), not behind everything older in the ring, so about one G per level
    /// is alive at once. Go's order (`runnext`, then the ring oldest first) left 5,105 alive
    /// at the peak of fib(35) (book, chapter 8); here fib(24) down to fib(10).
    #[test]
    fn a_fork_join_tree_keeps_about_one_live_g_per_level_on_one_p() {
        const CUTOFF: u64 = 10;
        const N: u64 = 24;
        fn fib(n: u64, shared: &Arc<Shared>, most: &Arc<AtomicUsize>) -> u64 {
            if n <= CUTOFF {
                most.fetch_max(shared.gtable.live().len(), Relaxed);
                let (mut a, mut b) = (0, 1);
                for _ in 0..n {
                    (a, b) = (b, a + b);
                }
                return a;
            }
            let (s, m) = (shared.clone(), most.clone());
            let child = crate::go(move || fib(n - 1, &s, &m));
            let b = fib(n - 2, shared, most);
            child.join().expect("a fib G panicked") + b
        }
        let most = on_one_p("a fork-join tree", |shared| {
            let most = Arc::new(AtomicUsize::new(0));
            assert_eq!(fib(N, &shared, &most), 46_368, "fib(24)");
            most.load(Relaxed)
        });
        let depth = (N - CUTOFF) as usize;
        assert!(
            most <= 3 * depth,
            "{most} Gs were alive at once in a tree {depth} levels deep: the tree ran breadth \
             first (each parent's older children queued behind older work)"
        );
    }

    /// The LIFO runs newest first, but not forever: Gs waiting in the ring and in the LIFO
    /// still run while a spawn chain keeps `runnext` full (`NEWEST_STREAK` in `p.rs`), not
    /// after it.
    #[test]
    fn a_g_in_the_ring_runs_while_a_spawn_chain_keeps_runnext_busy() {
        const LINKS: u64 = 100_000;
        fn link(k: u64, links: Arc<AtomicU64>) {
            links.store(k, Relaxed);
            if k < LINKS {
                drop(crate::go(move || link(k + 1, links)));
            }
        }
        let ran_at = on_one_p("a G in the ring", |_| {
            let links = Arc::new(AtomicU64::new(0));
            // Twenty Gs in a row: the oldest go through the LIFO on to the ring, the
            // newest stay in the LIFO. Each notes how far the chain had got.
            let ran_at = Arc::new(AtomicU64::new(0));
            let oldest: Vec<_> = (0..20)
                .map(|_| {
                    let (links, ran_at) = (links.clone(), ran_at.clone());
                    crate::go(move || {
                        ran_at.fetch_max(links.load(Relaxed), Relaxed);
                    })
                })
                .collect();
            let chain = {
                let links = links.clone();
                crate::go(move || link(1, links))
            };
            chain.join().expect("the chain's first link");
            for h in oldest {
                h.join().expect("a queued G");
            }
            yield_until(&links, LINKS);
            ran_at.load(Relaxed)
        });
        // Each ring G waits `NEWEST_STREAK` pops, each LIFO G `BOTTOM_WAIT`: about 17,000.
        assert!(
            ran_at < LINKS / 2,
            "the last of 20 queued Gs ran when the chain was at link {ran_at} of {LINKS}: the \
             ring's and the LIFO's Gs waited while runnext kept refilling"
        );
    }

    /// The LIFO's bottom gets a turn even when its top keeps turning over: each step spawns
    /// the next step and a leaf, so pops alternate between `runnext` (the leaf) and the
    /// LIFO's top (the step), and the G below them would wait for the whole run
    /// (`BOTTOM_WAIT` in `p.rs`).
    #[test]
    fn a_g_at_the_bottom_of_the_lifo_runs_while_its_top_turns_over() {
        const STEPS: u64 = 100_000;
        fn step(k: u64, steps: Arc<AtomicU64>) {
            steps.store(k, Relaxed);
            if k < STEPS {
                let next = steps.clone();
                drop(crate::go(move || step(k + 1, next)));
                drop(crate::go(|| {}));
            }
        }
        let ran_at = on_one_p("a G at the LIFO's bottom", |_| {
            let steps = Arc::new(AtomicU64::new(0));
            let ran_at = Arc::new(AtomicU64::new(u64::MAX));
            let bottom = {
                let (steps, ran_at) = (steps.clone(), ran_at.clone());
                crate::go(move || ran_at.store(steps.load(Relaxed), Relaxed))
            };
            let first = {
                let steps = steps.clone();
                crate::go(move || step(1, steps))
            };
            first.join().expect("the first step");
            bottom.join().expect("the G at the bottom");
            yield_until(&steps, STEPS);
            ran_at.load(Relaxed)
        });
        assert!(
            ran_at < STEPS / 2,
            "the G at the LIFO's bottom ran at step {ran_at} of {STEPS}: it waited while the \
             LIFO's top kept turning over"
        );
    }

    /// `f` as the main G of a one-P runtime, under a watchdog; `f` gets the runtime's state.
    fn on_one_p<T: Send + 'static>(
        what: &'static str,
        f: impl FnOnce(Arc<Shared>) -> T + Send + 'static,
    ) -> T {
        testkit::watchdog(what, testkit::DEFAULT_LIMIT, move || {
            let rt = Runtime::builder().procs(1).build().unwrap();
            let shared = rt.shared.clone();
            rt.block_on(move || f(shared))
        })
    }

    /// Yields until `counter` reaches `n` (another G counts up to it).
    fn yield_until(counter: &AtomicU64, n: u64) {
        while counter.load(Relaxed) < n {
            crate::yield_now();
        }
    }

    /// A parked G's handle, from inside a runtime.
    fn gmp_go_handle() -> crate::GHandle {
        let (tx, rx) = std::sync::mpsc::channel();
        let _g = crate::go(move || {
            tx.send(crate::current()).unwrap();
            crate::park();
        });
        crate::yield_now(); // the new G runs, sends its handle and parks
        rx.recv().unwrap()
    }

    /// `set_procs(1)` then `set_procs(2)` while P 1 is still held by its M (running a long
    /// G): the held P is under the count again and stays; a second P 1 made beside it was a
    /// P too many (and an M started for it could never steal from its twin).
    #[test]
    fn set_procs_down_then_up_while_a_p_is_held_makes_no_second_p_with_its_id() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};
        let (ms, ps_with_id_1) =
            testkit::watchdog("set_procs 2 -> 1 -> 2", testkit::DEFAULT_LIMIT, || {
                let rt = Runtime::builder().procs(2).build().unwrap();
                let shared = rt.shared.clone();
                rt.block_on(move || {
                    let hold = |flag: &AtomicBool| {
                        let start = Instant::now();
                        while !flag.load(Ordering::SeqCst)
                            && start.elapsed() < Duration::from_secs(5)
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    };
                    let (holding, release) = (
                        Arc::new(AtomicBool::new(false)),
                        Arc::new(AtomicBool::new(false)),
                    );
                    let holder = {
                        let (holding, release) = (holding.clone(), release.clone());
                        crate::go(move || {
                            holding.store(true, Ordering::SeqCst);
                            hold(&release); // keeps its M and P, no switch
                        })
                    };
                    hold(&holding); // both Ps are held now: this G's and the holder's
                    crate::set_procs(1).unwrap();
                    crate::set_procs(2).unwrap();
                    let ms = shared.ms.len();
                    let s = lock(&shared.sched);
                    let ps_with_id_1 = s
                        .pidle
                        .iter()
                        .chain(&s.retired)
                        .filter(|p| p.id == 1)
                        .count()
                        + s.next_p.iter().flatten().filter(|(p, _)| p.id == 1).count();
                    drop(s);
                    release.store(true, Ordering::SeqCst);
                    holder.join().unwrap();
                    (ms, ps_with_id_1)
                })
            });
        assert_eq!(
            (ms, ps_with_id_1),
            (2, 0),
            "with both Ps held, set_procs 2 -> 1 -> 2 must add no P and start no M"
        );
    }

    #[test]
    fn one_m_at_a_time_enters_a_g() {
        crate::run(|| {
            let g = crate::current().g;
            // The running G is entered by its M: a second M is refused.
            assert!(!g.enter_m(), "a running G let a second M in");
        });
    }
}

/// A counter alone on its cache line (two, for the adjacent-line prefetcher), so thieves
/// reading one P's count do not slow the holders of the others.
#[derive(Default)]
#[repr(align(128))]
struct PaddedCounter(AtomicU64);
