//! User destructors that the runtime runs itself: the result of a G nobody joins, and the
//! values on a G's stack when shutdown tears the G down. They never run on g0 or outside
//! every G, where a panic would stop an M and a blocking call would hang it
//! (DESIGN.md "Soundness"; the book's design appendix, "What user code may do at
//! shutdown"). Each test is named after the failure it guards against.
//!
//! A test whose failure is an abort or a hang runs in its own process under a watchdog
//! (`testkit::isolated`), so it fails alone, with a message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gmp::chan::{Receiver, Sender};
use gmp::sync::WaitGroup;
use gmp::{Engine, Runtime};
use testkit::{DEFAULT_LIMIT, watchdog_with};

/// Long enough for a slow CI machine, short enough that a hang is red quickly.
const CHILD_LIMIT: Duration = Duration::from_secs(10);

fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_with(what, DEFAULT_LIMIT, gmp::dump_all, f)
}

/// Yields until `flag` is set by another G (one P: they take turns).
fn yield_until(flag: &AtomicUsize) {
    while flag.load(Ordering::SeqCst) == 0 {
        gmp::yield_now();
    }
}

// ---- S3: the result of a detached G. ----

#[test]
fn a_detached_gs_result_that_panics_on_drop_does_not_stop_the_m() {
    struct PanicOnDrop(Arc<AtomicUsize>);
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            self.0.store(1, Ordering::SeqCst);
            panic!("the result's destructor exploded");
        }
    }
    let after = watched("a detached G whose result panics on drop", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            let dropped = Arc::new(AtomicUsize::new(0));
            let d = dropped.clone();
            // The handle goes at once: nobody can join, so the runtime drops the result.
            drop(gmp::go(move || PanicOnDrop(d)));
            yield_until(&dropped);
            // The only M survived it and still runs Gs.
            gmp::go(|| 7).join().unwrap()
        })
    });
    assert_eq!(after, 7);
}

#[test]
fn a_detached_gs_result_that_blocks_on_drop_does_not_hang_a_one_p_runtime() {
    testkit::isolated(
        "a_detached_gs_result_that_blocks_on_drop_does_not_hang_a_one_p_runtime",
        CHILD_LIMIT,
        "a detached G's result was dropped where a block is fatal",
        || {
            struct SendOnDrop(Sender<u32>, Arc<AtomicUsize>);
            impl Drop for SendOnDrop {
                fn drop(&mut self) {
                    self.1.store(1, Ordering::SeqCst);
                    // Nobody receives yet: this waits for the main G's recv below.
                    self.0.send(5).unwrap();
                }
            }
            let got = Runtime::builder().procs(1).build().unwrap().block_on(|| {
                let (tx, rx) = gmp::chan::rendezvous();
                let started = Arc::new(AtomicUsize::new(0));
                let s = started.clone();
                drop(gmp::go(move || SendOnDrop(tx, s)));
                // Only once the destructor is waiting in send does the main G receive, so
                // the destructor must wait where the one M can still run the main G.
                yield_until(&started);
                rx.recv().unwrap()
            });
            assert_eq!(got, 5);
        },
    );
}

#[test]
fn a_result_is_dropped_by_whoever_drops_the_handle_after_the_g_finished() {
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (before, after) = watched("a handle dropped after its G finished", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let d = drops.clone();
            let h = gmp::go(move || CountDrop(d));
            while !h.is_finished() {
                gmp::yield_now();
            }
            // The result waits in the handle, undropped, until the handle goes.
            let before = drops.load(Ordering::SeqCst);
            drop(h);
            (before, drops.load(Ordering::SeqCst))
        })
    });
    assert_eq!((before, after), (0, 1));
}

#[test]
fn a_detached_gs_result_still_waiting_in_its_destructor_at_shutdown_is_unwound() {
    testkit::isolated(
        "a_detached_gs_result_still_waiting_in_its_destructor_at_shutdown_is_unwound",
        CHILD_LIMIT,
        "a detached G's result destructor blocked an M or the dropping thread",
        || {
            /// The result: its destructor waits for a value that never comes.
            struct RecvOnDrop(Receiver<u32>, Arc<AtomicUsize>);
            impl Drop for RecvOnDrop {
                fn drop(&mut self) {
                    self.1.store(1, Ordering::SeqCst);
                    let _ = self.0.recv();
                    self.1.store(2, Ordering::SeqCst);
                }
            }
            let state = Arc::new(AtomicUsize::new(0));
            let s = state.clone();
            let rt = Runtime::builder()
                .procs(1)
                .engine(Engine::Corosensei)
                .build()
                .unwrap();
            let tx = rt.block_on(move || {
                let (tx, rx) = gmp::chan::rendezvous();
                let waiting = s.clone();
                drop(gmp::go(move || RecvOnDrop(rx, s)));
                yield_until(&waiting);
                tx // kept open past shutdown: the recv never returns by itself
            });
            // The G is parked inside the destructor; shutdown unwinds it from there.
            drop(rt);
            drop(tx);
            assert_eq!(
                state.load(Ordering::SeqCst),
                1,
                "the destructor was unwound at its recv, not resumed past it"
            );
        },
    );
}

// ---- S4: destructors on the stack of a G torn down at shutdown. ----

/// What the destructors below saw, for the child's assertions after `drop(rt)`.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs `guard` as a local of a G that waits forever on a channel, then drops the runtime:
/// shutdown tears the G down and unwinds its stack (corosensei, the engine that unwinds),
/// running `guard`'s destructor. Returns what the destructors recorded and the G's id.
fn tear_down_a_g_holding<D: Send + 'static>(
    guard: impl FnOnce() -> D + Send + 'static,
) -> (Vec<String>, u64) {
    let rt = Runtime::builder()
        .procs(1)
        .engine(Engine::Corosensei)
        .build()
        .unwrap();
    let handle = rt.block_on(move || {
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let (tx, rx) = gmp::chan::rendezvous::<()>();
        let h = gmp::go(move || {
            let _guard = guard();
            let _keep_open = tx;
            s.store(1, Ordering::SeqCst);
            let _ = rx.recv(); // never sent: tx lives in this same frame
        });
        yield_until(&started);
        h
    });
    drop(rt);
    let id = handle.task_id();
    let joined = handle.join().expect_err("the G never finished");
    assert!(
        joined
            .to_string()
            .contains("shut down before this G finished"),
        "{joined}"
    );
    (std::mem::take(&mut *SEEN.lock().unwrap()), id)
}

#[test]
fn a_destructor_that_calls_go_at_shutdown_does_not_abort() {
    testkit::isolated(
        "a_destructor_that_calls_go_at_shutdown_does_not_abort",
        CHILD_LIMIT,
        "a destructor run at shutdown called gmp::go outside every G and panicked while \
         unwinding",
        || {
            /// Captured by the new G's function, which never runs: says as which G it
            /// is dropped.
            struct Captured;
            impl Drop for Captured {
                fn drop(&mut self) {
                    let g = gmp::current().id();
                    SEEN.lock()
                        .unwrap()
                        .push(format!("unstarted function dropped as G {g}"));
                }
            }
            struct GoOnDrop;
            impl Drop for GoOnDrop {
                fn drop(&mut self) {
                    let captured = Captured;
                    let h = gmp::go(move || {
                        let _keep = captured;
                        1
                    });
                    let id = h.task_id();
                    let joined = h.join();
                    SEEN.lock().unwrap().push(match joined {
                        Ok(v) => format!("the new G ran and returned {v}"),
                        Err(p) => format!("G {id}: {p}"),
                    });
                }
            }
            let (seen, _) = tear_down_a_g_holding(|| GoOnDrop);
            assert_eq!(seen.len(), 2, "the destructors ran once each: {seen:?}");
            // The new G never ran: its function was dropped as that G, its join says why.
            let id = seen[1].split(':').next().unwrap_or_default();
            assert_eq!(seen[0], format!("unstarted function dropped as {id}"));
            assert!(
                seen[1].contains("shut down before this G finished"),
                "{seen:?}"
            );
        },
    );
}

#[test]
fn a_destructor_that_sends_at_shutdown_does_not_hang_drop() {
    testkit::isolated(
        "a_destructor_that_sends_at_shutdown_does_not_hang_drop",
        CHILD_LIMIT,
        "a destructor run at shutdown blocked the dropping thread",
        || {
            struct SendOnDrop(Sender<u32>);
            impl Drop for SendOnDrop {
                fn drop(&mut self) {
                    let sent = self.0.send(9);
                    SEEN.lock().unwrap().push(format!("{sent:?}"));
                }
            }
            // The receiver stays alive (here, outside the runtime) but never receives.
            let (tx, rx): (Sender<u32>, Receiver<u32>) = gmp::chan::rendezvous();
            let (seen, _) = tear_down_a_g_holding(move || SendOnDrop(tx));
            drop(rx);
            assert_eq!(seen, ["Err(SendError(..))"], "the send gave its value back");
        },
    );
}

#[test]
fn a_destructor_that_waits_in_each_blocking_call_at_shutdown_returns_from_each() {
    testkit::isolated(
        "a_destructor_that_waits_in_each_blocking_call_at_shutdown_returns_from_each",
        CHILD_LIMIT,
        "a destructor run at shutdown called a G-only function outside every G",
        || {
            struct WaitOnDrop(Receiver<u32>, WaitGroup, Option<gmp::JoinHandle<()>>);
            impl Drop for WaitOnDrop {
                fn drop(&mut self) {
                    let seen = |what: String| SEEN.lock().unwrap().push(what);
                    seen(format!("recv: {:?}", self.0.recv()));
                    self.1.wait();
                    seen("WaitGroup::wait returned".to_string());
                    let joined = self.2.take().map(gmp::JoinHandle::join);
                    let said = joined.map(|j| j.map_err(|p| p.to_string()));
                    let shut_down = matches!(&said, Some(Err(e)) if e.contains("shut down"));
                    seen(format!(
                        "join of a G waiting forever says shut down: {shut_down}"
                    ));
                    gmp::park();
                    seen("park returned".to_string());
                    gmp::yield_now();
                    seen("yield_now returned".to_string());
                    seen(format!("current: G {}", gmp::current().id()));
                }
            }
            // Neither ever comes: the sender lives outside the runtime and never sends,
            // the count never reaches zero.
            let (tx, rx): (Sender<u32>, Receiver<u32>) = gmp::chan::rendezvous();
            let wg = WaitGroup::new();
            wg.add(1);
            let (seen, id) = tear_down_a_g_holding(move || {
                // Another G that waits forever, torn down before or after this one.
                let (tx2, rx2) = gmp::chan::rendezvous::<()>();
                let forever = gmp::go(move || {
                    let _keep_open = tx2;
                    let _ = rx2.recv();
                });
                WaitOnDrop(rx, wg, Some(forever))
            });
            drop(tx);
            assert_eq!(
                seen,
                [
                    "recv: Err(RecvError)".to_string(),
                    "WaitGroup::wait returned".to_string(),
                    "join of a G waiting forever says shut down: true".to_string(),
                    "park returned".to_string(),
                    "yield_now returned".to_string(),
                    format!("current: G {id}"),
                ]
            );
        },
    );
}

// ---- A G that gets no stack: its function is dropped as that G, not on g0. ----

#[test]
fn a_g_that_gets_no_stack_drops_its_function_as_that_g_not_on_g0() {
    let run = testkit::run_in_child(
        "a_g_that_gets_no_stack_drops_its_function_as_that_g_not_on_g0",
        CHILD_LIMIT,
        || {
            /// Captured by the main G's function: waits on a channel nobody receives from,
            /// then panics, as the function is dropped unrun.
            struct SendThenPanic(Sender<u32>);
            impl Drop for SendThenPanic {
                fn drop(&mut self) {
                    let sent = self.0.send(3);
                    let g = gmp::current().id();
                    println!("dropped as G {g}, send said {sent:?}");
                    panic!("the captured value's destructor exploded");
                }
            }
            let (tx, rx): (Sender<u32>, Receiver<u32>) = gmp::chan::rendezvous();
            let guard = SendThenPanic(tx);
            // With no fd free, the stack pool cannot count the process's mappings, so the
            // main G's stack is refused (as `a_count_that_fails_maps_nothing_and_says_why`).
            let mut files = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                files.push(f);
                if files.len() > 100_000 {
                    println!("skipped: the open-file limit is too high to reach");
                    return;
                }
            }
            let rt = Runtime::builder().procs(1).build();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                rt.unwrap().block_on(move || {
                    let _keep = guard;
                })
            }));
            drop(files);
            drop(rx);
            let said = match &ran {
                Ok(()) => "the main G ran".to_string(),
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "a non-string panic".to_string()),
            };
            println!("block_on: {said}");
        },
    );
    assert_eq!(run.signal, None, "the child was killed: {run:?}");
    assert!(run.success, "the child must exit normally: {run:?}");
    if run.output.contains("skipped:") {
        return;
    }
    for needle in [
        "dropped as G 1, send said Err(SendError(..))",
        "the captured value's destructor exploded",
        "block_on: G 1 could not start",
    ] {
        assert!(
            run.output.contains(needle),
            "the function of a G refused a stack must be dropped as that G (G 1), where a \
             send cannot wait and a panic is contained: expected {needle:?} in: {}",
            run.output
        );
    }
    assert!(
        !run.output.contains("panicked on g0"),
        "a destructor ran on g0: {}",
        run.output
    );
}

// ---- Finished G records, kept for reuse, must not keep their runtime alive. ----

/// A runtime dropped while its thread unwinds (a learner's `todo!()` in a test, say) takes
/// the early way out of `Drop for Runtime`. Its Ms still exit; what they kept must go with
/// them. Finished G records hold their runtime, so records kept on an idle P (where they
/// first lived) kept the whole runtime alive: its pool, its G table, its M slots.
#[test]
fn a_runtime_dropped_while_panicking_is_freed_with_its_reusable_g_records() {
    testkit::isolated(
        "a_runtime_dropped_while_panicking_is_freed_with_its_reusable_g_records",
        CHILD_LIMIT,
        "dropping a runtime during a panic crashed",
        || {
            let alive = || !gmp::dump_all().starts_with("no gmp runtime is alive");
            let rt = Runtime::builder().procs(2).build().unwrap();
            rt.block_on(|| {
                for i in 0..100u32 {
                    assert_eq!(gmp::go(move || i).join().unwrap(), i);
                }
            });
            // The M that ran the main G removes it from the G table just after block_on
            // has its result; the panicking drop leaves live Gs alone (it cannot know who
            // still uses them), so wait for that first: this test is about the records.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !rt.dump().contains(" 0 live G(s)") && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let quiet = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _rt = rt;
                panic!("a test failing while it holds a runtime");
            }));
            std::panic::set_hook(quiet);
            assert!(unwound.is_err());
            // The Ms exit on their own threads; give them time (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                !alive(),
                "the runtime outlived its drop by 5 s:\n{}",
                gmp::dump_all()
            );
        },
    );
}
