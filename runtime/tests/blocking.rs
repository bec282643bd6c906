//! Blocking calls (chapter 9): `gmp::blocking` hands the P on while a call lasts, the M
//! cap is a named error, `gmp::Bound` keeps the thread count near its permits, a panic in a
//! call reaches the G's join and the M carries on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use gmp::{BlockingError, Runtime};
use testkit::{DEFAULT_LIMIT, watchdog_with};

fn watched<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_with(what, DEFAULT_LIMIT, gmp::dump_all, f)
}

/// Waits (on the OS thread: this runs inside a blocking call) until `flag` is set, at most
/// 5 s, so a broken hand-off fails the test rather than hanging it.
fn wait_for(flag: &AtomicBool) {
    let start = Instant::now();
    while !flag.load(SeqCst) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_g_in_a_long_blocking_call_does_not_stop_a_fresh_g_on_the_only_p() {
    let (ran_during_call, retaken) = watched("a blocking call at one P", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let ran = Arc::new(AtomicBool::new(false));
            // Spawned, not started: it is in the P's queue when the call begins, so it can
            // run on whichever M sysmon hands the P to.
            let other = {
                let ran = ran.clone();
                gmp::go(move || ran.store(true, SeqCst))
            };
            let during = {
                let ran = ran.clone();
                gmp::blocking(move || {
                    wait_for(&ran);
                    ran.load(SeqCst)
                })
                .unwrap()
            };
            other.join().unwrap();
            (during, gmp::dump().contains("retake"))
        })
    });
    assert!(
        ran_during_call,
        "the other G did not run during a 5 s blocking call at one P: sysmon must retake the \
         P of a call that lasts and hand it to another M"
    );
    assert!(retaken, "the dump should count sysmon's retakes");
}

/// Runs 100 Gs that each make a 100 ms blocking call at 2 Ps: unbounded, or through a
/// `gmp::Bound` of `n` taken by the spawner before each `go` (chapter 9, "What S1 costs
/// around a call"); returns (OS threads added, Ms started).
fn hundred_calls(bound: Option<usize>) -> (usize, usize) {
    let before = gmp::metrics().unwrap().os_threads as usize;
    let start = Instant::now();
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (during, ms) = rt.block_on(move || {
        let bound = bound.map(|n| gmp::Bound::new(n).unwrap());
        // The spawner keeps its M to itself, so no fresh G makes its call there and holds
        // the spawner up for a whole call (chapter 9, "What S1 costs around a call").
        gmp::lock_os_thread();
        let gs: Vec<_> = (0..100)
            .map(|_| {
                let permit = bound.as_ref().map(|b| b.acquire().unwrap());
                gmp::go(move || {
                    let _permit = permit;
                    gmp::blocking(|| std::thread::sleep(Duration::from_millis(100)))
                })
            })
            .collect();
        for g in gs {
            g.join().unwrap().unwrap();
        }
        // Ms never exit before shutdown, so this counts every thread the run started.
        let m = gmp::metrics().unwrap();
        (m.os_threads as usize, m.m_tids.len())
    });
    drop(rt);
    let added = during - before;
    println!(
        "100 blocking calls of 100 ms at 2 Ps, {}: {added} OS threads added, {ms} Ms, {:?}",
        bound.map_or("unbounded".to_string(), |n| format!(
            "through a Bound of {n}"
        )),
        start.elapsed()
    );
    (added, ms)
}

/// 2 Ps, 8 permits, and sysmon plus a little slack (an M may wait for a P while another
/// is started for a retaken one).
const BOUNDED_MOST: usize = 8 + 2 + 4;

#[test]
fn a_hundred_unbounded_blocking_calls_start_about_a_hundred_threads() {
    testkit::isolated(
        "a_hundred_unbounded_blocking_calls_start_about_a_hundred_threads",
        DEFAULT_LIMIT,
        "the runtime crashed under 100 blocking calls",
        || {
            let (added, ms) = hundred_calls(None);
            assert!(
                ms > BOUNDED_MOST && added > BOUNDED_MOST,
                "100 unbounded 100 ms calls started only {ms} Ms ({added} threads): each call \
                 that lasts should have its P handed to another M, which takes the next G"
            );
        },
    );
}

#[test]
fn a_hundred_blocking_calls_through_a_bound_of_8_stay_near_8_threads() {
    testkit::isolated(
        "a_hundred_blocking_calls_through_a_bound_of_8_stay_near_8_threads",
        DEFAULT_LIMIT,
        "the runtime crashed under 100 bounded blocking calls",
        || {
            let (added, ms) = hundred_calls(Some(8));
            assert!(
                added <= BOUNDED_MOST && ms <= BOUNDED_MOST,
                "100 calls through a Bound of 8 at 2 Ps took {added} OS threads ({ms} Ms); at \
                 most {BOUNDED_MOST}: a G waiting for a permit must park, not hold a thread"
            );
        },
    );
}

#[test]
fn a_call_past_max_threads_is_a_named_error_to_the_calling_g() {
    let refused = watched("a blocking call past max_threads(2)", || {
        let rt = Runtime::builder().procs(1).max_threads(2).build().unwrap();
        rt.block_on(|| {
            let done = Arc::new(AtomicBool::new(false));
            let second = {
                let done = done.clone();
                gmp::go(move || {
                    let r = gmp::blocking(|| ());
                    done.store(true, SeqCst);
                    r
                })
            };
            // The first call holds the only extra M the cap allows until the second ran.
            gmp::blocking(|| wait_for(&done)).unwrap();
            second.join().unwrap()
        })
    });
    let err = refused.expect_err("1 P + 2 calls in flight is past max_threads(2)");
    assert_eq!(
        err,
        BlockingError::TooManyThreads {
            max_threads: 2,
            procs: 1,
            in_flight: 1
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("Builder::max_threads(2)") && msg.contains("gmp::Bound"),
        "{msg}"
    );
}

#[test]
fn max_threads_below_the_p_count_is_refused_at_build() {
    let err = Runtime::builder()
        .procs(2)
        .max_threads(1)
        .build()
        .err()
        .expect("max_threads(1) at 2 Ps must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("Builder::max_threads(1)") && msg.contains("(2)"),
        "{msg}"
    );
}

#[test]
fn a_panic_inside_a_blocking_call_reaches_the_join_and_the_m_carries_on() {
    let (message, after, ms_alive) = watched("a panic in a blocking call", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let failed = gmp::go(|| gmp::blocking(|| panic!("the native call failed")));
            let message = failed
                .join()
                .expect_err("the panic must reach the join")
                .message()
                .unwrap_or_default()
                .to_string();
            let after = gmp::go(|| gmp::blocking(|| 7)).join().unwrap().unwrap();
            let m = gmp::metrics().unwrap();
            let alive = m.m_tids.iter().all(|t| m.task_tids.contains(t));
            (message, after, alive)
        })
    });
    assert!(message.contains("the native call failed"), "{message}");
    assert_eq!(after, 7, "a G after the panic runs its call");
    assert!(
        ms_alive,
        "every M's thread must still run after a G panicked in a call"
    );
}

#[test]
fn blocking_outside_a_g_just_runs_the_call() {
    assert_eq!(gmp::blocking(|| 5), Ok(5));
    let bound = gmp::Bound::new(1).unwrap();
    assert_eq!(bound.blocking(|| 6), Ok(6));
    assert_eq!(bound.available(), 1);
}

#[test]
fn waiting_on_the_runtime_inside_a_blocking_call_is_refused_by_name() {
    let message = watched("a yield inside a blocking call", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            gmp::go(|| gmp::blocking(gmp::yield_now))
                .join()
                .expect_err("a yield in a call must panic")
                .message()
                .unwrap_or_default()
                .to_string()
        })
    });
    assert!(
        message.contains("yield_now inside gmp::blocking"),
        "{message}"
    );
}

#[test]
fn a_bound_of_zero_is_refused_and_its_waiters_park_in_turn() {
    assert!(matches!(
        gmp::Bound::new(0),
        Err(BlockingError::ZeroPermits(_))
    ));
    let (most, done) = watched("30 Gs through a Bound of 2 at 2 Ps", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let bound = gmp::Bound::new(2).unwrap();
            let (now, most, done) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicUsize::new(0)),
            );
            let gs: Vec<_> = (0..30)
                .map(|_| {
                    let (bound, now, most, done) =
                        (bound.clone(), now.clone(), most.clone(), done.clone());
                    gmp::go(move || {
                        bound
                            .blocking(|| {
                                let n = now.fetch_add(1, SeqCst) + 1;
                                most.fetch_max(n, SeqCst);
                                std::thread::sleep(Duration::from_millis(2));
                                now.fetch_sub(1, SeqCst);
                                done.fetch_add(1, SeqCst);
                            })
                            .unwrap()
                    })
                })
                .collect();
            for g in gs {
                g.join().unwrap();
            }
            (most.load(SeqCst), done.load(SeqCst))
        })
    });
    assert_eq!(done, 30, "every G got a permit in turn");
    assert!(most <= 2, "{most} calls ran at once through a Bound of 2");
}

#[test]
fn sysmon_records_the_cpu_quota_only_when_it_chose_the_p_count() {
    let set = watched("quota_procs with procs set", || {
        Runtime::builder()
            .procs(1)
            .build()
            .unwrap()
            .block_on(|| gmp::metrics().unwrap().quota_procs)
    });
    assert_eq!(
        set, 0,
        "a runtime whose P count was set does not follow the quota"
    );
    if std::env::var("GMP_PROCS").is_err() {
        let followed = watched("quota_procs with the default P count", || {
            Runtime::builder()
                .build()
                .unwrap()
                .block_on(|| gmp::metrics().unwrap().quota_procs)
        });
        assert_eq!(followed, gmp::default_procs());
    }
}

/// A destructor that waits on the runtime while a panic unwinds out of a call must not
/// panic again (that would abort the process): the wait returns at once.
#[test]
fn a_destructor_that_yields_while_a_call_unwinds_does_not_abort() {
    struct YieldOnDrop;
    impl Drop for YieldOnDrop {
        fn drop(&mut self) {
            gmp::yield_now();
            gmp::park();
        }
    }
    let message = watched("a yielding destructor in a panicking call", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            gmp::go(|| {
                gmp::blocking(|| {
                    let _guard = YieldOnDrop;
                    panic!("the call failed with a guard alive");
                })
            })
            .join()
            .expect_err("the panic must reach the join")
            .message()
            .unwrap_or_default()
            .to_string()
        })
    });
    assert!(message.contains("guard alive"), "{message}");
}

/// How many waiters `bound`'s Debug lists.
fn waiting(bound: &gmp::Bound) -> usize {
    let text = format!("{bound:?}");
    let (_, tail) = text.split_once(" free, ").expect("Bound's Debug format");
    tail.split(' ').next().unwrap().parse().unwrap()
}

/// Yields until `bound` lists `n` waiters, at most 5 s (then returns, and the test's own
/// assertion says what is wrong).
fn until_waiting(bound: &gmp::Bound, n: usize) {
    let start = Instant::now();
    while waiting(bound) != n && start.elapsed() < Duration::from_secs(5) {
        gmp::yield_now();
    }
}

/// An acquire refused inside a blocking call leaves no waiter behind: else the next
/// permit's wake-up goes to that dead entry and a real waiter starves.
#[test]
fn an_acquire_refused_inside_a_call_leaves_no_stale_waiter() {
    let (served, state) = watched("a Bound after a refused acquire", || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let bound = gmp::Bound::new(1).unwrap();
            let first = bound.acquire().unwrap();
            let b = bound.clone();
            let refused = gmp::go(move || gmp::blocking(|| b.acquire().map(drop))).join();
            assert!(refused.is_err(), "acquire inside gmp::blocking must panic");
            let before = waiting(&bound);
            let done = Arc::new(AtomicBool::new(false));
            let waiter = {
                let (b, done) = (bound.clone(), done.clone());
                gmp::go(move || {
                    let p = b.acquire().unwrap();
                    done.store(true, SeqCst);
                    drop(p);
                })
            };
            until_waiting(&bound, before + 1);
            drop(first);
            let start = Instant::now();
            while !done.load(SeqCst) && start.elapsed() < Duration::from_secs(2) {
                gmp::time::sleep(Duration::from_millis(2));
            }
            let served = done.load(SeqCst);
            let state = format!("{bound:?}");
            if !served {
                // Wake the starved waiter so the runtime can stop and the test report.
                drop(bound.acquire().unwrap());
            }
            waiter.join().unwrap();
            (served, state)
        })
    });
    assert!(
        served,
        "the waiter was not served 2 s after the permit came back ({state}): a stale \
         entry of the refused acquire took its wake-up"
    );
}

/// A woken waiter that finds the permit taken (by an acquire that did not wait) goes back
/// to its place in the line, not to its end.
#[test]
fn bound_waiters_are_served_oldest_first_even_after_a_lost_race() {
    let order = watched("Bound's order", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let bound = gmp::Bound::new(1).unwrap();
            let first = bound.acquire().unwrap();
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut waiters = Vec::new();
            for name in ["A", "B", "C"] {
                let (b, order) = (bound.clone(), order.clone());
                waiters.push(gmp::go(move || {
                    let permit = b.acquire().unwrap();
                    order.lock().unwrap().push(name);
                    drop(permit);
                }));
                until_waiting(&bound, waiters.len());
            }
            // A is woken, but this G (one P: A has not run yet) takes the permit first.
            drop(first);
            let barged = bound.acquire().unwrap();
            until_waiting(&bound, 3);
            drop(barged);
            for w in waiters {
                w.join().unwrap();
            }
            order.lock().unwrap().clone()
        })
    });
    assert_eq!(
        order,
        ["A", "B", "C"],
        "a Bound serves its waiters oldest first"
    );
}

/// More Ps than the thread cap would make every blocking call fail: refused by name.
#[test]
fn set_procs_above_max_threads_is_refused_by_name() {
    let rt = Runtime::builder().procs(1).max_threads(2).build().unwrap();
    let err = rt
        .set_procs(3)
        .expect_err("3 Ps at max_threads(2) must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("set_procs(3)") && msg.contains("max_threads(2)"),
        "{msg}"
    );
    assert_eq!(rt.procs(), 1, "a refused set_procs changes nothing");
    assert_eq!(rt.set_procs(2).unwrap(), 1, "up to the cap is fine");
}

/// A sleep refused inside a call is refused before it arms its timer: no timer is left to
/// wake a G that no longer waits.
#[test]
fn a_sleep_refused_inside_a_call_leaves_no_timer() {
    let (message, dump) = watched("a sleep inside a blocking call", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            let message = gmp::go(|| gmp::blocking(|| gmp::time::sleep(Duration::from_secs(60))))
                .join()
                .expect_err("a sleep in a call must panic")
                .message()
                .unwrap_or_default()
                .to_string();
            (message, gmp::dump())
        })
    });
    assert!(
        message.contains("gmp::time::sleep inside gmp::blocking"),
        "{message}"
    );
    assert!(
        dump.contains("timers: none"),
        "the refused sleep left its timer armed:\n{dump}"
    );
}

/// A call that lasts over a second while a G that started on its M waits to run there (S1)
/// gets a note in the dump: a call that waits for such a G would never end.
#[test]
fn a_long_call_with_gs_waiting_for_its_m_is_noted_in_the_dump() {
    let dump = watched("a long call with a G waiting for its M", || {
        let rt = Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| {
            // Starts on this M, then sleeps: its timer readies it during the call, when
            // only this M may run it.
            let started = gmp::go(|| gmp::time::sleep(Duration::from_millis(20)));
            gmp::yield_now();
            let dump = gmp::blocking(|| {
                std::thread::sleep(Duration::from_millis(1300));
                gmp::dump()
            })
            .unwrap();
            started.join().unwrap();
            dump
        })
    });
    assert!(
        dump.contains("in a blocking call for") && dump.contains("What S1 costs around a call"),
        "no note on the long call:\n{dump}"
    );
}
