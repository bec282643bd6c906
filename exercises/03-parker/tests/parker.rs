//! Tests for part 03, `parker`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 3. Everything that could sleep forever runs
//! under a watchdog: a lost wake-up shows up as a red test naming what was stuck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parker::{ParkResult, Parker, futex_wait, futex_wake};
use testkit::{DEFAULT_LIMIT, watchdog};

#[test]
fn step1_futex_wait_returns_at_once_if_the_word_changed() {
    let _outcome = testkit::record!();
    watchdog(
        "futex_wait on a word that is not `expected`",
        DEFAULT_LIMIT,
        || {
            let word = AtomicU32::new(5);
            assert!(
                futex_wait(&word, 4, None),
                "the kernel returns EAGAIN at once: not a timeout"
            );
        },
    );
}

#[test]
fn step1_futex_wait_times_out() {
    let _outcome = testkit::record!();
    let word = AtomicU32::new(0);
    let start = Instant::now();
    let woken = watchdog(
        "futex_wait with a 20 ms timeout",
        DEFAULT_LIMIT,
        move || futex_wait(&word, 0, Some(Duration::from_millis(20))),
    );
    assert!(!woken, "futex_wait returns false when the timeout passed");
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "it returned before the timeout"
    );
}

#[test]
fn step1_futex_wake_wakes_a_sleeper() {
    let _outcome = testkit::record!();
    watchdog(
        "a thread in futex_wait, woken by futex_wake",
        DEFAULT_LIMIT,
        || {
            let word = Arc::new(AtomicU32::new(0));
            let w = word.clone();
            let sleeper = thread::spawn(move || {
                while w.load(Ordering::Acquire) == 0 {
                    futex_wait(&w, 0, None);
                }
            });
            thread::sleep(Duration::from_millis(20)); // let it fall asleep (not required)
            word.store(1, Ordering::Release);
            futex_wake(&word, 1);
            sleeper.join().unwrap();
            assert_eq!(futex_wake(&word, 1), 0, "nobody is left asleep on the word");
        },
    );
}

#[test]
fn step2_unpark_before_park_is_not_lost() {
    let _outcome = testkit::record!();
    watchdog("park after an unpark", DEFAULT_LIMIT, || {
        let p = Parker::new();
        p.unpark();
        p.park(); // must return at once: the token was left for us
    });
}

#[test]
fn step2_unpark_wakes_a_parked_thread() {
    let _outcome = testkit::record!();
    watchdog(
        "a parked thread, unparked from another",
        DEFAULT_LIMIT,
        || {
            let p = Arc::new(Parker::new());
            let done = Arc::new(AtomicU32::new(0));
            let (p2, d2) = (p.clone(), done.clone());
            let t = thread::spawn(move || {
                p2.park();
                d2.store(1, Ordering::SeqCst);
            });
            thread::sleep(Duration::from_millis(20));
            p.unpark();
            t.join().unwrap();
            assert_eq!(done.load(Ordering::SeqCst), 1);
        },
    );
}

/// Two threads hand a turn back and forth, each parking until it is theirs. A lost
/// wake-up leaves both asleep and the watchdog fires; an extra wake-up is harmless because
/// each side re-checks `turn`. Every round is counted on both sides.
///
/// `spin`: how many times a side checks `turn` before it parks. With `Spin::Never` every
/// hand-off is a real sleep and wake. With `Spin::Varied` the spin changes every round
/// (0 to 63 checks), so the unpark often lands just before, during or just after the park,
/// which is where a lost wake-up hides. Returns (rounds seen by ping, by pong, parks).
fn ping_pong(rounds: u64, spin: Spin) -> (u64, u64, u64) {
    let turn = Arc::new(AtomicU64::new(0)); // 2i+1: pong's turn in round i, 2i+2: ping's
    let parkers = Arc::new([Parker::new(), Parker::new()]);
    let parks = Arc::new(AtomicU64::new(0));
    let counter = parks.clone();
    let wait_for = move |turn: &AtomicU64, me: &Parker, want: u64| {
        let spins = match spin {
            Spin::Never => 0,
            Spin::Varied => want % 64,
        };
        for _ in 0..spins {
            if turn.load(Ordering::Acquire) == want {
                return;
            }
            std::hint::spin_loop();
        }
        while turn.load(Ordering::Acquire) != want {
            counter.fetch_add(1, Ordering::Relaxed);
            me.park();
        }
    };
    let (t2, p2, pong_waits) = (turn.clone(), parkers.clone(), wait_for.clone());
    let pong = thread::spawn(move || {
        let mut seen = 0;
        for i in 0..rounds {
            pong_waits(&t2, &p2[1], 2 * i + 1);
            seen += 1;
            t2.store(2 * i + 2, Ordering::Release);
            p2[0].unpark();
        }
        seen
    });
    let mut seen = 0;
    for i in 0..rounds {
        turn.store(2 * i + 1, Ordering::Release);
        parkers[1].unpark();
        wait_for(&turn, &parkers[0], 2 * i + 2);
        seen += 1;
    }
    (seen, pong.join().unwrap(), parks.load(Ordering::Relaxed))
}

#[derive(Clone, Copy)]
enum Spin {
    Never,
    Varied,
}

#[test]
fn step2_ping_pong_loses_no_wake_up() {
    let _outcome = testkit::record!();
    let rounds = 20_000;
    let (ping, pong, _) = watchdog(
        "ping-pong of 20 000 sleeping hand-offs",
        DEFAULT_LIMIT,
        move || ping_pong(rounds, Spin::Never),
    );
    assert_eq!(
        (ping, pong),
        (rounds, rounds),
        "every round seen once on each side"
    );
}

#[test]
fn step2_wake_during_park_a_million_times() {
    let _outcome = testkit::record!();
    let rounds = 1_000_000;
    let limit = Duration::from_secs(60);
    let (ping, pong, parks) = watchdog(
        "10^6 racing hand-offs (unpark during park)",
        limit,
        move || ping_pong(rounds, Spin::Varied),
    );
    assert_eq!(
        (ping, pong),
        (rounds, rounds),
        "every round seen once on each side"
    );
    // A stress that never parks proves nothing; on 2 cores about 1 round in 10 parks.
    assert!(
        parks >= rounds / 100,
        "only {parks} parks in {rounds} rounds: the race was not hit"
    );
}

#[test]
fn step3_park_timeout_times_out_without_a_token() {
    let _outcome = testkit::record!();
    let p = Parker::new();
    let start = Instant::now();
    assert_eq!(
        p.park_timeout(Duration::from_millis(30)),
        ParkResult::TimedOut
    );
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "it returned before its time"
    );
}

#[test]
fn step3_park_timeout_takes_a_token() {
    let _outcome = testkit::record!();
    watchdog(
        "park_timeout(10 s) unparked from another thread",
        DEFAULT_LIMIT,
        || {
            let p = Arc::new(Parker::new());
            let p2 = p.clone();
            let waker = thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                p2.unpark();
            });
            assert_eq!(
                p.park_timeout(Duration::from_secs(10)),
                ParkResult::Unparked
            );
            waker.join().unwrap();
        },
    );
}

#[test]
fn step3_tokens_do_not_count() {
    let _outcome = testkit::record!();
    let p = Parker::new();
    p.unpark();
    p.unpark();
    assert_eq!(
        p.park_timeout(Duration::ZERO),
        ParkResult::Unparked,
        "one token is there"
    );
    assert_eq!(
        p.park_timeout(Duration::from_millis(10)),
        ParkResult::TimedOut,
        "two unparks leave one token, not two"
    );
}

#[test]
fn whole_runtime_fans_out_and_in() {
    let _outcome = testkit::record!();
    let n = 20_000u64;
    let sum = testkit::watchdog_with(
        "gmp runtime running 20 000 tasks on 2 Ps",
        DEFAULT_LIMIT,
        gmp::dump_all,
        move || {
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let hs: Vec<_> = (0..n).map(|i| gmp::go(move || i)).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        },
    );
    assert_eq!(sum, n * (n - 1) / 2);
}

#[test]
fn whole_runtime_wakes_an_idle_m_for_new_work() {
    let _outcome = testkit::record!();
    testkit::watchdog_with(
        "an idle M that should be woken by gmp::go",
        DEFAULT_LIMIT,
        gmp::dump_all,
        || {
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(|| {
                // Give the other M time to find nothing and park (not required).
                thread::sleep(Duration::from_millis(50));
                let flag = Arc::new(AtomicU32::new(0));
                let f = flag.clone();
                let h = gmp::go(move || f.store(1, Ordering::SeqCst));
                // This M does not join, so only the other M can run the task: it must be
                // woken by your unpark.
                while flag.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                h.join().unwrap();
            });
        },
    );
}

#[test]
fn whole_runtime_idle_ms_sleep_in_the_kernel() {
    let _outcome = testkit::record!();
    testkit::watchdog_with(
        "idle Ms going to sleep",
        DEFAULT_LIMIT,
        gmp::dump_all,
        || {
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            let tids = rt.block_on(|| gmp::metrics().unwrap().m_tids);
            // Once idle, each M must be asleep (state S), not spinning (state R).
            for tid in tids {
                let mut state = String::new();
                for _ in 0..200 {
                    let stat =
                        std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
                    // The state is the field after the ")" that closes the thread's name.
                    state = stat
                        .rsplit(')')
                        .next()
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .into();
                    if state == "S" {
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                assert_eq!(
                    state, "S",
                    "idle M (tid {tid}) should sleep in futex_wait, not spin"
                );
            }
        },
    );
}
