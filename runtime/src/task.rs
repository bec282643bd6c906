//! A G's result slot and the [`JoinHandle`] that waits on it.
//!
//! The slot is where a G's value (or its panic) lands. A joiner that is a G parks (part 06,
//! wait reason "join"); a joiner that is a plain thread sleeps on its Parker (part 03).
//! Who drops the result: the joiner takes it; a handle dropped after the G finished drops it
//! where it is dropped; a G whose handle is already gone when it finishes drops its own
//! result, still on its own stack, before it exits. So a result's destructor is user code
//! that runs in user code's place, never on g0, where a panic would stop the M and a
//! blocking call would hang it (DESIGN.md "Soundness"). A panic there is contained like any
//! G's: the panic hook tells it, and the M goes on.
//!
//! The slot itself is a `JoinCell` (`joincell.rs`): a state word and two cells, no lock.
//!
//! Not here: running the G (`sched/m.rs`, `g.rs`).

use std::any::Any;
use std::cell::UnsafeCell;
use std::convert::Infallible;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::g::{self, Waiter};
use crate::joincell::{self, JoinCell, Joined, Wake, Word};
use crate::parts::g::WaitReason;

/// A G that panicked, or never finished (its runtime shut down first, or it got no stack).
pub struct Panic {
    task: u64,
    payload: Box<dyn Any + Send>,
}

impl Panic {
    /// The panic message, if the payload was a string (as `panic!("...")` makes).
    pub fn message(&self) -> Option<&str> {
        payload_message(&*self.payload)
    }

    /// The id of the G that panicked.
    pub fn task_id(&self) -> u64 {
        self.task
    }

    /// The payload, to hand to `std::panic::resume_unwind`.
    pub fn into_payload(self) -> Box<dyn Any + Send> {
        self.payload
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Panic {{ g: {}, message: {:?} }}",
            self.task,
            self.message()
        )
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => write!(f, "G {} panicked: {m}", self.task),
            None => write!(f, "G {} panicked with a non-string payload", self.task),
        }
    }
}

/// Where a G's result (or panic) lands: lock-free, one read-modify-write per side
/// (`joincell.rs`).
type ResultCell<T> = JoinCell<Result<T, Panic>, Waiter>;

impl Wake for Waiter {
    fn wake(self) {
        self.wake_owned();
    }
}

/// The G's own result (or panic) that nobody can join, dropped by the G itself before it
/// exits, so its destructor may park; a panic in it is told by the panic hook and contained
/// like the G's own. Never inlined, nor is `drop_payload`: `catch_unwind` updates std's
/// per-thread panic count, and two of them inlined into one function could share that
/// count's address across the park (see `sched::m::m_ctx_here`).
#[inline(never)]
fn drop_unjoined<T>(result: Result<T, Panic>) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(result))) {
        if g::tearing_down() {
            // Shutdown is unwinding this G's stack, parked inside that destructor: go on.
            panic::resume_unwind(payload);
        }
        g::drop_payload(payload);
    }
}

/// The message of a panic payload, if it is a string (as `panic!("...")` makes).
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Some(s)
    } else {
        payload.downcast_ref::<String>().map(String::as_str)
    }
}

/// The G's share of its task (the other is its [`JoinHandle`]): runs the function through a
/// [`Body`], fills the slot with an explanation if the body never finishes ([`cancel`]),
/// and leaves the allocation when dropped. Held by the G's record (`g.rs`), which is
/// touched by one M at a time, so one thread at a time uses it.
///
/// [`cancel`]: Runner::cancel
pub(crate) struct Runner(NonNull<dyn Task>);

// SAFETY: a `Runner` is the filler's side of a `Job<F, T>` with `F: Send` and `T: Send`
// (the only `Task`): what it reaches moves between threads, one at a time.
unsafe impl Send for Runner {}

impl Runner {
    fn job(&self) -> &dyn Task {
        // SAFETY: the allocation lives until both sides left, and we have not (drop).
        unsafe { self.0.as_ref() }
    }

    /// The function, for the engine to run on the G's first run.
    ///
    /// # Safety
    ///
    /// Called at most once per runner, and the body is dropped before this runner (or
    /// never, if the stack it is on is never run again): it borrows the allocation the
    /// runner keeps.
    pub(crate) unsafe fn body(&self) -> Body {
        Body(self.0)
    }

    /// Drops the function unrun, if it has not run. Its captures are user values: the
    /// caller runs this as the G (`g.rs`, "Tearing a G down").
    ///
    /// # Safety
    ///
    /// The G's body is not running (as for [`cancel`](Runner::cancel)).
    pub(crate) unsafe fn discard(&self) {
        // SAFETY: the caller's promise: the body is not running, so only we touch `f`.
        unsafe { self.job().discard() };
    }

    /// Fills the slot of G `task` with a [`Panic`] saying `why`, unless it is filled.
    ///
    /// # Safety
    ///
    /// The G's body is not running: the caller holds the G's `run` exclusively (its M
    /// entered it and the body has not started, or no M runs it any more).
    pub(crate) unsafe fn cancel(&self, task: u64, why: String) {
        // SAFETY: the caller's promise, and this runner's one owner.
        unsafe { self.job().cancel(task, why) };
    }
}

/// The G's side leaves: last, it frees the allocation. A slot nobody filled (a broken
/// engine that never ran the body, say) is cancelled first, so a joiner never waits on a
/// G that is gone.
impl Drop for Runner {
    fn drop(&mut self) {
        let job = self.job();
        if job.awaits_fill() {
            // SAFETY: the runner is being dropped, so its body is not running (`body`'s
            // contract: dropped first).
            unsafe {
                job.cancel(
                    job.id(),
                    "the G's record was dropped before it finished".into(),
                )
            };
        }
        // Through the word alone: the handle may free the allocation the moment we leave.
        let word = job.word();
        // SAFETY: the allocation is live (we have not left); the filler's side leaves once,
        // here, after the fill above, the body's, or the handle's leave.
        if unsafe { joincell::leave_filler(word) }.0 {
            #[cfg(all(test, loom))]
            job.free_for_the_model();
            // SAFETY: both sides left: nothing reaches the allocation any more, and it came
            // from `Box::leak` in `task::new`.
            #[cfg(not(all(test, loom)))]
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }
}

/// A G's function, to run once on the G's first run. Borrows the allocation its [`Runner`]
/// keeps, and is dropped before it (`Runner::body`).
pub(crate) struct Body(NonNull<dyn Task>);

// SAFETY: as for `Runner`: the function is `Send`, and only this body or the runner (never
// both at once: the runner touches the function only when the body is not running)
// reaches it.
unsafe impl Send for Body {}

impl Body {
    fn job(&self) -> &dyn Task {
        // SAFETY: the runner keeps the allocation until after this body is dropped
        // (`Runner::body`'s contract).
        unsafe { self.0.as_ref() }
    }

    /// Runs the function: catches its panic and fills the join slot (`task::new`).
    pub(crate) fn run(self) {
        // SAFETY: this is the job's one body (`Runner::body`), consumed here, and the runner
        // does not touch `f` while it runs (`Runner::cancel`, `discard`).
        unsafe { self.job().run() };
    }

    /// Drops the function unrun. Its captures are user values: the caller runs this as the G
    /// (`g.rs`, "Tearing a G down").
    pub(crate) fn discard(self) {
        // SAFETY: as in `run`.
        unsafe { self.job().discard() };
    }
}

/// A body dropped without `run` or `discard` (a broken engine that never entered it, say)
/// drops the function where the body is dropped, as a boxed closure would: not later, with
/// the allocation, by whichever side leaves last. After `run` or `discard` there is nothing
/// left to drop.
impl Drop for Body {
    fn drop(&mut self) {
        // SAFETY: as in `run`; after `run` or `discard` this finds `f` empty.
        unsafe { self.job().discard() };
    }
}

/// What the G's side does with its task ([`Runner`], [`Body`]); the joiner's side is
/// [`JoinSlot`].
trait Task: Send + Sync {
    fn id(&self) -> u64;
    /// Runs the function once, if it is still there, and fills the slot.
    ///
    /// # Safety
    ///
    /// No other thread touches the function meanwhile: only the job's one [`Body`], or its
    /// [`Runner`] while the body is not running, calls this (see `Job::f`).
    unsafe fn run(&self);
    /// Drops the function unrun, if it is still there.
    ///
    /// # Safety
    ///
    /// As [`run`](Task::run).
    unsafe fn discard(&self);
    /// # Safety
    ///
    /// As [`Runner::cancel`], and only from the runner's one owner.
    unsafe fn cancel(&self, task: u64, why: String);
    fn awaits_fill(&self) -> bool;
    /// The slot's state word, which the runner leaves through (`joincell::leave_filler`).
    fn word(&self) -> &Word;
    /// Loom only: the free, as the models see it (`JoinCell::free_for_the_model`).
    #[cfg(all(test, loom))]
    fn free_for_the_model(&self);
}

/// The joiner's view of a G's allocation: its result slot.
trait JoinSlot<T>: Send + Sync {
    fn cell(&self) -> &ResultCell<T>;
}

/// A G's function, its id and its result slot, in one allocation shared by the G's
/// [`Runner`] and its [`JoinHandle`], and freed by whichever leaves last, as the slot's
/// state word tells (`joincell.rs`): no reference count.
struct Job<F, T> {
    id: u64,
    /// Taken by the one run (or by `discard`, or the body's drop). Only the [`Body`] and
    /// the [`Runner`] reach it (through the private `Task` trait); `task::new` makes one
    /// runner per job, `Runner::body` makes at most one body from it, neither is `Clone`,
    /// and the runner's owner touches it only while the body is not running: at most one
    /// thread ever touches this cell at once.
    f: UnsafeCell<Option<F>>,
    cell: ResultCell<T>,
}

// SAFETY: `f` is touched by one side at a time (see the field), so sharing a `Job` between
// threads never shares `F`; it moves to the thread that runs or discards it (F: Send). The
// rest is an id and a `JoinCell`, which is `Sync` for `T: Send` (`joincell.rs`).
unsafe impl<F: Send, T: Send> Sync for Job<F, T> {}

impl<F, T> Task for Job<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn id(&self) -> u64 {
        self.id
    }

    unsafe fn run(&self) {
        // SAFETY: the caller's promise: one side at a time touches `f` (`Job::f`).
        let Some(f) = (unsafe { &mut *self.f.get() }).take() else {
            return;
        };
        // Contain the panic here, so it never unwinds into g0 (or across the engine).
        let outcome = panic::catch_unwind(AssertUnwindSafe(f));
        let outcome = match outcome {
            // Shutdown is unwinding this G's stack: let the unwind reach the engine.
            Err(payload) if g::tearing_down() => panic::resume_unwind(payload),
            other => other.map_err(|payload| Panic {
                task: self.id,
                payload,
            }),
        };
        // SAFETY: the body runs once (`Job::f` is taken above), and a cancel never runs
        // while it does (`Runner::cancel`).
        if let Some(unjoined) = unsafe { self.cell.fill(outcome) } {
            drop_unjoined(unjoined);
        }
    }

    unsafe fn discard(&self) {
        // SAFETY: the caller's promise: one side at a time touches `f` (`Job::f`).
        drop(unsafe { &mut *self.f.get() }.take());
    }

    unsafe fn cancel(&self, task: u64, why: String) {
        // Given back only if nobody can join: a Panic whose payload is our String, no user
        // code to run on drop.
        // SAFETY: the caller's promise: neither the body nor another cancel fills now.
        let _unjoined = unsafe {
            self.cell.fill(Err(Panic {
                task,
                payload: Box::new(why),
            }))
        };
    }

    fn awaits_fill(&self) -> bool {
        self.cell.awaits_fill()
    }

    fn word(&self) -> &Word {
        self.cell.word()
    }

    #[cfg(all(test, loom))]
    fn free_for_the_model(&self) {
        self.cell.free_for_the_model();
    }
}

impl<F: Send, T: Send> JoinSlot<T> for Job<F, T> {
    fn cell(&self) -> &ResultCell<T> {
        &self.cell
    }
}

/// Waits for a G started by [`go`](crate::go). Dropping it detaches the G.
pub struct JoinHandle<T> {
    task: u64,
    /// The handle's share of the G's allocation, left when it drops (`Job`).
    job: NonNull<dyn JoinSlot<T>>,
}

// SAFETY: the handle reaches only its slot, a `JoinCell` that is `Sync` for `T: Send`, and
// moves the result to whichever thread joins, which needs `T: Send` (bounded here so that a
// future spawn of a non-`Send` result could not make this wrong; `task::new` requires it
// today anyway).
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&self` methods only load the slot's state word; no `T` is reached through `&`.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinHandle {{ g: {} }}", self.task)
    }
}

impl<T> JoinHandle<T> {
    /// The G's id, as [`dump`](crate::dump) and [`Panic::task_id`] show it.
    pub fn task_id(&self) -> u64 {
        self.task
    }

    fn cell(&self) -> &ResultCell<T> {
        // SAFETY: the allocation lives until both sides left, and this handle has not
        // (drop); under loom the allocation is never freed (`loom_model`), so the modelled
        // free in `drop` may call this after the leave.
        unsafe { self.job.as_ref() }.cell()
    }

    /// Has the G finished (returned or panicked)?
    pub fn is_finished(&self) -> bool {
        self.cell().is_filled()
    }

    /// Waits for the G and returns its value, or the panic that ended it. On a G this parks
    /// the G (its M runs other Gs meanwhile); elsewhere it blocks the thread.
    pub fn join(self) -> Result<T, Panic> {
        let Ok(result) = self.join_unless(|| None::<Infallible>);
        result
    }

    /// [`join`](JoinHandle::join) that also gives up when `stop` says so (`block_on`
    /// watching for a broken runtime). Whoever makes `stop` true must wake this waiter.
    pub(crate) fn join_unless<E>(
        self,
        stop: impl Fn() -> Option<E>,
    ) -> Result<Result<T, Panic>, E> {
        g::check_may_wait("JoinHandle::join");
        loop {
            // SAFETY: this handle's owner (`join` takes it by value), before its drop.
            // The waiter is made only to register it: a join that finds the result takes
            // no count of itself.
            match unsafe { self.cell().try_join(Waiter::current) } {
                Joined::Ready(result) => return Ok(result),
                Joined::Waiting => {}
            }
            if let Some(why) = stop() {
                return Err(why);
            }
            if g::wait_current(WaitReason::Join).is_err() {
                return Ok(Err(Panic {
                    task: self.task,
                    payload: Box::new(format!(
                        "G {} could not be joined: the joiner is a G that will never run \
                         again (the runtime shut down, or it got no stack) and is being torn \
                         down, so nothing could end the wait",
                        self.task
                    )),
                }));
            }
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // A pointer, not a reference held across the leave: the runner may free the
        // allocation the moment we leave (`JoinCell::leave_handle`).
        let cell: *const ResultCell<T> = self.cell();
        // SAFETY: live until we leave; the handle's owner, once, after its last join look.
        let (unjoined, last) = unsafe { JoinCell::leave_handle(cell) };
        if last.0 {
            // The loom models (below) leak the job and mark it freed instead (so `cell`
            // still reaches it): loom then reports any access by the other side that is not
            // ordered before this free.
            #[cfg(all(test, loom))]
            self.cell().free_for_the_model();
            // SAFETY: both sides left: nothing reaches the allocation any more, and it came
            // from `Box::leak` in `task::new`.
            #[cfg(not(all(test, loom)))]
            drop(unsafe { Box::from_raw(self.job.as_ptr()) });
        }
        // The G finished and nobody joined: its result is dropped here, by the code that
        // dropped the handle, as any value it owned (after the free, which a panic in it
        // must not skip).
        drop(unjoined);
    }
}

/// The two sides of a new G, sharing one allocation: the runner (the G's: runs `f`,
/// catches its panic, fills the slot, or cancels it) and the joiner's handle.
pub(crate) fn new<F, T>(id: u64, f: F) -> (Runner, JoinHandle<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let job = NonNull::from(Box::leak(Box::new(Job {
        id,
        f: UnsafeCell::new(Some(f)),
        cell: JoinCell::new(),
    })));
    (Runner(job), JoinHandle { task: id, job })
}

/// Loom models of the job itself: `task::new`'s runner (with or without running its body)
/// against its handle (joined or only dropped), through the real `Runner`, `Body` and
/// `JoinHandle` code. The free is modelled (`free_for_the_model`, above) and the job
/// leaked, so a free by the wrong side, or an access to the join cell after the right
/// side's free, is a reported race (the function's cell `f` is a std `UnsafeCell`, which
/// loom does not see). Each model also checks that exactly one side freed, and that the
/// function's capture, which the function returns as the result, was dropped exactly once.
/// The joiner here only looks (`is_finished`) and takes a filled result: registering a
/// waiter needs a runtime, and `joincell.rs`'s models cover that path.
/// `RUSTFLAGS="--cfg loom" cargo test -p gmp --release --lib task::loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// Counts its drops: the capture of the G's function, and then its result.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn runner_against_its_handle(run_body: bool, join: bool) {
        ::loom::model(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let capture = Counted(drops.clone());
            let (runner, handle) = new(7, move || capture);
            // The job is never freed under loom: its cell can be read after both left.
            let cell: *const ResultCell<Counted> = handle.cell();
            let g_side = ::loom::thread::spawn(move || {
                if run_body {
                    // SAFETY: the runner's one body, consumed by `run` before the runner drops.
                    unsafe { runner.body() }.run();
                } else {
                    // As `G::tear_down` and `G::refuse` do before the runner goes (under loom
                    // the leaked job would never drop the function otherwise).
                    // SAFETY: no body was made, so none runs.
                    unsafe { runner.discard() };
                }
                drop(runner);
            });
            if join {
                while !handle.is_finished() {
                    ::loom::thread::yield_now();
                }
                // SAFETY: the handle's one owner, before it leaves.
                let got = unsafe { handle.cell().try_join(|| -> Waiter { unreachable!() }) };
                match got {
                    Joined::Ready(Ok(v)) => {
                        assert!(run_body);
                        drop(v);
                    }
                    Joined::Ready(Err(p)) => assert!(!run_body, "unexpected panic: {p}"),
                    Joined::Waiting => panic!("a finished G's slot said to wait"),
                }
            }
            drop(handle);
            g_side.join().unwrap();
            // SAFETY: leaked under loom (above), so still valid.
            let frees = unsafe { &*cell }.frees_for_the_model();
            assert_eq!(frees, 1, "exactly one side must free the job");
            assert_eq!(
                drops.load(SeqCst),
                1,
                "the capture (or result) dropped once"
            );
        });
    }
    #[test]
    fn a_runner_that_runs_its_body_against_a_joined_handle() {
        runner_against_its_handle(true, true);
    }

    #[test]
    fn a_runner_that_runs_its_body_against_a_dropped_handle() {
        runner_against_its_handle(true, false);
    }

    #[test]
    fn a_runner_dropped_unrun_against_a_joined_handle() {
        runner_against_its_handle(false, true);
    }

    #[test]
    fn a_runner_dropped_unrun_against_a_dropped_handle() {
        runner_against_its_handle(false, false);
    }
}
