//! A cell of the G table that holds one `Arc<T>` (a live G) and is read without a lock.
//!
//! A G enters its cell at spawn and leaves it at its end: one store and one
//! compare-exchange, where a `Mutex<Option<Arc<G>>>` took a lock and an unlock each time
//! (each a locked instruction, some 7 ns here, on the path every G takes). Readers (dumps,
//! shutdown) are rare and may be slow: each holds a [`ReadGuard`] while it looks into
//! cells, and a value taken out of a cell while any guard is held is not dropped but
//! retired, and dropped by the last guard to go. Without a guard a reader could clone an
//! `Arc` whose last count the taker is dropping at that moment.
//!
//! Every way of emptying a cell (`take_if` by the G at its end, `take` and `take_where` at
//! shutdown) hands the cell's count to the readers this way; `take` and `take_where` give
//! their caller a count of its own.
//!
//! Why that is enough. A reader raises the count, then reads each cell with a
//! read-modify-write (a compare-exchange of the value with itself); a taker empties the
//! cell with a compare-exchange, then loads the count. Read-modify-writes of one cell are
//! totally ordered: if the reader's came first, the taker's exchange reads what the reader
//! wrote (acquire after release), so the reader's raise happened before the taker's load,
//! which sees it and retires the value; if the taker's came first, the reader finds the
//! cell empty. A retired value is dropped by whoever, holding the list's lock, sees the
//! count at zero: any reader still holding it raised the count before the value was taken,
//! so the count is not zero until that reader is done. No SeqCst is needed (loom models
//! acquire and release exactly; the models at the end of this file check every
//! interleaving of a taker and a reader, and of a taker and two readers up to three
//! preemptions). The reader pays a locked instruction per cell; readers are dumps and
//! shutdown.
//!
//! Not here: which cell a G gets (`gtable.rs`), the queued cells beside these (`gtable.rs`).

// loom is a dev-dependency: only the lib's own tests take their atomics and lock from it.
#[cfg(all(test, loom))]
use ::loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicPtr, AtomicUsize},
};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
#[cfg(not(all(test, loom)))]
use std::sync::{
    Mutex,
    atomic::{AtomicPtr, AtomicUsize},
};
use std::{mem, ptr};

#[cfg(not(all(test, loom)))]
use crate::lock;

/// `crate::lock` for loom's Mutex.
#[cfg(all(test, loom))]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The readers of a set of cells, and what was taken out of those cells while some read.
pub(crate) struct Readers<T> {
    count: AtomicUsize,
    /// Values taken out while a reader may hold them; dropped when no reader is left.
    /// Nothing panics while it is held (values are dropped after the unlock), so poison
    /// carries no meaning here (`crate::lock`).
    retired: Mutex<Vec<Arc<T>>>,
}

/// A reader's licence to look into the cells of one [`Readers`]: nothing taken out of them
/// is dropped while it lives.
pub(crate) struct ReadGuard<'r, T> {
    readers: &'r Readers<T>,
}

/// One slot: empty, or holding a strong count of a `T` (from `Arc::into_raw`).
pub(crate) struct LiveCell<T> {
    ptr: AtomicPtr<T>,
    /// Owns an `Arc<T>`: `Send` and `Sync` only when an `Arc<T>` is (a bare `AtomicPtr`
    /// would be both for any `T`).
    _owns: PhantomData<Arc<T>>,
}

impl<T> Readers<T> {
    pub(crate) fn new() -> Readers<T> {
        Readers {
            count: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Starts reading the cells that this set of readers guards.
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        self.count.fetch_add(1, AcqRel);
        ReadGuard { readers: self }
    }

    /// A value just taken out of a cell for a caller that keeps it (shutdown): the cell's
    /// count goes through `release`, the caller gets a count of its own.
    fn hand_over(&self, taken: Arc<T>) -> Arc<T> {
        let mine = Arc::clone(&taken);
        self.release(taken);
        mine
    }

    /// A value just taken out of a cell: dropped now if nobody reads, else retired.
    fn release(&self, value: Arc<T>) {
        if self.count.load(Acquire) == 0 {
            drop(value);
        } else {
            self.retire(Some(value));
        }
    }

    /// Adds `value` to the retired list, then drops the whole list if nobody reads now.
    /// Checked under the lock: a value pushed before it cannot be held by a reader that
    /// the count no longer shows (see the top of this file).
    fn retire(&self, value: Option<Arc<T>>) {
        let mut retired = lock(&self.retired);
        retired.extend(value);
        let dead = if self.count.load(Acquire) == 0 {
            mem::take(&mut *retired)
        } else {
            Vec::new()
        };
        drop(retired);
        // Dropped outside the lock: a value's drop may take it (a G's runtime, say).
        drop(dead);
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        if self.readers.count.fetch_sub(1, AcqRel) == 1 {
            self.readers.retire(None);
        }
    }
}

impl<T> LiveCell<T> {
    pub(crate) fn new() -> LiveCell<T> {
        LiveCell {
            ptr: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// Puts `value` in this cell, which must be empty: only the one who was handed the
    /// cell's index (from a free list) fills it.
    pub(crate) fn fill(&self, value: Arc<T>) {
        // A plain store: a swap would cost a locked instruction on every spawn. Were the
        // cell not empty (a bug), its count would leak, never be freed early.
        debug_assert!(
            self.ptr.load(Acquire).is_null(),
            "gmp bug: a live cell filled twice"
        );
        // Release: a reader that finds the pointer sees the value it points to.
        self.ptr.store(Arc::into_raw(value).cast_mut(), Release);
    }

    /// Takes `value` out if this cell holds exactly it; `false` if it does not (a shutdown
    /// took it first, say). The count is dropped now, or by the last of `readers`.
    pub(crate) fn take_if(&self, value: &T, readers: &Readers<T>) -> bool {
        let me = ptr::from_ref(value).cast_mut();
        if self
            .ptr
            .compare_exchange(me, ptr::null_mut(), AcqRel, Acquire)
            .is_err()
        {
            return false;
        }
        // SAFETY: the cell held a count from `Arc::into_raw` (`fill`), and the exchange took
        // it out: it is ours alone now.
        readers.release(unsafe { Arc::from_raw(me) });
        true
    }

    /// Takes whatever this cell holds, without looking at it (shutdown: after the Ms
    /// stopped, or a broken runtime's Gs being left as they are). The cell's count goes
    /// through `readers` as `take_if`'s does (a dump may hold the value right now); the
    /// caller gets a count of its own.
    pub(crate) fn take(&self, readers: &Readers<T>) -> Option<Arc<T>> {
        let raw = self.ptr.swap(ptr::null_mut(), AcqRel);
        // SAFETY: as in `take_if`: the swap took the count out of the cell.
        let taken = (!raw.is_null()).then(|| unsafe { Arc::from_raw(raw) })?;
        Some(readers.hand_over(taken))
    }

    /// What this cell holds, for as long as `guard` reads.
    ///
    /// `guard` must come from the same [`Readers`] that every taker of this cell hands the
    /// cell's count to (`take_if`, `take`, `take_where`; the G table has one): that is what
    /// keeps the value from being dropped.
    pub(crate) fn get<'a>(&self, guard: &'a ReadGuard<'_, T>) -> Option<&'a T> {
        let _ = guard;
        // A read-modify-write, not a load: it is what orders this read against a taker's
        // exchange (see the top of this file).
        let mut raw = self.ptr.load(Acquire);
        while let Err(now) = self.ptr.compare_exchange(raw, raw, AcqRel, Acquire) {
            raw = now;
        }
        // SAFETY: a non-null cell holds a count; every taker hands that count to the same
        // readers (`take_if`, `take`, `take_where`), so one that empties the cell after our
        // exchange sees our guard's count and retires it, dropped only once no guard, `guard`
        // included, is left; the count a taker gives its caller is another one.
        (!raw.is_null()).then(|| unsafe { &*raw })
    }

    /// A new count of what this cell holds, for as long as the caller keeps it.
    pub(crate) fn clone_out(&self, guard: &ReadGuard<'_, T>) -> Option<Arc<T>> {
        let value = self.get(guard)?;
        let raw = ptr::from_ref(value);
        // SAFETY: `raw` came from `Arc::into_raw` and the value is alive (`get`), so taking
        // one more count is allowed.
        unsafe { Arc::increment_strong_count(raw) };
        // SAFETY: the count just taken is ours.
        Some(unsafe { Arc::from_raw(raw) })
    }

    /// Takes the value out if `pick` chooses it, under `guard` (see `get`). As `take`, the
    /// cell's count goes through the guard's readers and the caller gets its own.
    pub(crate) fn take_where(
        &self,
        guard: &ReadGuard<'_, T>,
        pick: impl FnOnce(&T) -> bool,
    ) -> Option<Arc<T>> {
        let value = self.get(guard)?;
        if !pick(value) {
            return None;
        }
        let raw = ptr::from_ref(value).cast_mut();
        // Taken only if it is still there: its owner may have taken it meanwhile.
        self.ptr
            .compare_exchange(raw, ptr::null_mut(), AcqRel, Acquire)
            .ok()?;
        // SAFETY: as in `take_if`.
        let taken = unsafe { Arc::from_raw(raw) };
        Some(guard.readers.hand_over(taken))
    }
}

impl<T> Drop for LiveCell<T> {
    fn drop(&mut self) {
        // `&mut self`: no reader can be looking, nothing to hand to one.
        let raw = self.ptr.swap(ptr::null_mut(), AcqRel);
        if !raw.is_null() {
            // SAFETY: a non-null cell holds a count from `Arc::into_raw` (`fill`).
            drop(unsafe { Arc::from_raw(raw) });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize as StdUsize, Ordering::Relaxed};

    /// A value that knows whether it was dropped, and fails a read after that.
    struct Probe {
        dropped: AtomicBool,
        drops: Arc<StdUsize>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.store(true, Relaxed);
            self.drops.fetch_add(1, Relaxed);
        }
    }

    fn probe(drops: &Arc<StdUsize>) -> Arc<Probe> {
        Arc::new(Probe {
            dropped: AtomicBool::new(false),
            drops: drops.clone(),
        })
    }

    #[test]
    fn a_value_taken_while_a_reader_reads_is_dropped_when_the_reader_goes() {
        let drops = Arc::new(StdUsize::new(0));
        let readers = Readers::new();
        let cell = LiveCell::new();
        let p = probe(&drops);
        cell.fill(p.clone());
        let guard = readers.read();
        let seen = cell.get(&guard).expect("filled");
        assert!(cell.take_if(&p, &readers));
        drop(p);
        assert_eq!(drops.load(Relaxed), 0, "dropped while a reader held it");
        assert!(!seen.dropped.load(Relaxed));
        drop(guard);
        assert_eq!(
            drops.load(Relaxed),
            1,
            "the last reader must drop what was retired"
        );
        assert!(cell.get(&readers.read()).is_none());
    }

    #[test]
    fn take_if_takes_only_the_value_it_names_and_take_where_only_what_pick_chooses() {
        let drops = Arc::new(StdUsize::new(0));
        let readers = Readers::new();
        let cell = LiveCell::new();
        let (a, b) = (probe(&drops), probe(&drops));
        cell.fill(a.clone());
        assert!(
            !cell.take_if(&b, &readers),
            "took a value the cell does not hold"
        );
        let guard = readers.read();
        assert!(cell.take_where(&guard, |_| false).is_none());
        let taken = cell.take_where(&guard, |_| true).expect("picked");
        assert!(Arc::ptr_eq(&taken, &a));
        assert!(!cell.take_if(&a, &readers), "taken twice");
        drop((guard, taken, a, b));
        assert_eq!(drops.load(Relaxed), 2);
    }

    /// Owners fill and take their cells as fast as they can while a reader clones out of
    /// them: the reader never sees a dropped value, and every value is dropped once.
    #[test]
    fn readers_never_see_a_dropped_value_while_owners_churn() {
        const CELLS: usize = 8;
        const ROUNDS: usize = 200_000;
        let drops = Arc::new(StdUsize::new(0));
        let readers = Arc::new(Readers::new());
        let (d, r) = (drops.clone(), readers.clone());
        testkit::watchdog(
            "live cells: owners vs a reader",
            testkit::DEFAULT_LIMIT,
            move || {
                let cells: Vec<LiveCell<Probe>> = (0..CELLS).map(|_| LiveCell::new()).collect();
                let owners_done = AtomicBool::new(false);
                std::thread::scope(|s| {
                    let owners: Vec<_> = (0..2)
                        .map(|owner| {
                            let (cells, readers, drops) = (&cells, &r, &d);
                            s.spawn(move || {
                                for round in 0..ROUNDS {
                                    let cell = &cells[(round % (CELLS / 2)) * 2 + owner];
                                    let p = probe(drops);
                                    cell.fill(p.clone());
                                    assert!(cell.take_if(&p, readers));
                                }
                            })
                        })
                        .collect();
                    s.spawn(|| {
                        while !owners_done.load(Relaxed) {
                            let guard = r.read();
                            for cell in &cells {
                                if let Some(v) = cell.clone_out(&guard) {
                                    assert!(
                                        !v.dropped.load(Relaxed),
                                        "a reader saw a dropped value"
                                    );
                                }
                            }
                        }
                    });
                    for o in owners {
                        o.join().unwrap();
                    }
                    owners_done.store(true, Relaxed);
                });
            },
        );
        assert_eq!(
            drops.load(Relaxed),
            2 * ROUNDS,
            "every value dropped exactly once"
        );
        assert!(
            lock(&readers.retired).is_empty(),
            "a retired value left behind"
        );
    }
}

/// Every interleaving of one owner taking its value out against one reader looking at it:
/// the reader never holds a value that was dropped, and the value is dropped once taken.
/// `RUSTFLAGS="--cfg loom" cargo test -p gmp --release --lib live::loom_model` (see .ci/run).
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use ::loom::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::SeqCst;

    /// Sets a flag outside itself when dropped, so the model checks the flag without
    /// reading a freed probe.
    struct Probe(Arc<AtomicBool>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }

    /// One owner takes its value out while `readers` threads (and the main one) each look
    /// once: no reader holds a dropped value, and the value is dropped in the end.
    fn model(readers_n: usize) {
        let mut builder = ::loom::model::Builder::new();
        // Every interleaving with one reader; with two, those with up to three preemptions
        // (all of them take some 7 minutes; the failure this guards against needs two).
        if readers_n > 1 {
            builder.preemption_bound = Some(3);
        }
        builder.check(move || {
            let dropped = Arc::new(AtomicBool::new(false));
            let readers = Arc::new(Readers::new());
            let cell = Arc::new(LiveCell::new());
            let value = Arc::new(Probe(dropped.clone()));
            cell.fill(value.clone());
            let look = {
                let (readers, cell, dropped) = (readers.clone(), cell.clone(), dropped.clone());
                move || {
                    let guard = readers.read();
                    if cell.get(&guard).is_some() {
                        assert!(!dropped.load(SeqCst), "a reader holds a dropped value");
                    }
                }
            };
            let mut threads = vec![{
                let (readers, cell) = (readers.clone(), cell.clone());
                ::loom::thread::spawn(move || {
                    assert!(
                        cell.take_if(&value, &readers),
                        "the owner's value was taken"
                    );
                    // The owner's own count goes here: then only the cell's (or the
                    // retired list's) count keeps the value.
                })
            }];
            for _ in 1..readers_n {
                threads.push(::loom::thread::spawn(look.clone()));
            }
            look();
            for t in threads {
                t.join().unwrap();
            }
            assert!(dropped.load(SeqCst), "taken, but never dropped");
            assert!(cell.get(&readers.read()).is_none());
        });
    }

    /// Shutdown takes a G whose only count is the table's (`take`, or `take_where` under
    /// its own guard) and drops what it got, while a dump reads: the dump never holds a
    /// dropped value.
    fn model_shutdown(by_pick: bool) {
        ::loom::model(move || {
            let dropped = Arc::new(AtomicBool::new(false));
            let readers = Arc::new(Readers::new());
            let cell = Arc::new(LiveCell::new());
            cell.fill(Arc::new(Probe(dropped.clone())));
            let shutdown = {
                let (readers, cell) = (readers.clone(), cell.clone());
                ::loom::thread::spawn(move || {
                    let taken = if by_pick {
                        cell.take_where(&readers.read(), |_| true)
                    } else {
                        cell.take(&readers)
                    };
                    assert!(taken.is_some(), "shutdown found the cell empty");
                    // Torn down and dropped at once, as `tear_down_mine` does.
                })
            };
            {
                let guard = readers.read();
                if cell.get(&guard).is_some() {
                    assert!(!dropped.load(SeqCst), "a dump holds a dropped value");
                }
            }
            shutdown.join().unwrap();
            assert!(dropped.load(SeqCst), "taken at shutdown, but never dropped");
        });
    }

    #[test]
    fn a_dump_never_holds_a_value_shutdown_took_and_dropped() {
        model_shutdown(false);
    }

    #[test]
    fn a_dump_never_holds_a_value_shutdown_picked_and_dropped() {
        model_shutdown(true);
    }

    #[test]
    fn a_reader_never_holds_a_value_its_owner_dropped() {
        model(1);
    }

    /// Two readers: one may leave (the count at zero) while the other still holds the value.
    #[test]
    fn the_last_reader_to_leave_drops_the_retired_value_not_an_earlier_one() {
        model(2);
    }
}
