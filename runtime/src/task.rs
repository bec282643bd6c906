//! A task's result slot and the [`JoinHandle`] that waits on it.
//!
//! Stage 0 runs a task as a closure to completion on an M; the slot is where its value (or
//! its panic) lands. The joiner sleeps on its thread's Parker (part 03) until the slot fills.
//! Chapter 6 replaces the sleeping thread with a parked G.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::parts::parker::Parker;
use crate::sched;

/// A task that panicked (or never ran because its runtime shut down first).
pub struct Panic {
    task: u64,
    payload: Box<dyn Any + Send>,
}

impl Panic {
    /// The panic message, if the payload was a string (as `panic!("...")` makes).
    pub fn message(&self) -> Option<&str> {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            self.payload.downcast_ref::<String>().map(String::as_str)
        }
    }

    /// The id of the task that panicked.
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
            "Panic {{ task: {}, message: {:?} }}",
            self.task,
            self.message()
        )
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => write!(f, "task {} panicked: {m}", self.task),
            None => write!(f, "task {} panicked with a non-string payload", self.task),
        }
    }
}

struct Slot<T> {
    result: Option<Result<T, Panic>>,
    /// The joiner's Parker while it sleeps; whoever fills `result` unparks it.
    waiter: Option<Arc<Parker>>,
}

pub(crate) struct Shared<T> {
    slot: Mutex<Slot<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic never happens while the slot is locked (user code runs outside the lock),
        // so poisoning cannot carry meaning here.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fill(&self, result: Result<T, Panic>) {
        let waiter = {
            let mut slot = self.lock();
            slot.result = Some(result);
            slot.waiter.take()
        };
        if let Some(parker) = waiter {
            parker.unpark();
        }
    }
}

/// Waits for a task started by [`go`](crate::go). Dropping it detaches the task.
pub struct JoinHandle<T> {
    task: u64,
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinHandle {{ task: {} }}", self.task)
    }
}

impl<T> JoinHandle<T> {
    /// The task's id, as [`dump`](crate::dump) and [`Panic::task_id`] show it.
    pub fn task_id(&self) -> u64 {
        self.task
    }

    /// Has the task finished (returned or panicked)?
    pub fn is_finished(&self) -> bool {
        self.shared.lock().result.is_some()
    }

    /// Waits for the task and returns its value, or the panic that ended it.
    ///
    /// On an M, the wait runs other queued tasks meanwhile (stage 0 cannot park a task, so
    /// an M that only slept here could wait forever for a task queued behind it).
    pub fn join(self) -> Result<T, Panic> {
        let me = sched::thread_parker();
        loop {
            {
                let mut slot = self.shared.lock();
                if let Some(result) = slot.result.take() {
                    return result;
                }
                slot.waiter = Some(me.clone());
            }
            if !sched::run_one_queued_task() {
                me.park();
            }
        }
    }
}

/// A task as the run queue holds it: the closure and the slot its result goes to.
pub(crate) struct Task {
    pub(crate) id: u64,
    run: Option<Box<dyn FnOnce() + Send>>,
    /// Fills the slot with "never ran" if the task is dropped unrun (runtime shut down).
    on_drop_unrun: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Task {
    pub(crate) fn new<F, T>(id: u64, f: F) -> (Task, JoinHandle<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                result: None,
                waiter: None,
            }),
        });
        let for_run = shared.clone();
        let for_drop = shared.clone();
        let task = Task {
            id,
            run: Some(Box::new(move || {
                // Contain the panic here, so it never unwinds into the M's loop.
                let outcome = panic::catch_unwind(AssertUnwindSafe(f))
                    .map_err(|payload| Panic { task: id, payload });
                for_run.fill(outcome);
            })),
            on_drop_unrun: Some(Box::new(move |id| {
                for_drop.fill(Err(Panic {
                    task: id,
                    payload: Box::new("the runtime shut down before this task ran"),
                }))
            })),
        };
        (task, JoinHandle { task: id, shared })
    }

    /// Runs the task to completion. Never unwinds.
    pub(crate) fn run(mut self) {
        self.on_drop_unrun = None;
        if let Some(run) = self.run.take() {
            run();
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(cancel) = self.on_drop_unrun.take() {
            cancel(self.id);
        }
    }
}
