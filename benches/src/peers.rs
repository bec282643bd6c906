//! Five programs on gmp, tokio and may at a chosen P (chapters 7–8): spawn + join one task at
//! a time, a hand-off over a channel, a yield, nested fib and a spawn chain. Go's twins are in
//! `benches/go` (see `go.rs`). The class bench and the criterion bench `peers` both call
//! [`run`], each in a child process ([`child_main`], [`run_in_child`]) with a time limit: may's
//! worker count is fixed per process once its scheduler starts, and a runtime that fails or
//! hangs (gmp's fib on stage 1 runs out of mappings) must cost one row, not the bench.
//!
//! Every program checks its own result (the sum of the joined values, the last value of the
//! rally, the yields counted, fib's value, the chain's length), so a broken row is an error,
//! never a fast time.
//!
//! | program | what one run does | [`Run::ops`] counts |
//! |---------|-------------------|--------------------|
//! | [`Program::SpawnJoin`] | start a task, join it; n times, one at a time | spawn + joins |
//! | [`Program::Handoff`] | two tasks pass a value back and forth, n messages (rounded up to whole round trips) | hand-offs |
//! | [`Program::Yield`] | two tasks yield in turn, n yields in all | yields |
//! | [`Program::Fib`] | fib(n), a task for fib(k−1) at every k above [`FIB_CUTOFF`] | tasks |
//! | [`Program::Chain`] | n tasks, each starts the next; the last signals the start | tasks |

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::BenchError;

/// The runtimes that run here; Go runs in its own program (`go.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The workbook's runtime, through its public API only.
    Gmp,
    /// tokio's multi-thread runtime with `worker_threads(P)`.
    Tokio,
    /// may's coroutines with `may::config().set_workers(P)`.
    May,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 3] = [Peer::Gmp, Peer::Tokio, Peer::May];

    /// The name on a child's command line and in row keys.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Gmp => "gmp",
            Peer::Tokio => "tokio",
            Peer::May => "may",
        }
    }

    /// The peer called `name`, if any.
    pub fn from_name(name: &str) -> Option<Peer> {
        Peer::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One of the five programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// Start one task and join it, one at a time.
    SpawnJoin,
    /// Ping-pong between two tasks; one message is one hand-off.
    Handoff,
    /// Two tasks yield in turn.
    Yield,
    /// Nested fib: a task for fib(k−1) at every k above the cutoff.
    Fib,
    /// Each task starts the next; the last signals the start.
    Chain,
}

impl Program {
    /// Every program, in table order.
    pub const ALL: [Program; 5] = [
        Program::SpawnJoin,
        Program::Handoff,
        Program::Yield,
        Program::Fib,
        Program::Chain,
    ];

    /// The name on a child's command line, in row keys and in Go's program.
    pub fn name(self) -> &'static str {
        match self {
            Program::SpawnJoin => "spawn-join",
            Program::Handoff => "pingpong",
            Program::Yield => "yield",
            Program::Fib => "fib",
            Program::Chain => "chain",
        }
    }

    /// The program called `name`, if any.
    pub fn from_name(name: &str) -> Option<Program> {
        Program::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the report shows the whole run (fib, in ms) rather than time per op (ns).
    pub fn whole_run(self) -> bool {
        self == Program::Fib
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// fib's argument in the class bench: fib(35).
pub const FIB_N: u64 = 35;
/// Below or at this argument a task computes fib sequentially (no more tasks).
pub const FIB_CUTOFF: u64 = 10;
/// Links of the spawn chain in the class bench.
pub const CHAIN_LEN: u64 = 1_000_000;

/// fib(n) by iteration: the check for the nested programs.
pub fn fib_value(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

/// fib(n) by plain recursion: what a task computes at or below the cutoff.
pub fn seq_fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        seq_fib(n - 1) + seq_fib(n - 2)
    }
}

/// Tasks the nested fib(n) starts: one per call above the cutoff, so
/// T(n) = 1 + T(n−1) + T(n−2), T(k) = 0 at or below it (196,417 for fib(35) to fib(10)).
pub fn fib_tasks(n: u64) -> u64 {
    // Iterative: T over k = cutoff+1 ..= n.
    let (mut t2, mut t1) = (0u64, 0u64); // T(k−2), T(k−1)
    for _ in FIB_CUTOFF + 1..=n {
        (t2, t1) = (t1, 1 + t1 + t2);
    }
    t1
}

/// What one measured run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Wall time of the timed part (the runtime's start and a warm-up run are outside it).
    pub elapsed: Duration,
    /// Operations it did (see the module table).
    pub ops: u64,
    /// CPU time (user + system) of every thread of the process over the timed part, when
    /// the child reported it: CPU over wall is how many cores were busy on average.
    pub cpu: Option<Duration>,
}

impl Run {
    /// Nanoseconds per operation.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.ops.max(1) as f64
    }
}

/// The count of the warm-up run before the timed one: a tenth, at most 10,000 (as Go's).
fn warm_up(program: Program, n: u64) -> u64 {
    match program {
        // fib(25) to the same cutoff: ~1.6k tasks, enough to start every worker.
        Program::Fib => n.min(25),
        _ => (n / 10 + 1).min(10_000),
    }
}

/// Checks a program's result against what it must be, naming both on a mismatch.
fn check(program: Program, n: u64, got: u64) -> Result<(), BenchError> {
    let want = match program {
        Program::SpawnJoin => n * n.saturating_sub(1) / 2,
        // Whole round trips: an odd n rounds up to the next hand-off.
        Program::Handoff => 2 * n.div_ceil(2),
        Program::Yield | Program::Chain => n,
        Program::Fib => fib_value(n),
    };
    if got == want {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{program} {n}: wrong result {got}, expected {want}: the runtime lost or repeated \
             work, so its time means nothing"
        )))
    }
}

fn ops(program: Program, n: u64) -> u64 {
    match program {
        Program::Fib => fib_tasks(n),
        Program::Handoff => 2 * n.div_ceil(2),
        _ => n,
    }
}

/// Runs `program` of size `n` on `peer` with `procs` Ps (workers): one warm-up run, then
/// `repeat` timed runs, in one runtime; returns their total, each result checked.
///
/// `n` is the count of operations, fib's argument, or the chain's length. may's worker count
/// is fixed once its scheduler runs, so a second `procs` for may in one process is refused:
/// run each in its own process ([`run_in_child`]).
pub fn run(
    peer: Peer,
    program: Program,
    procs: usize,
    n: u64,
    repeat: u64,
) -> Result<Run, BenchError> {
    if procs == 0 || n == 0 || repeat == 0 {
        return Err(BenchError(format!(
            "{} {program}: P {procs}, n {n} and repeat {repeat} must each be at least 1",
            peer.name()
        )));
    }
    let sizes = (warm_up(program, n), n, repeat);
    let span = match peer {
        Peer::Gmp => gmp_run(program, procs, sizes)?,
        Peer::Tokio => tokio_run(program, procs, sizes)?,
        Peer::May => may_run(program, procs, sizes)?,
    };
    Ok(Run {
        elapsed: span.wall,
        ops: ops(program, n) * repeat,
        cpu: Some(span.cpu),
    })
}

/// (warm-up size, size, timed runs).
type Sizes = (u64, u64, u64);

/// Wall and CPU time of the timed runs together.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    wall: Duration,
    cpu: Duration,
}

/// The process's CPU time so far, user and system, all threads (`getrusage(RUSAGE_SELF)`).
fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Where a timed run started, on the wall clock and in process CPU time.
struct Mark {
    wall: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }
}

impl Span {
    /// Adds the wall and CPU time since `mark`.
    fn add_since(&mut self, mark: Mark) {
        self.wall += mark.wall.elapsed();
        self.cpu += process_cpu().saturating_sub(mark.cpu);
    }
}

/// The warm-up, then `repeat` timed runs of `one`, each result checked.
fn timed(
    program: Program,
    (warm, n, repeat): Sizes,
    mut one: impl FnMut(u64) -> Result<u64, BenchError>,
) -> Result<Span, BenchError> {
    check(program, warm, one(warm)?)?;
    let mut total = Span::default();
    for _ in 0..repeat {
        let mark = Mark::now();
        let got = one(n)?;
        total.add_since(mark);
        check(program, n, got)?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// gmp, through its public API only.

fn gmp_run(program: Program, procs: usize, sizes: Sizes) -> Result<Span, BenchError> {
    let rt = gmp::Runtime::builder()
        .procs(procs)
        .build()
        .map_err(|e| BenchError::new(&format!("starting gmp with {procs} Ps"), e))?;
    rt.block_on(move || timed(program, sizes, |n| gmp_once(program, n)))
}

fn gmp_once(program: Program, n: u64) -> Result<u64, BenchError> {
    let failed = |e: &dyn fmt::Display| BenchError(format!("gmp {program} {n}: {e}"));
    match program {
        Program::SpawnJoin => {
            let mut sum = 0;
            for i in 0..n {
                sum += gmp::go(move || i).join().map_err(|e| failed(&e))?;
            }
            Ok(sum)
        }
        Program::Handoff => {
            let (tx, rx) = gmp::chan::rendezvous::<u64>();
            let (back_tx, back_rx) = gmp::chan::rendezvous::<u64>();
            let echo = gmp::go(move || {
                while let Ok(v) = rx.recv() {
                    if back_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            // Each side adds one per message, so after the rally v counts the hand-offs.
            let mut v = 0;
            for _ in 0..n.div_ceil(2) {
                tx.send(v).map_err(|e| failed(&e))?;
                v = back_rx.recv().map_err(|e| failed(&e))? + 1;
            }
            drop(tx);
            echo.join().map_err(|e| failed(&e))?;
            Ok(v)
        }
        Program::Yield => {
            let each = n / 2;
            let hs: Vec<_> = [each, n - each]
                .into_iter()
                .map(|k| {
                    gmp::go(move || {
                        for _ in 0..k {
                            gmp::yield_now();
                        }
                        k
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.join().map_err(|e| failed(&e))?;
            }
            Ok(sum)
        }
        Program::Fib => gmp_fib(n).map_err(|e| failed(&e)),
        Program::Chain => {
            let (tx, rx) = gmp::chan::rendezvous::<u64>();
            drop(gmp::go(move || gmp_link(1, n, tx)));
            // A link that never runs drops the sender with its closure: recv says so.
            rx.recv().map_err(|_| {
                failed(&"the chain broke: a link never ran (its G could not start; the child's stderr says why)")
            })
        }
    }
}

fn gmp_fib(n: u64) -> Result<u64, String> {
    if n <= FIB_CUTOFF {
        return Ok(seq_fib(n));
    }
    let h = gmp::go(move || gmp_fib(n - 1));
    let b = gmp_fib(n - 2);
    // Join before looking at `b`, so no G is left running when this one returns.
    let a = h.join().map_err(|e| e.to_string())?;
    Ok(a? + b?)
}

fn gmp_link(i: u64, n: u64, done: gmp::chan::Sender<u64>) {
    if i == n {
        let _ = done.send(i);
    } else {
        drop(gmp::go(move || gmp_link(i + 1, n, done)));
    }
}

// ---------------------------------------------------------------------------------------
// tokio: the multi-thread runtime, the program itself a spawned task (so it runs on a
// worker, as gmp's main G runs on an M).

fn tokio_run(program: Program, procs: usize, sizes: Sizes) -> Result<Span, BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(procs)
        .build()
        .map_err(|e| BenchError::new(&format!("starting tokio with {procs} workers"), e))?;
    rt.block_on(async move {
        tokio::spawn(async move {
            let (warm, n, repeat) = sizes;
            check(program, warm, tokio_once(program, warm).await?)?;
            let mut total = Span::default();
            for _ in 0..repeat {
                let mark = Mark::now();
                let got = tokio_once(program, n).await?;
                total.add_since(mark);
                check(program, n, got)?;
            }
            Ok(total)
        })
        .await
        .map_err(|e| BenchError(format!("tokio {program}: the driving task failed: {e}")))?
    })
}

async fn tokio_once(program: Program, n: u64) -> Result<u64, BenchError> {
    let failed = |e: &dyn fmt::Display| BenchError(format!("tokio {program} {n}: {e}"));
    match program {
        Program::SpawnJoin => {
            let mut sum = 0;
            for i in 0..n {
                sum += tokio::spawn(async move { i })
                    .await
                    .map_err(|e| failed(&e))?;
            }
            Ok(sum)
        }
        Program::Handoff => {
            // tokio has no unbuffered channel; in a ping-pong a bounded(1) channel holds at
            // most one message, so each message is still one hand-off.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1);
            let (back_tx, mut back_rx) = tokio::sync::mpsc::channel::<u64>(1);
            let echo = tokio::spawn(async move {
                while let Some(v) = rx.recv().await {
                    if back_tx.send(v + 1).await.is_err() {
                        break;
                    }
                }
            });
            let mut v = 0;
            for _ in 0..n.div_ceil(2) {
                tx.send(v).await.map_err(|e| failed(&e))?;
                v = back_rx
                    .recv()
                    .await
                    .ok_or_else(|| failed(&"the echo task stopped"))?
                    + 1;
            }
            drop(tx);
            echo.await.map_err(|e| failed(&e))?;
            Ok(v)
        }
        Program::Yield => {
            let each = n / 2;
            let hs: Vec<_> = [each, n - each]
                .into_iter()
                .map(|k| {
                    tokio::spawn(async move {
                        for _ in 0..k {
                            tokio::task::yield_now().await;
                        }
                        k
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.await.map_err(|e| failed(&e))?;
            }
            Ok(sum)
        }
        Program::Fib => tokio_fib(n).await.map_err(|e| failed(&e)),
        Program::Chain => {
            let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
            tokio_link(1, n, tx);
            rx.await
                .map_err(|_| failed(&"the chain broke: a link never ran"))
        }
    }
}

/// Boxed: an async fn cannot hold its own future inline.
fn tokio_fib(n: u64) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>> {
    Box::pin(async move {
        if n <= FIB_CUTOFF {
            return Ok(seq_fib(n));
        }
        let h = tokio::spawn(tokio_fib(n - 1));
        let b = tokio_fib(n - 2).await;
        let a = h.await.map_err(|e| e.to_string())?;
        Ok(a? + b?)
    })
}

/// A plain fn that spawns the next link, so no future type contains itself.
fn tokio_link(i: u64, n: u64, done: tokio::sync::oneshot::Sender<u64>) {
    tokio::spawn(async move {
        if i == n {
            let _ = done.send(i);
        } else {
            tokio_link(i + 1, n, done);
        }
    });
}

// ---------------------------------------------------------------------------------------
// may: stackful coroutines, as gmp's Gs. Its `spawn` is an `unsafe fn`: a coroutine may
// move between worker threads, so a thread-local read across a blocking call can see another
// thread's value (the S1 hazard of chapter 8), which Rust's types cannot rule out.

/// The worker count may's scheduler started with in this process.
static MAY_WORKERS: OnceLock<usize> = OnceLock::new();

fn may_run(program: Program, procs: usize, sizes: Sizes) -> Result<Span, BenchError> {
    let workers = *MAY_WORKERS.get_or_init(|| {
        may::config().set_workers(procs);
        procs
    });
    if workers != procs {
        return Err(BenchError(format!(
            "may {program} at P={procs}: may's scheduler already runs {workers} workers in \
             this process, and its worker count is fixed once it starts; run each P in its \
             own process (peers::run_in_child)"
        )));
    }
    // SAFETY: the program's closures read no thread-local (std's or may's) and hold no
    // reference to one across a blocking call, so migrating between workers cannot expose
    // another thread's data; their deepest frames (seq_fib below the cutoff, 10 levels) fit
    // may's default stack of 32 KiB many times over.
    let main =
        unsafe { may::coroutine::spawn(move || timed(program, sizes, |n| may_once(program, n))) };
    main.join()
        .map_err(|p| BenchError(format!("may {program}: {}", panic_text(&*p))))?
}

/// may's spawn, wrapped so each call site needs no `unsafe` of its own.
fn may_go<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> may::coroutine::JoinHandle<T> {
    // SAFETY: as in may_run: every closure of this module reads no thread-local, and none
    // recurses deeper than seq_fib's cutoff on its stack.
    unsafe { may::coroutine::spawn(f) }
}

fn may_once(program: Program, n: u64) -> Result<u64, BenchError> {
    let failed = |e: &dyn fmt::Display| BenchError(format!("may {program} {n}: {e}"));
    let panicked = |p: Box<dyn Any + Send>| failed(&panic_text(&*p));
    match program {
        Program::SpawnJoin => {
            let mut sum = 0;
            for i in 0..n {
                sum += may_go(move || i).join().map_err(panicked)?;
            }
            Ok(sum)
        }
        Program::Handoff => {
            // may has no unbuffered channel; in a ping-pong its channel holds at most one
            // message, so each message is still one hand-off.
            let (tx, rx) = may::sync::mpsc::channel::<u64>();
            let (back_tx, back_rx) = may::sync::mpsc::channel::<u64>();
            let echo = may_go(move || {
                while let Ok(v) = rx.recv() {
                    if back_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let mut v = 0;
            for _ in 0..n.div_ceil(2) {
                tx.send(v).map_err(|e| failed(&e))?;
                v = back_rx.recv().map_err(|e| failed(&e))? + 1;
            }
            drop(tx);
            echo.join().map_err(panicked)?;
            Ok(v)
        }
        Program::Yield => {
            let each = n / 2;
            let hs: Vec<_> = [each, n - each]
                .into_iter()
                .map(|k| {
                    may_go(move || {
                        for _ in 0..k {
                            may::coroutine::yield_now();
                        }
                        k
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.join().map_err(panicked)?;
            }
            Ok(sum)
        }
        Program::Fib => may_fib(n).map_err(|e| failed(&e)),
        Program::Chain => {
            let (tx, rx) = may::sync::mpsc::channel::<u64>();
            may_link(1, n, tx);
            rx.recv()
                .map_err(|_| failed(&"the chain broke: a link never ran"))
        }
    }
}

fn may_fib(n: u64) -> Result<u64, String> {
    if n <= FIB_CUTOFF {
        return Ok(seq_fib(n));
    }
    let h = may_go(move || may_fib(n - 1));
    let b = may_fib(n - 2);
    let a = h.join().map_err(|p| panic_text(&*p))?;
    Ok(a? + b?)
}

/// "a coroutine panicked: <its message>".
fn panic_text(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("a coroutine panicked: {message}")
}

fn may_link(i: u64, n: u64, done: may::sync::mpsc::Sender<u64>) {
    drop(may_go(move || {
        if i == n {
            let _ = done.send(i);
        } else {
            may_link(i + 1, n, done);
        }
    }));
}

// ---------------------------------------------------------------------------------------
// One run per child process.

/// The flag a program (the class bench, the criterion bench) takes to run [`child_main`].
pub const CHILD_FLAG: &str = "--peer";

/// `--peer PEER PROGRAM PROCS N REPEAT`: runs [`run`] and prints
/// `elapsed_ns=… ops=… cpu_ns=…` on stdout, or the error on stderr and exits 1.
pub fn child_main(args: &[String]) -> ExitCode {
    let parsed = match args {
        [peer, program, procs, n, repeat] => Peer::from_name(peer)
            .zip(Program::from_name(program))
            .zip(procs.parse::<usize>().ok())
            .zip(n.parse::<u64>().ok())
            .zip(repeat.parse::<u64>().ok()),
        _ => None,
    };
    let Some(((((peer, program), procs), n), repeat)) = parsed else {
        eprintln!(
            "{CHILD_FLAG} wants PEER PROGRAM PROCS N REPEAT (peers gmp|tokio|may, programs \
             spawn-join|pingpong|yield|fib|chain), got {args:?}"
        );
        return ExitCode::from(2);
    };
    match run(peer, program, procs, n, repeat) {
        Ok(r) => {
            let cpu = r
                .cpu
                .map_or(String::new(), |c| format!(" cpu_ns={}", c.as_nanos()));
            println!("elapsed_ns={} ops={}{cpu}", r.elapsed.as_nanos(), r.ops);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a child's `elapsed_ns=… ops=… [cpu_ns=…]` line.
pub fn parse_child_line(line: &str) -> Option<Run> {
    let mut elapsed = None;
    let mut ops = None;
    let mut cpu = None;
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("elapsed_ns=") {
            elapsed = v.parse::<u64>().ok().map(Duration::from_nanos);
        } else if let Some(v) = word.strip_prefix("ops=") {
            ops = v.parse::<u64>().ok();
        } else if let Some(v) = word.strip_prefix("cpu_ns=") {
            cpu = v.parse::<u64>().ok().map(Duration::from_nanos);
        }
    }
    Some(Run {
        elapsed: elapsed?,
        ops: ops?,
        cpu,
    })
}

/// Runs `exe CHILD_FLAG …` (a program whose main calls [`child_main`] on that flag) and
/// reads its figure. A child that exits with an error, crashes or outlives `limit` (then
/// killed) is an error carrying its own message.
pub fn run_in_child(
    exe: &Path,
    peer: Peer,
    program: Program,
    procs: usize,
    (n, repeat): (u64, u64),
    limit: Duration,
) -> Result<Run, BenchError> {
    let mut command = Command::new(exe);
    // A runtime that fails by panicking in many tasks (may's stack allocation) would
    // otherwise print a backtrace for each.
    command.env("RUST_BACKTRACE", "0");
    command.args([
        CHILD_FLAG,
        peer.name(),
        program.name(),
        &procs.to_string(),
        &n.to_string(),
        &repeat.to_string(),
    ]);
    let what = format!("{} {program} at P={procs}", peer.name());
    // The child's own errors name the runtime and the program already.
    let (stdout, stderr) = output_within(command, limit).map_err(BenchError)?;
    parse_child_line(&stdout).ok_or_else(|| {
        BenchError(format!(
            "{what}: unexpected output {:?} (stderr: {})",
            stdout.trim(),
            tail(&stderr)
        ))
    })
}

/// Runs `command`, kills it if it is still running after `limit`; returns its stdout and
/// stderr when it exits 0, else an error with its status and the end of its stderr.
pub fn output_within(mut command: Command, limit: Duration) -> Result<(String, String), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    // Drained by threads, so a child that writes much cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < limit => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => return Err(format!("waiting for the child: {e}")),
        }
    };
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        None => Err(format!(
            "killed at its time limit of {:.1} s (too slow, or a hang){}",
            limit.as_secs_f64(),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("; stderr: {}", tail(&stderr))
            }
        )),
        Some(s) if s.success() => Ok((stdout, stderr)),
        // Exit 1 is child_main's own error: its last line. Anything else (a crash, an
        // abort) says more in the lines before.
        Some(s) if s.code() == Some(1) => Err(stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no message)")
            .to_string()),
        Some(s) => Err(format!("{}: {}", tail(&stderr), s)),
    }
}

/// The last few non-empty lines of `text`, joined (a child's error is at its end).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    if lines.is_empty() {
        "(no message)".to_string()
    } else {
        lines[start..].join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{DEFAULT_LIMIT, watchdog};

    #[test]
    fn fib_figures_are_the_books() {
        assert_eq!(fib_value(35), 9_227_465);
        assert_eq!(seq_fib(20), fib_value(20));
        assert_eq!(fib_tasks(35), 196_417, "fib(35) down to fib(10)");
        assert_eq!(fib_tasks(FIB_CUTOFF), 0);
        assert_eq!(fib_tasks(FIB_CUTOFF + 1), 1);
    }

    #[test]
    fn a_run_reports_the_cpu_its_timed_part_used() {
        let before = process_cpu();
        // Enough work to show in getrusage's microseconds, whatever the machine.
        assert_eq!(seq_fib(std::hint::black_box(27)), fib_value(27));
        assert!(
            process_cpu() > before,
            "the process's CPU time did not move"
        );
        watchdog("gmp fib(22) with its CPU time", DEFAULT_LIMIT, || {
            let r = run(Peer::Gmp, Program::Fib, 1, 22, 1).unwrap();
            assert!(r.cpu.is_some_and(|c| c > Duration::ZERO), "{r:?}");
        });
    }

    #[test]
    fn a_wrong_result_is_an_error_not_a_time() {
        assert!(check(Program::Fib, 20, fib_value(20)).is_ok());
        let e = check(Program::Fib, 20, 7).unwrap_err();
        assert!(e.0.contains("wrong result 7, expected 6765"), "{e}");
        assert!(check(Program::Chain, 10, 9).is_err());
        assert!(check(Program::SpawnJoin, 4, 6).is_ok());
    }

    /// gmp and tokio run every program at P=1 and P=2 with tiny sizes, each result checked
    /// inside `run`; may at P=2, and then refuses P=1 in the same process, saying why.
    #[test]
    fn every_program_runs_on_every_peer() {
        watchdog("peers, every program, tiny sizes", DEFAULT_LIMIT, || {
            for program in Program::ALL {
                let n = if program == Program::Fib { 16 } else { 101 };
                for procs in [1, 2] {
                    for peer in [Peer::Gmp, Peer::Tokio] {
                        let r = run(peer, program, procs, n, 2)
                            .unwrap_or_else(|e| panic!("{} {program} P={procs}: {e}", peer.name()));
                        assert_eq!(r.ops, 2 * ops(program, n));
                    }
                }
                run(Peer::May, program, 2, n, 1).unwrap_or_else(|e| panic!("may {program}: {e}"));
            }
            let e = run(Peer::May, Program::Yield, 1, 10, 1).unwrap_err();
            assert!(e.0.contains("fixed once it starts"), "{e}");
            assert!(run(Peer::Gmp, Program::Yield, 0, 10, 1).is_err());
        });
    }

    #[test]
    fn child_lines_parse() {
        assert_eq!(
            parse_child_line("elapsed_ns=1500 ops=3\n"),
            Some(Run {
                elapsed: Duration::from_nanos(1500),
                ops: 3,
                cpu: None,
            })
        );
        assert_eq!(
            parse_child_line("elapsed_ns=1500 ops=3 cpu_ns=2900\n").and_then(|r| r.cpu),
            Some(Duration::from_nanos(2900))
        );
        assert_eq!(parse_child_line("ops=3"), None);
        assert_eq!(parse_child_line("panic"), None);
        for p in Program::ALL {
            assert_eq!(Program::from_name(p.name()), Some(p));
        }
        for p in Peer::ALL {
            assert_eq!(Peer::from_name(p.name()), Some(p));
        }
    }

    /// A child that hangs is killed at the limit and named; one that fails gives its stderr.
    #[test]
    fn a_child_past_its_limit_is_killed() {
        watchdog("a child past its limit", DEFAULT_LIMIT, || {
            let mut sleep = Command::new("sleep");
            sleep.arg("30");
            let start = Instant::now();
            let e = output_within(sleep, Duration::from_millis(300)).unwrap_err();
            assert!(e.contains("killed at its time limit of 0.3 s"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(10));
            let mut failing = Command::new("sh");
            failing.args(["-c", "echo 'out of memory mappings' >&2; exit 3"]);
            let e = output_within(failing, Duration::from_secs(10)).unwrap_err();
            assert!(e.contains("out of memory mappings"), "{e}");
        });
    }
}
