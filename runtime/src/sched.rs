//! The scheduler, stage 1: Gs with their own stacks, a global run queue, one M per P, and
//! g0's loop on every M. Idle Ms sleep on a Parker.
//!
//! Go's shape (`proc.go`): `schedule` -> `findRunnable` -> `execute`, here as
//! [`m_main`] -> [`find_runnable`] -> [`execute`]. `execute` switches to the G; when the G
//! switches back (it yielded, parked or finished), g0 finishes what the G started: it
//! requeues a yielded G, completes a park with part 06's `parked`, frees a dead G's stack.
//!
//! Stage 1 has one run queue for all Ps, under one lock; local run queues arrive in
//! chapter 7, stealing in chapter 8. With one P (`procs(1)`) this is chapter 6's picture.
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

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::builder::{BuildError, Builder};
use crate::engine::{Engine, SwitchOut};
use crate::g::{self, G};
use crate::lock;
use crate::maps;
use crate::parts::g::AfterPark;
use crate::parts::osthread::{MBuilder, MHandle};
use crate::parts::parker::Parker;
use crate::parts::stack::{self, PoolConfig, SLAB_CHUNK, StackPool};
use crate::task::{self, JoinHandle};

/// A running runtime. Dropping it shuts it down (see "Shutdown" above).
pub struct Runtime {
    shared: Arc<Shared>,
    ms: Vec<MHandle<()>>,
}

pub(crate) struct Shared {
    id: u64,
    /// Guards the run queue, the idle list, the shutdown flag and the table of Gs together
    /// (see "Idle M without lost wake-up"). Taken alone; never held while a G runs, so
    /// poison means only a bug already reported (`crate::lock`).
    sched: Mutex<Sched>,
    ms: Vec<MSlot>,
    next_g: AtomicU64,
    /// Every G's stack comes from here (part 05), through `alloc_stack`.
    stacks: StackPool,
    /// Declared after `stacks`, so dropped after it: tells refusals elsewhere that this
    /// pool's mappings may be gone.
    _pool_gone: maps::PoolGone,
    /// Slab stacks (1 mapping per chunk) rather than guarded ones (2 per stack).
    slab: bool,
    /// Stacks this runtime holds now (taken from the pool, not yet given back): its own
    /// count, so the map budget trusts nothing the pool reports about itself.
    held_stacks: AtomicUsize,
    /// Stacks whose mappings were charged to the map budget: the most ever held at once, or
    /// more if the pool's `stats().mapped` says it mapped more.
    paid_stacks: AtomicUsize,
    /// The last refusal, kept for a while: a pool that must map would only be refused
    /// again, slowly (a count of /proc/self/maps near the limit takes some 30 ms).
    stack_refusal: Mutex<Option<Refusal>>,
    engine: Engine,
    /// Set when an M died of a panic on g0 (a part broke, say): what happened. The thread
    /// in `block_on` watches it, so a broken runtime is a clear error, not a silent hang.
    broken: Mutex<Option<String>>,
    /// The thread waiting in `block_on`, woken when the runtime breaks.
    main_waiter: Mutex<Option<Arc<Parker>>>,
}

/// Why the pool said no, until when that answer stands without asking again.
struct Refusal {
    why: String,
    at: Instant,
    until: Instant,
    /// `maps::generation()` then: a runtime dropped since may have unmapped its stacks.
    generation: u64,
}

/// The shortest and longest time a refusal stands.
const REFUSAL_HOLD: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

impl Refusal {
    /// Holds 100 times as long as finding out took, so asking again costs at most 1% of the
    /// time; but at least 100 ms and at most 1 s, so a slow count on a loaded machine does
    /// not refuse for long after Gs have given their stacks back.
    fn new(why: String, took: Duration) -> Refusal {
        let now = Instant::now();
        Refusal {
            why,
            at: now,
            until: now + (took * 100).clamp(REFUSAL_HOLD.0, REFUSAL_HOLD.1),
            generation: maps::generation(),
        }
    }

    fn holds(&self) -> bool {
        Instant::now() < self.until && self.generation == maps::generation()
    }

    /// The refusal again, saying how old its figures are.
    fn repeat(&self) -> String {
        format!(
            "{} (as found {} ms ago)",
            self.why,
            self.at.elapsed().as_millis()
        )
    }
}

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

/// What the runtime knows of one M. Written by that M, read by `dump` and `metrics`.
struct MSlot {
    /// The M sleeps here when it has no work; `enqueue` and shutdown unpark it.
    idle: Parker,
    /// Kernel thread id, set once by `Runtime::start`.
    tid: AtomicU32,
    /// An [`MState`], written only by the M itself (`MSlot::set_state`).
    state: AtomicU8,
    /// The G it runs, or 0.
    running_g: AtomicU64,
    switches: AtomicU64,
}

/// What an M is doing, for `dump` and its lost-wake-up note. Only the M itself moves it,
/// and only along these transitions (anything else is a runtime bug, see [`transition`]):
///
/// | from                  | to           | where                                      |
/// |-----------------------|--------------|--------------------------------------------|
/// | `Starting`            | `Idle`       | `find_runnable`: first look finds no G     |
/// | `Starting`            | `Running`    | `execute`: first look found a G            |
/// | `Scheduling`          | `Idle`       | `find_runnable`: no G, parks               |
/// | `Idle`                | `Scheduling` | `find_runnable`: woken, looks again        |
/// | `Scheduling`          | `Running`    | `execute`: switches to the G               |
/// | `Running`             | `Scheduling` | `execute`: the G switched back to g0       |
/// | any but `Exited`      | `Exited`     | `m_main`: shutdown, or a panic on g0       |
///
/// Go's `m` has no such field; the same facts are spread over it: `Running` is
/// `m.curg != nil`, `Scheduling` is g0 in `schedule`/`findRunnable` (where a spinning M,
/// `m.spinning` counted in `sched.nmspinning`, looks for work), `Idle` is an M on
/// `sched.midle` (`mput`, counted in `sched.nmidle`) asleep on its `m.park` note
/// (`stopm`), `Exited` is `mexit`. Stage 1 has no spinning Ms (one queue, one M per P).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum MState {
    /// Started; has not yet run a G or parked.
    Starting = 0,
    /// On g0, looking for a G.
    Scheduling = 1,
    /// Running a G.
    Running = 2,
    /// Parked on its idle Parker, waiting for work.
    Idle = 3,
    /// g0's loop returned; the thread ends.
    Exited = 4,
}

impl MState {
    /// The state stored as `v`. Only `MSlot::set_state` stores, and only `MState`s.
    fn from_u8(v: u8) -> MState {
        match v {
            0 => MState::Starting,
            1 => MState::Scheduling,
            2 => MState::Running,
            3 => MState::Idle,
            4 => MState::Exited,
            _ => panic!("gmp bug: M state byte {v} names no MState"),
        }
    }

    /// As `dump` prints it.
    fn name(self) -> &'static str {
        match self {
            MState::Starting => "starting",
            MState::Scheduling => "in the scheduler (g0)",
            MState::Running => "running",
            MState::Idle => "idle (parked)",
            MState::Exited => "exited",
        }
    }
}

/// Whether an M may go from `from` to `to`: the table at [`MState`].
fn legal(from: MState, to: MState) -> bool {
    use MState::*;
    matches!(
        (from, to),
        (Starting | Scheduling, Idle)
            | (Starting | Scheduling, Running)
            | (Idle | Running, Scheduling)
            | (Starting | Scheduling | Running | Idle, Exited)
    )
}

/// Checks that M `m` may go from `from` to `to`.
///
/// # Panics
///
/// On a move the table at [`MState`] does not list, naming the M and both states: the
/// runtime's own bookkeeping is broken (no part can cause this), so it stops the M like any
/// panic on g0.
fn transition(m: usize, from: MState, to: MState) {
    assert!(
        legal(from, to),
        "gmp bug: M{m} moved from {from:?} to {to:?}, which is not a legal M transition"
    );
}

impl MSlot {
    fn state(&self) -> MState {
        MState::from_u8(self.state.load(Relaxed))
    }

    /// Moves M `m`'s state to `to`, checking the move. Called only by that M, so the load
    /// and store need no atomic read-modify-write.
    fn set_state(&self, m: usize, to: MState) {
        transition(m, self.state(), to);
        self.state.store(to as u8, Relaxed);
    }
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
            ms: (0..procs)
                .map(|_| MSlot {
                    idle: Parker::new(),
                    tid: AtomicU32::new(0),
                    state: AtomicU8::new(MState::Starting as u8),
                    running_g: AtomicU64::new(0),
                    switches: AtomicU64::new(0),
                })
                .collect(),
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

    /// A stack for G `owner`, or why there is none. The pool may map only while the
    /// process keeps `maps::kept_mappings` free (see `maps.rs`), whatever part 05 does.
    /// The caller gives it back with `stack_returned` once the stack is dropped.
    pub(crate) fn alloc_stack(&self, owner: u64) -> Result<stack::GStack, String> {
        let held = self.held_stacks.fetch_add(1, Relaxed) + 1;
        let got = self.alloc_charged(owner, held);
        if got.is_err() {
            self.held_stacks.fetch_sub(1, Relaxed);
        }
        got
    }

    /// A stack from part 05 has been dropped (back in the pool).
    pub(crate) fn stack_returned(&self) {
        self.held_stacks.fetch_sub(1, Relaxed);
    }

    fn alloc_charged(&self, owner: u64, held: usize) -> Result<stack::GStack, String> {
        // A pool that reuses its free stacks maps only when this runtime holds more stacks
        // than ever before: pay for those first, by the runtime's own count.
        self.pay_up_to(held)?;
        let stack = self.stacks.alloc(owner).map_err(|e| {
            let mut why = e.to_string();
            if why.contains("vm.max_map_count") {
                why.push_str(" (in gmp: unsafe { Runtime::builder().slab_stacks() })");
            }
            maps::spend_all();
            *lock(&self.stack_refusal) = Some(Refusal::new(why.clone(), Duration::ZERO));
            why
        })?;
        // A pool that maps although it has free stacks shows in its own count: pay for
        // that now, or give the stack back (its mapping stays: at most one stack per M).
        if let Err(why) = self.pay_up_to(self.stacks.stats().mapped) {
            drop(stack);
            return Err(why);
        }
        Ok(stack)
    }

    /// Charges the map budget for `stacks` stacks in all, if more than already paid.
    fn pay_up_to(&self, stacks: usize) -> Result<(), String> {
        let paid = self.paid_stacks.load(Relaxed);
        if stacks <= paid {
            return Ok(());
        }
        let cost = self.mappings_for(stacks) - self.mappings_for(paid);
        if cost > 0 && !maps::take(cost) {
            self.make_room(cost)?;
        }
        self.paid_stacks.fetch_max(stacks, Relaxed);
        Ok(())
    }

    /// Mappings that `stacks` stacks take at most: a guarded stack is 2 (stack and guard),
    /// a slab chunk of `SLAB_CHUNK` stacks 1.
    fn mappings_for(&self, stacks: usize) -> usize {
        if self.slab {
            stacks.div_ceil(SLAB_CHUNK)
        } else {
            2 * stacks
        }
    }

    /// Counts the mappings (unless a recent refusal still holds) and says whether the pool
    /// may map `cost` more.
    fn make_room(&self, cost: usize) -> Result<(), String> {
        let mut refusal = lock(&self.stack_refusal);
        if let Some(r) = refusal.as_ref().filter(|r| r.holds()) {
            return Err(r.repeat());
        }
        *refusal = None;
        maps::refill(cost).map_err(|refused| {
            let (why, took) = match refused {
                maps::Refused::Full(reading) => (self.map_limit_message(&reading), reading.took),
                maps::Refused::Uncounted { why, took } => (
                    format!(
                        "cannot count this process's memory mappings ({why}), so gmp maps no \
                         more G stacks for now: past vm.max_map_count even malloc fails"
                    ),
                    took,
                ),
            };
            *refusal = Some(Refusal::new(why.clone(), took));
            why
        })
    }

    /// The named error at the map limit: how many stacks fit, the limit, the margin and the
    /// ways out.
    fn map_limit_message(&self, reading: &maps::Reading) -> String {
        let stacks = self.paid_stacks.load(Relaxed);
        let (mode, each, way_out) = if self.slab {
            ("slab", format!("{SLAB_CHUNK} per mapping"), String::new())
        } else {
            (
                "guarded",
                "2 mappings each".to_string(),
                format!(
                    "use slab stacks (unsafe {{ Runtime::builder().slab_stacks() }}: \
                     {SLAB_CHUNK} stacks per mapping, no guard pages), "
                ),
            )
        };
        format!(
            "out of memory mappings: {stacks} {mode} stacks fit in this runtime ({each}); the \
             process has {} of vm.max_map_count = {} mappings, and gmp keeps the last {} for \
             malloc, thread stacks and the rest of the process; {way_out}keep fewer Gs alive \
             at once, or raise the limit (sudo sysctl -w vm.max_map_count=262144)",
            reading.mappings.unwrap_or(0),
            reading.headroom.max_map_count,
            reading.headroom.kept
        )
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

    fn dump(&self) -> String {
        const SHOWN: usize = 32;
        let s = lock(&self.sched);
        let live: Vec<&Arc<G>> = s.allgs.iter().flatten().collect();
        let mut out = format!(
            "runtime {}: {} P(s), engine {}, run queue length {}, {} live G(s), idle Ms {:?}{}\n",
            self.id,
            self.ms.len(),
            self.engine.name(),
            s.runq.len(),
            live.len(),
            s.idle,
            if s.shutdown { ", shutting down" } else { "" }
        );
        for (i, m) in self.ms.iter().enumerate() {
            let _ = write!(
                out,
                "  M{i} tid {}: {}",
                m.tid.load(Relaxed),
                m.state().name(),
            );
            let running = m.running_g.load(Relaxed);
            if running != 0 {
                let _ = write!(out, " G {running}");
            }
            let _ = writeln!(out, ", {} switches to Gs", m.switches.load(Relaxed));
        }
        // Facts that, if they last until a watchdog fires, point at a lost wake-up. `enqueue`
        // takes the M it wakes off `idle` under the lock of its push, so an M whose wake-up
        // was lost is parked but no longer listed as idle.
        let unwoken: Vec<usize> = (0..self.ms.len())
            .filter(|i| self.ms[*i].state() == MState::Idle && !s.idle.contains(i))
            .collect();
        if !s.runq.is_empty() && !unwoken.is_empty() && !s.shutdown {
            let _ = writeln!(
                out,
                "  note: M(s) {unwoken:?} parked although taken off the idle list to be woken, \
                 while {} G(s) wait in the run queue: if this lasts, the wake-up was lost \
                 (part 03, parker)",
                s.runq.len()
            );
        }
        for g in live.iter().take(SHOWN) {
            let nowhere = !s.shutdown
                && g.state.status() == crate::parts::g::Status::Runnable
                && !s.runq.iter().any(|q| Arc::ptr_eq(q, g))
                && !self.ms.iter().any(|m| m.running_g.load(Relaxed) == g.id());
            let note = if nowhere {
                ": runnable, but seen in no run queue and on no M at this instant; if this \
                 lasts, it was readied and never queued (part 06, g)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {:?}{note}", g.state);
        }
        if live.len() > SHOWN {
            let _ = writeln!(out, "  ... and {} more G(s)", live.len() - SHOWN);
        }
        out
    }
}

/// Part 02's contract: each M reports its own kernel thread id, so no two Ms share one and
/// none is the caller's.
fn check_m_tids(tids: &[u32]) -> Result<(), BuildError> {
    let caller = crate::parts::osthread::current_tid();
    let broken = |what: String| BuildError::PartInvariant {
        part: "02 osthread",
        invariant: what,
    };
    for (i, &tid) in tids.iter().enumerate() {
        if tid == 0 || tid == caller {
            return Err(broken(format!(
                "MHandle::tid() of M{i} is {tid}, {}; it must be the gettid() of the new thread",
                if tid == 0 {
                    "which no thread has"
                } else {
                    "the tid of the thread that called spawn"
                }
            )));
        }
        if let Some(j) = tids[..i].iter().position(|&t| t == tid) {
            return Err(broken(format!("M{j} and M{i} report the same tid {tid}")));
        }
    }
    Ok(())
}

/// g0's loop on M `index`. Go: `schedule`, which never returns; ours returns at shutdown.
fn m_main(shared: Arc<Shared>, index: usize) {
    let me = &shared.ms[index];
    let looped = panic::catch_unwind(AssertUnwindSafe(|| {
        while let Some(g) = find_runnable(&shared, index) {
            execute(&shared, index, g);
        }
    }));
    me.set_state(index, MState::Exited);
    if let Err(payload) = looped {
        // G panics never get here (each G catches its own), so this is a part or the
        // runtime failing on g0: stop the runtime and tell the thread in block_on.
        let message = task::payload_message(&*payload).unwrap_or("a non-string panic");
        *lock(&shared.broken) = Some(format!("M{index} panicked on g0: {message}"));
        lock(&shared.sched).shutdown = true;
        for m in &shared.ms {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| m.idle.unpark()));
        }
        if let Some(waiter) = lock(&shared.main_waiter).clone() {
            waiter.unpark();
        }
    }
}

/// The next G to run, sleeping until there is one; `None` at shutdown. Go: `findRunnable`
/// (stage 1 has only the global queue to look in).
fn find_runnable(shared: &Shared, index: usize) -> Option<Arc<G>> {
    let me = &shared.ms[index];
    loop {
        {
            let mut s = lock(&shared.sched);
            if let Some(g) = s.runq.pop_front() {
                return Some(g);
            }
            if s.shutdown {
                return None;
            }
            s.idle.push(index); // step 1 of "Idle M without lost wake-up"
        }
        me.set_state(index, MState::Idle);
        me.idle.park();
        me.set_state(index, MState::Scheduling);
    }
}

/// Runs `g` until it switches out, then finishes what it started. Go: `execute`, `gogo`,
/// and what `mcall` runs on g0 afterwards (`gosched_m`, `park_m`, `goexit0`).
fn execute(shared: &Shared, index: usize, g: Arc<G>) {
    let me = &shared.ms[index];
    g.state.run(); // part 06: refuses a G that is not runnable
    me.running_g.store(g.id(), Relaxed);
    me.set_state(index, MState::Running);
    // SAFETY: this M just moved the G to running, so it alone may resume it.
    let why = unsafe { g.resume() };
    me.set_state(index, MState::Scheduling);
    me.running_g.store(0, Relaxed);
    me.switches.fetch_add(1, Relaxed);
    match why {
        SwitchOut::Yield => {
            g.state.yielded();
            shared.enqueue(g);
        }
        SwitchOut::Park => match g.state.parked() {
            AfterPark::Waiting => {} // whoever readies it queues it
            AfterPark::Requeue => shared.enqueue(g),
        },
        SwitchOut::Exit => {
            g.state.exit();
            shared.forget(&g);
        }
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

impl Shared {
    pub(crate) fn m_tids(&self) -> Vec<u32> {
        self.ms.iter().map(|m| m.tid.load(Relaxed)).collect()
    }

    pub(crate) fn procs(&self) -> usize {
        self.ms.len()
    }
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

/// The state of the runtime the caller runs on, or a note that there is none.
pub fn dump() -> String {
    match current() {
        Some(shared) => shared.dump(),
        None => "not inside a gmp runtime\n".to_string(),
    }
}

/// The state of every runtime alive in this process; watchdogs print it when they fire.
pub fn dump_all() -> String {
    let all: Vec<Arc<Shared>> = lock(&RUNTIMES).iter().filter_map(Weak::upgrade).collect();
    if all.is_empty() {
        return "no gmp runtime is alive\n".to_string();
    }
    all.iter().map(|s| s.dump()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stands_one_second_at_most_and_says_how_old_it_is() {
        // A count of 300 ms on a loaded machine: 100 times that would be 30 s of refusals.
        let r = Refusal::new("no room".to_string(), Duration::from_millis(300));
        assert!(
            r.until - r.at <= REFUSAL_HOLD.1,
            "held {:?}",
            r.until - r.at
        );
        assert!(r.holds());
        let again = r.repeat();
        assert!(
            again.starts_with("no room (as found ") && again.ends_with(" ms ago)"),
            "{again}"
        );
        let quick = Refusal::new("no room".to_string(), Duration::ZERO);
        assert_eq!(quick.until - quick.at, REFUSAL_HOLD.0, "the shortest hold");
    }

    #[test]
    fn dump_names_a_parked_m_whose_wake_up_was_lost() {
        let dump = testkit::watchdog("a lost wake-up in the dump", testkit::DEFAULT_LIMIT, || {
            let rt = Runtime::builder().procs(1).build().unwrap();
            let shared = rt.shared.clone();
            // Wait for M0 to park with nothing to do.
            while !(lock(&shared.sched).idle == [0] && shared.ms[0].state() == MState::Idle) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Lose its wake-up: take it off the idle list as `enqueue` does, and never unpark.
            lock(&shared.sched).idle.clear();
            let h = shared.spawn(|| 7);
            let dump = shared.dump();
            shared.ms[0].idle.unpark(); // found: wake it after all
            assert_eq!(h.join().unwrap(), 7);
            dump
        });
        assert!(
            dump.contains("M(s) [0] parked although taken off the idle list")
                && dump.contains("1 G(s) wait in the run queue"),
            "{dump}"
        );
    }

    #[test]
    fn m_states_move_only_along_the_table_and_a_bad_move_names_the_m() {
        use MState::*;
        let all = [Starting, Scheduling, Running, Idle, Exited];
        for state in all {
            assert_eq!(MState::from_u8(state as u8), state);
        }
        let allowed: Vec<(MState, MState)> = all
            .iter()
            .flat_map(|&from| all.iter().map(move |&to| (from, to)))
            .filter(|&(from, to)| legal(from, to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Starting, Running),
                (Starting, Idle),
                (Starting, Exited),
                (Scheduling, Running),
                (Scheduling, Idle),
                (Scheduling, Exited),
                (Running, Scheduling),
                (Running, Exited),
                (Idle, Scheduling),
                (Idle, Exited),
            ]
        );
        let bad = panic::catch_unwind(|| transition(3, Idle, Running)).unwrap_err();
        let msg = task::payload_message(&*bad).unwrap_or_default().to_string();
        assert!(
            msg.contains("M3") && msg.contains("from Idle to Running"),
            "{msg}"
        );
        assert!(panic::catch_unwind(|| MState::from_u8(9)).is_err());
    }

    #[test]
    fn m_tid_checks_name_part_02_and_the_invariant() {
        let caller = crate::parts::osthread::current_tid();
        assert!(check_m_tids(&[caller + 1, caller + 2]).is_ok());
        for (tids, says) in [
            (vec![0, caller + 1], "M0 is 0"),
            (vec![caller + 1, caller], "the thread that called spawn"),
            (
                vec![caller + 1, caller + 1],
                "M0 and M1 report the same tid",
            ),
        ] {
            let msg = check_m_tids(&tids).unwrap_err().to_string();
            assert!(
                msg.contains("part 02 osthread") && msg.contains(says),
                "{msg}"
            );
            assert!(msg.contains("cargo test -p ex-02-osthread"), "{msg}");
        }
    }
}
