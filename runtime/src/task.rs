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
use std::sync::Arc;

use crate::g::{self, Waiter};
use crate::joincell::{JoinCell, Joined, Wake};
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
/// like the G's own.
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

/// A G's function, to run once on the G's first run (or to drop unrun, as the G, if it never
/// runs). It shares one allocation with the G's join slot and cancel: a spawn allocates
/// that once, not once per piece.
pub(crate) struct Body(Arc<dyn Task>);

impl Body {
    /// Runs the function: catches its panic and fills the join slot (`task::new`).
    pub(crate) fn run(self) {
        self.0.run();
    }

    /// Drops the function unrun. Its captures are user values: the caller runs this as the G
    /// (`g.rs`, "Tearing a G down").
    pub(crate) fn discard(self) {
        self.0.discard();
    }
}

/// A body dropped without `run` or `discard` (a broken engine that never entered it, say)
/// drops the function where the body is dropped, as a boxed closure would: not later, by
/// whoever holds the job's last reference (a joiner on any thread), or never (a function
/// that owns its own handle). After `run` or `discard` there is nothing left to drop.
impl Drop for Body {
    fn drop(&mut self) {
        self.0.discard();
    }
}

/// What the runtime does with a G's function (`Body`); the joiner's side is [`JoinSlot`].
trait Task: Send + Sync {
    fn run(&self);
    fn discard(&self);
}

/// Tells a G's joiner why the G never finished: the G's own join slot, seen without its
/// result type (the same allocation as the body and the handle's slot).
pub(crate) type Cancel = Arc<dyn CancelSlot>;

/// A join slot that can be filled with "this G never finished".
pub(crate) trait CancelSlot: Send + Sync {
    /// Fills the slot of G `task` with a [`Panic`] saying `why`, unless it is filled.
    ///
    /// # Safety
    ///
    /// The G's body is not running, and no other cancel of this slot runs at the same time:
    /// the caller holds the G's `run` exclusively (its M entered it and the body has not
    /// started, or no M runs it any more).
    unsafe fn cancel(&self, task: u64, why: String);
}

/// The joiner's view of a G's allocation: its result slot.
trait JoinSlot<T>: Send + Sync {
    fn cell(&self) -> &ResultCell<T>;
}

/// A G's function, its id and its result slot, in one allocation.
struct Job<F, T> {
    id: u64,
    /// Taken by the one run (or by `discard`, or the body's drop). Only [`Body`] reaches it
    /// (through the private `Task` trait), `task::new` makes one `Body` per job, and `Body`
    /// is not `Clone`: one value, on one thread at a time, so at most one thread ever
    /// touches this cell at once.
    f: UnsafeCell<Option<F>>,
    cell: ResultCell<T>,
}

// SAFETY: `f` is touched by the one `Body` only (see the field), so sharing a `Job` between
// threads never shares `F`; it moves to the thread that runs or discards it (F: Send). The
// rest is an id and a `JoinCell`, which is `Sync` for `T: Send` (`joincell.rs`).
unsafe impl<F: Send, T: Send> Sync for Job<F, T> {}

impl<F, T> Task for Job<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn run(&self) {
        // SAFETY: only the job's one `Body` calls this (`Job::f`).
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
        // while it does (`CancelSlot::cancel`).
        if let Some(unjoined) = unsafe { self.cell.fill(outcome) } {
            drop_unjoined(unjoined);
        }
    }

    fn discard(&self) {
        // SAFETY: only the job's one `Body` calls this (`Job::f`).
        drop(unsafe { &mut *self.f.get() }.take());
    }
}

impl<F: Send, T: Send> CancelSlot for Job<F, T> {
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
}

impl<F: Send, T: Send> JoinSlot<T> for Job<F, T> {
    fn cell(&self) -> &ResultCell<T> {
        &self.cell
    }
}

/// Waits for a G started by [`go`](crate::go). Dropping it detaches the G.
pub struct JoinHandle<T> {
    task: u64,
    job: Arc<dyn JoinSlot<T>>,
    /// The result was taken by a join: nothing is left to detach.
    joined: bool,
}

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

    /// Has the G finished (returned or panicked)?
    pub fn is_finished(&self) -> bool {
        self.job.cell().is_filled()
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
        mut self,
        stop: impl Fn() -> Option<E>,
    ) -> Result<Result<T, Panic>, E> {
        g::check_may_wait("JoinHandle::join");
        loop {
            // SAFETY: this handle's owner (`join` takes it by value), before its drop.
            // The waiter is made only to register it: a join that finds the result takes
            // no count of itself.
            match unsafe { self.job.cell().try_join(Waiter::current) } {
                Joined::Ready(result) => {
                    self.joined = true;
                    return Ok(result);
                }
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
        if self.joined {
            return;
        }
        // SAFETY: the handle's owner, once, after its last join look.
        let unjoined = unsafe { self.job.cell().detach() };
        // The G finished and nobody joined: its result is dropped here, by the code that
        // dropped the handle, as any value it owned.
        drop(unjoined);
    }
}

/// The pieces of a new G: its body (runs `f`, catches its panic, fills the slot), the cancel
/// that fills the slot if the body never finishes, and the joiner's handle. One allocation.
pub(crate) fn new<F, T>(id: u64, f: F) -> (Body, Cancel, JoinHandle<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let job = Arc::new(Job {
        id,
        f: UnsafeCell::new(Some(f)),
        cell: JoinCell::new(),
    });
    let cancel: Cancel = job.clone();
    let body = Body(job.clone());
    (
        body,
        cancel,
        JoinHandle {
            task: id,
            job,
            joined: false,
        },
    )
}
