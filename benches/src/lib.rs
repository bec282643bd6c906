//! The workbook's measurements of OS processes and threads (chapters 1–3) and of a switch in
//! user space (chapter 4), shared by the criterion benches (`benches/os.rs`) and the class
//! bench report (`class-bench`).
//!
//! Each measurement lives here once. The criterion benches call it through `iter_custom`,
//! the class bench calls it several times and keeps the median. Nothing here asserts a
//! time: a figure means something only beside another figure measured in the same run
//! (README, "Rules the code keeps").
//!
//! | measurement | function | chapter |
//! |-------------|----------|---------|
//! | start `/bin/true` and wait for it | [`process_spawn_wait`] | 1 |
//! | start and join a thread, std and part 02 | [`std_spawn_join`], [`osthread_spawn_join`] | 2 |
//! | ping-pong hand-off, futex / Condvar / mpsc, cross- and same-core | [`handoff`] | 3 |
//! | many sleeping threads: RSS, virtual size, create cost | [`sleeping_threads`] | 2 |
//! | user-space switch round trip, part 04's asm switch and fiber, corosensei | [`switch_round_trip`] | 4 |
//! | instructions per switch round trip (valgrind's callgrind) | [`callgrind_round_trip`] | 4 |
//! | five programs on gmp, tokio and may at P=1 and P=2 (Go's twins in `go`) | [`peers::run`] | 7–8 |
//! | locked instructions per operation (callgrind and objdump) | [`locked`] | 8 |
//! | TCP echo on loopback: bounded load generator, thread-per-connection server | [`echo`] | 10 |
//!
//! The threads are pinned with part 02 (`osthread`), the sleeping threads are weighed with
//! part 01 (`procinfo`), the futex hand-off is part 03 (`parker`) and the stack switch is
//! part 04 (`context`), all from `solutions/`, or from `exercises/` in a build with `mine-NN`
//! (see [`parts`]).

pub mod echo;
pub mod figures;
pub mod go;
pub mod gs;
pub mod locked;
pub mod net;
pub mod parts;
pub mod peers;
pub mod report;

use std::ffi::OsStr;
use std::fmt;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, Yielder};

use crate::parts::context::{self, Context, Fiber};
use crate::parts::osthread::{self, MBuilder, MHandle};
use crate::parts::parker::Parker;
use crate::parts::procinfo::{self, Pid};

/// A measurement could not run; the message says what failed and what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError(pub String);

impl BenchError {
    fn new(what: &str, why: impl fmt::Display) -> BenchError {
        BenchError(format!("{what}: {why}"))
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// How much work one run of the class bench does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Runs of each timed measurement; the report keeps the median.
    pub runs: usize,
    /// Processes started per run of [`process_spawn_wait`].
    pub process_spawns: u64,
    /// Threads started and joined per run of the spawn+join measurements.
    pub thread_spawns: u64,
    /// Round trips (two hand-offs each) per run of [`handoff`].
    pub round_trips: u64,
    /// Sleeping threads started per run of [`sleeping_threads`].
    pub sleepers: usize,
    /// Runs of [`sleeping_threads`] per stack size.
    pub sleeper_runs: usize,
    /// Round trips per run of [`switch_round_trip`].
    pub switch_rounds: u64,
    /// The two round-trip counts [`callgrind_round_trip`] runs under callgrind; the
    /// difference of the totals over the difference of the counts is one round trip.
    pub callgrind_rounds: (u64, u64),
    /// Operations per timed run of each G measurement (spawn+join, hand-off, yield).
    pub g_ops: u64,
    /// At most this many parked Gs per memory measurement (the report asks for 1M).
    pub parked_max: usize,
    /// Runs of each peer program (gmp, Go, tokio, may at P=1 and P=2); the report keeps the
    /// median. A program that fails or times out is not run again.
    pub peer_runs: usize,
    /// Operations per run of the peers' spawn+join, hand-off and yield.
    pub peer_ops: u64,
    /// fib's argument in the nested fib ([`peers::FIB_N`]: 35 in the class bench).
    pub fib_n: u64,
    /// Links of the spawn chain ([`peers::CHAIN_LEN`]: 10^6 in the class bench).
    pub chain_len: u64,
    /// How long one peer program may run in its child process before it is killed.
    pub peer_limit: Duration,
}

impl Plan {
    /// `--quick`: about half a minute of measuring on a quiet 2-core machine; 1,000
    /// sleeping threads.
    pub const QUICK: Plan = Plan {
        runs: 5,
        process_spawns: 200,
        thread_spawns: 1_000,
        round_trips: 2_000,
        sleepers: 1_000,
        sleeper_runs: 3,
        switch_rounds: 1_000_000,
        callgrind_rounds: (10_000, 110_000),
        g_ops: 200_000,
        parked_max: 1_000_000,
        peer_runs: 1,
        peer_ops: 10_000,
        fib_n: peers::FIB_N,
        chain_len: peers::CHAIN_LEN,
        peer_limit: Duration::from_secs(5),
    };

    /// The full class bench: 10,000 sleeping threads, as in chapter 2.
    pub const FULL: Plan = Plan {
        runs: 7,
        process_spawns: 300,
        thread_spawns: 2_000,
        round_trips: 5_000,
        sleepers: 10_000,
        sleeper_runs: 3,
        switch_rounds: 10_000_000,
        callgrind_rounds: (100_000, 1_100_000),
        g_ops: 1_000_000,
        parked_max: 1_000_000,
        peer_runs: 3,
        // may spends ~100 µs per spawn at P=2 on this machine kind: more would hit the limit.
        peer_ops: 50_000,
        fib_n: peers::FIB_N,
        chain_len: peers::CHAIN_LEN,
        peer_limit: Duration::from_secs(30),
    };

    /// Tiny counts for the unit tests: proves the code runs, measures nothing.
    pub const TINY: Plan = Plan {
        runs: 1,
        process_spawns: 2,
        thread_spawns: 3,
        round_trips: 20,
        sleepers: 16,
        sleeper_runs: 1,
        switch_rounds: 100,
        callgrind_rounds: (10, 110),
        g_ops: 100,
        parked_max: 1_000,
        peer_runs: 1,
        peer_ops: 100,
        fib_n: 16,
        chain_len: 1_000,
        peer_limit: Duration::from_secs(30),
    };
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

// ---------------------------------------------------------------------------------------
// Chapter 1: a process.

/// The program [`process_spawn_wait`] starts: does nothing and exits 0.
pub const TRUE_PROGRAM: &str = "/bin/true";

/// Starts `/bin/true` and waits for it to exit, `iters` times; returns the total time.
///
/// `std::process::Command::spawn` + `Child::wait`: fork (or `clone(CLONE_VM|CLONE_VFORK)` /
/// `posix_spawn`, which std prefers when it can) + exec + the child's whole life + reaping it.
pub fn process_spawn_wait(iters: u64) -> Result<Duration, BenchError> {
    let start = Instant::now();
    for _ in 0..iters {
        let status = Command::new(TRUE_PROGRAM)
            .spawn()
            .and_then(|mut child| child.wait())
            .map_err(|e| BenchError::new(&format!("starting {TRUE_PROGRAM}"), e))?;
        if !status.success() {
            return Err(BenchError::new(
                &format!("running {TRUE_PROGRAM}"),
                format!("it exited with {status}"),
            ));
        }
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------
// Chapter 2: a thread.

/// Starts a `std::thread` (default stack) and joins it, `iters` times; returns the total time.
pub fn std_spawn_join(iters: u64) -> Result<Duration, BenchError> {
    let start = Instant::now();
    for i in 0..iters {
        let handle = thread::Builder::new()
            .spawn(move || black_box(i))
            .map_err(|e| BenchError::new("std::thread::Builder::spawn", e))?;
        black_box(handle.join().expect("the thread only returns a number"));
    }
    Ok(start.elapsed())
}

/// Starts an M with part 02's `osthread::MBuilder` (named, 2 MiB stack, unpinned) and joins
/// it, `iters` times; returns the total time.
///
/// This includes MBuilder's tid handshake: `spawn` returns only after the new thread has
/// run and sent back its tid over a channel, so every spawn costs one more wake-up of the
/// spawning thread than `std::thread::spawn`, which returns as soon as `clone` does.
pub fn osthread_spawn_join(iters: u64) -> Result<Duration, BenchError> {
    let start = Instant::now();
    for i in 0..iters {
        let m = MBuilder::new("bench-m")
            .spawn(move || black_box(i))
            .map_err(|e| BenchError::new("osthread::MBuilder::spawn", e))?;
        black_box(m.join().expect("the M only returns a number"));
    }
    Ok(start.elapsed())
}

/// The stack of each thread in [`sleeping_threads`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SleeperStack {
    /// `std::thread::Builder` without `stack_size`: 2 MiB, or `RUST_MIN_STACK` if set.
    StdDefault,
    /// This many bytes, as `Builder::stack_size` (8 MiB is glibc's and C's default).
    Bytes(usize),
}

/// Rust's default stack for spawned threads when `RUST_MIN_STACK` is unset (osthread's
/// `MBuilder::new` uses the same).
pub const RUST_DEFAULT_STACK: usize = 2 << 20;

/// The C default stack of a thread (glibc takes `ulimit -s`, 8 MiB on most systems): the
/// seed's figure.
pub const C_DEFAULT_STACK: usize = 8 << 20;

impl SleeperStack {
    /// The stack size in bytes the threads really get, and where it comes from.
    pub fn resolve(self) -> (usize, &'static str) {
        match self {
            SleeperStack::StdDefault => match std::env::var("RUST_MIN_STACK")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(bytes) => (bytes, "std, RUST_MIN_STACK"),
                None => (RUST_DEFAULT_STACK, "std default"),
            },
            SleeperStack::Bytes(bytes) => (bytes, "Builder::stack_size"),
        }
    }

    fn builder(self) -> thread::Builder {
        match self {
            SleeperStack::StdDefault => thread::Builder::new(),
            SleeperStack::Bytes(bytes) => thread::Builder::new().stack_size(bytes),
        }
    }
}

/// What [`sleeping_threads`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Sleepers {
    /// Threads asked for.
    pub requested: usize,
    /// Threads that started (fewer than `requested` only if the kernel refused one).
    pub started: usize,
    /// Stack size of each thread, bytes.
    pub stack_bytes: usize,
    /// Where that size came from ("std default", "std, RUST_MIN_STACK", "Builder::stack_size").
    pub stack_source: &'static str,
    /// `VmRSS` before the threads started and once all sleep, KiB.
    pub rss_kib: (u64, u64),
    /// `VmSize` before and once all sleep, KiB.
    pub vm_kib: (u64, u64),
    /// Wall time of the loop that started them (all `spawn` calls).
    pub create: Duration,
    /// Why the start loop stopped early, if it did.
    pub failure: Option<String>,
}

impl Sleepers {
    /// Resident memory per started thread, KiB: the stack pages it touched, its TLS, its
    /// share of malloc arenas. Kernel memory (task_struct, the 16 KiB kernel stack) is not
    /// in `VmRSS` and not counted.
    pub fn rss_per_thread_kib(&self) -> f64 {
        per(self.rss_kib.1.saturating_sub(self.rss_kib.0), self.started)
    }

    /// Virtual size per started thread, KiB: its whole stack mapping plus the guard page.
    pub fn vm_per_thread_kib(&self) -> f64 {
        per(self.vm_kib.1.saturating_sub(self.vm_kib.0), self.started)
    }

    /// Wall time of one `spawn` in the start loop.
    pub fn create_per_thread(&self) -> Duration {
        self.create / self.started.max(1) as u32
    }
}

fn per(total: u64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

/// Starts `n` threads that each block on one shared gate (a Mutex + Condvar), reads
/// `VmRSS`/`VmSize` (part 01) before and once all sleep, then opens the gate and joins them.
///
/// If the kernel refuses a thread (out of memory for the stack, `threads-max`,
/// `vm.max_map_count`), the loop stops there: the result says how many started and why,
/// and the threads that did start are released and joined.
pub fn sleeping_threads(n: usize, stack: SleeperStack) -> Result<Sleepers, BenchError> {
    let (stack_bytes, stack_source) = stack.resolve();
    let refused = |i: usize, e: std::io::Error| {
        format!(
            "the kernel refused thread {i} of {n} ({} MiB stack): {e} (see \
             /proc/sys/kernel/threads-max, `ulimit -u`, /proc/sys/vm/max_map_count and \
             /proc/sys/vm/overcommit_memory)",
            stack_bytes >> 20
        )
    };
    let mut result = Sleepers {
        requested: n,
        started: 0,
        stack_bytes,
        stack_source,
        rss_kib: (0, 0),
        vm_kib: (0, 0),
        create: Duration::ZERO,
        failure: None,
    };
    // Start and join one thread first, so one-time costs (a malloc arena, glibc's first
    // stack) are not charged to the measured ones. If even that fails, no thread starts.
    match stack.builder().spawn(|| ()) {
        Ok(h) => h.join().expect("an empty thread cannot panic"),
        Err(e) => {
            result.failure = Some(refused(1, e));
            return Ok(result);
        }
    }

    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n);
    let before = read_status()?;
    let mut failure = None;
    let start = Instant::now();
    for _ in 0..n {
        let gate = Arc::clone(&gate);
        let arrived = Arc::clone(&arrived);
        let spawned = stack.builder().spawn(move || {
            let (open, cv) = &*gate;
            let mut open = open.lock().expect("gate lock");
            arrived.fetch_add(1, Ordering::Release);
            while !*open {
                open = cv.wait(open).expect("gate lock");
            }
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                failure = Some(refused(handles.len() + 1, e));
                break;
            }
        }
    }
    let create = start.elapsed();
    let started = handles.len();

    // Wait until every started thread sits at the gate (so each has touched its stack).
    let wait_start = Instant::now();
    while arrived.load(Ordering::Acquire) < started {
        if wait_start.elapsed() > Duration::from_secs(60) {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let after = read_status();

    {
        let (open, cv) = &*gate;
        *open.lock().expect("gate lock") = true;
        cv.notify_all();
    }
    for h in handles {
        h.join().expect("a sleeping thread only waits");
    }
    let after = after?;
    let at_gate = arrived.load(Ordering::Acquire);
    if at_gate < started {
        return Err(BenchError::new(
            "sleeping threads",
            format!("only {at_gate} of {started} threads reached the gate within 60 s"),
        ));
    }
    Ok(Sleepers {
        started,
        rss_kib: (before.vm_rss_kib, after.vm_rss_kib),
        vm_kib: (before.vm_size_kib, after.vm_size_kib),
        create,
        failure,
        ..result
    })
}

fn read_status() -> Result<procinfo::ProcStatus, BenchError> {
    procinfo::status(Pid::Current).map_err(|e| BenchError::new("reading /proc/self/status", e))
}

// ---------------------------------------------------------------------------------------
// Chapter 3: a hand-off between two threads.

/// What carries the hand-off in [`handoff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Part 03's futex `Parker`: one token per thread, `unpark` the other then `park`.
    Parker,
    /// `std::sync::Mutex` + `Condvar` around a turn counter: the seed's C
    /// `pthread_mutex`/`pthread_cond` ping-pong, in Rust.
    Condvar,
    /// Two `std::sync::mpsc::channel`s, one each way: `send` then `recv`.
    Mpsc,
}

impl Mechanism {
    /// Every mechanism, in report order.
    pub const ALL: [Mechanism; 3] = [Mechanism::Parker, Mechanism::Condvar, Mechanism::Mpsc];

    /// Short name, as in bench ids (`handoff/parker/cross_core`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Parker => "parker",
            Mechanism::Condvar => "condvar",
            Mechanism::Mpsc => "mpsc",
        }
    }

    /// What it is, for a report row.
    pub fn describe(self) -> &'static str {
        match self {
            Mechanism::Parker => "futex Parker (part 03)",
            Mechanism::Condvar => "Mutex + Condvar (the seed's C shape)",
            Mechanism::Mpsc => "std mpsc channel",
        }
    }
}

/// Where the two threads of a hand-off run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Pinned to two different CPUs: each wake-up crosses cores (an IPI to a sleeping CPU).
    CrossCore,
    /// Both pinned to one CPU: each hand-off is a switch on that CPU.
    SameCore,
}

impl Placement {
    /// Both placements, in report order.
    pub const ALL: [Placement; 2] = [Placement::CrossCore, Placement::SameCore];

    /// Short name, as in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Placement::CrossCore => "cross_core",
            Placement::SameCore => "same_core",
        }
    }

    /// For a report row.
    pub fn describe(self) -> &'static str {
        match self {
            Placement::CrossCore => "cross-core",
            Placement::SameCore => "same-core",
        }
    }

    /// The CPUs of the two threads: `Ok([a, b])`, or `Err(why)` when this machine cannot
    /// place them so (cross-core with a single allowed CPU).
    pub fn cpus(self) -> Result<[usize; 2], String> {
        let allowed = osthread::allowed_cpus()
            .map_err(|e| format!("cannot read this process's CPUs (sched_getaffinity): {e}"))?;
        match (self, allowed.as_slice()) {
            (_, []) => Err("sched_getaffinity returned no CPU".to_string()),
            (Placement::CrossCore, [only]) => Err(format!(
                "cross-core skipped: this process may run on one CPU only ({only}); \
                 cross-core hand-off needs two (see `taskset -p $$` or the container's cpuset)"
            )),
            (Placement::CrossCore, [a, b, ..]) => Ok([*a, *b]),
            (Placement::SameCore, [a, ..]) => Ok([*a, *a]),
        }
    }
}

/// The result of one [`handoff`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// Hand-offs done: two per round trip.
    pub handoffs: u64,
    /// Wall time of all of them, measured on the thread that starts and ends the rally.
    pub elapsed: Duration,
    /// Voluntary context switches of both threads during the rally (they blocked).
    pub voluntary: u64,
    /// Involuntary context switches of both threads (the kernel preempted them).
    pub involuntary: u64,
    /// The CPUs the two threads were pinned to.
    pub cpus: [usize; 2],
}

impl Handoff {
    /// Nanoseconds per hand-off.
    pub fn ns_per_handoff(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.handoffs.max(1) as f64
    }

    /// Voluntary context switches per hand-off (one is the textbook figure: the receiver
    /// slept and was woken).
    pub fn voluntary_per_handoff(&self) -> f64 {
        self.voluntary as f64 / self.handoffs.max(1) as f64
    }

    /// Involuntary context switches per hand-off.
    pub fn involuntary_per_handoff(&self) -> f64 {
        self.involuntary as f64 / self.handoffs.max(1) as f64
    }

    /// The elapsed time scaled to `iters` hand-offs, for criterion's `iter_custom`.
    pub fn scaled_to(&self, iters: u64) -> Duration {
        Duration::from_nanos((self.ns_per_handoff() * iters as f64).round() as u64)
    }
}

/// The futex ping-pong of [`handoff`] with the `Parker` type given, so a build on the
/// learner's part can time the solution's beside it.
macro_rules! parker_rally {
    ($parker:ty, $cpus:expr, $round_trips:expr) => {{
        let ping_p = Arc::new(<$parker>::new());
        let pong_p = Arc::new(<$parker>::new());
        let (a, b) = (Arc::clone(&ping_p), Arc::clone(&pong_p));
        rally(
            $cpus,
            $round_trips,
            move |n| {
                for _ in 0..n {
                    b.unpark();
                    a.park();
                }
            },
            move |n| {
                for _ in 0..n {
                    pong_p.park();
                    ping_p.unpark();
                }
            },
        )
    }};
}

/// [`handoff`] over part 03's *solution* `Parker`, whichever `Parker` this build measures:
/// a build on the learner's part 03 (`mine-03`) times both in turn within one run, so the
/// ratio yours / solution does not drift with the machine's load between two runs.
pub fn handoff_solution_parker(cpus: [usize; 2], round_trips: u64) -> Result<Handoff, BenchError> {
    parker_rally!(crate::parts::parker_solution::Parker, cpus, round_trips)
}

/// Ping-pong: two threads pinned to `cpus` pass the turn back and forth `round_trips` times
/// over `mechanism` (2 × `round_trips` hand-offs); returns time and context switches.
///
/// A hand-off is one message from one thread to the other, which is asleep waiting for it:
/// the sender wakes the receiver and then goes to sleep itself.
pub fn handoff(
    mechanism: Mechanism,
    cpus: [usize; 2],
    round_trips: u64,
) -> Result<Handoff, BenchError> {
    match mechanism {
        Mechanism::Parker => parker_rally!(Parker, cpus, round_trips),
        Mechanism::Condvar => {
            // The seed's C program, in Rust: one mutex, one condvar, a turn counter. The
            // pinger moves on even counts, the ponger on odd ones; each waits for its turn
            // with the lock held except inside `wait`, as pthread_cond_wait does, and signals
            // with the lock still held, as the C code does. On one core that costs extra
            // switches: the woken thread preempts the signaller and finds the lock taken.
            let turn = Arc::new((Mutex::new(0u64), Condvar::new()));
            let other = Arc::clone(&turn);
            let player = |first: u64| {
                move |turn: Arc<(Mutex<u64>, Condvar)>, n: u64| {
                    let (count, cv) = &*turn;
                    let mut count = count.lock().expect("turn lock");
                    for i in 0..n {
                        while *count != 2 * i + first {
                            count = cv.wait(count).expect("turn lock");
                        }
                        *count += 1;
                        cv.notify_one();
                    }
                    // The pinger's rally ends when the last pong is back.
                    while first == 0 && *count != 2 * n {
                        count = cv.wait(count).expect("turn lock");
                    }
                }
            };
            let (ping, pong) = (player(0), player(1));
            rally(
                cpus,
                round_trips,
                move |n| ping(turn, n),
                move |n| pong(other, n),
            )
        }
        Mechanism::Mpsc => {
            let (to_pong, from_ping) = mpsc::channel::<u64>();
            let (to_ping, from_pong) = mpsc::channel::<u64>();
            rally(
                cpus,
                round_trips,
                move |n| {
                    for i in 0..n {
                        to_pong.send(i).expect("the ponger is alive");
                        black_box(from_pong.recv().expect("the ponger answers"));
                    }
                },
                move |n| {
                    for _ in 0..n {
                        let v = from_ping.recv().expect("the pinger is alive");
                        to_ping.send(v).expect("the pinger waits");
                    }
                },
            )
        }
    }
}

/// One side's figures: wall time of its loop and its switches during it.
struct Side {
    elapsed: Duration,
    switches: (u64, u64),
}

/// Starts the two pinned threads, lines them up, runs `ping` and `pong`, sums the switches.
fn rally<P, Q>(cpus: [usize; 2], round_trips: u64, ping: P, pong: Q) -> Result<Handoff, BenchError>
where
    P: FnOnce(u64) + Send + 'static,
    Q: FnOnce(u64) + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    // A start gun per side: if the second thread cannot start, dropping the first one's
    // sender lets it return instead of waiting at the barrier forever.
    let (go_ping, ping_ready) = mpsc::channel::<()>();
    let (go_pong, pong_ready) = mpsc::channel::<()>();
    let ping_m = side(
        "pingpong-ping",
        cpus[0],
        ping_ready,
        Arc::clone(&barrier),
        move || ping(round_trips),
    )?;
    let pong_m = match side("pingpong-pong", cpus[1], pong_ready, barrier, move || {
        pong(round_trips)
    }) {
        Ok(m) => m,
        Err(e) => {
            drop(go_ping);
            let _ = ping_m.join();
            return Err(e);
        }
    };
    // Both exist: fire. A send fails only if the thread is gone, which join reports.
    let _ = go_ping.send(());
    let _ = go_pong.send(());
    let ping = ping_m.join();
    let pong = pong_m.join();
    match (ping, pong) {
        (Ok(Some(ping)), Ok(Some(pong))) => Ok(Handoff {
            handoffs: 2 * round_trips,
            elapsed: ping.elapsed,
            voluntary: ping.switches.0 + pong.switches.0,
            involuntary: ping.switches.1 + pong.switches.1,
            cpus,
        }),
        _ => Err(BenchError(
            "a ping-pong thread panicked or never got its start signal".to_string(),
        )),
    }
}

fn side<F>(
    name: &str,
    cpu: usize,
    ready: mpsc::Receiver<()>,
    barrier: Arc<Barrier>,
    body: F,
) -> Result<MHandle<Option<Side>>, BenchError>
where
    F: FnOnce() + Send + 'static,
{
    MBuilder::new(name)
        .cpus(&[cpu])
        .spawn(move || {
            ready.recv().ok()?;
            barrier.wait();
            let before = thread_switches();
            let start = Instant::now();
            body();
            let elapsed = start.elapsed();
            let after = thread_switches();
            Some(Side {
                elapsed,
                switches: (after.0 - before.0, after.1 - before.1),
            })
        })
        .map_err(|e| BenchError::new(&format!("starting {name} on CPU {cpu}"), e))
}

/// `(voluntary, involuntary)` context switches of the calling thread so far.
///
/// Why `getrusage(RUSAGE_THREAD)` on each side, summed, and not `RUSAGE_SELF` before and
/// after: RUSAGE_SELF counts every thread of the process, and other threads do run while
/// a rally does: the thread that started the rally blocks in `join` (one switch of its
/// own), MBuilder's tid handshake wakes it, criterion's harness and `cargo test`'s other
/// tests run in the same process. Each side reads its own counters after the start barrier
/// and after its last hand-off, so the sum is exactly the rally's switches and nothing else.
/// (The same figures are `voluntary_ctxt_switches` in `/proc/thread-self/status`.)
pub fn thread_switches() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD only reads the caller's
    // own counters. It cannot fail with these arguments.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    debug_assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    (usage.ru_nvcsw as u64, usage.ru_nivcsw as u64)
}

// ---------------------------------------------------------------------------------------
// Chapter 4: a switch in user space.

/// What switches stacks in [`switch_round_trip`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Part 04's `context::switch`: seven words saved, seven restored, `ret`.
    Asm,
    /// Part 04's step 3: `context::resume` (a `call` into the fiber) + `context::suspend`
    /// (the matching `ret`, inlined into the fiber), so calls and returns stay balanced.
    Fiber,
    /// The `corosensei` crate: `Coroutine::resume` + `Yielder::suspend`, the peer of
    /// ANCHORS.md's "raw user-space switch" row.
    Corosensei,
}

impl Engine {
    /// Every engine, in report order.
    pub const ALL: [Engine; 3] = [Engine::Asm, Engine::Fiber, Engine::Corosensei];

    /// Short name, as in bench ids (`switch/asm`) and on `class-bench --switch-count`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Asm => "asm",
            Engine::Fiber => "fiber",
            Engine::Corosensei => "corosensei",
        }
    }

    /// What it is, for a report row.
    pub fn describe(self) -> &'static str {
        match self {
            Engine::Asm => "asm switch (part 04)",
            Engine::Fiber => "asm fiber (part 04 step 3)",
            Engine::Corosensei => "corosensei",
        }
    }

    /// The engine called `name` ([`Engine::name`]), if any.
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Bytes of the stack the other context runs on, for every engine. Its loop needs a few
/// words; the size only has to clear `context::MIN_STACK` and corosensei's page rounding.
pub const SWITCH_STACK: usize = 64 << 10;

/// Runs `rounds` round trips into another context and back on `engine`; returns their time.
///
/// A round trip is one resume and one suspend: this thread switches to a context on its own
/// stack, which switches straight back (two stack switches, the unit of ANCHORS.md's
/// "resume+suspend"). The other context does nothing else, so the time is the switches and
/// the loop around them. Setting up the stack and tearing it down are outside the timing.
///
/// - [`Engine::Asm`]: part 04's `context::prepare` + `context::switch` on a `Vec`-backed
///   stack of [`SWITCH_STACK`] bytes.
/// - [`Engine::Fiber`]: part 04's step 3, `context::prepare_fiber` + `context::resume` on a
///   `Vec`-backed stack of [`SWITCH_STACK`] bytes, running an echo fiber that calls
///   `context::suspend` in a loop.
/// - [`Engine::Corosensei`]: an identity coroutine (`input = yielder.suspend(input)` in a
///   loop) on a `DefaultStack` of [`SWITCH_STACK`] bytes (mmap'd, with a guard page), as in
///   corosensei's own `coroutine_switch` bench.
pub fn switch_round_trip(engine: Engine, rounds: u64) -> Result<Duration, BenchError> {
    match engine {
        Engine::Asm => asm_round_trips(rounds),
        Engine::Fiber => fiber_round_trips(rounds),
        Engine::Corosensei => corosensei_round_trips(rounds),
    }
}

/// The two contexts of the asm round trip: the measuring loop's and the echo's.
#[derive(Default)]
struct Pair {
    main: Context,
    echo: Context,
}

/// The other side of the asm round trip: runs on its own stack and switches straight back
/// each time it is resumed. It never returns (nothing called it on its stack); the last
/// switch back leaves it suspended for good.
extern "C" fn echo(arg: usize) -> ! {
    let pair = arg as *mut Pair;
    loop {
        // SAFETY: `arg` is the `Pair` of `asm_round_trips`, alive until after the last
        // switch into this context; the measuring loop is suspended in `switch` while we
        // run, so nothing else touches it. `main` was saved by that loop's switch into us.
        unsafe { context::switch(&raw mut (*pair).echo, &raw const (*pair).main) };
    }
}

fn asm_round_trips(rounds: u64) -> Result<Duration, BenchError> {
    // u128 elements: the buffer is 16-byte aligned, as a stack must be.
    let mut stack = vec![0u128; SWITCH_STACK / 16];
    let top = stack.as_mut_ptr_range().end.cast::<u8>();
    let pair = Box::into_raw(Box::new(Pair::default()));
    // SAFETY: the SWITCH_STACK bytes below `top` are `stack`'s heap buffer, which is not
    // touched through `stack` again and is freed only at the end of this function, after
    // the last switch into the context.
    let prepared = unsafe { context::prepare(top, SWITCH_STACK, echo, pair as usize) };
    let prepared = match prepared {
        Ok(ctx) => ctx,
        Err(e) => {
            // SAFETY: `pair` came from Box::into_raw above and nothing else holds it.
            drop(unsafe { Box::from_raw(pair) });
            return Err(BenchError::new("context::prepare", e));
        }
    };
    // SAFETY: `pair` is valid (Box::into_raw) and no context runs yet.
    unsafe { (*pair).echo = prepared };
    let start = Instant::now();
    for _ in 0..rounds {
        // SAFETY: `echo` holds a context made by `prepare` or saved by the echo's own
        // switch; its stack is alive and it is not running (one thread, one context at a
        // time); `main` and `echo` are different contexts.
        unsafe { context::switch(&raw mut (*pair).main, &raw const (*pair).echo) };
    }
    let elapsed = start.elapsed();
    // The echo context stays suspended inside `switch` for good. Nothing on its stack owns
    // anything (its only local is a pointer), so freeing the stack and the contexts just
    // forgets it.
    // SAFETY: `pair` came from Box::into_raw; the echo context, its only other user, will
    // never run again.
    drop(unsafe { Box::from_raw(pair) });
    drop(stack);
    Ok(elapsed)
}

/// The fiber side of the fiber round trip: suspends straight back each time it is resumed.
/// It never returns; the last suspend leaves it suspended for good.
extern "C" fn fiber_echo(_arg: usize, fiber: *mut Fiber) -> ! {
    loop {
        // SAFETY: this function is the fiber's entry, so it runs on the fiber's own stack,
        // and `fiber` is the `Fiber` that `resume` entered it through (a live Box of
        // `fiber_round_trips`, freed only after the last resume has returned).
        unsafe { context::suspend(fiber) };
    }
}

fn fiber_round_trips(rounds: u64) -> Result<Duration, BenchError> {
    // u128 elements: the buffer is 16-byte aligned, as a stack must be.
    let mut stack = vec![0u128; SWITCH_STACK / 16];
    let top = stack.as_mut_ptr_range().end.cast::<u8>();
    // SAFETY: the SWITCH_STACK bytes below `top` are `stack`'s heap buffer, which is not
    // touched through `stack` again and is freed only at the end of this function, after
    // the last resume of the fiber has returned.
    let prepared = unsafe { context::prepare_fiber(top, SWITCH_STACK, fiber_echo, 0) }
        .map_err(|e| BenchError::new("context::prepare_fiber", e))?;
    // Boxed, so the fiber's address (which the fiber's code keeps) never moves.
    let fiber = Box::into_raw(Box::new(prepared));
    let start = Instant::now();
    for _ in 0..rounds {
        // SAFETY: `fiber` came from `prepare_fiber` and is suspended (fresh, or back from its
        // own `suspend`); its stack is alive; one thread resumes it, one resume at a time.
        unsafe { context::resume(fiber) };
    }
    let elapsed = start.elapsed();
    // The fiber stays suspended inside `suspend` for good. Nothing on its stack owns anything
    // (its locals are a pointer and an integer), so freeing the stack and the Fiber just
    // forgets it.
    // SAFETY: `fiber` came from Box::into_raw; the fiber, its only other user, will never
    // run again.
    drop(unsafe { Box::from_raw(fiber) });
    drop(stack);
    Ok(elapsed)
}

fn corosensei_round_trips(rounds: u64) -> Result<Duration, BenchError> {
    let stack = DefaultStack::new(SWITCH_STACK)
        .map_err(|e| BenchError::new("corosensei: mapping a coroutine stack", e))?;
    let mut identity: Coroutine<usize, usize, (), DefaultStack> =
        Coroutine::with_stack(stack, |yielder: &Yielder<usize, usize>, mut input| {
            loop {
                input = yielder.suspend(input);
            }
        });
    let start = Instant::now();
    for i in 0..rounds {
        black_box(identity.resume(black_box(i as usize)));
    }
    let elapsed = start.elapsed();
    // Dropping a started, unfinished coroutine unwinds its stack (corosensei's `unwind`
    // feature), then unmaps it.
    drop(identity);
    Ok(elapsed)
}

/// Instruction totals of two callgrind runs of `class-bench --switch-count`, and the
/// round-trip counts they ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionCount {
    /// Round trips of the two runs (the second larger).
    pub rounds: (u64, u64),
    /// Instructions executed by the whole program in each run (callgrind's `Ir` total).
    pub totals: (u64, u64),
}

impl InstructionCount {
    /// Instructions per round trip: (total₂ − total₁) / (rounds₂ − rounds₁). Everything the
    /// two runs share (process start, loading, the coroutine's setup and teardown) cancels;
    /// the loop around the switch stays in, as it does in the timing.
    pub fn per_round_trip(&self) -> f64 {
        let rounds = self.rounds.1.saturating_sub(self.rounds.0);
        if rounds == 0 {
            return f64::NAN;
        }
        (self.totals.1 as f64 - self.totals.0 as f64) / rounds as f64
    }
}

/// The program named `program` on `PATH`, if there is one.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The `valgrind` program on `PATH`, if there is one.
pub fn valgrind_on_path() -> Option<PathBuf> {
    on_path("valgrind")
}

/// What to say when valgrind is missing.
pub const NO_VALGRIND: &str =
    "valgrind is not on PATH, so no instruction counts (`apt-get install valgrind`)";

/// Counts instructions per round trip of `engine` with valgrind's callgrind.
///
/// Runs `valgrind --tool=callgrind <program> <args…> <engine> <n>` for both counts of
/// `rounds`, where the program runs `n` round trips of [`switch_round_trip`] and exits
/// (`class-bench --switch-count asm 10000`), reads each run's `Ir` total from its callgrind
/// output file, and returns both. Instruction counts are exact and do not depend on the
/// machine's load, unlike times.
pub fn callgrind_round_trip(
    program: &Path,
    args: &[&str],
    engine: Engine,
    rounds: (u64, u64),
) -> Result<InstructionCount, BenchError> {
    let valgrind = valgrind_on_path()
        .ok_or_else(|| BenchError(format!("callgrind skipped: {NO_VALGRIND}")))?;
    let mut totals = [0u64; 2];
    for (total, n) in totals.iter_mut().zip([rounds.0, rounds.1]) {
        let n = n.to_string();
        let mut command: Vec<&OsStr> = vec![program.as_os_str()];
        command.extend(args.iter().map(OsStr::new));
        command.extend([OsStr::new(engine.name()), OsStr::new(&n)]);
        *total = callgrind_instructions(&valgrind, &command)?;
    }
    Ok(InstructionCount {
        rounds,
        totals: (totals[0], totals[1]),
    })
}

/// The workspace's target dir: `CARGO_TARGET_DIR` if set (relative to the current dir, as
/// cargo takes it), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::path::absolute(&dir).unwrap_or_else(|_| dir.into()),
        _ => {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(&manifest).join("target")
        }
    }
}

/// Runs `command` under `valgrind --tool=callgrind` and returns its total instruction count
/// (`Ir`) from the output file, which is written to the temp dir and removed.
pub fn callgrind_instructions(valgrind: &Path, command: &[&OsStr]) -> Result<u64, BenchError> {
    let (what, text) = callgrind_output(valgrind, &[], command, &[])?;
    parse_callgrind_total(&text).ok_or_else(|| {
        BenchError::new(
            &what,
            "its output file has no `totals:` or `summary:` line with an Ir count",
        )
    })
}

/// Runs `valgrind --tool=callgrind OPTIONS COMMAND` (with `env` added), the output file in the
/// temp dir; returns the command as shown in errors, and the output file's text (the file is
/// removed). A failed run is an error quoting the last lines valgrind printed.
pub(crate) fn callgrind_output(
    valgrind: &Path,
    options: &[&str],
    command: &[&OsStr],
    env: &[(&str, &str)],
) -> Result<(String, String), BenchError> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let out_file = std::env::temp_dir().join(format!(
        "gmp-benches-callgrind.{}.{}.out",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let shown = command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let what = format!("valgrind --tool=callgrind {shown}");
    let output = Command::new(valgrind)
        .arg("--tool=callgrind")
        .args(options)
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .args(command)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| BenchError::new(&format!("starting {what}"), e))?;
    let text = std::fs::read_to_string(&out_file);
    let _ = std::fs::remove_file(&out_file);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(BenchError::new(
            &what,
            format!(
                "it exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ),
        ));
    }
    let text = text.map_err(|e| BenchError::new(&format!("reading {}", out_file.display()), e))?;
    Ok((what, text))
}

/// The total `Ir` (instructions executed) of a callgrind output file: the `totals:` line,
/// or else the `summary:` line, read at the position of `Ir` in the `events:` line.
pub fn parse_callgrind_total(text: &str) -> Option<u64> {
    let mut ir_index = 0;
    let (mut totals, mut summary) = (None, None);
    for line in text.lines() {
        if let Some(events) = line.strip_prefix("events:") {
            ir_index = events.split_whitespace().position(|e| e == "Ir")?;
        } else if let Some(v) = line.strip_prefix("totals:") {
            totals = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("summary:") {
            summary = Some(v.to_string());
        }
    }
    totals
        .or(summary)?
        .split_whitespace()
        .nth(ir_index)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{DEFAULT_LIMIT, watchdog};

    /// Every measurement runs once with tiny counts and returns figures that add up.
    /// No figure is compared with a time: that is the benches' job.
    #[test]
    fn every_measurement_runs_once() {
        watchdog("every measurement once, tiny counts", DEFAULT_LIMIT, || {
            let plan = Plan::TINY;
            assert!(process_spawn_wait(plan.process_spawns).unwrap() > Duration::ZERO);
            assert!(std_spawn_join(plan.thread_spawns).unwrap() > Duration::ZERO);
            assert!(osthread_spawn_join(plan.thread_spawns).unwrap() > Duration::ZERO);

            for placement in Placement::ALL {
                let cpus = match placement.cpus() {
                    Ok(cpus) => cpus,
                    Err(why) => {
                        eprintln!("{why}");
                        continue;
                    }
                };
                for mechanism in Mechanism::ALL {
                    let h = handoff(mechanism, cpus, plan.round_trips).unwrap();
                    assert_eq!(h.handoffs, 2 * plan.round_trips);
                    assert!(h.elapsed > Duration::ZERO);
                    assert_eq!(h.cpus, cpus);
                }
            }

            for stack in [
                SleeperStack::StdDefault,
                SleeperStack::Bytes(C_DEFAULT_STACK),
            ] {
                let s = sleeping_threads(plan.sleepers, stack).unwrap();
                assert_eq!(s.started, plan.sleepers, "{:?}", s.failure);
                assert!(s.failure.is_none());
                assert_eq!(s.stack_bytes, stack.resolve().0);
            }
        });
    }

    /// A stack no machine can give 4 of: the start loop stops, says why, and the threads
    /// that did start are released (the call returns).
    #[test]
    fn sleeping_threads_report_a_refused_thread() {
        watchdog(
            "sleeping threads with a 64 TiB stack",
            DEFAULT_LIMIT,
            || {
                let s = sleeping_threads(4, SleeperStack::Bytes(1 << 46)).unwrap();
                eprintln!("{s:?}");
                assert_eq!(s.failure.is_some(), s.started < s.requested, "{s:?}");
                if let Some(why) = &s.failure {
                    assert!(why.contains("refused thread"), "{why}");
                }
            },
        );
    }

    /// Each switch engine runs a few round trips: proves the stack switch works (a wrong one
    /// crashes the test process), measures nothing.
    #[test]
    fn every_switch_engine_runs_once() {
        watchdog(
            "every switch engine once, tiny counts",
            DEFAULT_LIMIT,
            || {
                for engine in Engine::ALL {
                    for rounds in [0, 1, Plan::TINY.switch_rounds] {
                        switch_round_trip(engine, rounds)
                            .unwrap_or_else(|e| panic!("{} × {rounds}: {e}", engine.name()));
                    }
                    assert_eq!(Engine::from_name(engine.name()), Some(engine));
                }
                assert_eq!(Engine::from_name("green"), None);
            },
        );
    }

    /// A real callgrind output file (a `class-bench --switch-count asm 10000` run, the body
    /// cut down to a few lines).
    const CALLGRIND_FIXTURE: &str = include_str!("testdata/callgrind.out");

    #[test]
    fn callgrind_parser_reads_the_fixture() {
        assert_eq!(parse_callgrind_total(CALLGRIND_FIXTURE), Some(856_842));
    }

    #[test]
    fn callgrind_parser_finds_ir_among_events_and_falls_back_to_summary() {
        let several = "events: Dr Ir Dw\nsummary: 7 11 13\nfn=(1) main\n0 1 2 3\ntotals: 7 12 13\n";
        assert_eq!(
            parse_callgrind_total(several),
            Some(12),
            "totals:, Ir column"
        );
        let summary_only = "events: Ir\nsummary: 42\n";
        assert_eq!(parse_callgrind_total(summary_only), Some(42));
        assert_eq!(
            parse_callgrind_total("events: Ir\n"),
            None,
            "no total at all"
        );
        assert_eq!(
            parse_callgrind_total("events: Dr\ntotals: 5\n"),
            None,
            "no Ir event"
        );
        assert_eq!(parse_callgrind_total(""), None);
    }

    #[test]
    fn instructions_per_round_trip_is_a_difference_quotient() {
        let c = InstructionCount {
            rounds: (10_000, 110_000),
            totals: (856_842, 4_856_858),
        };
        assert_eq!(c.per_round_trip(), 40.00016);
        let same = InstructionCount {
            rounds: (5, 5),
            totals: (1, 2),
        };
        assert!(same.per_round_trip().is_nan());
    }

    #[test]
    fn same_core_pins_both_threads_to_one_cpu() {
        let [a, b] = Placement::SameCore.cpus().unwrap();
        assert_eq!(a, b);
        if let Ok([a, b]) = Placement::CrossCore.cpus() {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn handoff_figures_divide_by_handoffs() {
        let h = Handoff {
            handoffs: 4,
            elapsed: Duration::from_micros(100),
            voluntary: 4,
            involuntary: 1,
            cpus: [0, 1],
        };
        assert_eq!(h.ns_per_handoff(), 25_000.0);
        assert_eq!(h.voluntary_per_handoff(), 1.0);
        assert_eq!(h.involuntary_per_handoff(), 0.25);
        assert_eq!(h.scaled_to(10), Duration::from_micros(250));
    }
}
