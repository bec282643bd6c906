//! Tests for part 03, `parker`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 3. Everything that could sleep forever runs
//! under a progress watchdog (`testkit::watch`): each hand-off ticks it, and a body that
//! makes no progress for 5 s fails naming the step it stalled in, the invariant a stall
//! there breaks (a lost wake-up, most often) and the book section to read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parker::{ParkResult, Parker, futex_wait, futex_wake};
use testkit::{DEFAULT_LIMIT, Progress, Step, watch, watch_with};

// A lost wake-up stalls most tests here, 5 s each: run them side by side so the stalls
// overlap and the whole binary is red in seconds, not 5 s per stall per core.
testkit::side_by_side!();

const STEP1: &str = "ch03-parker.html#step-1";
const STEP2: &str = "ch03-parker.html#step-2";
const STEP3: &str = "ch03-parker.html#step-3";

const WAIT_ON_A_CHANGED_WORD: Step = Step {
    name: "futex_wait on a word that is not `expected`",
    invariant: "futex_wait must return at once when *word != expected: the kernel compares \
                the word before it sleeps (EAGAIN)",
    book: STEP1,
};
const WAIT_WITH_A_TIMEOUT: Step = Step {
    name: "futex_wait with a 20 ms timeout",
    invariant: "futex_wait must hand its timeout to the kernel (a timespec) and return \
                false when it expires",
    book: STEP1,
};
const WAKE_A_SLEEPER: Step = Step {
    name: "a thread asleep in futex_wait, woken by futex_wake",
    invariant: "futex_wake must wake a sleeper on the same word, with the same PRIVATE flag \
                as futex_wait",
    book: STEP1,
};
const TOKEN_BEFORE_PARK: Step = Step {
    name: "park after an unpark on the same thread",
    invariant: "lost wake-up: a token left by unpark before park must make park return at \
                once (NOTIFIED -> EMPTY) instead of sleeping",
    book: STEP2,
};
const HAND_OFF: Step = Step {
    name: "a parked thread waiting for another thread's unpark",
    invariant: "lost wake-up: an unpark came and park never returned. Either unpark found \
                the Parker PARKED and nobody woke it (unpark must futex_wake when the state it \
                replaced was PARKED), or park overwrote the token unpark left (announce PARKED \
                with a compare-exchange from EMPTY, never a plain store)",
    book: STEP2,
};
const TIMED_OUT_PARK: Step = Step {
    name: "park_timeout with no token",
    invariant: "park_timeout must give up at its deadline: sleep in futex_wait with the time \
                that is left, then withdraw PARKED -> EMPTY",
    book: STEP3,
};
const TIMED_PARK_UNPARKED: Step = Step {
    name: "park_timeout(10 s), unparked from another thread after 20 ms",
    invariant: "lost wake-up: park_timeout waits for its deadline instead of returning \
                Unparked. Either unpark found the Parker PARKED and nobody woke it, or \
                park_timeout overwrote the token unpark left (a plain store of PARKED)",
    book: STEP3,
};
const RUNTIME: Step = Step {
    name: "the gmp runtime's Ms sleeping and waking on your Parker",
    invariant: "lost wake-up: an idle M's Parker was PARKED when new work unparked it, and \
                nobody woke it (see the idle Ms and the run queue below)",
    book: STEP2,
};

#[test]
fn step1_futex_wait_returns_at_once_if_the_word_changed() {
    let _outcome = testkit::record!();
    watch(
        "futex_wait on a word that is not `expected`",
        DEFAULT_LIMIT,
        WAIT_ON_A_CHANGED_WORD,
        |_| {
            let word = AtomicU32::new(5);
            assert!(
                futex_wait(&word, 4, None),
                "expected true: the kernel returns EAGAIN at once, which is not a timeout \
                 (book: {STEP1})"
            );
        },
    );
}

#[test]
fn step1_futex_wait_times_out() {
    let _outcome = testkit::record!();
    let word = AtomicU32::new(0);
    let start = Instant::now();
    let woken = watch(
        "futex_wait with a 20 ms timeout",
        DEFAULT_LIMIT,
        WAIT_WITH_A_TIMEOUT,
        move |_| futex_wait(&word, 0, Some(Duration::from_millis(20))),
    );
    assert!(
        !woken,
        "expected false: futex_wait returns false when the timeout passed (ETIMEDOUT) \
         (book: {STEP1})"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "expected at least 20 ms, got {:?}: it returned before the timeout (book: {STEP1})",
        start.elapsed()
    );
}

#[test]
fn step1_futex_wake_wakes_a_sleeper() {
    let _outcome = testkit::record!();
    watch(
        "a thread in futex_wait, woken by futex_wake",
        DEFAULT_LIMIT,
        WAKE_A_SLEEPER,
        |_| {
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
            sleeper.join().expect("the sleeping thread panicked");
            assert_eq!(
                futex_wake(&word, 1),
                0,
                "expected 0 woken: nobody is left asleep on the word (book: {STEP1})"
            );
        },
    );
}

#[test]
fn step2_unpark_before_park_is_not_lost() {
    let _outcome = testkit::record!();
    watch(
        "park after an unpark",
        DEFAULT_LIMIT,
        TOKEN_BEFORE_PARK,
        |_| {
            let p = Parker::new();
            p.unpark();
            p.park(); // must return at once: the token was left for us
        },
    );
}

#[test]
fn step2_unpark_wakes_a_parked_thread() {
    let _outcome = testkit::record!();
    watch(
        "a parked thread, unparked from another",
        DEFAULT_LIMIT,
        HAND_OFF,
        |_| {
            let p = Arc::new(Parker::new());
            let done = Arc::new(AtomicU32::new(0));
            let (p2, d2) = (p.clone(), done.clone());
            let t = thread::spawn(move || {
                p2.park();
                d2.store(1, Ordering::SeqCst);
            });
            thread::sleep(Duration::from_millis(20));
            p.unpark();
            t.join().expect("the parked thread panicked");
            assert_eq!(
                done.load(Ordering::SeqCst),
                1,
                "expected the parked thread to have run on after its park (book: {STEP2})"
            );
        },
    );
}

/// Two threads hand a turn back and forth, each parking until it is theirs. A lost
/// wake-up leaves both asleep and the watchdog fires; an extra wake-up is harmless because
/// each side re-checks `turn`. Every round is counted on both sides and ticks `progress`.
///
/// `spin`: how many times a side checks `turn` before it parks. With `Spin::Never` every
/// hand-off is a real sleep and wake. With `Spin::Varied` the spin changes every round
/// (0 to 63 checks), so the unpark often lands just before, during or just after the park,
/// which is where a lost wake-up hides. Returns (rounds seen by ping, by pong, parks).
/// Ping and pong hand a turn back and forth for at most `rounds` rounds, each parking until
/// the turn is its own. Ping stops early once `enough_parks` parks have happened (the race the
/// test wants has then been hit often enough), so the test's length follows the parks it
/// needs, not the machine's load. Returns (rounds ping saw, rounds pong saw, parks).
fn ping_pong(rounds: u64, enough_parks: u64, spin: Spin, progress: &Progress) -> (u64, u64, u64) {
    // 2i+1: pong's turn in round i, 2i+2: ping's; STOP: pong leaves its loop.
    const STOP: u64 = u64::MAX;
    let turn = Arc::new(AtomicU64::new(0));
    let parkers = Arc::new([Parker::new(), Parker::new()]);
    let parks = Arc::new(AtomicU64::new(0));
    let counter = parks.clone();
    // Returns false when told to stop instead of given the turn.
    let wait_for = move |turn: &AtomicU64, me: &Parker, want: u64| -> bool {
        let spins = match spin {
            Spin::Never => 0,
            Spin::Varied => want % 64,
        };
        for _ in 0..spins {
            match turn.load(Ordering::Acquire) {
                t if t == want => return true,
                STOP => return false,
                _ => std::hint::spin_loop(),
            }
        }
        loop {
            match turn.load(Ordering::Acquire) {
                t if t == want => return true,
                STOP => return false,
                _ => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    me.park();
                }
            }
        }
    };
    let (t2, p2, pong_waits) = (turn.clone(), parkers.clone(), wait_for.clone());
    let pong_progress = progress.clone();
    let pong = thread::spawn(move || {
        let mut seen = 0;
        for i in 0..rounds {
            if !pong_waits(&t2, &p2[1], 2 * i + 1) {
                break;
            }
            seen += 1;
            pong_progress.tick();
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
        progress.tick();
        if parks.load(Ordering::Relaxed) >= enough_parks && i + 1 < rounds {
            turn.store(STOP, Ordering::Release);
            parkers[1].unpark();
            break;
        }
    }
    let pong_seen = pong.join().expect("the pong thread panicked");
    (seen, pong_seen, parks.load(Ordering::Relaxed))
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
    let (ping, pong, _) = watch(
        "ping-pong of 20 000 sleeping hand-offs",
        DEFAULT_LIMIT,
        HAND_OFF,
        move |progress| ping_pong(rounds, u64::MAX, Spin::Never, progress),
    );
    assert_eq!(
        (ping, pong),
        (rounds, rounds),
        "expected every round seen once on each side (book: {STEP2})"
    );
}

#[test]
fn step2_wake_during_park_twenty_thousand_times() {
    let _outcome = testkit::record!();
    // Rounds until 20,000 of them have parked: on 2 idle cores about 1 round in 10 parks, so
    // ~200,000 rounds; a loaded machine parks more often and stops sooner.
    let (max_rounds, enough_parks) = (2_000_000, 20_000);
    // Generous in total for a debug build on a loaded machine; a stall fails in 5 s.
    let limit = Duration::from_secs(90);
    let (ping, pong, parks) = watch(
        "racing hand-offs until 20 000 parks (unpark during park)",
        limit,
        HAND_OFF,
        move |progress| ping_pong(max_rounds, enough_parks, Spin::Varied, progress),
    );
    assert_eq!(
        ping, pong,
        "expected every round seen once on each side (book: {STEP2})"
    );
    // A stress that never parks proves nothing.
    assert!(
        parks >= enough_parks,
        "expected {enough_parks} parks, got {parks} in {ping} rounds: the race was not hit \
         (book: {STEP2})"
    );
}

#[test]
fn step3_park_timeout_times_out_without_a_token() {
    let _outcome = testkit::record!();
    let start = Instant::now();
    let result = watch(
        "park_timeout(30 ms) with no token",
        DEFAULT_LIMIT,
        TIMED_OUT_PARK,
        |_| Parker::new().park_timeout(Duration::from_millis(30)),
    );
    assert_eq!(
        result,
        ParkResult::TimedOut,
        "expected TimedOut: nobody unparked (book: {STEP3})"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "expected at least 30 ms, got {:?}: it returned before its time (book: {STEP3})",
        start.elapsed()
    );
}

#[test]
fn step3_park_timeout_takes_a_token() {
    let _outcome = testkit::record!();
    watch(
        "park_timeout(10 s) unparked from another thread",
        DEFAULT_LIMIT,
        TIMED_PARK_UNPARKED,
        |_| {
            let p = Arc::new(Parker::new());
            let p2 = p.clone();
            let waker = thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                p2.unpark();
            });
            assert_eq!(
                p.park_timeout(Duration::from_secs(10)),
                ParkResult::Unparked,
                "expected Unparked: the unpark came 20 ms in, long before the deadline \
                 (book: {STEP3})"
            );
            waker.join().expect("the waking thread panicked");
        },
    );
}

#[test]
fn step3_tokens_do_not_count() {
    let _outcome = testkit::record!();
    let (first, second) = watch(
        "two unparks, then two park_timeouts",
        DEFAULT_LIMIT,
        TIMED_OUT_PARK,
        |_| {
            let p = Parker::new();
            p.unpark();
            p.unpark();
            let first = p.park_timeout(Duration::ZERO);
            (first, p.park_timeout(Duration::from_millis(10)))
        },
    );
    assert_eq!(
        first,
        ParkResult::Unparked,
        "expected Unparked: one token is there (book: {STEP3})"
    );
    assert_eq!(
        second,
        ParkResult::TimedOut,
        "expected TimedOut: two unparks leave one token, not two (book: {STEP3})"
    );
}

#[test]
fn whole_runtime_fans_out_and_in() {
    let _outcome = testkit::record!();
    let n = 20_000u64;
    let sum = watch_with(
        "gmp runtime running 20 000 tasks on 2 Ps",
        DEFAULT_LIMIT,
        RUNTIME,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let hs: Vec<_> = (0..n).map(|i| gmp::go(move || i)).collect();
                hs.into_iter()
                    .map(|h| {
                        progress.tick();
                        h.join()
                            .expect("a task that returns its number cannot panic")
                    })
                    .sum::<u64>()
            })
        },
    );
    assert_eq!(
        sum,
        n * (n - 1) / 2,
        "expected the sum of 0..{n}: every task ran once (book: {STEP2})"
    );
}

#[test]
fn whole_runtime_wakes_an_idle_m_for_new_work() {
    let _outcome = testkit::record!();
    watch_with(
        "an idle M that should be woken by gmp::go",
        DEFAULT_LIMIT,
        RUNTIME,
        gmp::dump_all,
        |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                // Give the other M time to find nothing and park (not required).
                thread::sleep(Duration::from_millis(50));
                let flag = Arc::new(AtomicU32::new(0));
                let f = flag.clone();
                let h = gmp::go(move || f.store(1, Ordering::SeqCst));
                // This M does not join, so only the other M can run the task: it must be
                // woken by your unpark.
                while flag.load(Ordering::SeqCst) == 0 {
                    if progress.cancelled() {
                        // The watchdog already failed the test: stop burning a core.
                        return;
                    }
                    std::hint::spin_loop();
                }
                h.join().expect("the task only sets a flag");
            });
        },
    );
}

#[test]
fn whole_runtime_idle_ms_sleep_in_the_kernel() {
    let _outcome = testkit::record!();
    watch_with(
        "idle Ms going to sleep",
        DEFAULT_LIMIT,
        RUNTIME,
        gmp::dump_all,
        |progress| {
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            let tids = rt.block_on(|| gmp::metrics().unwrap().m_tids);
            // Once idle, each M must be asleep (state S), not spinning (state R).
            for tid in tids {
                progress.tick();
                let mut state = String::new();
                for _ in 0..200 {
                    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                        .expect("an M's thread is alive while its runtime is");
                    // The state is the field after the ")" that closes the thread's name.
                    state = stat
                        .rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().next())
                        .unwrap_or("?")
                        .into();
                    if state == "S" {
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                assert_eq!(
                    state, "S",
                    "expected idle M (tid {tid}) asleep in futex_wait (S), not spinning \
                     (book: {STEP2})"
                );
            }
        },
    );
}
