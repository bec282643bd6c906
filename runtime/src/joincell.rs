//! The cell a G's result lands in, shared by the G (which fills it) and its [`JoinHandle`]
//! (which joins or detaches): one state word and two cells, without a lock. The same word
//! says who still holds the allocation the cell lives in, so that needs no reference count.
//!
//! A `Mutex` around the same fields cost a lock and an unlock on each side (a locked
//! instruction each, some 7 ns here) on every G's end, and an `Arc` around the allocation
//! cost one more per count taken or dropped; now the filler publishes with one `fetch_or`,
//! a detaching handle with one, a join that finds the result writes nothing, and each side
//! leaves with at most one more (none when the other side has already left). The rules,
//! which the loom models at the end check:
//!
//! - `result` is written by the filler before it sets `FILLED`, and read (taken) only by
//!   whoever sees `FILLED` set by that filler's read-modify-write: the joiner, or the
//!   handle as it leaves (`DETACHED` set after `FILLED`), or the filler itself when
//!   `DETACHED` came first (nobody will ever look).
//! - `waiter` is written by the joiner while `WAITING` and `FILLED` are both clear, then
//!   published by setting `WAITING`; the filler takes it only if its `fetch_or(FILLED)` saw
//!   `WAITING` (after which the joiner never touches it again).
//! - Two owners, the filler's side and the handle, each leave once (`FILLER_GONE`,
//!   `DETACHED`); the filler's side leaves only once `FILLED` or `DETACHED` is set. Whoever
//!   sees the other's bit set as it leaves (by a load, or the read-modify-write that sets
//!   its own) is last, and frees the allocation: the other side's bit was set with Release
//!   after its last touch. Leaving goes through the state word alone, not `&self` (see
//!   `leave_handle`).
//!
//! Fills are serialized by the caller (`fill` is `unsafe` for that): a G's body fills once
//! on its own stack, and a cancel runs only where no M runs the G.
//!
//! Not here: what a result is, who joins, and the allocation itself (`task.rs`); how a
//! waiter sleeps (`g.rs`).
//!
//! [`JoinHandle`]: crate::JoinHandle

#[cfg(all(test, loom))]
use ::loom::{cell::UnsafeCell, sync::atomic::AtomicUsize};
use std::sync::atomic::Ordering::{AcqRel, Acquire};
#[cfg(not(all(test, loom)))]
use std::{cell::UnsafeCell as StdUnsafeCell, sync::atomic::AtomicUsize};

/// The result is in `result` (or was, and has been taken).
const FILLED: usize = 1;
/// The handle has left: nobody will join, and it will not touch the cell again.
const DETACHED: usize = 2;
/// `waiter` holds the joiner, to be woken by the fill.
const WAITING: usize = 4;
/// The filler's side has left: it will not touch the cell again.
const FILLER_GONE: usize = 8;

/// A cell's state word, as the filler's side leaves through it (`leave_filler`).
pub(crate) type Word = AtomicUsize;

/// Whether a side that left a cell was the last: then it frees the allocation.
#[must_use = "the last side to leave frees the allocation"]
pub(crate) struct Last(pub(crate) bool);

/// Who waits for a result: woken once by the fill.
pub(crate) trait Wake {
    fn wake(self);
}

pub(crate) struct JoinCell<T, W> {
    state: AtomicUsize,
    /// Loom only: read each time a side reaches for `state` (`word_of`, at the start of
    /// each operation, not at every load or RMW within it), written by the models' free,
    /// so loom checks each reach for the word against the free too.
    #[cfg(all(test, loom))]
    alive: UnsafeCell<()>,
    /// Loom only: how many times the models freed the cell (`free_for_the_model`).
    #[cfg(all(test, loom))]
    frees: std::sync::atomic::AtomicUsize,
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
            #[cfg(all(test, loom))]
            alive: UnsafeCell::new(()),
            #[cfg(all(test, loom))]
            frees: std::sync::atomic::AtomicUsize::new(0),
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
        if self.word().load(Acquire) & (FILLED | DETACHED) != 0 {
            return Some(value);
        }
        // SAFETY: FILLED is clear, so no joiner or handle reads `result`, and no other fill
        // runs now (the caller's promise): ours alone until the fetch_or below.
        self.result.with_mut(|r| unsafe { *r = Some(value) });
        let before = self.word().fetch_or(FILLED, AcqRel);
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

    /// Does the cell still wait for its fill: neither filled nor left by the handle (which
    /// makes a fill pointless)?
    pub(crate) fn awaits_fill(&self) -> bool {
        self.word().load(Acquire) & (FILLED | DETACHED) == 0
    }

    /// Has the cell been filled? (The handle's `is_finished`.)
    pub(crate) fn is_filled(&self) -> bool {
        self.word().load(Acquire) & FILLED != 0
    }

    /// The joiner's look: the result if it is there; else registers `waiter` (the first time
    /// only: later calls find it registered) and says to wait.
    ///
    /// # Safety
    ///
    /// Called by the handle's one owner, never at the same time as itself or `leave_handle`.
    pub(crate) unsafe fn try_join(&self, waiter: impl FnOnce() -> W) -> Joined<T> {
        let state = self.word().load(Acquire);
        if state & FILLED != 0 {
            // SAFETY: we own the handle's side (our promise) and saw FILLED with an acquire.
            return Joined::Ready(unsafe { self.take_filled() });
        }
        if state & WAITING != 0 {
            return Joined::Waiting;
        }
        // SAFETY: WAITING and FILLED are clear: no filler reads `waiter` until we set
        // WAITING, and only this one owner of the handle writes it.
        self.waiter.with_mut(|w| unsafe { *w = Some(waiter()) });
        match self
            .word()
            .compare_exchange(state, state | WAITING, AcqRel, Acquire)
        {
            Ok(_) => Joined::Waiting,
            // Only a fill changes the state meanwhile (DETACHED is ours to set, and
            // FILLER_GONE follows FILLED or DETACHED): the result is there, and the filler
            // did not see our waiter, which we drop.
            Err(_) => {
                // SAFETY: WAITING never got set, so the filler never read `waiter`.
                drop(self.waiter.with_mut(|w| unsafe { (*w).take() }));
                // SAFETY: as above; the failed CAS read FILLED with an acquire.
                Joined::Ready(unsafe { self.take_filled() })
            }
        }
    }

    /// The handle leaves (is dropped, joined or not): returns the result if it is still
    /// there, for the caller to drop in its own context, and whether the caller is the last
    /// side, which frees the allocation.
    ///
    /// A raw pointer rather than `&self`: a reference argument would stay protected until
    /// this returns, and the filler's side may free the cell as soon as our last
    /// read-modify-write is done (std's `Arc::drop` works from `&AtomicUsize` for the same
    /// reason).
    ///
    /// # Safety
    ///
    /// `this` points to a live cell. Called once, by the handle's one owner, after its last
    /// `try_join`.
    pub(crate) unsafe fn leave_handle(this: *const Self) -> (Option<T>, Last) {
        // SAFETY: live until we leave (the caller's promise); the word is all UnsafeCell.
        let word = unsafe { Self::word_of(this) };
        let mut state = word.load(Acquire);
        loop {
            if state & FILLED != 0 {
                // Taken already if a join found it. Before our leaving: the filler's side
                // may free the cell the moment it sees DETACHED.
                // SAFETY: the cell is live (we have not left). FILLED was set after
                // `result` was written; the filler touches it again only if DETACHED came
                // first, which only we set.
                let result = unsafe { &(*this).result }.with_mut(|r| unsafe { (*r).take() });
                let last =
                    state & FILLER_GONE != 0 || word.fetch_or(DETACHED, AcqRel) & FILLER_GONE != 0;
                return (result, Last(last));
            }
            // Not filled: leave in one step, unless a fill comes in between (then take its
            // result first). The filler's side leaves only after FILLED or DETACHED, so it
            // is still here and frees the cell once it sees our DETACHED.
            match word.compare_exchange_weak(state, state | DETACHED, AcqRel, Acquire) {
                Ok(before) => return (None, Last(before & FILLER_GONE != 0)),
                Err(now) => state = now,
            }
        }
    }

    /// Loom only: what freeing the allocation does to the cells and the word, as loom sees
    /// it: a write, which loom checks against every access not ordered before it (the
    /// models here, and `task.rs`'s free under loom).
    #[cfg(all(test, loom))]
    pub(crate) fn free_for_the_model(&self) {
        self.result.with_mut(|_| ());
        self.waiter.with_mut(|_| ());
        self.alive.with_mut(|_| ());
        self.frees
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Loom only: how many times `free_for_the_model` ran (a plain count, not modelled).
    #[cfg(all(test, loom))]
    pub(crate) fn frees_for_the_model(&self) -> usize {
        self.frees.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The state word, to leave through (`leave_filler`): all the filler's side needs.
    pub(crate) fn word(&self) -> &AtomicUsize {
        // SAFETY: `self` is a live reference.
        unsafe { Self::word_of(self) }
    }

    /// # Safety
    ///
    /// `this` points to a live cell.
    unsafe fn word_of<'a>(this: *const Self) -> &'a AtomicUsize {
        // In the loom models, each reach for the word is checked against the model's free
        // (the loads and RMWs that follow through the same reference are not).
        #[cfg(all(test, loom))]
        // SAFETY: the caller's promise.
        unsafe { &(*this).alive }.with(|_| ());
        // SAFETY: the caller's promise.
        unsafe { &(*this).state }
    }

    /// Takes the result once FILLED has been seen.
    ///
    /// # Safety
    ///
    /// The caller owns the handle's side, has seen FILLED with an acquire, and calls this
    /// once.
    unsafe fn take_filled(&self) -> T {
        // SAFETY: FILLED was set by the filler after it wrote `result`, and the filler
        // touches it again only if DETACHED came first, which only the handle's owner (the
        // caller) sets.
        self.result
            .with_mut(|r| unsafe { (*r).take() })
            .expect("gmp bug: a join cell marked filled holds no result")
    }
}

/// The filler's side leaves a cell through its state word ([`JoinCell::word`]), after the
/// fill (its own or a cancel's) or after the handle left: whether it is the last side,
/// which frees the allocation. A word, not the cell: see [`JoinCell::leave_handle`].
///
/// # Safety
///
/// `word` is a live cell's. Called once per cell, by its filler's side, once the cell was
/// filled or the handle left.
pub(crate) unsafe fn leave_filler(word: &AtomicUsize) -> Last {
    let state = word.load(Acquire);
    debug_assert!(
        state & (FILLED | DETACHED) != 0,
        "the filler's side left a cell that was neither filled nor left by its handle"
    );
    // The handle has left for good (its Release read here): the cell is ours alone.
    if state & DETACHED != 0 {
        return Last(true);
    }
    Last(word.fetch_or(FILLER_GONE, AcqRel) & DETACHED != 0)
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
    fn leave_handle<T>(cell: &JoinCell<T, Flag>) -> (Option<T>, bool) {
        // SAFETY: a live cell (borrowed); one thread; each test leaves a cell once, after
        // its joins, and never frees it.
        let (result, last) = unsafe { JoinCell::leave_handle(cell) };
        (result, last.0)
    }
    fn leave_filler<T>(cell: &JoinCell<T, Flag>) -> bool {
        // SAFETY: as above; each test's filler leaves once, after its fill.
        unsafe { super::leave_filler(cell.word()) }.0
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
        assert_eq!(leave_handle(&cell), (None, false));
        assert!(
            !cell.awaits_fill(),
            "a fill is pointless once the handle left"
        );
        assert_eq!(fill(&cell, "r".into()).as_deref(), Some("r"));
        let cell = JoinCell::<String, Flag>::new();
        assert!(cell.awaits_fill());
        assert!(fill(&cell, "r".into()).is_none());
        assert_eq!(leave_handle(&cell), (Some("r".to_string()), false));
    }

    #[test]
    fn whichever_side_leaves_second_is_last() {
        // The handle first, before the fill and after it; then the filler first.
        let cell = JoinCell::<u32, Flag>::new();
        assert_eq!(leave_handle(&cell), (None, false));
        assert_eq!(fill(&cell, 1), Some(1));
        assert!(leave_filler(&cell), "the filler left second");
        let cell = JoinCell::<u32, Flag>::new();
        assert!(fill(&cell, 1).is_none());
        assert!(matches!(join(&cell, || panic!()), Joined::Ready(1)));
        assert_eq!(leave_handle(&cell), (None, false), "joined: nothing left");
        assert!(leave_filler(&cell));
        let cell = JoinCell::<u32, Flag>::new();
        assert!(fill(&cell, 1).is_none());
        assert!(!leave_filler(&cell));
        assert_eq!(
            leave_handle(&cell),
            (Some(1), true),
            "the handle left second"
        );
    }
}

/// Every interleaving of a filler against a joiner that waits, and against a handle that
/// is dropped: the value reaches exactly one of them, a registered joiner is woken, no cell
/// is touched by two threads at once (loom's `UnsafeCell` checks that), exactly one side
/// is last, and nothing touches a cell after the last side freed it (modelled as writes to
/// both cells, `free_for_the_model`, which loom checks against every unordered access).
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

    /// The filler's side: fills, leaves, frees if last. Returns what it got back, and
    /// whether it was last.
    fn filler<T: Send + 'static>(
        cell: Arc<JoinCell<T, Flag>>,
        value: T,
    ) -> thread::JoinHandle<(Option<T>, bool)> {
        thread::spawn(move || {
            // SAFETY: the model's only filler, leaving once after its fill.
            let back = unsafe { cell.fill(value) };
            // SAFETY: as above; the cell is live until one of us frees it.
            let last = unsafe { leave_filler(cell.word()) }.0;
            if last {
                cell.free_for_the_model();
            }
            (back, last)
        })
    }

    /// The handle leaves; frees if last.
    fn leave_handle<T>(cell: &JoinCell<T, Flag>) -> (Option<T>, bool) {
        // SAFETY: the one owner, once, after its last look; the cell is live until one of
        // us frees it.
        let (result, last) = unsafe { JoinCell::leave_handle(cell) };
        if last.0 {
            cell.free_for_the_model();
        }
        (result, last.0)
    }

    /// The joiner looks again whenever it runs, woken or not (a spurious wake-up, or
    /// `block_on`'s stop check), so it may see the fill while the filler still wakes it.
    #[test]
    fn a_filler_and_a_waiting_joiner() {
        ::loom::model(|| {
            let cell = Arc::new(JoinCell::<u32, Flag>::new());
            let filler = filler(cell.clone(), 5);
            let woken = Arc::new(AtomicBool::new(false));
            let (mut made, mut registered) = (false, false);
            let got = loop {
                // SAFETY: the one owner.
                match unsafe {
                    cell.try_join(|| {
                        assert!(!made, "registered twice");
                        made = true;
                        Flag(woken.clone())
                    })
                } {
                    Joined::Ready(v) => break v,
                    Joined::Waiting => {
                        registered = true;
                        thread::yield_now();
                    }
                }
            };
            assert_eq!(got, 5);
            let (left, handle_last) = leave_handle(&cell);
            assert!(left.is_none(), "a joined result is gone");
            let (back, filler_last) = filler.join().unwrap();
            assert!(back.is_none(), "a joinable result was given back");
            assert!(handle_last != filler_last, "exactly one side must be last");
            if registered {
                assert!(woken.load(SeqCst), "a registered joiner was not woken");
            }
        });
    }

    /// A handle dropped while the filler fills, after a look that registered a waiter
    /// (a joiner that gave up: `block_on` seeing a broken runtime) or without one: the
    /// value goes back to exactly one side, exactly one side is last, and neither touches
    /// a cell the other is using or has freed.
    fn filler_against_a_dropped_handle(register_first: bool) {
        ::loom::model(move || {
            let cell = Arc::new(JoinCell::<Arc<()>, Flag>::new());
            let value = Arc::new(());
            let filler = filler(cell.clone(), value.clone());
            let woken = Arc::new(AtomicBool::new(false));
            let looked = if register_first {
                // SAFETY: the one owner: a look, then its leave.
                unsafe { cell.try_join(|| Flag(woken.clone())) }
            } else {
                Joined::Waiting
            };
            let (handle_got, handle_last) = match looked {
                Joined::Ready(v) => {
                    let (left, last) = leave_handle(&cell);
                    assert!(left.is_none());
                    (Some(v), last)
                }
                Joined::Waiting => leave_handle(&cell),
            };
            let (filler_got, filler_last) = filler.join().unwrap();
            assert!(
                handle_got.is_some() != filler_got.is_some(),
                "the result must go back to exactly one side"
            );
            assert!(handle_last != filler_last, "exactly one side must be last");
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

    /// The G's side as `task.rs` runs it, with the job's function cell `f`: the body takes
    /// `f` and fills (or, never run, leaves it), the body's drop looks at `f` again, then
    /// the runner's drop cancels if the slot still awaits a fill, and leaves. The free
    /// writes `f` too, so loom checks every touch of the G's side against it.
    struct ModelJob {
        f: UnsafeCell<Option<u8>>,
        cell: JoinCell<u32, Flag>,
    }

    impl ModelJob {
        fn free(&self) {
            self.f.with_mut(|_| ());
            self.cell.free_for_the_model();
        }
    }

    fn runner(job: Arc<ModelJob>, run_body: bool) -> thread::JoinHandle<bool> {
        thread::spawn(move || {
            if run_body {
                // SAFETY: `f` is the G's side's alone (`Job::f`).
                let f = job.f.with_mut(|f| unsafe { (*f).take() });
                assert!(f.is_some());
                // SAFETY: the body's one fill; no cancel runs beside it.
                let _back = unsafe { job.cell.fill(5) };
            }
            // The body's drop: discards `f` if still there.
            // SAFETY: as above.
            let _discarded = job.f.with_mut(|f| unsafe { (*f).take() });
            if job.cell.awaits_fill() {
                // SAFETY: the runner's drop cancels after the body is gone.
                let _back = unsafe { job.cell.fill(99) };
            }
            // SAFETY: the runner leaves once, after a fill or the handle's leave; the cell
            // is live until one side frees it.
            let last = unsafe { leave_filler(job.cell.word()) }.0;
            if last {
                job.free();
            }
            last
        })
    }

    fn runner_against_a_handle(run_body: bool, join: bool) {
        ::loom::model(move || {
            let job = Arc::new(ModelJob {
                f: UnsafeCell::new(Some(1)),
                cell: JoinCell::new(),
            });
            let runner = runner(job.clone(), run_body);
            let woken = Arc::new(AtomicBool::new(false));
            if join {
                let got = loop {
                    // SAFETY: the one owner.
                    match unsafe { job.cell.try_join(|| Flag(woken.clone())) } {
                        Joined::Ready(v) => break v,
                        Joined::Waiting => thread::yield_now(),
                    }
                };
                assert_eq!(got, if run_body { 5 } else { 99 });
            }
            let (_left, handle_last) = leave_handle(&job.cell);
            if handle_last {
                job.f.with_mut(|_| ());
            }
            let runner_last = runner.join().unwrap();
            assert!(handle_last != runner_last, "exactly one side must be last");
        });
    }

    #[test]
    fn a_runner_with_its_body_and_cancel_against_a_joiner() {
        runner_against_a_handle(true, true);
        runner_against_a_handle(false, true);
    }

    #[test]
    fn a_runner_with_its_body_and_cancel_against_a_dropped_handle() {
        runner_against_a_handle(true, false);
        runner_against_a_handle(false, false);
    }
}
