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
