//! A G's result slot and the [`JoinHandle`] that waits on it.
//!
//! The slot is where a G's value (or its panic) lands. A joiner that is a G parks (part 06,
//! wait reason "join"); a joiner that is a plain thread sleeps on its Parker (part 03).
//! Not here: running the G (`sched/m.rs`, `g.rs`).

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::engine::Body;
use crate::g::{self, Waiter};
use crate::lock;
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

struct Slot<T> {
    result: Option<Result<T, Panic>>,
    /// Set by the first fill; later fills (a cancel after the G finished) do nothing.
    filled: bool,
    /// The joiner while it waits; whoever fills the slot wakes it.
    waiter: Option<Waiter>,
}

struct Shared<T> {
    /// A panic never happens while the slot is locked (user code runs outside the lock),
    /// so poisoning cannot carry meaning here (`crate::lock`).
    slot: Mutex<Slot<T>>,
}

impl<T> Shared<T> {
    fn fill(&self, result: Result<T, Panic>) {
        let waiter = {
            let mut slot = lock(&self.slot);
            if slot.filled {
                return;
            }
            slot.filled = true;
            slot.result = Some(result);
            slot.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
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

/// Tells a G's joiner why the G never finished.
pub(crate) type Cancel = Box<dyn FnOnce(String) + Send>;

/// Waits for a G started by [`go`](crate::go). Dropping it detaches the G.
pub struct JoinHandle<T> {
    task: u64,
    shared: Arc<Shared<T>>,
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
        lock(&self.shared.slot).filled
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
        let me = Waiter::current();
        loop {
            {
                let mut slot = lock(&self.shared.slot);
                if let Some(result) = slot.result.take() {
                    return Ok(result);
                }
                slot.waiter = Some(me.clone());
            }
            if let Some(why) = stop() {
                return Err(why);
            }
            me.wait(WaitReason::Join);
        }
    }
}

/// The pieces of a new G: its body (runs `f`, catches its panic, fills the slot), the cancel
/// that fills the slot if the body never finishes, and the joiner's handle.
pub(crate) fn new<F, T>(id: u64, f: F) -> (Body, Cancel, JoinHandle<T>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            result: None,
            filled: false,
            waiter: None,
        }),
    });
    let for_body = shared.clone();
    let for_cancel = shared.clone();
    let body: Body = Box::new(move || {
        // Contain the panic here, so it never unwinds into g0 (or across the engine).
        let outcome = panic::catch_unwind(AssertUnwindSafe(f));
        let outcome = match outcome {
            // Shutdown is unwinding this G's stack: let the unwind reach the engine.
            Err(payload) if g::tearing_down() => panic::resume_unwind(payload),
            other => other.map_err(|payload| Panic { task: id, payload }),
        };
        for_body.fill(outcome);
    });
    let cancel: Cancel = Box::new(move |why| {
        for_cancel.fill(Err(Panic {
            task: id,
            payload: Box::new(why),
        }))
    });
    (body, cancel, JoinHandle { task: id, shared })
}
