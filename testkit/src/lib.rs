//! Test support shared by every part's tests and the runtime's: watchdogs and outcome records.
//!
//! A test that can block (a lost wake-up, a learner's infinite loop, a deadlock in the
//! runtime) must end as a red test with a message that says what was stuck, never as a
//! frozen terminal. [`watch`] runs the test body on its own thread and watches its
//! *progress*: the body ticks a [`Progress`] and names the [`Step`] it is in; if no tick
//! comes for [`STALL_LIMIT`], the test fails naming the stalled step, the invariant a stall
//! there breaks and the book section. Only the total limit is generous, for slow CI.
//! [`watchdog`] is the older form that watches the total time only. The stuck thread is
//! left behind: the test binary exits when the harness is done, which ends it. A body that
//! spins rather than sleeps checks [`Progress::cancelled`] and stops once the watchdog fired.
//! [`side_by_side!`] lets a test file's stalls overlap, so a broken part is red in seconds.
//!
//! A test whose failure is a crash (a bad stack switch, a stack overflow) would take the
//! whole test binary down with it. [`isolated`] runs such a body in a child process, the
//! same test binary re-run with a filter, and turns a signal into a red test that says what
//! the signal usually means.
//!
//! Every exercise test starts with `let _outcome = testkit::record!();`: the guard writes
//! the test's outcome to `.workbook/tests/` ([`record`]), so `cargo workbook status` knows
//! the result of a plain `cargo test -p ex-NN-slug`.
//!
//! What does not live here: anything that measures time for performance. Timing claims live
//! in the criterion benches and `cargo workbook bench` (book, chapter 0).

pub mod record;

use std::os::unix::process::ExitStatusExt;
use std::panic;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The limit most tests use: generous for a debug build on a loaded 2-core machine, short
/// enough that a hang is reported before a learner gives up waiting.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(20);

/// How long a body watched by [`watch`] may go without a tick before it is a red test.
/// A healthy body ticks every few microseconds to milliseconds, so 5 s without one is a
/// stall even on a loaded machine, not slowness.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// Set when any [`watch`] in this process reported a stall. Every test keeps the full
/// [`STALL_LIMIT`] (a shorter one would fail healthy tests with a slow phase); later stalls
/// only say that an earlier one is the one to fix first.
static STALLED: AtomicBool = AtomicBool::new(false);

/// Added to the message of every stall after the first in this process.
pub const NOT_THE_FIRST_STALL: &str =
    "(another test in this binary already stalled: fix that one first)";

/// How many tests [`side_by_side!`] lets libtest run at once, at least.
pub const SIDE_BY_SIDE: usize = 8;

/// Lets libtest run at least [`SIDE_BY_SIDE`] tests of this test binary at once, even on a
/// 2-core machine (libtest's default is one per core). Put it once at the top of a test file
/// whose tests mostly wait (park, futex, join) under [`watch`].
///
/// Why: one lost wake-up stalls most of such a file's tests, and each stall takes the full
/// [`STALL_LIMIT`] to be sure it is one. One at a time per core, 7 stalls on 2 cores are
/// 20 s of a red binary; side by side they overlap and the binary is red in about 5 s.
/// `RUST_TEST_THREADS` or `--test-threads`, when given, still decide.
#[macro_export]
macro_rules! side_by_side {
    () => {
        // SAFETY: the loader runs `.init_array` entries before `main`, on the only thread
        // of the process, which is what `side_by_side` needs (see its comment).
        #[used]
        #[unsafe(link_section = ".init_array")]
        static TESTKIT_SIDE_BY_SIDE: unsafe extern "C" fn() = $crate::side_by_side;
    };
}

/// Sets `RUST_TEST_THREADS` (when unset) for [`side_by_side!`], before libtest reads it.
///
/// # Safety
///
/// Only from `.init_array`, before `main`: no other thread may read or write the
/// environment at the same time.
#[doc(hidden)]
pub unsafe extern "C" fn side_by_side() {
    if std::env::var_os("RUST_TEST_THREADS").is_some() {
        return;
    }
    let cores = thread::available_parallelism().map_or(1, usize::from);
    // SAFETY: the caller's promise: this runs before `main`, single-threaded.
    unsafe { std::env::set_var("RUST_TEST_THREADS", SIDE_BY_SIDE.max(cores).to_string()) }
}

/// Runs `body` on a fresh thread and returns its value; fails the calling test if it takes
/// longer than `limit`.
///
/// `what` names the operation in the failure message ("ping-pong of 10^6 rounds").
/// A panic inside `body` is re-raised unchanged, so assertion messages reach the harness.
pub fn watchdog<T, F>(what: &str, limit: Duration, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    watchdog_with(what, limit, String::new, body)
}

/// Like [`watchdog`], and on a timeout also prints `diagnose()`: the state of whatever was
/// stuck (M states, queue lengths), so the failure says *why* as well as *what*.
pub fn watchdog_with<T, F, D>(what: &str, limit: Duration, diagnose: D, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    D: FnOnce() -> String,
{
    let verdict = run_watched(what, limit, None, body);
    match verdict {
        Verdict::Finished(value) => value,
        Verdict::Stalled { .. } => unreachable!("a plain watchdog has no stall limit"),
        Verdict::TimedOut => panic!(
            "watchdog: `{what}` was still stuck after {limit:?}; it never finished. \
             A lost wake-up, a deadlock or an endless loop leaves code waiting forever: \
             look for a wait that nobody ends.{}",
            state_block(diagnose())
        ),
    }
}

/// Where a watched body is, and what a stall there would mean. Tests declare their steps
/// as constants and hand them to [`Progress::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// What the body is doing ("ping-pong: each side parks until the turn is its own").
    pub name: &'static str,
    /// The invariant a stall here breaks, as the learner should read it ("lost wake-up:
    /// unpark found the Parker PARKED and nobody woke it").
    pub invariant: &'static str,
    /// The book section to read: `chNN-slug.html#anchor`.
    pub book: &'static str,
}

/// The body's side of [`watch`]: tick it whenever the body gets somewhere (a round, a
/// hand-off), and name the step it enters. Cheap to clone into the threads or Gs it starts.
///
/// Once the watchdog has fired, [`Progress::cancelled`] is true: a loop that spins waiting
/// for another thread must check it and stop, or the stalled body keeps burning a core
/// under every later test of the binary.
#[derive(Clone, Debug)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug)]
struct ProgressInner {
    ticks: AtomicU64,
    step: Mutex<Step>,
    cancelled: AtomicBool,
}

impl Progress {
    fn new(first: Step) -> Progress {
        Progress {
            inner: Arc::new(ProgressInner {
                ticks: AtomicU64::new(0),
                step: Mutex::new(first),
                cancelled: AtomicBool::new(false),
            }),
        }
    }

    /// Has the watchdog given up on this body (a stall or the total limit)? The test has
    /// already failed then; a spinning loop should return (or panic) instead of spinning on.
    pub fn cancelled(&self) -> bool {
        self.inner.cancelled.load(Relaxed)
    }

    fn cancel(&self) {
        self.inner.cancelled.store(true, Relaxed);
    }

    /// The body got somewhere: the stall clock starts again.
    pub fn tick(&self) {
        self.inner.ticks.fetch_add(1, Relaxed);
    }

    /// The body enters `step` (and that is progress too).
    pub fn step(&self, step: Step) {
        *self.inner.step.lock().unwrap_or_else(|e| e.into_inner()) = step;
        self.tick();
    }

    fn ticks(&self) -> u64 {
        self.inner.ticks.load(Relaxed)
    }

    fn current(&self) -> Step {
        *self.inner.step.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `body` on a fresh thread under a progress watchdog and returns its value.
///
/// The body starts in step `first`. If it goes [`STALL_LIMIT`] without a
/// [`Progress::tick`] or [`Progress::step`], the test fails with a first line naming the
/// stalled step, its invariant and its book section; if it runs longer than `total` while
/// still ticking, it fails as too slow to finish. A panic in `body` is re-raised unchanged.
pub fn watch<T, F>(what: &str, total: Duration, first: Step, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Progress) -> T + Send + 'static,
{
    watch_with(what, total, first, String::new, body)
}

/// Like [`watch`], and when it fires also prints `diagnose()`: the state of whatever was
/// stuck (G states, M states, queue lengths).
pub fn watch_with<T, F, D>(what: &str, total: Duration, first: Step, diagnose: D, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&Progress) -> T + Send + 'static,
    D: FnOnce() -> String,
{
    let progress = Progress::new(first);
    let for_body = progress.clone();
    let verdict = run_watched(what, total, Some(&progress), move || body(&for_body));
    match verdict {
        Verdict::Finished(value) => value,
        Verdict::Stalled { after, first } => {
            let step = progress.current();
            let not_first = if first {
                String::new()
            } else {
                format!("{NOT_THE_FIRST_STALL}\n")
            };
            panic!(
                "stalled in step `{}`: {} (book: {})\n{not_first}watchdog: `{what}` made no \
                 progress for {:.1} s (ticks so far: {}).{}",
                step.name,
                step.invariant,
                step.book,
                after.as_secs_f64(),
                progress.ticks(),
                state_block(diagnose())
            )
        }
        Verdict::TimedOut => {
            let step = progress.current();
            panic!(
                "too slow: `{what}` kept making progress but did not finish within {total:?} \
                 (last step `{}`; book: {}). The limit is generous for slow machines: a part \
                 that spins or sleeps where it should block can be this slow.{}",
                step.name,
                step.book,
                state_block(diagnose())
            )
        }
    }
}

enum Verdict<T> {
    Finished(T),
    /// No tick for `after`; `first`: no other body of this process stalled before.
    Stalled {
        after: Duration,
        first: bool,
    },
    TimedOut,
}

/// Runs `body` on its own thread; with `progress`, also fails it when the ticks stop, and
/// cancels `progress` whenever it gives up on the body.
fn run_watched<T, F>(
    what: &str,
    total: Duration,
    progress: Option<&Progress>,
    body: F,
) -> Verdict<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("watched: {what}"))
        .spawn(move || {
            let outcome = panic::catch_unwind(panic::AssertUnwindSafe(body));
            // The receiver may be gone if the watchdog already gave up; nothing to do then.
            let _ = done_tx.send(outcome);
        })
        .expect("watchdog: could not start the thread that runs the test body");
    let start = Instant::now();
    let mut seen = progress.map_or(0, Progress::ticks);
    let mut last_tick = start;
    loop {
        let now = Instant::now();
        let deadline = if progress.is_some() {
            (start + total).min(last_tick + STALL_LIMIT)
        } else {
            start + total
        };
        // Poll at least every 100 ms, so ticks are noticed.
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        match done_rx.recv_timeout(wait) {
            Ok(Ok(value)) => {
                let _ = worker.join();
                return Verdict::Finished(value);
            }
            Ok(Err(payload)) => {
                let _ = worker.join();
                panic::resume_unwind(payload)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                unreachable!("watchdog: the body's thread ended without reporting")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if let Some(progress) = progress {
            let ticks = progress.ticks();
            if ticks != seen {
                seen = ticks;
                last_tick = now;
            } else if now.duration_since(last_tick) >= STALL_LIMIT {
                progress.cancel();
                return Verdict::Stalled {
                    after: now.duration_since(last_tick),
                    first: !STALLED.swap(true, Relaxed),
                };
            }
        }
        if now.duration_since(start) >= total {
            if let Some(progress) = progress {
                progress.cancel();
            }
            return Verdict::TimedOut;
        }
    }
}

fn state_block(state: String) -> String {
    if state.is_empty() {
        String::new()
    } else {
        format!("\nstate when the watchdog fired:\n{state}")
    }
}

/// Set in the child process to the name of the test it must run for real.
pub(crate) const ISOLATED_ENV: &str = "TESTKIT_ISOLATED";

/// What a child run of a test printed, and how it ended. See [`run_in_child`].
#[derive(Debug)]
pub struct ChildRun {
    /// Everything it wrote, stdout then stderr.
    pub output: String,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Did it exit with status 0?
    pub success: bool,
}

impl ChildRun {
    /// The whole number the child printed right after `name` and a space ("parked 1000"
    /// gives 1000 for "parked"). Panics, showing the output, if there is none.
    pub fn figure(&self, name: &str) -> usize {
        let digits: Option<String> = self.output.find(&format!("{name} ")).map(|at| {
            self.output[at + name.len() + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect()
        });
        match digits.as_deref().map(str::parse) {
            Some(Ok(n)) => n,
            _ => panic!(
                "no number after {name:?} in the child's output:\n{}",
                self.output
            ),
        }
    }
}

/// Runs `body` in a child process (this test binary re-run with `--exact test_name`) and,
/// in the parent, returns what the child printed and how it ended. In the child, `body`
/// runs under the watchdog with `limit` and this function never returns: the child exits
/// when `body` returns.
///
/// For tests whose body is *meant* to end the process (an overflow report, an abort): the
/// parent asserts on the [`ChildRun`]. `test_name` must be the calling test's full name.
pub fn run_in_child(test_name: &str, limit: Duration, body: fn()) -> ChildRun {
    if std::env::var(ISOLATED_ENV).as_deref() == Ok(test_name) {
        watchdog(test_name, limit, body);
        // Leave without returning into the parent-only assertions of the caller.
        std::process::exit(0);
    }
    let exe = std::env::current_exe().expect("testkit: cannot find the test binary");
    let out = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED_ENV, test_name)
        .stdin(Stdio::null())
        .output()
        .expect("testkit: cannot start the test binary again");
    ChildRun {
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        signal: out.status.signal(),
        success: out.status.success(),
    }
}

/// Runs `body` in a child process (see [`run_in_child`]), so a crash fails only this test,
/// with a message; `crash_hint` says what a crash here usually means ("the switch restored
/// a wrong stack pointer"). A panic in the child fails the test with the child's output; a
/// passing child's output is printed too, so `--nocapture` shows what it measured.
pub fn isolated(test_name: &str, limit: Duration, crash_hint: &str, body: fn()) {
    let run = run_in_child(test_name, limit, body);
    let output = run.output;
    if let Some(signal) = run.signal {
        panic!(
            "`{test_name}` crashed the process with signal {signal} ({}). {crash_hint}\n\
             --- output of the crashed run ---\n{output}",
            signal_name(signal)
        );
    }
    assert!(
        run.success,
        "`{test_name}` did not pass in its own process.\n--- output of that run ---\n{output}"
    );
    // Shown only with `--nocapture` (libtest captures it otherwise): what the run printed,
    // such as the figures a test measures.
    print!("{output}");
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => "SIGILL: an illegal instruction, such as ud2 after a function that must not return",
        6 => "SIGABRT: the process aborted itself",
        7 => "SIGBUS: a misaligned or unmapped memory access",
        11 => "SIGSEGV: a read or write of memory that is not mapped",
        _ => "see `man 7 signal`",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_figure_is_the_number_after_its_name_and_a_missing_one_shows_the_output() {
        let run = ChildRun {
            output: "asked 1000, parked 998\nout of memory mappings: 30717 fit\n".to_string(),
            signal: None,
            success: true,
        };
        assert_eq!(run.figure("asked"), 1000);
        assert_eq!(run.figure("parked"), 998);
        assert_eq!(run.figure("out of memory mappings:"), 30717);
        let missing = std::panic::catch_unwind(|| run.figure("kept")).unwrap_err();
        let msg = missing
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            msg.contains("\"kept\"") && msg.contains("parked 998"),
            "{msg}"
        );
    }

    #[test]
    fn returns_the_body_value() {
        assert_eq!(watchdog("add", DEFAULT_LIMIT, || 2 + 2), 4);
    }

    #[test]
    #[should_panic(expected = "`sleeping forever` was still stuck")]
    fn fires_on_a_hang() {
        watchdog("sleeping forever", Duration::from_millis(50), || {
            thread::sleep(Duration::from_secs(3600))
        });
    }

    #[test]
    #[should_panic(expected = "queue length 3")]
    fn reports_the_diagnosis() {
        watchdog_with(
            "a stuck queue",
            Duration::from_millis(50),
            || "queue length 3".to_string(),
            || thread::sleep(Duration::from_secs(3600)),
        );
    }

    #[test]
    fn isolated_passes_a_passing_body() {
        isolated(
            "tests::isolated_passes_a_passing_body",
            DEFAULT_LIMIT,
            "",
            || assert_eq!(1 + 1, 2),
        );
    }

    #[test]
    #[should_panic(expected = "SIGSEGV")]
    fn isolated_reports_a_crash() {
        isolated(
            "tests::isolated_reports_a_crash",
            DEFAULT_LIMIT,
            "null write",
            || {
                // SAFETY: none; this deliberately writes to address 0 to crash the child process.
                unsafe { std::ptr::null_mut::<u64>().write_volatile(1) }
            },
        );
    }

    #[test]
    #[should_panic(expected = "did not pass in its own process")]
    fn isolated_reports_a_panic() {
        isolated("tests::isolated_reports_a_panic", DEFAULT_LIMIT, "", || {
            panic!("child failed")
        });
    }

    #[test]
    fn run_in_child_reports_an_abort() {
        let run = run_in_child(
            "tests::run_in_child_reports_an_abort",
            DEFAULT_LIMIT,
            || {
                eprintln!("about to abort");
                std::process::abort()
            },
        );
        assert_eq!(run.signal, Some(6), "{run:?}");
        assert!(
            run.output.contains("about to abort") && !run.success,
            "{run:?}"
        );
    }

    const SPIN: Step = Step {
        name: "spinning forever",
        invariant: "the test body must tick",
        book: "ch00-workbook.html#watchdog",
    };

    #[test]
    fn watch_returns_the_body_value_and_lets_a_ticking_body_run_past_the_stall_limit() {
        let n = watch("ticking", DEFAULT_LIMIT, SPIN, |p| {
            let until = Instant::now() + STALL_LIMIT + Duration::from_millis(500);
            let mut n = 0u64;
            while Instant::now() < until {
                p.tick();
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
            n
        });
        assert!(n > 0);
    }

    #[test]
    fn watch_names_the_stalled_step_its_invariant_and_book_section() {
        const PARKED: Step = Step {
            name: "second half",
            invariant: "lost wake-up: nobody woke it",
            book: "ch03-parker.html#step-2",
        };
        let started = Instant::now();
        let msg = panic::catch_unwind(|| {
            watch_with(
                "a body that stops ticking",
                DEFAULT_LIMIT,
                SPIN,
                || "queue length 3".to_string(),
                |p| {
                    p.step(PARKED);
                    thread::sleep(Duration::from_secs(3600))
                },
            )
        })
        .expect_err("the stall must fail the test");
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with(
                "stalled in step `second half`: lost wake-up: nobody woke it \
                 (book: ch03-parker.html#step-2)\n"
            ),
            "{msg}"
        );
        assert!(msg.contains("queue length 3"), "{msg}");
        // A correctness bound on the watchdog (it must not wait for the total limit), not a
        // performance claim.
        assert!(started.elapsed() < DEFAULT_LIMIT, "{:?}", started.elapsed());
    }

    /// A stall in one test must not shorten the stall limit of the others: a healthy body
    /// with a quiet phase over a second still passes, and a later stall names the earlier.
    #[test]
    fn a_stall_leaves_other_tests_their_full_stall_limit() {
        let stalled = panic::catch_unwind(|| {
            watch("stuck first", DEFAULT_LIMIT, SPIN, |_| {
                thread::sleep(Duration::from_secs(3600))
            })
        });
        assert!(stalled.is_err(), "the first body stalls");
        let n = watch("healthy, quiet for 1.5 s", DEFAULT_LIMIT, SPIN, |p| {
            p.tick();
            thread::sleep(Duration::from_millis(1500));
            p.tick();
            7
        });
        assert_eq!(n, 7);
        let later = panic::catch_unwind(|| {
            watch("stuck later", DEFAULT_LIMIT, SPIN, |_| {
                thread::sleep(Duration::from_secs(3600))
            })
        })
        .expect_err("the later body stalls too");
        let later = later.downcast_ref::<String>().unwrap();
        assert!(
            later.starts_with("stalled in step `spinning forever`")
                && later.contains(NOT_THE_FIRST_STALL),
            "{later}"
        );
    }

    /// The watchdog cancels the body's `Progress` when it fires, so a spinning body can stop.
    #[test]
    fn a_stalled_body_sees_it_is_cancelled_and_stops_spinning() {
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let stalled = panic::catch_unwind(move || {
            watch("spinning without ticks", DEFAULT_LIMIT, SPIN, move |p| {
                assert!(!p.cancelled(), "not cancelled before the watchdog fires");
                while !p.cancelled() {
                    std::hint::spin_loop();
                }
                flag.store(true, Relaxed);
            })
        });
        assert!(stalled.is_err(), "the body stalls");
        watchdog("the cancelled body's exit", DEFAULT_LIMIT, move || {
            while !stopped.load(Relaxed) {
                thread::sleep(Duration::from_millis(10));
            }
        });
    }

    #[test]
    #[should_panic(expected = "too slow: `ticking slowly`")]
    fn watch_still_has_a_total_limit() {
        watch("ticking slowly", Duration::from_millis(300), SPIN, |p| {
            loop {
                p.tick();
                thread::sleep(Duration::from_millis(10));
            }
        });
    }

    #[test]
    #[should_panic(expected = "inner assertion")]
    fn passes_panics_through() {
        watchdog("panicking body", DEFAULT_LIMIT, || {
            panic!("inner assertion")
        });
    }
}
