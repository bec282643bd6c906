//! Tests for part 08, `steal`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 8: the victim order, the spinning count,
//! the finder's order, the cgroup CPU limit and `GMP_PROCS`. Tests that run threads do so
//! under a progress watchdog (`testkit::watch`): a body that makes no progress for 5 s
//! fails naming the step it stalled in, the invariant and the book section to read.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;

use steal::{
    CgroupError, CpuLimit, Finder, ProcsError, Sources, Spinning, VictimOrder, cgroup_cpu_limit,
    default_procs, procs_from_env,
};
use testkit::{DEFAULT_LIMIT, Step, watch};

const STEP1: &str = "ch08-steal.html#step-1";
const STEP2: &str = "ch08-steal.html#step-2";
const STEP3: &str = "ch08-steal.html#step-3";
const STEP4: &str = "ch08-steal.html#step-4";

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

/// Random numbers the tests can repeat: a 32-bit xorshift.
struct Xorshift(u32);

impl Xorshift {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// The random numbers step 1 tries: small ones, large ones and a scattering between.
fn randoms() -> Vec<u32> {
    let mut rng = Xorshift(0x9e37_79b9);
    let mut all: Vec<u32> = (0..300).collect();
    all.extend([u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) - 1]);
    all.extend((0..300).map(|_| rng.next()));
    all
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

// ---------------------------------------------------------------------------------------
// Step 1: the victim order.

#[test]
fn step1_every_walk_visits_every_p_exactly_once() {
    let _outcome = testkit::record!();
    let randoms = randoms();
    for procs in 1..=64 {
        let order = VictimOrder::new(procs);
        for &r in &randoms {
            let walk: Vec<usize> = order.visit(r).collect();
            let mut seen = vec![0u32; procs];
            for &p in &walk {
                assert!(
                    p < procs,
                    "procs {procs}, random {r}: the walk visited P {p}, which does not exist \
                     (walk {walk:?}; book: {STEP1})"
                );
                seen[p] += 1;
            }
            let wrong: Vec<usize> = (0..procs).filter(|&p| seen[p] != 1).collect();
            assert!(
                wrong.is_empty(),
                "procs {procs}, random {r}: Ps {wrong:?} were not visited exactly once (walk \
                 {walk:?}); a stride that shares a factor with procs repeats Ps before it \
                 reaches them all (book: {STEP1})"
            );
        }
    }
}

#[test]
fn step1_a_walk_starts_at_random_mod_procs_and_moves_by_one_coprime_stride() {
    let _outcome = testkit::record!();
    for procs in [2usize, 3, 6, 8, 12, 17, 30] {
        let order = VictimOrder::new(procs);
        for r in randoms() {
            let walk: Vec<usize> = order.visit(r).collect();
            assert_eq!(
                walk[0],
                r as usize % procs,
                "procs {procs}, random {r}: expected the walk to start at random % procs \
                 (walk {walk:?}; book: {STEP1})"
            );
            let stride = (walk[1] + procs - walk[0]) % procs;
            assert_eq!(
                gcd(stride, procs),
                1,
                "procs {procs}, random {r}: stride {stride} shares a factor with {procs} \
                 (walk {walk:?}; book: {STEP1})"
            );
            for pair in walk.windows(2) {
                assert_eq!(
                    (pair[1] + procs - pair[0]) % procs,
                    stride,
                    "procs {procs}, random {r}: the walk changed its stride (walk {walk:?}); \
                     one walk moves by one stride (book: {STEP1})"
                );
            }
        }
    }
}

#[test]
fn step1_random_numbers_choose_every_start_and_every_coprime_stride() {
    let _outcome = testkit::record!();
    for procs in [4usize, 6, 9, 10, 16] {
        let order = VictimOrder::new(procs);
        let coprimes: BTreeSet<usize> = (1..procs).filter(|&s| gcd(s, procs) == 1).collect();
        let mut starts = BTreeSet::new();
        let mut strides = BTreeSet::new();
        for r in randoms() {
            let walk: Vec<usize> = order.visit(r).collect();
            starts.insert(walk[0]);
            strides.insert((walk[1] + procs - walk[0]) % procs);
        }
        assert_eq!(
            starts.len(),
            procs,
            "procs {procs}: the walks started only at {starts:?}; every P should be a start \
             for some random number (book: {STEP1})"
        );
        assert_eq!(
            strides, coprimes,
            "procs {procs}: the walks used strides {strides:?}, expected every stride coprime \
             to {procs}: {coprimes:?} (book: {STEP1})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: the spinning count.

#[test]
fn step2_at_most_half_the_busy_ps_spin() {
    let _outcome = testkit::record!();
    // (procs, idle Ps, how many may spin): spinners while 2 × spinning < busy Ps.
    for (procs, idle, cap) in [
        (4, 0, 2),
        (4, 3, 1),
        (1, 0, 1),
        (8, 2, 3),
        (5, 0, 3),
        (4, 4, 0),
    ] {
        let spinning = Spinning::new();
        assert_eq!(
            spinning.count(),
            0,
            "expected no spinner at first (book: {STEP2})"
        );
        let started = (0..10).filter(|_| spinning.try_start(procs, idle)).count();
        assert_eq!(
            started, cap,
            "procs {procs}, {idle} idle: {started} Ms started spinning, expected {cap} (an M \
             may start while 2 × spinning < procs - idle; book: {STEP2})"
        );
        assert_eq!(
            spinning.count(),
            cap,
            "procs {procs}, {idle} idle: count() after {cap} successful starts (book: {STEP2})"
        );
    }
}

#[test]
fn step2_the_last_spinner_to_stop_is_told_so() {
    let _outcome = testkit::record!();
    let spinning = Spinning::new();
    assert!(spinning.try_start(8, 0));
    assert!(spinning.try_start(8, 0));
    assert!(spinning.try_start(8, 0));
    assert!(
        !spinning.stop(),
        "3 spinning, one stops: not the last (book: {STEP2})"
    );
    assert!(
        !spinning.stop(),
        "2 spinning, one stops: not the last (book: {STEP2})"
    );
    assert!(
        spinning.stop(),
        "1 spinning, it stops: it is the last and must wake an M or recheck (book: {STEP2})"
    );
    assert_eq!(spinning.count(), 0, "all stopped (book: {STEP2})");
}

#[test]
fn step2_a_stop_without_a_spinner_is_a_named_error() {
    let _outcome = testkit::record!();
    let spinning = Spinning::new();
    let msg = panic_message(|| {
        spinning.stop();
    });
    assert!(
        msg.contains("stop") && !msg.contains("not yet implemented"),
        "expected your own message naming `stop` for a stop with no spinning M, got: {msg} \
         (book: {STEP2})"
    );
    assert_eq!(
        spinning.count(),
        0,
        "a refused stop must leave the count at 0, not wrap it (book: {STEP2})"
    );
}

#[test]
fn step2_wakep_claims_only_when_nobody_spins() {
    let _outcome = testkit::record!();
    let spinning = Spinning::new();
    assert!(
        spinning.claim_wake(),
        "nobody spins: wakep must get the claim (book: {STEP2})"
    );
    assert_eq!(
        spinning.count(),
        1,
        "the claimed M counts as spinning (book: {STEP2})"
    );
    assert!(
        !spinning.claim_wake(),
        "one M already spins (or is being woken to): a second wakep must not wake another \
         (book: {STEP2})"
    );
    assert!(spinning.stop(), "the woken M stops: it was the last");
    assert!(spinning.try_start(4, 0));
    assert!(
        !spinning.claim_wake(),
        "an M that started spinning by itself also makes wakep's claim fail (book: {STEP2})"
    );
}

const SPIN_RACE: Step = Step {
    name: "two Ms stopping spinning at once, 2000 rounds",
    invariant: "a thread panicked or never reached the barrier (see the first panic above)",
    book: STEP2,
};

#[test]
fn step2_of_two_spinners_stopping_at_once_exactly_one_is_last() {
    let _outcome = testkit::record!();
    watch(
        "two spinners stopping at once",
        DEFAULT_LIMIT,
        SPIN_RACE,
        |progress| {
            const ROUNDS: usize = 2000;
            let spinning = Arc::new(Spinning::new());
            let barrier = Arc::new(Barrier::new(2));
            let lasts = Arc::new(AtomicUsize::new(0));
            let spawn = |id: usize| {
                let (spinning, barrier, lasts) = (
                    Arc::clone(&spinning),
                    Arc::clone(&barrier),
                    Arc::clone(&lasts),
                );
                let progress = progress.clone();
                thread::spawn(move || {
                    for round in 0..ROUNDS {
                        barrier.wait();
                        // Both start: 2 × 1 < 4 busy Ps lets both in.
                        assert!(
                            spinning.try_start(4, 0),
                            "round {round}, M {id}: try_start refused with one other spinner \
                             and 4 busy Ps (book: {STEP2})"
                        );
                        barrier.wait();
                        if spinning.stop() {
                            lasts.fetch_add(1, SeqCst);
                        }
                        barrier.wait();
                        if id == 0 {
                            progress.tick();
                        }
                    }
                })
            };
            let a = spawn(0);
            let b = spawn(1);
            let (ra, rb) = (a.join(), b.join());
            if let Err(p) = ra.and(rb) {
                panic::resume_unwind(p);
            }
            assert_eq!(
                lasts.load(SeqCst),
                ROUNDS,
                "in {ROUNDS} rounds of two spinners stopping at once, `stop` said \"last\" {} \
                 times; exactly one of the two must be told, or no M rechecks the queues (a \
                 lost G) or two do (book: {STEP2})",
                lasts.load(SeqCst)
            );
            assert_eq!(spinning.count(), 0, "every spinner stopped (book: {STEP2})");
        },
    );
}

const SPIN_CAP: Step = Step {
    name: "8 threads starting and stopping spinning",
    invariant: "a thread never finished its rounds (see the first panic above)",
    book: STEP2,
};

#[test]
fn step2_under_threads_the_spinning_cap_holds() {
    let _outcome = testkit::record!();
    watch(
        "8 threads spinning under a cap of 4",
        DEFAULT_LIMIT,
        SPIN_CAP,
        |progress| {
            // 8 Ps, none idle: at most 4 spinners (2 × 4 = 8 is not < 8).
            let spinning = Arc::new(Spinning::new());
            let most = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (spinning, most) = (Arc::clone(&spinning), Arc::clone(&most));
                    let progress = progress.clone();
                    thread::spawn(move || {
                        for _ in 0..20_000 {
                            if progress.cancelled() {
                                return;
                            }
                            if spinning.try_start(8, 0) {
                                most.fetch_max(spinning.count(), SeqCst);
                                spinning.stop();
                            }
                            progress.tick();
                        }
                    })
                })
                .collect();
            for t in threads {
                if let Err(p) = t.join() {
                    panic::resume_unwind(p);
                }
            }
            let most = most.load(SeqCst);
            assert!(
                (1..=4).contains(&most),
                "with 8 busy Ps at most 4 Ms may spin, but {most} were counted at once; check \
                 the limit and count in one compare-and-swap (book: {STEP2})"
            );
            assert_eq!(spinning.count(), 0, "every spinner stopped (book: {STEP2})");
        },
    );
}

// ---------------------------------------------------------------------------------------
// Step 3: the finder's order.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Local,
    Global,
    Netpoll,
    Steal { victim: usize, runnext_too: bool },
    Random(u32),
}

/// Sources that record every call: Gs are numbers, queues are plain deques.
#[derive(Default)]
struct Fake {
    calls: Vec<Call>,
    local: VecDeque<u32>,
    global: VecDeque<u32>,
    netpoll: VecDeque<u32>,
    /// Each victim's ring.
    rings: HashMap<usize, VecDeque<u32>>,
    /// Each victim's runnext.
    runnext: HashMap<usize, u32>,
    /// Refill local and global on every take (for the 61st-tick test).
    endless: bool,
    rng: Option<Xorshift>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            rng: Some(Xorshift(12345)),
            ..Fake::default()
        }
    }

    fn take(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.calls)
    }
}

impl Sources for Fake {
    type G = u32;
    fn local(&mut self) -> Option<u32> {
        self.calls.push(Call::Local);
        if self.endless {
            return Some(1);
        }
        self.local.pop_front()
    }
    fn global(&mut self) -> Option<u32> {
        self.calls.push(Call::Global);
        if self.endless {
            return Some(2);
        }
        self.global.pop_front()
    }
    fn netpoll(&mut self) -> Option<u32> {
        self.calls.push(Call::Netpoll);
        self.netpoll.pop_front()
    }
    fn steal(&mut self, victim: usize, runnext_too: bool) -> Option<u32> {
        self.calls.push(Call::Steal {
            victim,
            runnext_too,
        });
        if let Some(g) = self.rings.get_mut(&victim).and_then(VecDeque::pop_front) {
            return Some(g);
        }
        if runnext_too {
            return self.runnext.remove(&victim);
        }
        None
    }
    fn random(&mut self) -> u32 {
        let r = self.rng.as_mut().map_or(7, Xorshift::next);
        self.calls.push(Call::Random(r));
        r
    }
}

/// A finder whose first schedtick is spent: it found one local G (tick 0 -> 1).
fn past_tick_zero(me: usize, procs: usize) -> (Finder, Fake) {
    let mut finder = Finder::new(me, procs);
    let mut fake = Fake::new();
    fake.local.push_back(100);
    assert_eq!(
        finder.find(&mut fake, true),
        Some(100),
        "P {me}: one G in the local queue and nothing else: find must return it (book: {STEP3})"
    );
    assert_eq!(
        finder.schedtick(),
        1,
        "find returned a G: schedtick counts it (book: {STEP3})"
    );
    fake.take();
    (finder, fake)
}

#[test]
fn step3_local_then_global_then_netpoll() {
    let _outcome = testkit::record!();
    let (mut finder, mut fake) = past_tick_zero(0, 1);
    fake.netpoll.push_back(7);
    assert_eq!(
        finder.find(&mut fake, true),
        Some(7),
        "only netpoll had a G"
    );
    assert_eq!(
        fake.take(),
        [Call::Local, Call::Global, Call::Netpoll],
        "expected findRunnable's order: local queue, global queue, netpoll (book: {STEP3})"
    );
    fake.global.push_back(8);
    fake.local.push_back(9);
    assert_eq!(
        finder.find(&mut fake, true),
        Some(9),
        "the local queue comes before the global one (book: {STEP3})"
    );
    assert_eq!(fake.take(), [Call::Local]);
    assert_eq!(finder.find(&mut fake, true), Some(8));
    assert_eq!(fake.take(), [Call::Local, Call::Global]);
    assert_eq!(
        finder.schedtick(),
        4,
        "four Gs returned, four schedticks (book: {STEP3})"
    );
}

#[test]
fn step3_nothing_found_is_none_and_no_tick() {
    let _outcome = testkit::record!();
    let (mut finder, mut fake) = past_tick_zero(0, 4);
    assert_eq!(
        finder.find(&mut fake, false),
        None,
        "every source empty: None (book: {STEP3})"
    );
    assert_eq!(
        fake.take(),
        [Call::Local, Call::Global, Call::Netpoll],
        "without may_steal, find must not steal nor draw random numbers (book: {STEP3})"
    );
    assert_eq!(
        finder.schedtick(),
        1,
        "find found nothing: schedtick must not count it (book: {STEP3})"
    );
}

#[test]
fn step3_every_61st_schedtick_the_global_queue_goes_first() {
    let _outcome = testkit::record!();
    let mut finder = Finder::new(0, 2);
    let mut fake = Fake::new();
    fake.endless = true;
    let mut global_first = Vec::new();
    for tick in 0..200u32 {
        assert_eq!(
            finder.schedtick(),
            tick,
            "schedtick counts every G returned"
        );
        let g = finder.find(&mut fake, true);
        let calls = fake.take();
        if calls.first() == Some(&Call::Global) {
            global_first.push(tick);
            assert_eq!(g, Some(2), "tick {tick}: the global queue's G");
        } else {
            assert_eq!(
                calls,
                [Call::Local],
                "tick {tick}: the local queue had a G, nothing else may be asked (book: {STEP3})"
            );
        }
    }
    assert_eq!(
        global_first,
        [0, 61, 122, 183],
        "the global queue must go first when schedtick % 61 == 0, and only then; it went first \
         at ticks {global_first:?} (book: {STEP3})"
    );
}

/// The steal calls of one `find` that found nothing, split into rounds by their random
/// number.
fn steal_rounds(calls: &[Call]) -> Vec<(u32, Vec<(usize, bool)>)> {
    let mut rounds: Vec<(u32, Vec<(usize, bool)>)> = Vec::new();
    for call in calls {
        match *call {
            Call::Random(r) => rounds.push((r, Vec::new())),
            Call::Steal {
                victim,
                runnext_too,
            } => match rounds.last_mut() {
                Some(round) => round.1.push((victim, runnext_too)),
                None => panic!(
                    "find stole from P {victim} before drawing a random number; each round \
                     walks a VictimOrder from a fresh random (calls {calls:?}; book: {STEP3})"
                ),
            },
            _ => {}
        }
    }
    rounds
}

#[test]
fn step3_four_rounds_over_every_other_p_runnext_only_in_the_last() {
    let _outcome = testkit::record!();
    for (me, procs) in [(2usize, 5usize), (0, 2), (3, 4), (6, 7)] {
        let (mut finder, mut fake) = past_tick_zero(me, procs);
        assert_eq!(finder.find(&mut fake, true), None, "every P empty");
        let calls = fake.take();
        assert_eq!(
            calls[..3],
            [Call::Local, Call::Global, Call::Netpoll],
            "P {me} of {procs}: steal only after local, global and netpoll (book: {STEP3})"
        );
        let rounds = steal_rounds(&calls[3..]);
        assert_eq!(
            rounds.len(),
            4,
            "P {me} of {procs}: expected 4 stealing rounds, each from a fresh random number; \
             got {} (calls {calls:?}; book: {STEP3})",
            rounds.len()
        );
        let order = VictimOrder::new(procs);
        for (i, (random, steals)) in rounds.iter().enumerate() {
            let expected: Vec<(usize, bool)> = order
                .visit(*random)
                .filter(|&v| v != me)
                .map(|v| (v, i == 3))
                .collect();
            assert_eq!(
                *steals, expected,
                "P {me} of {procs}, round {i} (random {random}): expected the VictimOrder walk \
                 for that random without P {me} itself, runnext only in round 3 (book: {STEP3})"
            );
        }
        assert_eq!(finder.schedtick(), 1, "nothing found, no tick");
    }
}

#[test]
fn step3_a_runnext_is_stolen_only_in_the_last_round_and_find_stops_there() {
    let _outcome = testkit::record!();
    let (mut finder, mut fake) = past_tick_zero(1, 4);
    fake.runnext.insert(3, 33);
    assert_eq!(
        finder.find(&mut fake, true),
        Some(33),
        "P 3's runnext is the only G: the last round takes it (book: {STEP3})"
    );
    let calls = fake.take();
    let last = calls.last().copied();
    assert_eq!(
        last,
        Some(Call::Steal {
            victim: 3,
            runnext_too: true
        }),
        "find must stop at the steal that found a G (calls {calls:?}; book: {STEP3})"
    );
    let rounds = steal_rounds(&calls[3..]);
    assert_eq!(
        rounds.len(),
        4,
        "found in the fourth round (calls {calls:?})"
    );
    assert_eq!(finder.schedtick(), 2, "a stolen G counts a tick");
}

#[test]
fn step3_a_ring_g_is_stolen_in_the_first_round() {
    let _outcome = testkit::record!();
    let (mut finder, mut fake) = past_tick_zero(0, 3);
    fake.rings.insert(2, VecDeque::from([21, 22]));
    assert_eq!(finder.find(&mut fake, true), Some(21));
    let calls = fake.take();
    let rounds = steal_rounds(&calls[3..]);
    assert_eq!(
        rounds.len(),
        1,
        "P 2's ring had Gs: the first round finds one (calls {calls:?}; book: {STEP3})"
    );
    assert!(
        rounds[0].1.iter().all(|&(v, runnext)| v != 0 && !runnext),
        "never steal from yourself, nor a runnext before the last round (calls {calls:?})"
    );
}

#[test]
fn step3_one_p_never_steals_and_resize_widens_the_victims() {
    let _outcome = testkit::record!();
    let (mut finder, mut fake) = past_tick_zero(0, 1);
    assert_eq!(finder.find(&mut fake, true), None);
    let calls = fake.take();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Steal { .. })),
        "one P: nobody to steal from, yet find stole: {calls:?} (book: {STEP3})"
    );
    finder.resize(6);
    assert_eq!(finder.find(&mut fake, true), None);
    let calls = fake.take();
    for (i, (_, steals)) in steal_rounds(&calls[3..]).iter().enumerate() {
        let victims: BTreeSet<usize> = steals.iter().map(|&(v, _)| v).collect();
        assert_eq!(
            victims,
            (1..6).collect(),
            "after resize(6), round {i} must visit Ps 1 to 5 (book: {STEP3})"
        );
        assert_eq!(steals.len(), 5, "each once");
    }
    finder.resize(2);
    assert_eq!(finder.find(&mut fake, true), None);
    let calls = fake.take();
    assert!(
        calls
            .iter()
            .all(|c| !matches!(c, Call::Steal { victim, .. } if *victim >= 2)),
        "after resize(2) only P 1 is a victim, got {calls:?} (book: {STEP3})"
    );
}

// ---------------------------------------------------------------------------------------
// Step 4: the CPU limit of a cgroup, and GMP_PROCS.

/// A folder of fixture files under the temp dir, removed when dropped.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(name: &str) -> Tree {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "gmp-steal-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("cannot create a fixture folder in the temp dir");
        Tree { root }
    }

    fn file(&self, path: &str, text: &str) -> &Tree {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).expect("cannot create a fixture folder");
        fs::write(&path, text).expect("cannot write a fixture file");
        self
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const MOUNT_V2: &str = "25 20 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - \
                        cgroup2 cgroup2 rw,nsdelegate\n";
const MOUNT_V1_CPU: &str = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - \
                            cgroup cgroup rw,cpu,cpuacct\n\
                            33 31 0:30 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup \
                            cgroup rw,memory\n";
const MOUNT_OTHER: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";

fn limit(root: &Path) -> Option<CpuLimit> {
    match cgroup_cpu_limit(root) {
        Ok(limit) => limit,
        Err(e) => panic!("expected a limit or none, got the error: {e} (book: {STEP4})"),
    }
}

fn expect_limit(tree: &Tree, quota: u64, period: u64, at: &str, case: &str) {
    let found = limit(&tree.root);
    let want = CpuLimit {
        quota_us: quota,
        period_us: period,
        at: tree.path(at),
    };
    assert_eq!(
        found.as_ref(),
        Some(&want),
        "{case}: expected {quota}/{period} read from {at} (book: {STEP4})"
    );
    let cpus = found.unwrap().cpus();
    assert!(
        (cpus - quota as f64 / period as f64).abs() < 1e-9,
        "cpus() must be quota / period, got {cpus}"
    );
}

#[test]
fn step4_v2_leaf_limit() {
    let _outcome = testkit::record!();
    let tree = Tree::new("v2-leaf");
    tree.file("proc/self/cgroup", "0::/kubepods/pod1/c1\n")
        .file("proc/self/mountinfo", &format!("{MOUNT_OTHER}{MOUNT_V2}"))
        .file("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n")
        .file("sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n")
        .file("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "150000 100000\n");
    expect_limit(
        &tree,
        150000,
        100000,
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max",
        "v2, limit on the leaf",
    );
}

#[test]
fn step4_v2_parent_tighter_than_leaf() {
    let _outcome = testkit::record!();
    let tree = Tree::new("v2-parent");
    tree.file("proc/self/cgroup", "0::/kubepods/pod1/c1\n")
        .file("proc/self/mountinfo", MOUNT_V2)
        .file("sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n")
        .file("sys/fs/cgroup/kubepods/pod1/cpu.max", "50000 100000\n")
        .file("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "200000 100000\n");
    expect_limit(
        &tree,
        50000,
        100000,
        "sys/fs/cgroup/kubepods/pod1/cpu.max",
        "v2, the parent pod1 allows 0.5 CPU, the leaf 2: the kernel enforces both, Go 1.25-1.27 \
         read only the leaf (golang/go#81180)",
    );
}

#[test]
fn step4_v2_unlimited_is_none() {
    let _outcome = testkit::record!();
    let tree = Tree::new("v2-none");
    // The v2 root has no cpu.max at all; a child without the cpu controller has none either.
    tree.file("proc/self/cgroup", "0::/user.slice/session-1.scope\n")
        .file("proc/self/mountinfo", MOUNT_V2)
        .file("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n")
        .file(
            "sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs",
            "1\n",
        );
    assert_eq!(
        limit(&tree.root),
        None,
        "no quota anywhere (\"max\", or no cpu.max file): no limit (book: {STEP4})"
    );
}

#[test]
fn step4_v1_limit_with_parents_and_periods() {
    let _outcome = testkit::record!();
    let tree = Tree::new("v1");
    tree.file(
        "proc/self/cgroup",
        "11:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
    )
    .file(
        "proc/self/mountinfo",
        &format!("{MOUNT_OTHER}{MOUNT_V1_CPU}"),
    )
    .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    .file(
        "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us",
        "30000\n",
    )
    .file(
        "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us",
        "50000\n",
    )
    .file(
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us",
        "100000\n",
    )
    .file(
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us",
        "100000\n",
    );
    expect_limit(
        &tree,
        30000,
        50000,
        "sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us",
        "v1, the parent docker allows 30000/50000 = 0.6 CPU, the leaf 1.0: compare quota / \
         period, not the quotas",
    );
    tree.file(
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us",
        "25000\n",
    );
    expect_limit(
        &tree,
        25000,
        100000,
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us",
        "v1, the leaf now allows 0.25 CPU, tighter than its parent",
    );
    tree.file(
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us",
        "-1\n",
    )
    .file("sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
    assert_eq!(
        limit(&tree.root),
        None,
        "v1 with every cpu.cfs_quota_us at -1: no limit (book: {STEP4})"
    );
}

#[test]
fn step4_v1_container_sees_only_its_own_subtree() {
    let _outcome = testkit::record!();
    let tree = Tree::new("v1-container");
    // Docker without a cgroup namespace: the mount shows /docker/abc at the mount point,
    // and /proc/self/cgroup still names the full path.
    tree.file("proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n")
        .file(
            "proc/self/mountinfo",
            "40 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup \
             rw,cpu,cpuacct\n",
        )
        .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n")
        .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    expect_limit(
        &tree,
        200000,
        100000,
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
        "v1 mount root /docker/abc: our cgroup is the mount point itself",
    );
}

#[test]
fn step4_hybrid_takes_the_hierarchy_that_has_cpu() {
    let _outcome = testkit::record!();
    let tree = Tree::new("hybrid");
    // This machine's layout: v1 controllers plus an empty v2 hierarchy at unified/.
    let mounts = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    tree.file("proc/self/cgroup", "2:cpuacct:/job\n1:cpu:/job\n0::/job\n")
        .file("proc/self/mountinfo", mounts)
        .file("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
        .file("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
        .file("sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "50000\n")
        .file("sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "100000\n")
        .file("sys/fs/cgroup/unified/job/cpu.max", "300000 100000\n");
    expect_limit(
        &tree,
        50000,
        100000,
        "sys/fs/cgroup/cpu/job/cpu.cfs_quota_us",
        "hybrid with cpu on v1: the v1 limit counts, the v2 hierarchy has no cpu controller",
    );
    // Without a v1 hierarchy for cpu, the v2 one is it.
    tree.file("proc/self/cgroup", "2:cpuacct:/job\n0::/job\n");
    expect_limit(
        &tree,
        300000,
        100000,
        "sys/fs/cgroup/unified/job/cpu.max",
        "hybrid with cpu on v2 (only cpuacct on v1)",
    );
}

#[test]
fn step4_no_cgroup_at_all_is_none() {
    let _outcome = testkit::record!();
    let tree = Tree::new("nothing");
    assert_eq!(
        limit(&tree.root),
        None,
        "no proc/self/cgroup (no cgroups): no limit (book: {STEP4})"
    );
    tree.file("proc/self/cgroup", "0::/\n")
        .file("proc/self/mountinfo", MOUNT_OTHER);
    assert_eq!(
        limit(&tree.root),
        None,
        "a cgroup listed but no cgroup file system mounted: no limit to read (book: {STEP4})"
    );
}

#[test]
fn step4_escaped_mount_point() {
    let _outcome = testkit::record!();
    let tree = Tree::new("escaped");
    tree.file("proc/self/cgroup", "0::/a\n")
        .file(
            "proc/self/mountinfo",
            "25 20 0:26 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n",
        )
        .file("mnt/my cgroups/a/cpu.max", "100000 100000\n");
    expect_limit(
        &tree,
        100000,
        100000,
        "mnt/my cgroups/a/cpu.max",
        "mountinfo writes a space in a path as \\040",
    );
}

/// The error `cgroup_cpu_limit` must give, checked to name `file` and the fix.
fn expect_error(tree: &Tree, file: &str, case: &str) -> CgroupError {
    let err = match cgroup_cpu_limit(&tree.root) {
        Ok(found) => panic!("{case}: expected an error naming {file}, got Ok({found:?})"),
        Err(e) => e,
    };
    let msg = err.to_string();
    let path = tree.path(file).display().to_string();
    assert!(
        msg.contains(&path) && msg.contains("GMP_PROCS"),
        "{case}: the message must name the file {path} and the fix (set GMP_PROCS), got: \
         {msg} (book: {STEP4})"
    );
    err
}

#[test]
fn step4_malformed_files_are_named_errors() {
    let _outcome = testkit::record!();
    let tree = Tree::new("malformed");
    tree.file("proc/self/cgroup", "0::/a\n")
        .file("proc/self/mountinfo", MOUNT_V2);
    for bad in [
        "lots 100000",
        "50000",
        "50000 0",
        "0 100000",
        "-5 100000",
        "",
    ] {
        tree.file("sys/fs/cgroup/a/cpu.max", bad);
        let err = expect_error(
            &tree,
            "sys/fs/cgroup/a/cpu.max",
            &format!("cpu.max {bad:?}"),
        );
        assert!(
            matches!(err, CgroupError::Malformed { .. }),
            "cpu.max {bad:?}: expected CgroupError::Malformed, got {err:?}"
        );
    }
    tree.file("sys/fs/cgroup/a/cpu.max", "max 100000");

    let v1 = Tree::new("malformed-v1");
    v1.file("proc/self/cgroup", "4:cpu,cpuacct:/\n")
        .file("proc/self/mountinfo", MOUNT_V1_CPU)
        .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "a lot\n")
        .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    expect_error(
        &v1,
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us",
        "cpu.cfs_quota_us \"a lot\"",
    );
    v1.file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n")
        .file("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "0\n");
    expect_error(
        &v1,
        "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us",
        "cpu.cfs_period_us 0",
    );

    let lines = Tree::new("malformed-lines");
    lines
        .file("proc/self/cgroup", "this is not a cgroup line\n")
        .file("proc/self/mountinfo", MOUNT_V2);
    expect_error(
        &lines,
        "proc/self/cgroup",
        "a proc/self/cgroup line without colons",
    );
    lines
        .file("proc/self/cgroup", "0::/\n")
        .file("proc/self/mountinfo", "what is this\n");
    expect_error(
        &lines,
        "proc/self/mountinfo",
        "a mountinfo line without its fields",
    );
}

#[test]
fn step4_a_cgroup_outside_its_mount_is_a_named_error() {
    let _outcome = testkit::record!();
    let tree = Tree::new("outside");
    tree.file("proc/self/cgroup", "4:cpu:/elsewhere\n").file(
        "proc/self/mountinfo",
        "40 31 0:29 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n",
    );
    let err = match cgroup_cpu_limit(&tree.root) {
        Err(e) => e,
        Ok(found) => panic!(
            "cgroup /elsewhere is not under the mounted /docker/abc: expected an error, got \
             Ok({found:?}) (book: {STEP4})"
        ),
    };
    let msg = err.to_string();
    assert!(
        msg.contains("/elsewhere") && msg.contains("/docker/abc") && msg.contains("GMP_PROCS"),
        "the message must name both paths and the fix, got: {msg} (book: {STEP4})"
    );
}

#[test]
fn step4_rounding_a_limit_to_ps() {
    let _outcome = testkit::record!();
    let at = |quota_us, period_us| CpuLimit {
        quota_us,
        period_us,
        at: PathBuf::from("/sys/fs/cgroup/cpu.max"),
    };
    // (CPUs, limit, Ps): up, at least 1, at most the CPUs.
    let cases = [
        (4, None, 4),
        (0, None, 1),
        (8, Some(at(50_000, 100_000)), 1),
        (8, Some(at(100_000, 100_000)), 1),
        (8, Some(at(150_000, 100_000)), 2),
        (8, Some(at(200_000, 100_000)), 2),
        (8, Some(at(201_000, 100_000)), 3),
        (4, Some(at(1_000_000, 100_000)), 4),
        (8, Some(at(1_000, 1_000_000)), 1),
        (8, Some(at(30_000, 10_000)), 3),
    ];
    for (cpus, limit, want) in cases {
        let got = default_procs(cpus, limit.as_ref());
        assert_eq!(
            got,
            want,
            "default_procs({cpus} CPUs, limit {:?} CPUs) = {got}, expected {want}: round up, at \
             least 1, at most the CPUs (book: {STEP4})",
            limit.as_ref().map(CpuLimit::cpus)
        );
    }
}

#[test]
fn step4_gmp_procs_parsing() {
    let _outcome = testkit::record!();
    assert_eq!(procs_from_env(None, 1024), Ok(None), "unset: no override");
    assert_eq!(procs_from_env(Some("4"), 1024), Ok(Some(4)));
    assert_eq!(
        procs_from_env(Some(" 16\n"), 1024),
        Ok(Some(16)),
        "spaces ignored"
    );
    assert_eq!(
        procs_from_env(Some("1024"), 1024),
        Ok(Some(1024)),
        "the max itself"
    );
    let cases: [(&str, ProcsError); 6] = [
        ("0", ProcsError::Zero),
        ("", ProcsError::Empty),
        (
            "four",
            ProcsError::NotANumber {
                value: "four".into(),
            },
        ),
        ("-1", ProcsError::NotANumber { value: "-1".into() }),
        (
            "1025",
            ProcsError::TooBig {
                value: "1025".into(),
                max: 1024,
            },
        ),
        (
            "99999999999999999999999",
            ProcsError::TooBig {
                value: "99999999999999999999999".into(),
                max: 1024,
            },
        ),
    ];
    for (value, want) in cases {
        let got = procs_from_env(Some(value), 1024);
        assert_eq!(got, Err(want), "GMP_PROCS={value:?} (book: {STEP4})");
        let msg = got.unwrap_err().to_string();
        assert!(
            msg.contains("GMP_PROCS") && msg.contains("unset"),
            "GMP_PROCS={value:?}: the message must name GMP_PROCS and the fix, got: {msg}"
        );
    }
}

#[test]
fn step4_this_machine_parses() {
    let _outcome = testkit::record!();
    // Whatever this machine's cgroups are, reading them must not fail.
    match cgroup_cpu_limit(Path::new("/")) {
        Ok(Some(limit)) => println!(
            "this machine: {} CPUs from {} ({}/{}), default P count {}",
            limit.cpus(),
            limit.at.display(),
            limit.quota_us,
            limit.period_us,
            default_procs(cpus(), Some(&limit))
        ),
        Ok(None) => println!("this machine: no cgroup CPU limit; {} CPUs", cpus()),
        Err(e) => panic!("reading this machine's cgroup CPU limit failed: {e} (book: {STEP4})"),
    }
}

fn cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

// ---------------------------------------------------------------------------------------
// Step 4, on a real cgroup: needs root and a writable cgroup v1 `cpu` controller.

/// Where the real test makes its cgroups: under the v1 `cpu` mount, named after the test
/// process so a child process can find them.
fn real_cgroup_dir(test_pid: u32) -> PathBuf {
    PathBuf::from(format!("/sys/fs/cgroup/cpu/gmp-steal-test-{test_pid}"))
}

/// Removes the test's cgroups when dropped, even if the test failed.
struct CgroupGuard(PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // A cgroup can only be removed when it holds no process: the child has exited.
        for dir in [self.0.join("inner"), self.0.clone()] {
            if dir.exists()
                && let Err(e) = fs::remove_dir(&dir)
            {
                eprintln!("could not remove the test cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Why the real test cannot run here, if it cannot.
fn cannot_use_real_cgroup() -> Option<String> {
    let base = Path::new("/sys/fs/cgroup/cpu");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let is_v1_cpu = mounts.lines().any(|l| {
        l.contains(" /sys/fs/cgroup/cpu ") && l.contains(" - cgroup ") && l.contains("cpu")
    });
    if !is_v1_cpu {
        return Some("no cgroup v1 `cpu` hierarchy mounted at /sys/fs/cgroup/cpu".into());
    }
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if !own.lines().any(|l| {
        let mut f = l.splitn(3, ':');
        f.next();
        f.next().is_some_and(|c| c.split(',').any(|c| c == "cpu")) && f.next() == Some("/")
    }) {
        return Some("this process is not in the root of the v1 `cpu` hierarchy".into());
    }
    let probe = base.join(format!("gmp-steal-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let _ = fs::remove_dir(&probe);
            None
        }
        Err(e) => Some(format!(
            "cannot create a cgroup under {} ({e}); run as root to include this test",
            base.display()
        )),
    }
}

/// In the child process: join the inner cgroup and print the limit it reads.
fn read_limit_inside_the_cgroup() {
    let dir = real_cgroup_dir(std::os::unix::process::parent_id());
    fs::write(
        dir.join("inner/cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("cannot move the child process into the test cgroup");
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    println!("child's /proc/self/cgroup:\n{own}");
    match cgroup_cpu_limit(Path::new("/")) {
        Ok(Some(l)) => println!("LIMIT {} {} {}", l.quota_us, l.period_us, l.at.display()),
        Ok(None) => println!("LIMIT none"),
        Err(e) => println!("LIMIT error: {e}"),
    }
}

#[test]
fn step4_a_real_cgroup_v1_with_a_tighter_parent() {
    let _outcome = testkit::record!();
    const NAME: &str = "step4_a_real_cgroup_v1_with_a_tighter_parent";
    if std::env::var_os("TESTKIT_ISOLATED").is_some() {
        // In the child: the parent made the cgroups.
        testkit::run_in_child(NAME, DEFAULT_LIMIT, read_limit_inside_the_cgroup);
        return;
    }
    if let Some(why) = cannot_use_real_cgroup() {
        println!("skipped: {why}");
        return;
    }
    let dir = real_cgroup_dir(std::process::id());
    let _guard = CgroupGuard(dir.clone());
    fs::create_dir(&dir).expect("cannot create the test cgroup");
    fs::create_dir(dir.join("inner")).expect("cannot create the inner test cgroup");
    // The parent allows 0.7 CPU, the inner cgroup has no quota of its own (-1): the
    // parent's limit is the one. (v1 refuses a child quota above its parent's: EINVAL.)
    fs::write(dir.join("cpu.cfs_period_us"), "100000").expect("cannot set the period");
    fs::write(dir.join("cpu.cfs_quota_us"), "70000").expect("cannot set the parent's quota");
    fs::write(dir.join("inner/cpu.cfs_period_us"), "100000").expect("cannot set the period");
    let run = testkit::run_in_child(NAME, DEFAULT_LIMIT, read_limit_inside_the_cgroup);
    println!("{}", run.output);
    assert!(run.success, "the child failed:\n{}", run.output);
    let want = format!(
        "LIMIT 70000 100000 {}",
        dir.join("cpu.cfs_quota_us").display()
    );
    assert!(
        run.output.lines().any(|l| l.trim() == want),
        "in a real v1 cgroup without a quota under a parent of 0.7 CPU, expected `{want}`; the child \
         printed:\n{} (book: {STEP4})",
        run.output
    );
    // Now the inner cgroup is the tighter one.
    fs::write(dir.join("inner/cpu.cfs_quota_us"), "40000").expect("cannot set the inner quota");
    let run = testkit::run_in_child(NAME, DEFAULT_LIMIT, read_limit_inside_the_cgroup);
    println!("{}", run.output);
    let want = format!(
        "LIMIT 40000 100000 {}",
        dir.join("inner/cpu.cfs_quota_us").display()
    );
    assert!(
        run.output.lines().any(|l| l.trim() == want),
        "inner 0.4 CPU under a parent of 0.7: expected `{want}`; the child printed:\n{} \
         (book: {STEP4})",
        run.output
    );
}

// ---------------------------------------------------------------------------------------
// Whole-runtime tests: the gmp runtime's Ms look for work with YOUR part (feature mine-08).

const RUNTIME_STEAL: Step = Step {
    name: "the gmp runtime at 2 Ps running Gs through your Finder and Spinning",
    invariant: "lost wake-up: Gs queued while every M parked (an M that gave up without the \
                last spinner's recheck), or an M that never looks at some queue (see the dump)",
    book: STEP3,
};

fn fib_seq(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_seq(n - 1) + fib_seq(n - 2)
    }
}

/// Nested go/join down to fib(8); records which threads ran the leaves.
fn fib_on_gs(
    n: u64,
    tids: &Arc<std::sync::Mutex<BTreeSet<i32>>>,
    progress: &testkit::Progress,
) -> u64 {
    if n <= 8 {
        // SAFETY: gettid has no preconditions.
        tids.lock().unwrap().insert(unsafe { libc_gettid() });
        progress.tick();
        return fib_seq(n);
    }
    let (t, p) = (tids.clone(), progress.clone());
    let a = gmp::go(move || fib_on_gs(n - 1, &t, &p));
    let b = fib_on_gs(n - 2, tids, progress);
    a.join().unwrap() + b
}

unsafe extern "C" {
    #[link_name = "gettid"]
    fn libc_gettid() -> i32;
}

/// Rounds of the fork-join below before the test gives up on seeing a second M. One round
/// takes a few milliseconds, about as long as a new process takes to get its second M
/// going, so a single round sometimes ends on one M with a working part; with a finder
/// that never steals, every round does.
const FORK_JOIN_ROUNDS: usize = 10;

#[test]
fn whole_runtime_fork_join_at_two_ps_is_shared_by_both_ms() {
    let _outcome = testkit::record!();
    let tids = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen = tids.clone();
    let results = watch(
        "fib(24) with go/join down to fib(8) at 2 Ps",
        DEFAULT_LIMIT,
        RUNTIME_STEAL,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let mut results = Vec::new();
                while results.len() < FORK_JOIN_ROUNDS && seen.lock().unwrap().len() < 2 {
                    results.push(fib_on_gs(24, &seen, &progress));
                }
                results
            })
        },
    );
    for got in &results {
        assert_eq!(*got, fib_seq(24), "fib(24) came out wrong (book: {STEP3})");
    }
    let threads = tids.lock().unwrap().len();
    assert!(
        threads >= 2,
        "all {} leaves of {} rounds ran on one M: the second M never took work from the \
         first P's queue. A spinning M must steal (Finder::find with may_steal) (book: {STEP3})",
        // Calls that reach the cut-off: fib(24 - 6) of them per round.
        fib_seq(24 - 6) * results.len() as u64,
        results.len()
    );
}

#[test]
fn whole_runtime_a_burst_of_yielding_gs_all_finish_at_two_ps() {
    let _outcome = testkit::record!();
    let n = 20_000u64;
    let sum = watch(
        "20,000 Gs that yield twice, joined, at 2 Ps",
        DEFAULT_LIMIT,
        RUNTIME_STEAL,
        move |progress| {
            let progress = progress.clone();
            let rt = gmp::Runtime::builder().procs(2).build().unwrap();
            rt.block_on(move || {
                let gs: Vec<_> = (0..n)
                    .map(|i| {
                        gmp::go(move || {
                            gmp::yield_now();
                            gmp::yield_now();
                            i
                        })
                    })
                    .collect();
                gs.into_iter()
                    .map(|g| {
                        progress.tick();
                        g.join().unwrap()
                    })
                    .sum::<u64>()
            })
        },
    );
    assert_eq!(
        sum,
        n * (n - 1) / 2,
        "a G's result was lost (book: {STEP3})"
    );
}
