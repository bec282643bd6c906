//! Tests for part 06, `g`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 6; `whole_runtime_…` tests run Gs in the gmp
//! runtime built on your part. Anything that could wait forever runs under a progress
//! watchdog (`testkit::watch`): a body that makes no progress for 5 s fails naming the step
//! it stalled in, the invariant a stall there breaks and the book section to read.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use g::{AfterPark, GState, Ready, ReadyError, Status, WaitReason};
use testkit::{DEFAULT_LIMIT, Step, watch_with};

// A lost wake-up stalls most tests here, 5 s each: run them side by side so the stalls
// overlap and the whole binary is red in seconds, not 5 s per stall per core.
testkit::side_by_side!();

const STEP1: &str = "ch06-g.html#step-1";
const STEP2: &str = "ch06-g.html#step-2";
const STEP3: &str = "ch06-g.html#step-3";

const REQUEUE: Step = Step {
    name: "g0 waiting for the parked G 1 to reach the run queue",
    invariant: "lost wake-up: G 1 readied while parking and never requeued (ready() on a \
                parking G must leave it readied-while-parking, and parked() must then say \
                Requeue; ready() on a waiting G must say Enqueue)",
    book: STEP3,
};
const RUNTIME_PARK: Step = Step {
    name: "Gs in the gmp runtime parking and being readied",
    invariant: "lost wake-up: a G readied while parking and never requeued, or readied while \
                waiting and not queued (see each G's state below)",
    book: STEP3,
};

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("this call must panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".to_string()
    }
}

fn assert_names(msg: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            msg.contains(needle),
            "expected the message to mention {needle:?}, got: {msg} (book: ch06-g.html#step-1)"
        );
    }
    assert!(
        !msg.contains("not yet implemented"),
        "expected your own message, got the skeleton's todo!(): {msg}"
    );
}

#[test]
fn step1_a_new_g_is_runnable_and_keeps_its_id() {
    let _outcome = testkit::record!();
    let g = GState::new(42);
    assert_eq!(g.id(), 42, "expected the id given to new (book: {STEP1})");
    assert_eq!(
        g.status(),
        Status::Runnable,
        "expected a new G runnable (book: {STEP1})"
    );
    assert!(
        !g.has_token(),
        "expected no token on a new G (book: {STEP1})"
    );
}

#[test]
fn step1_run_yield_run_exit() {
    let _outcome = testkit::record!();
    let g = GState::new(1);
    g.run();
    assert_eq!(
        g.status(),
        Status::Running,
        "expected running after run (book: {STEP1})"
    );
    g.yielded();
    assert_eq!(
        g.status(),
        Status::Runnable,
        "expected runnable after yielded (book: {STEP1})"
    );
    g.run();
    assert_eq!(
        g.status(),
        Status::Running,
        "expected running after the second run (book: {STEP1})"
    );
    g.exit();
    assert_eq!(
        g.status(),
        Status::Dead,
        "expected dead after exit (book: {STEP1})"
    );
}

#[test]
fn step1_running_a_g_twice_panics_naming_the_function_the_g_and_both_states() {
    let _outcome = testkit::record!();
    let g = GState::new(7);
    g.run();
    let msg = panic_message(|| g.run());
    assert_names(&msg, &["GState::run", "G 7", "running", "runnable"]);
    assert_eq!(
        g.status(),
        Status::Running,
        "expected still running: a refused transition changes nothing (book: {STEP1})"
    );
}

#[test]
fn step1_exit_and_yield_need_a_running_g() {
    let _outcome = testkit::record!();
    let g = GState::new(8);
    let msg = panic_message(|| g.exit());
    assert_names(&msg, &["GState::exit", "G 8", "runnable", "running"]);
    let msg = panic_message(|| g.yielded());
    assert_names(&msg, &["GState::yielded", "G 8", "runnable"]);
    g.run();
    g.exit();
    let msg = panic_message(|| g.run());
    assert_names(&msg, &["GState::run", "G 8", "dead"]);
}

#[test]
fn step2_park_goes_through_parking_to_waiting_with_its_reason() {
    let _outcome = testkit::record!();
    let g = GState::new(2);
    g.run();
    assert!(
        g.park(WaitReason::ChanRecv),
        "expected true: no token, so the G must switch out (book: {STEP2})"
    );
    assert_eq!(
        g.status(),
        Status::Parking(WaitReason::ChanRecv),
        "expected parking with its reason after park (book: {STEP2})"
    );
    assert_eq!(
        g.parked(),
        AfterPark::Waiting,
        "expected Waiting: nobody readied it while it parked (book: {STEP2})"
    );
    assert_eq!(
        g.status(),
        Status::Waiting(WaitReason::ChanRecv),
        "expected waiting with its reason after parked (book: {STEP2})"
    );
}

#[test]
fn step2_every_wait_reason_survives_the_round_trip() {
    let _outcome = testkit::record!();
    for reason in [
        WaitReason::Park,
        WaitReason::Join,
        WaitReason::ChanSend,
        WaitReason::ChanRecv,
        WaitReason::WaitGroup,
        WaitReason::Sleep,
    ] {
        let g = GState::new(3);
        g.run();
        assert!(g.park(reason), "expected true: no token (book: {STEP2})");
        assert_eq!(
            g.status(),
            Status::Parking(reason),
            "expected the reason kept while parking (book: {STEP2})"
        );
        g.parked();
        assert_eq!(
            g.status(),
            Status::Waiting(reason),
            "expected the reason kept while waiting (book: {STEP2})"
        );
    }
}

#[test]
fn step2_park_and_parked_refuse_the_wrong_state() {
    let _outcome = testkit::record!();
    let g = GState::new(4);
    let msg = panic_message(|| {
        g.park(WaitReason::Park);
    });
    assert_names(&msg, &["GState::park", "G 4", "runnable"]);
    g.run();
    let msg = panic_message(|| {
        g.parked();
    });
    assert_names(&msg, &["GState::parked", "G 4", "running", "parking"]);
}

#[test]
fn step3_ready_wakes_a_waiting_g_and_the_caller_queues_it() {
    let _outcome = testkit::record!();
    let g = GState::new(5);
    g.run();
    assert!(
        g.park(WaitReason::Join),
        "expected true: no token (book: {STEP2})"
    );
    g.parked();
    assert_eq!(
        g.ready(),
        Ok(Ready::Enqueue),
        "expected Enqueue: the G was waiting, so the waker queues it (book: {STEP3})"
    );
    assert_eq!(
        g.status(),
        Status::Runnable,
        "expected runnable after ready (book: {STEP3})"
    );
    assert_eq!(
        g.ready(),
        Ok(Ready::Pending),
        "expected Pending: a second wake-up before it runs must not queue it again \
         (book: {STEP3})"
    );
    g.run();
}

#[test]
fn step3_ready_on_a_running_g_leaves_a_token_for_its_next_park() {
    let _outcome = testkit::record!();
    let g = GState::new(6);
    g.run();
    assert_eq!(
        g.ready(),
        Ok(Ready::Pending),
        "expected Pending: a running G is not queued (book: {STEP3})"
    );
    assert!(
        g.has_token(),
        "expected a token left for the next park (book: {STEP3})"
    );
    assert!(
        !g.park(WaitReason::Park),
        "expected false: the token was there, so park must not switch out (book: {STEP3})"
    );
    assert!(
        !g.has_token(),
        "expected no token: park consumes it (book: {STEP3})"
    );
    assert_eq!(
        g.status(),
        Status::Running,
        "expected still running after a park that found a token (book: {STEP3})"
    );
    assert!(
        g.park(WaitReason::Park),
        "expected true: no token now, so this park switches out (book: {STEP3})"
    );
}

#[test]
fn step3_a_token_survives_a_yield() {
    let _outcome = testkit::record!();
    let g = GState::new(9);
    g.run();
    g.ready()
        .expect("expected Ok: a running G takes a wake-up (book: ch06-g.html#step-3)");
    g.yielded();
    g.run();
    assert!(
        !g.park(WaitReason::Park),
        "expected false: a wake-up that arrived before the yield is still owed \
         (book: {STEP3})"
    );
}

#[test]
fn step3_ready_while_parking_is_requeued_by_the_scheduler() {
    let _outcome = testkit::record!();
    let g = GState::new(10);
    g.run();
    assert!(
        g.park(WaitReason::ChanSend),
        "expected true: no token (book: {STEP2})"
    );
    assert_eq!(
        g.ready(),
        Ok(Ready::Pending),
        "expected Pending: the G is still on its stack, so the waker must not queue it \
         (book: {STEP3})"
    );
    assert_eq!(
        g.status(),
        Status::ReadiedWhileParking(WaitReason::ChanSend),
        "expected readied while parking: a ready() during the park must be remembered for \
         g0, or the wake-up is lost (book: {STEP3})"
    );
    assert_eq!(
        g.ready(),
        Ok(Ready::Pending),
        "expected Pending: two wake-ups, one requeue (book: {STEP3})"
    );
    assert_eq!(
        g.parked(),
        AfterPark::Requeue,
        "expected Requeue: the G was readied while parking, so g0 must queue it \
         (book: {STEP3})"
    );
    assert_eq!(
        g.status(),
        Status::Runnable,
        "expected runnable after parked said Requeue (book: {STEP3})"
    );
    g.run();
}

#[test]
fn step3_a_dead_g_refuses_a_wake_up_with_a_clear_error() {
    let _outcome = testkit::record!();
    let g = GState::new(11);
    g.run();
    g.exit();
    let err = g
        .ready()
        .expect_err("expected Err: a dead G refuses a wake-up (book: ch06-g.html#step-3)");
    assert_eq!(
        err,
        ReadyError::Dead { g: 11 },
        "expected ReadyError::Dead naming G 11 (book: {STEP3})"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("G 11") && msg.contains("dead"),
        "expected the message to name G 11 and say it is dead, got: {msg} (book: {STEP3})"
    );
}

/// The race the protocol exists for. One thread plays a G and its M's g0: the G publishes
/// "wake me for round r", waits a little, parks; g0 then finishes the park and waits for the
/// G to show up in the run queue. Another thread readies the G as soon as round r is
/// published, so its `ready` lands while the G is running, parking or waiting.
///
/// Lost wake-up: the G never reaches the queue and the watchdog fires. Double run: `run`
/// panics, or the queue receives the G twice.
#[test]
fn step3_a_million_park_ready_races_lose_nothing_and_run_nothing_twice() {
    let _outcome = testkit::record!();
    const ROUNDS: u64 = 1_000_000;

    struct Shared {
        g: GState,
        published: AtomicU64,
        readied: AtomicU64,
        runq: Mutex<VecDeque<u64>>,
        queued: AtomicBool,
        stop: AtomicBool,
    }
    let shared = Arc::new(Shared {
        g: GState::new(1),
        published: AtomicU64::new(0),
        readied: AtomicU64::new(0),
        runq: Mutex::new(VecDeque::new()),
        queued: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let enqueue = |s: &Shared, who: &str| {
        assert!(
            !s.queued.swap(true, SeqCst),
            "{who} queued G 1, but it was already in the run queue: queued twice; expected \
             exactly one party to queue it per wake-up (book: ch06-g.html#step-3)"
        );
        s.runq.lock().unwrap().push_back(1);
    };
    let for_dump = shared.clone();
    let diagnose = move || {
        format!(
            "round published {}, round readied {}, {:?}, run queue {:?}",
            for_dump.published.load(SeqCst),
            for_dump.readied.load(SeqCst),
            for_dump.g,
            for_dump.runq.lock().unwrap()
        )
    };

    // Generous in total for a debug build on a loaded machine; a stall fails in 5 s.
    let counts = watch_with(
        "a G parking 10^6 times while another thread readies it",
        Duration::from_secs(120),
        REQUEUE,
        diagnose,
        move |progress| {
            let s = shared.clone();
            let waker_progress = progress.clone();
            let waker = thread::spawn(move || {
                for round in 1..=ROUNDS {
                    let mut spins = 0u32;
                    while s.published.load(SeqCst) < round {
                        // Done, or the watchdog already failed the test: stop spinning.
                        if s.stop.load(SeqCst) || waker_progress.cancelled() {
                            return;
                        }
                        spins += 1;
                        if spins > 200 {
                            thread::yield_now();
                        }
                    }
                    s.readied.store(round, SeqCst);
                    match s.g.ready() {
                        Ok(Ready::Enqueue) => enqueue(&s, "the waker"),
                        Ok(Ready::Pending) => {}
                        Err(e) => {
                            panic!("round {round}: expected the G alive, got: {e} (book: {STEP3})")
                        }
                    }
                }
            });

            let s = &*shared;
            // [token, readied while parking, waiting]: which of the three cases each round hit.
            let mut cases = [0u64; 3];
            s.g.run();
            for round in 1..=ROUNDS {
                progress.tick();
                // The G: publish, dawdle a varying while (so the ready lands in every
                // phase), then park.
                s.published.store(round, SeqCst);
                for _ in 0..(round % 7) * 8 {
                    std::hint::spin_loop();
                }
                if !s.g.park(WaitReason::Park) {
                    cases[0] += 1;
                } else {
                    // g0, after the switch-out.
                    for _ in 0..(round % 5) * 8 {
                        std::hint::spin_loop();
                    }
                    match s.g.parked() {
                        AfterPark::Requeue => {
                            cases[1] += 1;
                            enqueue(s, "g0");
                        }
                        AfterPark::Waiting => cases[2] += 1,
                    }
                    // The scheduler loop: wait for the G to be queued, then run it.
                    let mut spins = 0u32;
                    loop {
                        if let Some(id) = s.runq.lock().unwrap().pop_front() {
                            assert_eq!(id, 1, "expected G 1, the only G, in the queue");
                            s.queued.store(false, SeqCst);
                            break;
                        }
                        if progress.cancelled() {
                            // A lost wake-up: the watchdog already failed the test. Stop
                            // this loop and the waker's, or both spin under later tests.
                            s.stop.store(true, SeqCst);
                            return cases;
                        }
                        spins += 1;
                        if spins > 200 {
                            thread::yield_now();
                        }
                    }
                    s.g.run();
                }
                assert_eq!(
                    s.readied.load(SeqCst),
                    round,
                    "expected the G to wake in round {round} only after its wake-up was sent \
                     (book: {STEP3})"
                );
            }
            s.stop.store(true, SeqCst);
            waker.join().expect("the waker thread panicked");
            assert!(
                s.runq.lock().unwrap().is_empty(),
                "expected an empty run queue at the end: a G was left over, queued once too \
                 often (book: {STEP3})"
            );
            cases
        },
    );
    assert_eq!(
        counts.iter().sum::<u64>(),
        ROUNDS,
        "expected every round to end in exactly one of the three cases (book: {STEP3})"
    );
    println!("token / readied while parking / waiting: {counts:?}");
    // The test is only worth something if the ready really landed in each phase. That
    // takes two CPUs: on one, the waker runs only when the G's thread is preempted.
    if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("one CPU: the phases the readies landed in are not checked");
        return;
    }
    for (case, n) in ["running (token)", "parking", "waiting"].iter().zip(counts) {
        assert!(
            n > 0,
            "expected at least one round with its ready landing while the G was {case}, got \
             {counts:?}: the race was not hit (book: {STEP3})"
        );
    }
}

#[test]
fn whole_runtime_park_and_unpark_a_g_from_an_os_thread() {
    let _outcome = testkit::record!();
    let n = 20_000u64;
    let woken = watch_with(
        "Gs parked with gmp::park, woken by gmp::GHandle::unpark from an OS thread",
        DEFAULT_LIMIT,
        RUNTIME_PARK,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(move || {
                let (tx, rx) = std::sync::mpsc::channel::<(gmp::GHandle, Arc<AtomicBool>)>();
                let waker = thread::spawn(move || {
                    for (g, flag) in rx {
                        flag.store(true, SeqCst);
                        g.unpark()
                            .expect("the main G is alive until every wake-up is sent");
                    }
                });
                let mut woken = 0u64;
                for _ in 0..n {
                    let flag = Arc::new(AtomicBool::new(false));
                    tx.send((gmp::current(), flag.clone())).unwrap();
                    while !flag.load(SeqCst) {
                        gmp::park();
                    }
                    woken += 1;
                    progress.tick();
                }
                drop(tx);
                waker.join().unwrap();
                woken
            })
        },
    );
    assert_eq!(
        woken, n,
        "expected every park to end by its own wake-up (book: {STEP3})"
    );
}

#[test]
fn whole_runtime_ping_pong_between_two_gs_on_one_p() {
    let _outcome = testkit::record!();
    let rounds = 10_000u64;
    let sum = watch_with(
        "two Gs passing a counter over rendezvous channels on one P",
        DEFAULT_LIMIT,
        RUNTIME_PARK,
        gmp::dump_all,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(move || {
                let (ping_tx, ping_rx) = gmp::chan::rendezvous::<u64>();
                let (pong_tx, pong_rx) = gmp::chan::rendezvous::<u64>();
                let echo = gmp::go(move || {
                    let mut seen = 0;
                    while let Ok(v) = ping_rx.recv() {
                        pong_tx.send(v + 1).unwrap();
                        seen += 1;
                    }
                    seen
                });
                let mut v = 0;
                for _ in 0..rounds {
                    ping_tx.send(v).expect("the echo G keeps receiving");
                    v = pong_rx.recv().expect("the echo G answers every ping");
                    progress.tick();
                }
                drop(ping_tx);
                assert_eq!(
                    echo.join().expect("the echo G only echoes"),
                    rounds,
                    "expected the echo G to see every round (book: {STEP3})"
                );
                v
            })
        },
    );
    assert_eq!(
        sum, rounds,
        "expected the counter to come back {rounds} times (book: {STEP3})"
    );
}

#[test]
fn whole_runtime_yield_interleaves_gs_on_one_p() {
    let _outcome = testkit::record!();
    let order = watch_with(
        "two Gs taking turns with gmp::yield_now on one P",
        DEFAULT_LIMIT,
        RUNTIME_PARK,
        gmp::dump_all,
        |_| {
            let rt = gmp::Runtime::builder().procs(1).build().unwrap();
            rt.block_on(|| {
                let log = Arc::new(Mutex::new(Vec::new()));
                let wg = gmp::sync::WaitGroup::new();
                for name in ['a', 'b'] {
                    let (log, wg) = (log.clone(), wg.clone());
                    wg.add(1);
                    gmp::go(move || {
                        for _ in 0..3 {
                            log.lock().unwrap().push(name);
                            gmp::yield_now();
                        }
                        wg.done();
                    });
                }
                wg.wait();
                log.lock().unwrap().clone()
            })
        },
    );
    // Which G starts first is the scheduler's choice (Go runs the newest first); after
    // that, each yield must hand the only P to the other runnable G.
    assert_eq!(
        order.len(),
        6,
        "expected 3 turns of each G, got {order:?} (book: {STEP1})"
    );
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "expected the two Gs to alternate: on one P, each yield must hand the P to the other \
         runnable G; got {order:?} (book: {STEP1})"
    );
}
