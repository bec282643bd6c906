//! The runtime's own tests, on the reference parts (the default build).
//!
//! Every test that could hang runs under a watchdog that prints `gmp::dump_all()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gmp::{BuildError, Runtime, Source};
use testkit::{DEFAULT_LIMIT, watchdog_with};

fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_with(what, DEFAULT_LIMIT, gmp::dump_all, f)
}

#[test]
fn default_build_uses_the_solutions() {
    assert!(
        gmp::PARTS
            .iter()
            .all(|&(_, _, src)| src == Source::Solution),
        "{:?}",
        gmp::PARTS
    );
}

#[test]
fn run_returns_the_main_value() {
    let v = watched("gmp::run", || gmp::run(|| 6 * 7));
    assert_eq!(v, 42);
}

#[test]
fn nested_spawns_join_on_one_p() {
    // One M: every join must run the queued task itself, or it waits forever.
    let total = watched("nested go/join on 1 P", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            fn tree(depth: u32) -> u64 {
                if depth == 0 {
                    return 1;
                }
                let left = gmp::go(move || tree(depth - 1));
                let right = gmp::go(move || tree(depth - 1));
                left.join().unwrap() + right.join().unwrap()
            }
            tree(10)
        })
    });
    assert_eq!(total, 1024);
}

#[test]
fn a_panicking_task_is_contained() {
    let (msg, after) = watched("a panicking task", || {
        Runtime::builder().procs(2).build().unwrap().block_on(|| {
            let err = gmp::go(|| -> u32 { panic!("task exploded") })
                .join()
                .unwrap_err();
            // The M that ran it is still there and still runs tasks.
            let after: u32 = (0..100)
                .map(|i| gmp::go(move || i))
                .map(|h| h.join().unwrap())
                .sum();
            (err.to_string(), after)
        })
    });
    assert!(msg.contains("task exploded"), "{msg}");
    assert_eq!(after, 4950);
}

#[test]
#[should_panic(expected = "main exploded")]
fn a_panicking_main_task_resumes_on_the_caller() {
    watched("a panicking main task", || {
        Runtime::builder()
            .procs(1)
            .build()
            .unwrap()
            .block_on(|| panic!("main exploded"))
    });
}

#[test]
fn queued_tasks_left_at_shutdown_report_it() {
    let handle = watched("shutdown with queued tasks", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        // The main task queues one more and returns its handle without joining.
        let h = rt.block_on(|| gmp::go(|| 1));
        drop(rt);
        h
    });
    // Either the M ran it before shutdown, or the handle says it never ran: never a hang.
    match handle.join() {
        Ok(v) => assert_eq!(v, 1),
        Err(p) => assert!(p.to_string().contains("shut down"), "{p}"),
    }
}

#[test]
fn every_task_runs_exactly_once() {
    let counts = watched("10 000 tasks on 2 Ps", || {
        Runtime::builder().procs(2).build().unwrap().block_on(|| {
            let counts: Arc<Vec<AtomicUsize>> =
                Arc::new((0..10_000).map(|_| AtomicUsize::new(0)).collect());
            let hs: Vec<_> = (0..10_000)
                .map(|i| {
                    let c = counts.clone();
                    gmp::go(move || c[i].fetch_add(1, Ordering::SeqCst))
                })
                .collect();
            hs.into_iter().for_each(|h| {
                h.join().unwrap();
            });
            counts
        })
    });
    assert!(counts.iter().all(|c| c.load(Ordering::SeqCst) == 1));
}

#[test]
fn bad_p_counts_are_clear_errors() {
    for bad in [0, gmp::builder::MAX_PROCS + 1] {
        let err = match Runtime::builder().procs(bad).build() {
            Ok(_) => panic!("{bad} Ps must be refused"),
            Err(e) => e,
        };
        assert!(matches!(err, BuildError::BadProcs { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&bad.to_string()) && msg.contains("1 to"),
            "{msg}"
        );
    }
}

#[test]
#[should_panic(expected = "outside a runtime")]
fn go_outside_a_runtime_says_so() {
    let _ = gmp::go(|| ());
}

#[test]
fn dump_shows_each_m() {
    let dump = watched("dump", || {
        Runtime::builder()
            .procs(2)
            .build()
            .unwrap()
            .block_on(gmp::dump)
    });
    assert!(
        dump.contains("2 P(s)") && dump.contains("M0 tid") && dump.contains("M1 tid"),
        "{dump}"
    );
}

// ---- Stage 1: Gs with stacks (chapter 6). ----

#[test]
fn a_g_waiting_forever_is_torn_down_at_shutdown_and_its_joiner_told() {
    struct SetOnDrop(Arc<AtomicUsize>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let (engine, handle) = watched("shutdown with a G waiting forever", move || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        let h = rt.block_on(move || {
            let (tx, rx) = gmp::chan::rendezvous::<u32>();
            let h = gmp::go(move || {
                let _guard = SetOnDrop(d);
                let _keep_open = tx;
                rx.recv().unwrap() // never sent: tx lives in this same frame
            });
            gmp::yield_now(); // let it start and park
            h
        });
        let engine = rt.engine();
        drop(rt);
        (engine, h)
    });
    let err = handle.join().expect_err("the G never finished");
    assert!(
        err.to_string().contains("shut down before this G finished"),
        "{err}"
    );
    match engine {
        // corosensei unwinds the G's stack, so its locals are dropped.
        gmp::Engine::Corosensei => assert_eq!(dropped.load(Ordering::SeqCst), 1),
        // The asm engine cannot unwind: the stack is leaked and the guard never runs.
        gmp::Engine::Asm => assert_eq!(dropped.load(Ordering::SeqCst), 0),
    }
}

#[test]
fn dump_shows_a_waiting_g_and_its_reason() {
    let dump = watched("dump with a G parked on a channel", || {
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            let (tx, rx) = gmp::chan::rendezvous::<u32>();
            let h = gmp::go(move || rx.recv());
            gmp::yield_now();
            let dump = gmp::dump();
            tx.send(1).unwrap();
            assert_eq!(h.join().unwrap(), Ok(1));
            dump
        })
    });
    assert!(dump.contains("waiting (chan receive)"), "{dump}");
    assert!(dump.contains("running"), "the main G runs the dump: {dump}");
}

#[test]
fn channel_ends_report_the_other_side_gone() {
    let (sent, received) = watched("channels whose other side is dropped", || {
        gmp::run(|| {
            let (tx, rx) = gmp::chan::rendezvous::<u32>();
            drop(rx);
            let sent = tx.send(5);
            let (tx, rx) = gmp::chan::rendezvous::<u32>();
            // A receiver already waiting when the last sender goes.
            let h = gmp::go(move || rx.recv());
            gmp::yield_now();
            drop(tx);
            (sent, h.join().unwrap())
        })
    });
    assert_eq!(sent.unwrap_err().0, 5, "the value comes back");
    assert_eq!(received, Err(gmp::chan::RecvError));
}

#[test]
fn wait_group_done_past_zero_is_a_clear_panic() {
    let msg = watched("WaitGroup::done at zero", || {
        gmp::run(|| {
            gmp::go(|| gmp::sync::WaitGroup::new().done())
                .join()
                .unwrap_err()
                .to_string()
        })
    });
    assert!(
        msg.contains("count at zero") && msg.contains("add(1)"),
        "{msg}"
    );
}

#[test]
fn park_and_current_outside_a_g_say_so() {
    for (what, f) in [("park", gmp::park as fn()), ("yield_now", gmp::yield_now)] {
        let payload = std::panic::catch_unwind(f).expect_err("must panic");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            msg.contains(&format!("gmp::{what} called outside a G")),
            "{msg}"
        );
    }
}

#[test]
fn bad_engine_and_stack_settings_are_clear_errors() {
    let err = Runtime::builder()
        .stack_size(100)
        .build()
        .err()
        .expect("100 bytes is too small");
    let msg = err.to_string();
    assert!(
        msg.contains("Builder::stack_size") && msg.contains("at least"),
        "{msg}"
    );
    if cfg!(not(target_arch = "x86_64")) {
        let err = Runtime::builder().engine(gmp::Engine::Asm).build().err();
        assert!(matches!(err, Some(BuildError::BadEngine { .. })));
    }
}

#[test]
fn a_dead_g_refuses_an_unpark() {
    let err = watched("unpark of a finished G", || {
        // One P: the joined G has switched out for good before the joiner runs again. (On
        // two Ps, join can return while the G is still on its way out, still running.)
        Runtime::builder().procs(1).build().unwrap().block_on(|| {
            let h = gmp::go(gmp::current);
            let g = h.join().unwrap();
            g.unpark().expect_err("the G has finished")
        })
    });
    assert!(err.to_string().contains("dead"), "{err}");
}

#[test]
fn gs_park_and_wake_across_two_ps() {
    let n = 20_000u64;
    let sum = watched("ping-pong between Gs on 2 Ps", move || {
        Runtime::builder()
            .procs(2)
            .build()
            .unwrap()
            .block_on(move || {
                let (tx, rx) = gmp::chan::rendezvous::<u64>();
                let (back_tx, back_rx) = gmp::chan::rendezvous::<u64>();
                gmp::go(move || {
                    while let Ok(v) = rx.recv() {
                        back_tx.send(v).unwrap();
                    }
                });
                (0..n)
                    .map(|i| {
                        tx.send(i).unwrap();
                        back_rx.recv().unwrap()
                    })
                    .sum::<u64>()
            })
    });
    assert_eq!(sum, n * (n - 1) / 2);
}

/// Above this limit, reaching it would take too many Gs (and GiB of RSS) for a test.
const REACHABLE_MAP_LIMIT: usize = 300_000;

#[test]
fn gs_past_the_map_limit_fail_with_the_limit_and_the_process_lives_on() {
    let run = testkit::run_in_child(
        "gs_past_the_map_limit_fail_with_the_limit_and_the_process_lives_on",
        DEFAULT_LIMIT,
        || {
            let room = gmp::map_headroom();
            let n = if room.max_map_count > REACHABLE_MAP_LIMIT {
                1_000
            } else {
                // Guarded stacks take 2 mappings each: this many cannot all fit.
                room.max_map_count / 2 + 1_000
            };
            // Guarded stacks (2 mappings each; the default only before Linux 6.13), one P
            // per CPU.
            let rt = Runtime::builder().guarded_stacks().build().unwrap();
            let (parked, first_error) = rt.block_on(move || {
                let started = Arc::new(AtomicUsize::new(0));
                let (tx, rx) = gmp::chan::rendezvous::<()>();
                let hs: Vec<_> = (0..n)
                    .map(|_| {
                        let (rx, started) = (rx.clone(), started.clone());
                        gmp::go(move || {
                            started.fetch_add(1, Ordering::Relaxed);
                            rx.recv().is_err()
                        })
                    })
                    .collect();
                // Every G either parks in recv or fails to get a stack (and finishes).
                while started.load(Ordering::Relaxed)
                    + hs.iter().filter(|h| h.is_finished()).count()
                    < n
                {
                    gmp::yield_now();
                }
                let parked = started.load(Ordering::Relaxed);
                // With the Gs still holding their stacks, the rest of the process must still
                // get mappings: large buffers (each above malloc's mmap threshold) and threads.
                let buffers: Vec<Vec<u8>> = (0..500).map(|_| vec![0u8; 256 << 10]).collect();
                let threads: Vec<_> = (0..32)
                    .map(|i| std::thread::spawn(move || format!("thread {i}").len()))
                    .collect();
                let spoken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
                assert!(spoken > 0 && buffers.iter().all(|b| b.len() == 256 << 10));
                drop(buffers);
                drop((tx, rx));
                let results: Vec<_> = hs.into_iter().map(|h| h.join()).collect();
                let first_error = results.into_iter().find_map(Result::err);
                (parked, first_error.map(|p| p.to_string()))
            });
            println!(
                "asked {n}, parked {parked}, vm.max_map_count {}, kept {}",
                room.max_map_count, room.kept
            );
            println!("first error: {first_error:?}");
        },
    );
    assert_eq!(run.signal, None, "the child was killed: {run:?}");
    assert!(run.success, "the child must exit normally: {run:?}");
    let (asked, parked) = (run.figure("asked"), run.figure("parked"));
    let (limit, kept) = (run.figure("vm.max_map_count"), run.figure("kept"));
    if limit > REACHABLE_MAP_LIMIT {
        assert_eq!(parked, asked, "{}", run.output);
        assert!(run.output.contains("first error: None"), "{}", run.output);
        return;
    }
    // The stacks stop short of the margin, and do not waste much of the room below it
    // (the test binary itself has a few hundred mappings).
    let fit = (limit - kept) / 2;
    assert!(
        parked <= fit && parked + 1_000 >= fit,
        "expected just under {fit} guarded stacks to fit, {parked} did: {}",
        run.output
    );
    // The message counts the main G's stack too.
    let said = run.figure("out of memory mappings:");
    assert!(
        (parked..=parked + 2).contains(&said),
        "the message says {said} stacks fit, but {parked} Gs parked: {}",
        run.output
    );
    for needle in [
        "could not start",
        "out of memory mappings",
        " guarded stacks fit in this runtime (2 mappings each)",
        &format!("vm.max_map_count = {limit}"),
        &format!("keeps the last {kept}"),
        "slab_stacks()",
        "sysctl -w vm.max_map_count",
    ] {
        assert!(
            run.output.contains(needle),
            "expected {needle:?} in: {}",
            run.output
        );
    }
}

/// Lines of `/proc/self/maps`: the process's mappings now.
fn mappings_now() -> usize {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/self/maps").expect("the test needs /proc");
    // On the stack: near the limit, a heap buffer of megabytes would need a mapping.
    let mut buf = [0u8; 4096];
    let mut lines = 0;
    loop {
        match file.read(&mut buf).expect("reading /proc/self/maps") {
            0 => return lines,
            n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
}

/// Adds about `n` mappings to the process: a reserved range whose pages alternate between
/// two protections (no memory is committed). Never unmapped: the child exits after.
fn add_mappings(n: usize) {
    const PAGE: usize = 4096;
    // SAFETY: a fresh anonymous mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n * PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "cannot reserve {n} pages");
    for i in (1..n).step_by(2) {
        // SAFETY: page `i` of the mapping made above, which nothing uses.
        let rc =
            unsafe { libc::mprotect(p.cast::<u8>().add(i * PAGE).cast(), PAGE, libc::PROT_NONE) };
        assert_eq!(rc, 0, "mprotect of page {i} of {n}");
    }
}

/// Starts Gs that park, until one is refused a stack (or `most` park); returns how many
/// parked and the refusal. The parked Gs are let go before returning.
fn park_until_refused(most: usize) -> (usize, Option<String>) {
    let (tx, rx) = gmp::chan::rendezvous::<()>();
    let mut parked = Vec::new();
    let mut refusal = None;
    for _ in 0..most {
        let rx = rx.clone();
        let h = gmp::go(move || rx.recv().is_err());
        gmp::yield_now(); // one P: the G runs (and parks, or is refused) now
        if h.is_finished() {
            refusal = h.join().err().map(|p| p.to_string());
            break;
        }
        parked.push(h);
    }
    let n = parked.len();
    drop((tx, rx));
    for h in parked {
        let _ = h.join();
    }
    (n, refusal)
}

#[test]
fn credit_from_a_count_does_not_outlast_the_growth_of_the_process() {
    let run = testkit::run_in_child(
        "credit_from_a_count_does_not_outlast_the_growth_of_the_process",
        DEFAULT_LIMIT,
        || {
            let room = gmp::map_headroom();
            let gate = room.max_map_count - room.kept;
            if room.max_map_count > REACHABLE_MAP_LIMIT {
                println!(
                    "skipped: vm.max_map_count {} is too high",
                    room.max_map_count
                );
                return;
            }
            // Guarded: a chunked pool would fit its thousands of stacks in the 100 left.
            let rt = Runtime::builder()
                .procs(1)
                .guarded_stacks()
                .build()
                .unwrap();
            let (most, refusal) = rt.block_on(move || {
                // A count happens now, with the process small...
                gmp::go(|| ()).join().unwrap();
                // ...then the rest of the process grows to 50 guarded stacks below the gate.
                add_mappings(gate - mappings_now() - 100);
                let (_, refusal) = park_until_refused(10_000);
                // The pool keeps what it mapped: its stacks are all still counted.
                (mappings_now(), refusal)
            });
            println!("gate {gate} kept {} most {most}", room.kept);
            println!("refusal: {refusal:?}");
        },
    );
    assert_eq!(run.signal, None, "the child was killed: {run:?}");
    assert!(run.success, "the child must exit normally: {run:?}");
    if run.output.contains("skipped:") {
        return;
    }
    let (gate, kept, most) = (run.figure("gate"), run.figure("kept"), run.figure("most"));
    // One count may have granted at most half the margin before the process grew.
    assert!(
        most <= gate + kept / 2 + 64,
        "the pool mapped on an old count: the process reached {most} mappings, gate {gate}, \
         margin {kept}: {}",
        run.output
    );
    assert!(
        run.output.contains("gmp keeps the last"),
        "expected gmp's own refusal at the margin, not part 05's at the kernel's limit: {}",
        run.output
    );
}

#[test]
fn a_count_that_fails_maps_nothing_and_says_why() {
    let run = testkit::run_in_child(
        "a_count_that_fails_maps_nothing_and_says_why",
        DEFAULT_LIMIT,
        || {
            // A server at its fd limit: /proc/self/maps cannot be opened.
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: libc::RLIM_INFINITY,
            };
            let mut old = lim;
            // SAFETY: plain calls on rlimit records that live on this stack.
            unsafe {
                assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
                let lim = libc::rlimit {
                    rlim_max: old.rlim_max,
                    ..lim
                };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            }
            let mut files = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                files.push(f);
            }
            let ran = std::panic::catch_unwind(|| {
                Runtime::builder()
                    .procs(1)
                    .build()
                    .unwrap()
                    .block_on(|| 6 * 7)
            });
            drop(files);
            match ran {
                Ok(v) => println!("the main G ran and returned {v}"),
                Err(p) => println!(
                    "refused: {}",
                    p.downcast_ref::<String>().map_or("?", String::as_str)
                ),
            }
        },
    );
    assert_eq!(run.signal, None, "the child was killed: {run:?}");
    assert!(run.success, "the child must exit normally: {run:?}");
    for needle in [
        "refused: ",
        "could not start",
        "cannot count this process's memory mappings",
        "/proc/self/maps",
        "open-file limit",
    ] {
        assert!(
            run.output.contains(needle),
            "with no fd free, a count fails and no stack may be mapped: expected {needle:?} \
             in: {}",
            run.output
        );
    }
}

/// The last handle of a runtime dropped inside one of its own Gs: dropping waits for every
/// M, including the one running that G. It must say so by name (std's "failed to join
/// thread: Resource deadlock avoided" came out before, with half the Ms joined).
#[test]
fn a_runtime_dropped_inside_its_own_g_is_a_named_error() {
    use std::sync::Arc;
    let why = testkit::watchdog(
        "a runtime dropped in its own G",
        testkit::DEFAULT_LIMIT,
        || {
            let rt = Arc::new(gmp::Runtime::builder().procs(2).build().unwrap());
            let inner = rt.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            rt.block_on(move || {
                let _detached = gmp::go(move || {
                    // Wait (yielding) until this is the last handle, then drop it here.
                    while Arc::strong_count(&inner) > 1 {
                        gmp::yield_now();
                    }
                    let dropped =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(inner)));
                    let why = dropped
                        .err()
                        .and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let _ = tx.send(why);
                });
            });
            drop(rt);
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .expect("the G that dropped the runtime never reported")
        },
    );
    assert!(
        why.contains("dropped inside one of its own Gs") && why.contains("Drop it outside"),
        "{why}"
    );
}
