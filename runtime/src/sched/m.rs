//! An M: what the runtime knows of it ([`MSlot`]), its state machine ([`MState`]), g0's
//! loop ([`m_main`], Go: `schedule`) and [`execute`], which runs one G and finishes what it
//! started. Go: `type m` in `runtime2.go`, `schedule` and `execute` in `proc.go`.
//!
//! Not here: where the next G comes from (`find.rs`), starting the Ms (`Runtime::start` in
//! `mod.rs`), the M's "current G" thread-local (`g.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed,
};
use std::sync::{Arc, OnceLock};

use crossbeam_deque::Injector;

use super::Shared;
use super::find::find_runnable;
use super::p::P;
use crate::builder::BuildError;
use crate::engine::SwitchOut;
use crate::g::G;
use crate::lock;
use crate::parts::g::AfterPark;
use crate::parts::parker::Parker;
use crate::parts::runq::Token;
use crate::task;

/// What the runtime knows of one M. Written by that M, read by `dump` and `metrics`.
pub(super) struct MSlot {
    /// The M sleeps here when it has no work; `wakep`, `wake_home` and shutdown unpark it.
    pub(super) idle: Parker,
    /// Started Gs of this M that are runnable: a G that has run here stays here (see
    /// "Started Gs stay on their M" in `mod.rs`). Anyone pushes; only this M pops.
    pub(super) pinned: Injector<Token>,
    /// Counted in `Shared::spinning` now (for dumps).
    pub(super) spinning: AtomicBool,
    /// Gs that started here and have not finished: the ones only this M can run (not
    /// counted when Gs migrate).
    pub(super) homed: AtomicUsize,
    /// A G called `lock_os_thread` here: this M runs only Gs that started on it, and
    /// `wakep` never picks it to look for new work.
    pub(super) locked: AtomicBool,
    /// In a blocking call, without a P (`syscall.rs`). Written by this M, read by dumps.
    pub(super) in_call: AtomicBool,
    /// When the current (or last) blocking call began, on the runtime's clock (`now_ns`).
    /// Written by this M before `in_call`, read by dumps.
    pub(super) call_since_ns: AtomicU64,
    /// Back from a blocking call whose P was retaken, on the idle list with its G, waiting
    /// for a P (`syscall.rs`): `release_p` serves it first. Written by this M.
    pub(super) wants_p: AtomicBool,
    /// Kernel thread id, set once by `Runtime::start`.
    pub(super) tid: AtomicU32,
    /// An [`MState`], written only by the M itself (`MSlot::set_state`).
    state: AtomicU8,
    /// The G it runs, or 0.
    pub(super) running_g: AtomicU64,
    pub(super) switches: AtomicU64,
}

/// The most Ms a runtime starts (Go: `sched.maxmcount`, 10,000 by default).
pub(crate) const MAX_MS: usize = 10_000;

/// Every M a runtime has started, by index: slots are made once and never move, so any
/// thread reads them without a lock. New Ms are added under the `sched` lock (`Shared::newm`).
pub(super) struct MList {
    slots: Box<[OnceLock<Box<MSlot>>]>,
    len: AtomicUsize,
}

impl MList {
    pub(super) fn new() -> MList {
        MList {
            slots: (0..MAX_MS).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &MSlot> {
        (0..self.len()).map(|i| &self[i])
    }

    /// Makes the next M's slot; `None` at [`MAX_MS`]. Called under the `sched` lock.
    pub(super) fn push(&self) -> Option<usize> {
        let index = self.len.load(Ordering::Relaxed);
        self.slots.get(index)?.set(Box::new(MSlot::new())).ok()?;
        self.len.store(index + 1, Ordering::Release);
        Some(index)
    }
}

impl std::ops::Index<usize> for MList {
    type Output = MSlot;

    fn index(&self, index: usize) -> &MSlot {
        self.slots[index]
            .get()
            .expect("gmp bug: an M index names an M that was never made")
    }
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
pub(super) enum MState {
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
    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn new() -> MSlot {
        MSlot {
            idle: Parker::new(),
            pinned: Injector::new(),
            spinning: AtomicBool::new(false),
            homed: AtomicUsize::new(0),
            locked: AtomicBool::new(false),
            in_call: AtomicBool::new(false),
            call_since_ns: AtomicU64::new(0),
            wants_p: AtomicBool::new(false),
            tid: AtomicU32::new(0),
            state: AtomicU8::new(MState::Starting as u8),
            running_g: AtomicU64::new(0),
            switches: AtomicU64::new(0),
        }
    }

    pub(super) fn state(&self) -> MState {
        MState::from_u8(self.state.load(Relaxed))
    }

    /// Moves M `m`'s state to `to`, checking the move. Called only by that M, so the load
    /// and store need no atomic read-modify-write.
    pub(super) fn set_state(&self, m: usize, to: MState) {
        transition(m, self.state(), to);
        self.state.store(to as u8, Relaxed);
    }
}

/// Part 02's contract: each M reports its own kernel thread id, so no two Ms share one and
/// none is the caller's.
pub(super) fn check_m_tids(tids: &[u32]) -> Result<(), BuildError> {
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

/// What an M holds, in its own thread-local: only code running on this M (g0, or a G it
/// runs) reaches it, so the P inside is touched by its holder alone. Borrowed briefly and
/// never across a switch to a G, so a G's own code can borrow it too (to spawn into the P).
pub(crate) struct MCtx {
    /// The runtime this M belongs to (a G may start another runtime inside itself).
    rt: u64,
    pub(crate) index: usize,
    /// Go: `m.p`.
    pub(crate) p: Option<Box<P>>,
    /// Go: `m.spinning`.
    pub(crate) spinning: bool,
    /// Gs on this M that hold `lock_os_thread` (Go: `m.lockedg`, one G there; here a G
    /// that started on this M before the lock may run and lock it too).
    pub(crate) lockers: u32,
    /// Started Gs of this M readied by code on this M (a send to a G parked here, say):
    /// plain, since nobody else touches them. Readies from other threads use
    /// `MSlot::pinned`.
    pub(crate) runnable: VecDeque<Token>,
    /// Started Gs of this M that yielded: looked at after the local and global queues, as
    /// Go's `Gosched` puts a G on the global queue, so every other G gets a turn first.
    pub(crate) yielded: VecDeque<Token>,
    /// Records of finished Gs that nobody else held, for the next spawns here. Go keeps
    /// them per P (`p.gFree`); here they live with the M, in this thread-local, which dies
    /// with the M's thread: a record holds its runtime (`G::rt`), and a P parked on the
    /// idle list when the runtime is dropped mid-panic would keep the runtime alive.
    pub(crate) free_gs: Vec<Arc<G>>,
}

/// How many finished G records an M keeps (Go: 64 per P).
pub(crate) const FREE_GS_MAX: usize = 64;

thread_local! {
    static M_CTX: RefCell<Option<MCtx>> = const { RefCell::new(None) };
}

/// This thread's `M_CTX`, or null once its thread-locals are being destroyed. Never
/// inlined, and opaque to the optimizer (`black_box`), so no two calls are merged: inlined
/// into a G's function, a thread-local's address may be computed once and reused after a
/// switch, on another M when Gs migrate (see `g::current_g`).
#[inline(never)]
fn m_ctx_here() -> *const RefCell<Option<MCtx>> {
    std::hint::black_box(M_CTX.try_with(ptr::from_ref).unwrap_or(ptr::null()))
}

/// Runs `f` on this thread's M context if the thread is an M of runtime `rt` and nobody
/// else has it borrowed (g0 between Gs, or user code on g0); `None` otherwise.
pub(crate) fn with_m<R>(rt: u64, f: impl FnOnce(&mut MCtx) -> R) -> Option<R> {
    let here = m_ctx_here();
    // SAFETY: `here` is null or this thread's `M_CTX`, found just now on this thread, which
    // this call does not leave (`f` never switches): a thread-local outlives every call
    // made on its thread before its destructors run, and `try_with` said they had not.
    let ctx = unsafe { here.as_ref() }?;
    let mut ctx = ctx.try_borrow_mut().ok()?;
    match ctx.as_mut() {
        Some(m) if m.rt == rt => Some(f(m)),
        _ => None,
    }
}

/// g0's loop on M `index`, which starts with the P handed to it in `next_p` (if any).
/// Go: `mstart` then `schedule`, which never returns; ours returns at shutdown.
pub(super) fn m_main(shared: Arc<Shared>, index: usize) {
    let me = &shared.ms[index];
    let (p, spinning) = match lock(&shared.sched).next_p[index].take() {
        Some((p, spinning)) => (Some(p), spinning),
        None => (None, false),
    };
    me.spinning.store(spinning, Relaxed);
    M_CTX.set(Some(MCtx {
        rt: shared.id,
        index,
        p,
        spinning,
        lockers: 0,
        runnable: VecDeque::new(),
        yielded: VecDeque::new(),
        free_gs: Vec::new(),
    }));
    let looped = panic::catch_unwind(AssertUnwindSafe(|| {
        while let Some(g) = find_runnable(&shared, index) {
            execute(&shared, index, g);
        }
    }));
    if looped.is_ok() && !shared.migrate && lock(&shared.broken).is_none() {
        tear_down_mine(&shared, index);
    }
    me.set_state(index, MState::Exited);
    // Drops the P (its ring holds only numbers) before the thread ends.
    drop(M_CTX.take());
    if let Err(payload) = looped {
        // G panics never get here (each G catches its own), so this is a part or the
        // runtime failing on g0: stop the runtime and tell the thread in block_on.
        let message = task::payload_message(&*payload).unwrap_or("a non-string panic");
        let why = format!("M{index} panicked on g0: {message}");
        // Also ends the idle M's blocking poll, which an unpark alone would not.
        shared.stop_broken(why);
    }
}

/// At shutdown, on M `index`'s own thread: tears down the Gs that started here and never
/// finished. Their stacks may hold borrows of this thread's thread-locals, which die with the
/// thread, so unwinding them anywhere else, or later, would touch freed memory. Gs that never
/// started hold only their `Send` function: the dropping thread tears those down. (With
/// `migrate_gs`, any M may still run any G: all wait for the dropping thread.)
fn tear_down_mine(shared: &Shared, index: usize) {
    for g in shared.gtable.drain_where(|g| g.home() == Some(index)) {
        // SAFETY: a started G runs only on its home M (`execute` checks), and this M has
        // left its loop for good, so no M runs this G or ever will.
        unsafe { g.tear_down() };
    }
}

/// Runs `g` until it switches out, then finishes what it started. Go: `execute`, `gogo`,
/// and what `mcall` runs on g0 afterwards (`gosched_m`, `park_m`, `goexit0`).
pub(super) fn execute(shared: &Shared, index: usize, g: Arc<G>) {
    let me = &shared.ms[index];
    g.state.run(); // part 06: refuses a G that is not runnable
    // Checked by the runtime itself, whatever part 06 answered: one M at a time.
    if !g.enter_m() {
        shared.fail(format!(
            "G {} was handed to M{index} while another M runs it: part 06 (g) let `run` \
             succeed twice",
            g.id()
        ));
    }
    // A started G runs only on its M unless the runtime migrates Gs; a fresh one makes
    // this M its home. Only this M's own queue holds its started Gs, so another home here
    // is a runtime bug, caught before the G's thread-locals could be raced.
    match g.settle_on(index) {
        Ok(true) if !shared.migrate => {
            // Only this M, the G's home, writes its count: no read-modify-write needed.
            me.homed.store(me.homed.load(Relaxed) + 1, Relaxed);
        }
        Ok(_) => {}
        Err(home) if !shared.migrate => shared.fail(format!(
            "gmp bug: G {} started on M{home} was handed to M{index}",
            g.id()
        )),
        Err(_) => {}
    }
    me.running_g.store(g.id(), Relaxed);
    me.set_state(index, MState::Running);
    // SAFETY: `enter_m` just made this M the only one running the G.
    let why = unsafe { g.resume() };
    g.leave_m();
    me.set_state(index, MState::Scheduling);
    me.running_g.store(0, Relaxed);
    // Written by this M alone (dumps read it).
    me.switches.store(me.switches.load(Relaxed) + 1, Relaxed);
    match why {
        SwitchOut::Yield => {
            g.state.yielded();
            shared.requeue_yielded(g);
        }
        SwitchOut::Park => match g.state.parked() {
            AfterPark::Waiting => {} // whoever readies it queues it
            AfterPark::Requeue => shared.ready(g),
        },
        SwitchOut::Exit => {
            g.state.exit();
            if let Some(home) = g.home().filter(|_| !shared.migrate) {
                // Without migration a G ends on its home M, the count's only writer.
                let homed = &shared.ms[home].homed;
                let before = homed.load(Relaxed);
                debug_assert!(before > 0, "gmp bug: M{home} counts no homed G at an exit");
                homed.store(before.saturating_sub(1), Relaxed);
            }
            // A lock ends with its G (Go ends the thread instead). Only the G itself locks,
            // and it has ended: a plain load first keeps the common case free of a swap.
            if g.os_locks.load(Relaxed) > 0
                && g.os_locks.swap(0, Relaxed) > 0
                && with_m(shared.id, |m| {
                    m.lockers = m.lockers.saturating_sub(1);
                    m.lockers == 0
                }) == Some(true)
            {
                me.locked.store(false, Relaxed);
            }
            // Out of the table, then, if nobody else holds the record now (no handle, waiter
            // or table entry), kept for this M's next spawn (Go: `gfput`): one visit to the
            // M's context for both, on this per-G path.
            let mut g = Some(g);
            let visited = with_m(shared.id, |m| {
                let record = g.as_mut().expect("taken only here");
                shared
                    .gtable
                    .remove(record, m.p.as_mut().map(|p| &mut p.slots));
                // Plain loads: `go` makes sure with `Arc::get_mut` before it reuses one.
                let unshared = Arc::strong_count(record) == 1 && Arc::weak_count(record) == 0;
                if m.free_gs.len() < FREE_GS_MAX && unshared {
                    m.free_gs.extend(g.take());
                }
            });
            if visited.is_none()
                && let Some(record) = &g
            {
                shared.gtable.remove(record, None);
            }
            // A record not kept is dropped here, outside the M's context.
            drop(g);
        }
    }
}

impl Shared {
    pub(crate) fn m_tids(&self) -> Vec<u32> {
        self.ms.iter().map(|m| m.tid.load(Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
