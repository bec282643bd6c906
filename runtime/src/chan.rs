//! Just enough of a channel for chapter 6: an unbuffered (rendezvous) channel, where a send
//! waits until a receiver takes the value. Buffered channels and `select!` are chapter 13.
//!
//! Go: `hchan` with `recvq` / `sendq` of `sudog`s (`chan.go`). As in Go, a waiting party
//! puts a slot that lives in its own frame on the queue, and the other side hands the value
//! over directly through it, then wakes the waiter: one hand-off, no buffer.
//!
//! [`Receiver::recv_timeout`] bounds a receive with a part 11 timer (chapter 11).
//!
//! Not here: buffering, select (chapter 13).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::g::Waiter;
use crate::lock;
use crate::parts::g::WaitReason;

/// An unbuffered channel: [`Sender::send`] returns once a [`Receiver::recv`] has the value.
///
/// ```
/// let got = gmp::run(|| {
///     let (tx, rx) = gmp::chan::rendezvous();
///     gmp::go(move || tx.send("ping").unwrap());
///     rx.recv().unwrap()
/// });
/// assert_eq!(got, "ping");
/// ```
pub fn rendezvous<T: Send>() -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            senders: VecDeque::new(),
            receivers: VecDeque::new(),
            senders_alive: 1,
            receivers_alive: 1,
        }),
    });
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// The sending side; clone it for more senders.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving side; clone it for more receivers.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// Every receiver is gone; the value comes back.
#[derive(PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Every sender is gone and no value is waiting.
#[derive(Debug, PartialEq, Eq)]
pub struct RecvError;

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("send on a channel whose receivers are all dropped (the value is returned)")
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receive on a channel whose senders are all dropped")
    }
}

/// Why [`Receiver::recv_timeout`] returned no value. std: `mpsc::RecvTimeoutError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// No sender handed a value over before the deadline.
    Timeout,
    /// Every sender is dropped and none is waiting.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "no value arrived before the receive timed out",
            RecvTimeoutError::Disconnected => "receive on a channel whose senders are all dropped",
        })
    }
}

impl<T> std::error::Error for SendError<T> {}
impl std::error::Error for RecvError {}
impl std::error::Error for RecvTimeoutError {}

struct Chan<T> {
    /// No user code runs under this lock (values are moved, not dropped, inside it), so
    /// poison carries no meaning (`crate::lock`).
    state: Mutex<State<T>>,
}

struct State<T> {
    /// Waiting senders, each slot holding its value. Go: `sendq`.
    senders: VecDeque<*const Slot<T>>,
    /// Waiting receivers, each slot empty until a sender fills it. Go: `recvq`.
    receivers: VecDeque<*const Slot<T>>,
    senders_alive: usize,
    receivers_alive: usize,
}

// SAFETY: the raw pointers are slots in the frames of waiting parties. A slot stays on a
// queue only while its owner waits (the owner leaves only once `done` is set, or takes the
// slot off the queue under the lock as it unwinds), and the slot is used only under the
// lock or, after `done`, by its owner. Values of T cross threads, hence `T: Send`.
unsafe impl<T: Send> Send for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Chan<T> {}

/// A waiting party's slot. Go: `sudog`.
struct Slot<T> {
    value: UnsafeCell<Option<T>>,
    /// Set (last, under the channel lock) by the party that completes or cancels the wait.
    done: AtomicBool,
    /// The owner, taken (moved, no new count) by the party that completes the wait, under
    /// the lock; the owner itself never reads it while queued (it waits as the current G or
    /// thread, `g::wait_current`), and drops what is left once off the queue.
    waiter: UnsafeCell<Option<Waiter>>,
}

impl<T> Chan<T> {
    /// Completes the wait of the party that owns `slot` and returns its waiter to wake
    /// once the lock is released.
    ///
    /// # Safety
    ///
    /// `slot` was just taken off a queue under the lock the caller still holds.
    unsafe fn complete(slot: *const Slot<T>) -> Option<Waiter> {
        // SAFETY: the owner waits until `done`, so the slot is alive, and does not touch
        // `waiter` while the slot is queued; after the store it may be gone, so the waiter
        // is taken out first.
        unsafe {
            let waiter = (*(*slot).waiter.get()).take();
            (*slot).done.store(true, Release);
            waiter
        }
    }

    /// Puts `slot` on a queue, waits until the other side completes it, and takes it off
    /// the queue if the wait is unwound, cannot wait (a G torn down at shutdown) or reaches
    /// `deadline`: the caller then finds its slot as a closed channel leaves it, unless
    /// `done` says the other side completed it first.
    fn wait(
        &self,
        slot: &Slot<T>,
        receiving: bool,
        mut state: MutexGuard<'_, State<T>>,
        deadline: Option<Instant>,
    ) {
        let ptr: *const Slot<T> = slot;
        if receiving {
            state.receivers.push_back(ptr);
        } else {
            state.senders.push_back(ptr);
        }
        drop(state);
        struct Dequeue<'a, T>(&'a Chan<T>, *const Slot<T>, bool);
        impl<T> Drop for Dequeue<'_, T> {
            fn drop(&mut self) {
                let mut state = lock(&self.0.state);
                let queue = if self.2 {
                    &mut state.receivers
                } else {
                    &mut state.senders
                };
                queue.retain(|p| *p != self.1);
            }
        }
        let guard = Dequeue(self, ptr, receiving);
        // A timed wait registers a timer that wakes this party: its own count of itself.
        let timed = deadline.map(|_| Waiter::current());
        let reason = if receiving {
            WaitReason::ChanRecv
        } else {
            WaitReason::ChanSend
        };
        while !slot.done.load(Acquire) {
            let waited = match (deadline, &timed) {
                // Timed out: the guard takes the slot off the queue under the lock, so
                // either the other side completed it first (`done`) or it never will.
                (Some(d), _) if Instant::now() >= d => return,
                (Some(d), Some(me)) => crate::time::wait_until(me, reason, d),
                _ => crate::g::wait_current(reason),
            };
            if waited.is_err() {
                // A destructor of a G torn down at shutdown: no M will ever run it to finish
                // this wait. The guard takes the slot off the queue under the lock, so
                // either the other side completed it first or it never will.
                return;
            }
        }
        // Completed: the other side already took the slot off the queue.
        std::mem::forget(guard);
    }
}

impl<T: Send> Sender<T> {
    /// Sends `value`, waiting until a receiver takes it. Go: `ch <- v` (`chansend`).
    ///
    /// # Errors
    ///
    /// If every receiver is dropped, before or while waiting: the value comes back. Also
    /// if it would wait in a G being torn down at shutdown (a destructor on its stack),
    /// where no receiver can ever come: it never waits there.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = lock(&self.chan.state);
        if let Some(receiver) = state.receivers.pop_front() {
            // SAFETY: a queued receiver's slot is alive and empty until we complete it.
            let waiter = unsafe {
                *(*receiver).value.get() = Some(value);
                Chan::complete(receiver)
            };
            drop(state);
            if let Some(waiter) = waiter {
                waiter.wake_owned();
            }
            return Ok(());
        }
        if state.receivers_alive == 0 {
            return Err(SendError(value));
        }
        let slot = Slot {
            value: UnsafeCell::new(Some(value)),
            done: AtomicBool::new(false),
            waiter: UnsafeCell::new(Some(Waiter::current())),
        };
        self.chan.wait(&slot, false, state, None);
        // A receiver took the value, or the last receiver left it with us.
        match slot.value.into_inner() {
            None => Ok(()),
            Some(value) => Err(SendError(value)),
        }
    }
}

impl<T: Send> Receiver<T> {
    /// Receives a value, waiting for a sender. Go: `v, ok := <-ch` (`chanrecv`).
    ///
    /// # Errors
    ///
    /// If every sender is dropped and none is waiting. Also if it would wait in a G being
    /// torn down at shutdown, as for [`Sender::send`].
    pub fn recv(&self) -> Result<T, RecvError> {
        let mut state = lock(&self.chan.state);
        if let Some(sender) = state.senders.pop_front() {
            // SAFETY: a queued sender's slot is alive and holds its value until completed.
            let (value, waiter) = unsafe {
                let value = (*(*sender).value.get()).take();
                (value, Chan::complete(sender))
            };
            drop(state);
            if let Some(waiter) = waiter {
                waiter.wake_owned();
            }
            return value.ok_or(RecvError);
        }
        if state.senders_alive == 0 {
            return Err(RecvError);
        }
        let slot = Slot {
            value: UnsafeCell::new(None),
            done: AtomicBool::new(false),
            waiter: UnsafeCell::new(Some(Waiter::current())),
        };
        self.chan.wait(&slot, true, state, None);
        slot.value.into_inner().ok_or(RecvError)
    }

    /// [`recv`](Receiver::recv) that gives up after `timeout`. On a G the wait is a part 11
    /// timer on the G's P, taken out again when a value comes first. std:
    /// `mpsc::Receiver::recv_timeout`; Go: `select` with `time.After`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gmp::chan::RecvTimeoutError;
    /// gmp::run(|| {
    ///     let (tx, rx) = gmp::chan::rendezvous::<u8>();
    ///     assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
    ///     drop(tx);
    ///     assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Disconnected));
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if no sender handed a value over in time;
    /// [`RecvTimeoutError::Disconnected`] if every sender is dropped and none is waiting
    /// (or the caller is a G torn down at shutdown, as for `recv`).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.recv().map_err(|_| RecvTimeoutError::Disconnected);
        };
        let mut state = lock(&self.chan.state);
        if let Some(sender) = state.senders.pop_front() {
            // SAFETY: a queued sender's slot is alive and holds its value until completed.
            let (value, waiter) = unsafe {
                let value = (*(*sender).value.get()).take();
                (value, Chan::complete(sender))
            };
            drop(state);
            if let Some(waiter) = waiter {
                waiter.wake_owned();
            }
            return value.ok_or(RecvTimeoutError::Disconnected);
        }
        if state.senders_alive == 0 {
            return Err(RecvTimeoutError::Disconnected);
        }
        let slot = Slot {
            value: UnsafeCell::new(None),
            done: AtomicBool::new(false),
            waiter: UnsafeCell::new(Some(Waiter::current())),
        };
        self.chan.wait(&slot, true, state, Some(deadline));
        // `done` is read after the wait took the slot off the queue (or the other side did):
        // a value handed over at the last moment is still ours.
        let completed = slot.done.load(Acquire);
        match slot.value.into_inner() {
            Some(value) => Ok(value),
            None if completed || Instant::now() < deadline => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.chan.state).senders_alive += 1;
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        lock(&self.chan.state).receivers_alive += 1;
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiters: Vec<Waiter> = {
            let mut state = lock(&self.chan.state);
            state.senders_alive -= 1;
            if state.senders_alive > 0 {
                return;
            }
            // The last sender: every waiting receiver gets "closed" (an empty slot).
            let queued: Vec<_> = state.receivers.drain(..).collect();
            // SAFETY: each was just taken off the queue under the lock we hold.
            queued
                .into_iter()
                .filter_map(|r| unsafe { Chan::complete(r) })
                .collect()
        };
        waiters.into_iter().for_each(Waiter::wake_owned);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let waiters: Vec<Waiter> = {
            let mut state = lock(&self.chan.state);
            state.receivers_alive -= 1;
            if state.receivers_alive > 0 {
                return;
            }
            // The last receiver: every waiting sender gets its value back.
            let queued: Vec<_> = state.senders.drain(..).collect();
            // SAFETY: each was just taken off the queue under the lock we hold.
            queued
                .into_iter()
                .filter_map(|s| unsafe { Chan::complete(s) })
                .collect()
        };
        waiters.into_iter().for_each(Waiter::wake_owned);
    }
}
