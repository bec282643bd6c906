//! The scheduler, stage 0: a global run queue, one M per P, idle Ms asleep on a Parker.
//!
//! Go: `schedule` -> `findRunnable` -> `execute`, much simplified. Stage 0 has no Gs with
//! stacks, so a task runs to completion on its M; no local run queues (chapter 7), no
//! stealing (chapter 8).
//!
//! ## Idle M without lost wake-up
//!
//! Rejected: an M that finds the queue empty, unlocks, and then parks. A [`go`] in between
//! pushes a task, sees no idle M to wake, and the task waits until some M happens to look.
//!
//! Chosen: "the queue is empty, so I am idle" is decided under the same lock that [`go`]
//! takes to push:
//!
//! 1. An M that finds the queue empty adds itself to `idle` *before* unlocking, then parks.
//! 2. [`go`] pushes the task and, under the lock, takes one M off `idle`, then unparks it.
//! 3. If that unpark lands before the M's park, the Parker keeps the token (part 03), so the
//!    park returns at once.
//!
//! Shutdown follows the same rule: the flag is set under the lock, then every M is unparked.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::builder::{BuildError, Builder};
use crate::parts::osthread::{MBuilder, MHandle};
use crate::parts::parker::Parker;
use crate::task::{JoinHandle, Task};

/// A running runtime. Dropping it shuts it down: queued tasks are dropped (their joiners see
/// a [`Panic`](crate::Panic) saying so) and every M is joined.
pub struct Runtime {
    shared: Arc<Shared>,
    ms: Vec<MHandle<()>>,
}

pub(crate) struct Shared {
    id: u64,
    /// Guards the run queue, the idle list and the shutdown flag together (see "Idle M
    /// without lost wake-up"). Lock order: taken alone; never held while running a task.
    sched: Mutex<Sched>,
    ms: Vec<MSlot>,
    next_task: AtomicU64,
}

struct Sched {
    runq: VecDeque<Task>,
    /// Ms parked (or about to park) on their `MSlot::idle` Parker.
    idle: Vec<usize>,
    shutdown: bool,
}

/// What the runtime knows of one M. Written by that M, read by `dump` and `metrics`.
struct MSlot {
    /// The M sleeps here when it has no work; `go` and shutdown unpark it.
    idle: Parker,
    /// Kernel thread id, set once by `Runtime::start`.
    tid: AtomicU32,
    state: AtomicU8,
    tasks_run: AtomicU64,
}

const M_STARTING: u8 = 0;
const M_RUNNING: u8 = 1;
const M_IDLE: u8 = 2;
const M_EXITED: u8 = 3;

fn state_name(s: u8) -> &'static str {
    match s {
        M_STARTING => "starting",
        M_RUNNING => "running a task",
        M_IDLE => "idle (parked)",
        _ => "exited",
    }
}

thread_local! {
    /// Set on every M: the runtime it belongs to and its index. `go` reads it.
    static CURRENT: RefCell<Option<(Arc<Shared>, usize)>> = const { RefCell::new(None) };
    /// Each thread's own Parker, for joins. Distinct from an M's idle Parker, so a join's
    /// wake-up can never be mistaken for "there is work".
    static THREAD_PARKER: Arc<Parker> = Arc::new(Parker::new());
}

/// Every runtime alive in this process, for [`dump_all`] (watchdog diagnostics).
static RUNTIMES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Tasks never run under these locks, so a poisoned lock only means a bug already
    // reported by its own panic; keep going rather than cascade.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runtime {
    /// Settings for a runtime: P count, M stack size, pinning.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn start(
        procs: usize,
        m_stack: usize,
        cpus: &[usize],
    ) -> Result<Runtime, BuildError> {
        let shared = Arc::new(Shared {
            id: NEXT_RUNTIME.fetch_add(1, Relaxed),
            sched: Mutex::new(Sched {
                runq: VecDeque::new(),
                idle: Vec::new(),
                shutdown: false,
            }),
            ms: (0..procs)
                .map(|_| MSlot {
                    idle: Parker::new(),
                    tid: AtomicU32::new(0),
                    state: AtomicU8::new(M_STARTING),
                    tasks_run: AtomicU64::new(0),
                })
                .collect(),
            next_task: AtomicU64::new(1),
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

    /// Runs `f` as the main task and waits for it on this thread; returns its value.
    ///
    /// If `f` panics, the panic continues on this thread, as for `std::thread::scope`.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.shared.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic.into_payload()),
        }
    }

    /// Number of Ps.
    pub fn procs(&self) -> usize {
        self.shared.ms.len()
    }

    /// A human-readable picture of the runtime: each M's state, the queue length.
    pub fn dump(&self) -> String {
        self.shared.dump()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let dropped: Vec<Task> = {
            let mut s = lock(&self.shared.sched);
            s.shutdown = true;
            s.runq.drain(..).collect()
        };
        // Dropping unrun tasks tells their joiners; do it outside the lock.
        drop(dropped);
        if std::thread::panicking() {
            // Already unwinding, often because a part panicked (a learner's `todo!()`).
            // A second panic here would abort the process and hide the first message, and
            // joining Ms whose Parker is broken could wait forever: wake them as best we
            // can and let them go.
            for m in &self.shared.ms {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| m.idle.unpark()));
            }
            return;
        }
        for m in &self.shared.ms {
            m.idle.unpark();
        }
        for (i, m) in self.ms.drain(..).enumerate() {
            // Task panics are contained, so an M only dies of a panic in a part or the
            // runtime itself; that panic's message was printed when it happened.
            if m.join().is_err() {
                eprintln!("gmp: M{i} died of a panic outside any task (see the message above)");
            }
        }
    }
}

impl Shared {
    fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let id = self.next_task.fetch_add(1, Relaxed);
        let (task, handle) = Task::new(id, f);
        let wake = {
            let mut s = lock(&self.sched);
            if s.shutdown {
                drop(s);
                drop(task); // fills the handle with "the runtime shut down"
                return handle;
            }
            s.runq.push_back(task);
            s.idle.pop()
        };
        if let Some(index) = wake {
            self.ms[index].idle.unpark();
        }
        handle
    }

    fn dump(&self) -> String {
        let s = lock(&self.sched);
        let mut out = format!(
            "runtime {}: {} P(s), run queue length {}, idle Ms {:?}{}\n",
            self.id,
            self.ms.len(),
            s.runq.len(),
            s.idle,
            if s.shutdown { ", shutting down" } else { "" }
        );
        for (i, m) in self.ms.iter().enumerate() {
            let _ = writeln!(
                out,
                "  M{i} tid {}: {}, {} tasks run",
                m.tid.load(Relaxed),
                state_name(m.state.load(Relaxed)),
                m.tasks_run.load(Relaxed)
            );
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

/// An M's loop: take a task, run it, repeat; park when there is none.
fn m_main(shared: Arc<Shared>, index: usize) {
    CURRENT.with(|c| *c.borrow_mut() = Some((shared.clone(), index)));
    let me = &shared.ms[index];
    loop {
        let task = {
            let mut s = lock(&shared.sched);
            match s.runq.pop_front() {
                Some(task) => Some(task),
                None if s.shutdown => break,
                None => {
                    s.idle.push(index); // step 1 of "Idle M without lost wake-up"
                    None
                }
            }
        };
        match task {
            Some(task) => {
                me.state.store(M_RUNNING, Relaxed);
                task.run();
                me.tasks_run.fetch_add(1, Relaxed);
            }
            None => {
                me.state.store(M_IDLE, Relaxed);
                me.idle.park();
                me.state.store(M_RUNNING, Relaxed);
            }
        }
    }
    me.state.store(M_EXITED, Relaxed);
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// The calling thread's Parker, for joins.
pub(crate) fn thread_parker() -> Arc<Parker> {
    THREAD_PARKER.with(Arc::clone)
}

/// On an M: pops and runs one queued task, returning true. Elsewhere, or with an empty
/// queue: false.
pub(crate) fn run_one_queued_task() -> bool {
    let Some((shared, index)) = CURRENT.with(|c| c.borrow().clone()) else {
        return false;
    };
    let task = lock(&shared.sched).runq.pop_front();
    match task {
        Some(task) => {
            task.run();
            shared.ms[index].tasks_run.fetch_add(1, Relaxed);
            true
        }
        None => false,
    }
}

/// Starts `f` as a new task on the current runtime. Go: `go f()` (`newproc`).
///
/// # Panics
///
/// Outside a runtime (not inside [`run`] or [`Runtime::block_on`]): there is no queue to put
/// the task on.
pub fn go<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match current() {
        Some(shared) => shared.spawn(f),
        None => panic!(
            "gmp::go called outside a runtime: start one with gmp::run(|| ...) and call go \
             from inside it"
        ),
    }
}

pub(crate) fn current() -> Option<Arc<Shared>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(s, _)| s.clone()))
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
/// task, shuts the runtime down and returns `f`'s value.
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
