//! The M:N scheduler on whole programs: Gs on several Ms, started Gs kept on their M, the
//! shapes of work that need stealing and depth-first order (fork-join, spawn chains).

use std::cell::Cell;

use gmp::Runtime;
use testkit::{DEFAULT_LIMIT, watchdog_with};

fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_with(what, DEFAULT_LIMIT, gmp::dump_all, f)
}

fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// S1: a G that yields inside a `thread_local!`'s `with` still holds `&Cell` into its
/// thread's storage. Stage 1 resumed Gs on any M, so that borrow was used from another
/// thread: a data race in safe code (12.8M increments expected, 8.5M found). Now a started
/// G resumes only on the M that first ran it.
#[test]
fn a_g_that_yields_inside_a_thread_local_borrow_resumes_on_the_same_thread() {
    let (moved, borrowed_elsewhere) = watched("Gs yielding inside thread-local borrows", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let gs: Vec<_> = (0..64)
                .map(|_| {
                    gmp::go(|| {
                        let (mut moved, mut elsewhere) = (0u32, 0u32);
                        COUNT.with(|count| {
                            for _ in 0..200 {
                                let before = tid();
                                count.set(count.get() + 1);
                                gmp::yield_now();
                                moved += u32::from(tid() != before);
                                // The borrow must still be this thread's own cell.
                                let here = COUNT.with(|c| c as *const Cell<u64>);
                                elsewhere += u32::from(!std::ptr::eq(here, count));
                            }
                        });
                        (moved, elsewhere)
                    })
                })
                .collect();
            gs.into_iter()
                .map(|g| g.join().unwrap())
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
    });
    assert_eq!(
        (moved, borrowed_elsewhere),
        (0, 0),
        "started Gs resumed on another thread {moved} times, and used another thread's \
         thread-local {borrowed_elsewhere} times: a started G must stay on its M unless the \
         runtime was built with the unsafe migrate_gs()"
    );
}

fn fib_seq(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_seq(n - 1) + fib_seq(n - 2)
    }
}

/// Nested go/join down to `cutoff`: the fork-join shape of the seeds' divide and conquer.
fn fib(n: u64, cutoff: u64) -> u64 {
    if n <= cutoff {
        return fib_seq(n);
    }
    let a = gmp::go(move || fib(n - 1, cutoff));
    let b = fib(n - 2, cutoff);
    a.join().unwrap() + b
}

#[test]
fn nested_fork_join_finishes_on_default_settings_at_one_and_two_ps() {
    for procs in [1, 2] {
        let got = watched("fib(27) with go/join down to fib(5)", move || {
            Runtime::builder()
                .procs(procs)
                .build()
                .unwrap()
                .block_on(|| fib(27, 5))
        });
        assert_eq!(got, fib_seq(27), "at {procs} P(s)");
    }
}

fn chain(left: u32, done: gmp::chan::Sender<u32>) {
    if left == 0 {
        done.send(0).unwrap();
        return;
    }
    gmp::go(move || chain(left - 1, done));
}

#[test]
fn a_chain_where_each_g_starts_the_next_runs_to_its_end() {
    for procs in [1, 2] {
        let ended = watched("a spawn chain of 100k Gs", move || {
            Runtime::builder()
                .procs(procs)
                .build()
                .unwrap()
                .block_on(|| {
                    let (tx, rx) = gmp::chan::rendezvous::<u32>();
                    gmp::go(move || chain(100_000, tx));
                    rx.recv()
                })
        });
        assert_eq!(ended, Ok(0), "at {procs} P(s)");
    }
}

/// Records the thread its destructor runs on.
struct DropsOn(std::sync::mpsc::Sender<(i32, i32)>, i32);

impl Drop for DropsOn {
    fn drop(&mut self) {
        let _ = self.0.send((self.1, tid()));
    }
}

/// S1 at shutdown: a G left waiting forever is unwound when the runtime is dropped. Its
/// frames may borrow its M's thread-locals, which die with the M's thread: the unwind must
/// happen on that thread, before it ends, not later on the thread dropping the runtime.
#[test]
fn a_started_g_left_waiting_at_shutdown_is_unwound_on_its_own_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = watched("a runtime dropped with Gs parked forever", move || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        let engine = rt.engine();
        rt.block_on(move || {
            let (_keep, never) = gmp::chan::rendezvous::<u8>();
            for _ in 0..8 {
                let (tx, never) = (tx.clone(), never.clone());
                gmp::go(move || {
                    let _guard = DropsOn(tx, tid());
                    let _ = never.recv(); // waits forever
                });
            }
            gmp::yield_now();
            std::mem::forget(_keep); // the channel never closes
        });
        drop(rt);
        engine
    });
    let ran: Vec<(i32, i32)> = rx.try_iter().collect();
    // The asm engine cannot unwind a suspended G: it leaks the stack, and no drop runs.
    if engine == gmp::Engine::Corosensei {
        assert!(!ran.is_empty(), "no parked G was unwound at shutdown");
    }
    for (started, dropped) in ran {
        assert_eq!(
            started, dropped,
            "a G started on thread {started} was unwound on thread {dropped}: its \
             thread-local borrows would outlive their thread"
        );
    }
}

fn ten_thousand_parked_gs_at_two_ps() {
    let before = gmp::metrics().unwrap().os_threads;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let during = rt.block_on(|| {
        let (tx, rx) = gmp::chan::rendezvous::<u8>();
        let gs: Vec<_> = (0..10_000)
            .map(|_| {
                let rx = rx.clone();
                gmp::go(move || rx.recv().is_err())
            })
            .collect();
        for _ in 0..8 {
            gmp::yield_now();
        }
        let during = gmp::metrics().unwrap().os_threads;
        drop((tx, rx));
        assert!(gs.into_iter().all(|g| g.join().unwrap()));
        during
    });
    println!("threads: {before} before the runtime, {during} with 10k Gs parked at 2 Ps");
    assert!(
        during - before <= 2 + 4,
        "10,000 parked Gs at 2 Ps took {} OS threads besides the process's {before}: waiting \
         Gs must not hold threads (at most P + 4)",
        during - before
    );
}

#[test]
fn ten_thousand_parked_gs_hold_no_threads_of_their_own() {
    testkit::isolated(
        "ten_thousand_parked_gs_hold_no_threads_of_their_own",
        DEFAULT_LIMIT,
        "the runtime crashed with 10k parked Gs",
        ten_thousand_parked_gs_at_two_ps,
    );
}

#[test]
fn a_locked_g_keeps_its_thread_to_itself_and_its_new_gs_run_elsewhere() {
    let (locked_tid, child_tids, after) = watched("a G locked to its M at 1 P", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            gmp::lock_os_thread();
            let me = tid();
            let kids: Vec<_> = (0..50).map(|_| gmp::go(tid)).collect();
            let kid_tids: Vec<i32> = kids.into_iter().map(|k| k.join().unwrap()).collect();
            gmp::yield_now();
            let still = tid();
            gmp::unlock_os_thread();
            assert_eq!(still, me, "the locked G moved to another thread");
            (me, kid_tids, gmp::go(tid).join().unwrap())
        })
    });
    assert!(
        child_tids.iter().all(|&t| t != locked_tid),
        "a G started while its parent held lock_os_thread ran on the locked thread {locked_tid}: \
         {child_tids:?}"
    );
    // After the unlock the M takes new Gs again (and at 1 P, one M may run them all).
    assert!(after > 0);
}

/// fib with go/join, recording the threads that ran its leaves.
fn fib_tids(
    n: u64,
    tids: &std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i32>>>,
) -> u64 {
    if n <= 6 {
        tids.lock().unwrap().insert(tid());
        return fib_seq(n);
    }
    let t = tids.clone();
    let a = gmp::go(move || fib_tids(n - 1, &t));
    let b = fib_tids(n - 2, tids);
    a.join().unwrap() + b
}

#[test]
fn set_procs_grows_and_shrinks_the_ps_while_gs_run() {
    let (threads_at_two, after_shrink) = watched("set_procs 1 -> 2 -> 1 with Gs running", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            assert_eq!(
                gmp::set_procs(2).unwrap(),
                1,
                "set_procs returns the count before"
            );
            let tids = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
            // A round takes a few milliseconds, about as long as a new M takes to get
            // going: a few rounds, so a working resize is not failed by a slow thread start.
            for _ in 0..10 {
                assert_eq!(fib_tids(22, &tids), fib_seq(22));
                if tids.lock().unwrap().len() >= 2 {
                    break;
                }
            }
            let threads = tids.lock().unwrap().len();
            assert_eq!(gmp::set_procs(1).unwrap(), 2);
            let again = fib(20, 6);
            assert!(gmp::set_procs(0).is_err(), "0 Ps must be refused");
            (threads, again)
        })
    });
    assert!(
        threads_at_two >= 2,
        "after set_procs(2), fork-join work ran on {threads_at_two} thread(s): the new P found \
         no M"
    );
    assert_eq!(after_shrink, fib_seq(20));
}

/// Blocks the calling M, without a switch, until `flag` is set (or 5 s pass).
fn hold_m_until(flag: &std::sync::atomic::AtomicUsize, value: usize) {
    let start = std::time::Instant::now();
    while flag.load(std::sync::atomic::Ordering::SeqCst) < value
        && start.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// An M whose P `set_procs` retires while its G yields parks with that G in its queue of
/// yielded Gs; the P freed later must go to it (`release_p` looked only at readied Gs, so
/// both Ms slept and the yielding G never ran again).
#[test]
fn gs_yielding_on_ms_whose_ps_are_retired_still_finish() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let tids = watched("Gs yielding on Ms whose Ps set_procs retires", || {
        Runtime::builder().procs(3).build().unwrap().block_on(|| {
            let (started, go_on) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let yielders: Vec<_> = (0..2)
                .map(|_| {
                    let (started, go_on) = (started.clone(), go_on.clone());
                    gmp::go(move || {
                        started.fetch_add(1, SeqCst);
                        // Keep this M until the other yielder runs too: they run on two Ms.
                        hold_m_until(&started, 2);
                        while go_on.load(SeqCst) == 0 {
                            gmp::yield_now();
                        }
                        tid()
                    })
                })
                .collect();
            hold_m_until(&started, 2);
            gmp::set_procs(1).unwrap();
            // Hold this M (and its P) while the yielders' Ms retire theirs.
            std::thread::sleep(std::time::Duration::from_millis(200));
            go_on.store(1, SeqCst);
            let mut tids: Vec<i32> = yielders.into_iter().map(|g| g.join().unwrap()).collect();
            tids.push(tid());
            tids
        })
    });
    assert!(
        tids[0] != tids[1] && tids[0] != tids[2] && tids[1] != tids[2],
        "precondition: the two yielders and the main G ran on three Ms: {tids:?}"
    );
}

/// A G that started on an M before another G locked it runs there and locks and unlocks it
/// too: the M kept one "locked to" G, so that unlock cleared the first G's lock and new Gs
/// ran on its thread.
#[test]
fn a_second_g_locking_and_unlocking_a_locked_m_leaves_the_first_lock_in_place() {
    let (locked_tid, kid_tids) = watched("two Gs lock one M", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            let (tx, rx) = gmp::chan::rendezvous::<()>();
            let second = gmp::go(move || {
                let _ = rx.recv(); // started on the only M, then waits
                gmp::lock_os_thread();
                gmp::unlock_os_thread();
                tid()
            });
            gmp::yield_now(); // the second G starts here and waits
            gmp::lock_os_thread();
            let me = tid();
            tx.send(()).unwrap();
            assert_eq!(
                second.join().unwrap(),
                me,
                "precondition: the second G lives on the locked M"
            );
            let kids: Vec<_> = (0..20).map(|_| gmp::go(tid)).collect();
            let kid_tids: Vec<i32> = kids.into_iter().map(|k| k.join().unwrap()).collect();
            gmp::unlock_os_thread();
            (me, kid_tids)
        })
    });
    assert!(
        kid_tids.iter().all(|&t| t != locked_tid),
        "new Gs ran on the thread {locked_tid} that the main G still holds locked: {kid_tids:?}"
    );
}

/// With the unsafe `migrate_gs`, started Gs move between Ms, but a G that locked its M must
/// still resume only there (every G, locked or not, went to the shared queues).
#[test]
fn a_locked_g_stays_on_its_m_when_gs_migrate() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let moved = watched("a locked G with migrate_gs", || {
        // SAFETY: no G below holds a value tied to its thread across a switch.
        let builder = unsafe { Runtime::builder().procs(2).migrate_gs() };
        builder.build().unwrap().block_on(|| {
            let busy = Arc::new(AtomicBool::new(true));
            let others: Vec<_> = (0..4)
                .map(|_| {
                    let busy = busy.clone();
                    gmp::go(move || {
                        while busy.load(SeqCst) {
                            gmp::yield_now();
                        }
                    })
                })
                .collect();
            let locked = gmp::go(|| {
                gmp::lock_os_thread();
                let me = tid();
                let moved = (0..2000)
                    .filter(|_| {
                        gmp::yield_now();
                        tid() != me
                    })
                    .count();
                gmp::unlock_os_thread();
                moved
            });
            let moved = locked.join().unwrap();
            busy.store(false, SeqCst);
            others.into_iter().for_each(|o| o.join().unwrap());
            moved
        })
    });
    assert_eq!(
        moved, 0,
        "a locked G resumed on another thread {moved} times"
    );
}

#[test]
fn a_locked_g_that_yields_until_its_child_ran_finishes_at_one_p() {
    let ran = watched("a locked G yielding for its child at 1 P", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            gmp::lock_os_thread();
            let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let f = flag.clone();
            let child = gmp::go(move || f.store(true, std::sync::atomic::Ordering::SeqCst));
            // The child may not run on this locked M: the P must go to another M for it.
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                gmp::yield_now();
            }
            gmp::unlock_os_thread();
            child.join().is_ok()
        })
    });
    assert!(ran);
}

/// G records are reused (a P's free list, Go's `gFree`), but only those nobody else holds:
/// a handle kept to a finished G must still see that G finished, never the G that would
/// reuse its record. And ids, taken by each P in batches, stay unique across Ps.
#[test]
fn a_handle_to_a_finished_g_never_reaches_a_g_that_reuses_records_and_ids_stay_unique() {
    let (stale_wakes, ids, unique) = watched("Gs reusing finished G records", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            // Handles of finished Gs, kept while thousands more Gs start and end.
            let kept: Vec<gmp::GHandle> = (0..64)
                .map(|_| gmp::go(gmp::current).join().unwrap())
                .collect();
            let ids: Vec<u64> = (0..200)
                .map(|_| {
                    (0..50)
                        .map(|_| gmp::go(|| gmp::current().id()))
                        .collect::<Vec<_>>()
                })
                .flat_map(|batch| batch.into_iter().map(|h| h.join().unwrap()))
                .collect();
            // A stale handle that reached a live G would wake it: `Ok` instead of the
            // error for a finished G.
            let stale_wakes = kept.iter().filter(|h| h.unpark().is_ok()).count();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            (stale_wakes, ids.len(), sorted.len())
        })
    });
    assert_eq!(
        stale_wakes, 0,
        "{stale_wakes} handles of finished Gs woke a live G: a G record was reused while \
         a handle still held it"
    );
    assert_eq!(
        unique, ids,
        "G ids repeated: {ids} Gs, {unique} distinct ids"
    );
}
