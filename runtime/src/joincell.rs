//! The cell a G's result lands in, shared by the G (which fills it) and its [`JoinHandle`]
//! (which joins or detaches): one state word and two cells, without a lock.
//!
//! A `Mutex` around the same fields cost a lock and an unlock on each side (a locked
//! instruction each, some 7 ns here) on every G's end; now the filler publishes with one
//! `fetch_or`, a detaching handle with one, and a join that finds the result waits for
//! nothing and writes nothing. The rules, which the loom model at the end checks:
//!
//! - `result` is written by the filler before it sets `FILLED`, and read (taken) only by
//!   whoever sees `FILLED` set by that filler's read-modify-write: the joiner, or the
//!   handle's drop (`DETACHED` set after `FILLED`), or the filler itself when `DETACHED`
//!   came first (nobody will ever look).
//! - `waiter` is written by the joiner while `WAITING` and `FILLED` are both clear, then
//!   published by setting `WAITING`; the filler takes it only if its `fetch_or(FILLED)` saw
//!   `WAITING` (after which the joiner never touches it again).
//!
//! Fills are serialized by the caller (`fill` is `unsafe` for that): a G's body fills once
//! on its own stack, and a cancel runs only where no M runs the G.
//!
//! Not here: what a result is, or who joins (`task.rs`), how a waiter sleeps (`g.rs`).
//!
//! [`JoinHandle`]: crate::JoinHandle

#[cfg(all(test, loom))]
use ::loom::{cell::UnsafeCell, sync::atomic::AtomicUsize};
use std::sync::atomic::Ordering::{AcqRel, Acquire};
#[cfg(not(all(test, loom)))]
use std::{cell::UnsafeCell as StdUnsafeCell, sync::atomic::AtomicUsize};

/// The result is in `result` (or was, and has been taken).
const FILLED: usize = 1;
/// The handle is gone: nobody will join.
const DETACHED: usize = 2;
/// `waiter` holds the joiner, to be woken by the fill.
const WAITING: usize = 4;

/// Who waits for a result: woken once by the fill.
pub(crate) trait Wake {
    fn wake(self);
}

pub(crate) struct JoinCell<T, W> {
    state: AtomicUsize,
    result: UnsafeCell<Option<T>>,
    waiter: UnsafeCell<Option<W>>,
}

// SAFETY: `result` and `waiter` are each touched by one side at a time, as the state word
// says (see the top of this file): `T` and `W` move between threads, never shared.
unsafe impl<T: Send, W: Send> Sync for JoinCell<T, W> {}

/// What `try_join` found.
pub(crate) enum Joined<T> {
    Ready(T),
    /// Not yet: the waiter is registered (now or before) and will be woken.
    Waiting,
}

impl<T, W: Wake> JoinCell<T, W> {
    pub(crate) fn new() -> JoinCell<T, W> {
        JoinCell {
            state: AtomicUsize::new(0),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }

    /// Hands `value` to the joiner and wakes it. Gives it back if nobody can take it (the
    /// handle is gone, or the cell was filled already): the caller drops it, in its own
    /// context.
    ///
    /// # Safety
    ///
    /// No other `fill` of this cell runs at the same time (they may follow one another).
    #[must_use = "a result nobody can join is the caller's to drop"]
    pub(crate) unsafe fn fill(&self, value: T) -> Option<T> {
        // A fill that came before ours happened-before it (the caller's promise): seen here.
        if self.state.load(Acquire) & (FILLED | DETACHED) != 0 {
            return Some(value);
        }
        // SAFETY: FILLED is clear, so no joiner or handle reads `result`, and no other fill
        // runs now (the caller's promise): ours alone until the fetch_or below.
        self.result.with_mut(|r| unsafe { *r = Some(value) });
        let before = self.state.fetch_or(FILLED, AcqRel);
        if before & DETACHED != 0 {
            // The handle went before our FILLED: it did not look, and nobody will.
            // SAFETY: as above: the handle's drop saw FILLED clear, so it left `result`.
            return self.result.with_mut(|r| unsafe { (*r).take() });
        }
        if before & WAITING != 0 {
            // SAFETY: WAITING was set before our FILLED: the joiner wrote `waiter` and will
            // not touch it again now that FILLED is set.
            let waiter = self.waiter.with_mut(|w| unsafe { (*w).take() });
            if let Some(waiter) = waiter {
                waiter.wake();
            }
        }
        None
    }

    /// Has the cell been filled? (The handle's `is_finished`.)
    pub(crate) fn is_filled(&self) -> bool {
        self.state.load(Acquire) & FILLED != 0
    }

    /// The joiner's look: the result if it is there; else registers `waiter` (the first time
    /// only: later calls find it registered) and says to wait.
    ///
    /// # Safety
    ///
    /// Called by the handle's one owner, never at the same time as itself or `detach`.
    pub(crate) unsafe fn try_join(&self, waiter: impl FnOnce() -> W) -> Joined<T> {
        let state = self.state.load(Acquire);
        if state & FILLED != 0 {
            return Joined::Ready(self.take_filled());
        }
        if state & WAITING != 0 {
            return Joined::Waiting;
        }
        // SAFETY: WAITING and FILLED are clear: no filler reads `waiter` until we set
        // WAITING, and only this one owner of the handle writes it.
        self.waiter.with_mut(|w| unsafe { *w = Some(waiter()) });
        match self
            .state
            .compare_exchange(state, state | WAITING, AcqRel, Acquire)
        {
            Ok(_) => Joined::Waiting,
            // Only a fill changes the state meanwhile (DETACHED is ours to set): the result
            // is there, and the filler did not see our waiter, which we drop.
            Err(_) => {
                // SAFETY: WAITING never got set, so the filler never read `waiter`.
                drop(self.waiter.with_mut(|w| unsafe { (*w).take() }));
                Joined::Ready(self.take_filled())
            }
        }
    }

    /// The handle is dropped without a join: returns the result if it was there, for the
    /// caller to drop in its own context.
    ///
    /// # Safety
    ///
    /// Called once, by the handle's one owner, after its last `try_join`.
    pub(crate) unsafe fn detach(&self) -> Option<T> {
        let before = self.state.fetch_or(DETACHED, AcqRel);
        if before & FILLED != 0 {
            Some(self.take_filled())
        } else {
            None
        }
    }

    /// Takes the result once FILLED has been seen (by an acquire). Only the handle's owner
    /// calls it, once.
    fn take_filled(&self) -> T {
        // SAFETY: FILLED was set by the filler after it wrote `result`, and the filler
        // touches it again only if DETACHED came first, which only this owner sets.
        self.result
            .with_mut(|r| unsafe { (*r).take() })
            .expect("gmp bug: a join cell marked filled holds no result")
    }
}

/// std's `UnsafeCell` with loom's closure API, so one body of code serves both builds.
#[cfg(not(all(test, loom)))]
struct UnsafeCell<T>(StdUnsafeCell<T>);

#[cfg(not(all(test, loom)))]
impl<T> UnsafeCell<T> {
    const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(StdUnsafeCell::new(value))
    }

    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize as Count, Ordering::Relaxed};

    struct Flag(Arc<Count>);
    impl Wake for Flag {
        fn wake(self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    // Each test below runs on one thread, with one handle owner and its fills one after
    // the other: what the unsafe functions ask. These wrappers say so once.
    fn fill<T>(cell: &JoinCell<T, Flag>, value: T) -> Option<T> {
        // SAFETY: one thread: no two fills at once.
        unsafe { cell.fill(value) }
    }
    fn join<T>(cell: &JoinCell<T, Flag>, waiter: impl FnOnce() -> Flag) -> Joined<T> {
        // SAFETY: one thread: the one owner, never beside its own detach.
        unsafe { cell.try_join(waiter) }
    }
    fn detach<T>(cell: &JoinCell<T, Flag>) -> Option<T> {
        // SAFETY: one thread; each test detaches a cell once, after its joins.
        unsafe { cell.detach() }
    }

    #[test]
    fn a_join_after_the_fill_takes_the_result_and_registers_nothing() {
        let cell = JoinCell::<u32, Flag>::new();
        assert!(fill(&cell, 7).is_none());
        assert!(cell.is_filled());
        let woken = Arc::new(Count::new(0));
        match join(&cell, || Flag(woken.clone())) {
            Joined::Ready(v) => assert_eq!(v, 7),
            Joined::Waiting => panic!("filled, but told to wait"),
        }
        assert_eq!(woken.load(Relaxed), 0);
    }

    #[test]
    fn a_waiting_joiner_is_woken_once_and_a_second_fill_is_given_back() {
        let cell = JoinCell::<u32, Flag>::new();
        let woken = Arc::new(Count::new(0));
        assert!(matches!(
            join(&cell, || Flag(woken.clone())),
            Joined::Waiting
        ));
        // A second look registers nothing new.
        assert!(matches!(
            join(&cell, || panic!("registered twice")),
            Joined::Waiting
        ));
        assert!(fill(&cell, 1).is_none());
        assert_eq!(fill(&cell, 2), Some(2), "a second fill must be given back");
        assert_eq!(woken.load(Relaxed), 1);
        assert!(matches!(join(&cell, || panic!()), Joined::Ready(1)));
    }

    #[test]
    fn a_detached_cell_gives_the_result_back_to_whoever_came_second() {
        let cell = JoinCell::<String, Flag>::new();
        assert_eq!(detach(&cell), None);
        assert_eq!(fill(&cell, "r".into()).as_deref(), Some("r"));
        let cell = JoinCell::<String, Flag>::new();
        assert!(fill(&cell, "r".into()).is_none());
        assert_eq!(detach(&cell).as_deref(), Some("r"));
    }
}

/// Every interleaving of a filler against a joiner that waits, and against a handle that
/// is dropped: the value reaches exactly one of them, a registered joiner is woken, and
/// no cell is touched by two threads at once (loom's `UnsafeCell` checks that).
/// `RUSTFLAGS="--cfg loom" cargo test -p gmp --release --lib joincell::loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use ::loom::sync::Arc;
    use ::loom::sync::atomic::AtomicBool;
    use ::loom::thread;
    use std::sync::atomic::Ordering::SeqCst;

    struct Flag(Arc<AtomicBool>);
    impl Wake for Flag {
        fn wake(self) {
            self.0.store(true, SeqCst);
        }
    }

    #[test]
    fn a_filler_and_a_waiting_joiner() {
        ::loom::model(|| {
            let cell = Arc::new(JoinCell::<u32, Flag>::new());
            let filler = {
                let cell = cell.clone();
                // SAFETY: the model's only filler.
                thread::spawn(move || assert!(unsafe { cell.fill(5) }.is_none()))
            };
            let woken = Arc::new(AtomicBool::new(false));
            // SAFETY: the one owner.
            let got = match unsafe { cell.try_join(|| Flag(woken.clone())) } {
                Joined::Ready(v) => v,
                Joined::Waiting => {
                    filler.join().unwrap();
                    assert!(woken.load(SeqCst), "a registered joiner was not woken");
                    // SAFETY: as above.
                    match unsafe { cell.try_join(|| panic!("registered twice")) } {
                        Joined::Ready(v) => v,
                        Joined::Waiting => panic!("filled and woken, but told to wait"),
                    }
                }
            };
            assert_eq!(got, 5);
        });
    }

    /// A handle dropped while the filler fills, after a look that registered a waiter
    /// (a joiner that gave up: `block_on` seeing a broken runtime) or without one: the
    /// value goes back to exactly one side, and neither touches a cell the other is using
    /// (loom's `UnsafeCell` checks).
    fn filler_against_a_dropped_handle(register_first: bool) {
        ::loom::model(move || {
            let cell = Arc::new(JoinCell::<Arc<()>, Flag>::new());
            let value = Arc::new(());
            let filler = {
                let (cell, value) = (cell.clone(), value.clone());
                // SAFETY: the model's only filler.
                thread::spawn(move || unsafe { cell.fill(value) })
            };
            let woken = Arc::new(AtomicBool::new(false));
            let looked = if register_first {
                // SAFETY: the one owner: a look, then its detach.
                unsafe { cell.try_join(|| Flag(woken.clone())) }
            } else {
                Joined::Waiting
            };
            let handle_got = match looked {
                Joined::Ready(v) => Some(v),
                // SAFETY: the one owner, once, after its last look.
                Joined::Waiting => unsafe { cell.detach() },
            };
            let filler_got = filler.join().unwrap();
            assert!(
                handle_got.is_some() != filler_got.is_some(),
                "the result must go back to exactly one side"
            );
            drop((handle_got, filler_got));
            assert_eq!(Arc::strong_count(&value), 1, "the result was lost or kept");
        });
    }

    #[test]
    fn a_filler_and_a_dropped_handle() {
        filler_against_a_dropped_handle(false);
    }

    #[test]
    fn a_registered_joiner_that_gives_up_against_a_filler() {
        filler_against_a_dropped_handle(true);
    }
}
