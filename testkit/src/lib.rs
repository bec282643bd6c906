//! Test support shared by every part's tests and the runtime's: the watchdog.
//!
//! A test that can block (a lost wake-up, a learner's infinite loop, a deadlock in the
//! runtime) must end as a red test with a message that says what was stuck, never as a
//! frozen terminal. [`watchdog`] runs the test body on its own thread and fails the test if
//! the body has not finished within the limit. The stuck thread is left behind: the test
//! binary exits when the harness is done, which ends it.
//!
//! A test whose failure is a crash (a bad stack switch, a stack overflow) would take the
//! whole test binary down with it. [`isolated`] runs such a body in a child process, the
//! same test binary re-run with a filter, and turns a signal into a red test that says what
//! the signal usually means.
//!
//! What does not live here: anything that measures time for performance. Timing claims live
//! in the criterion benches and `cargo workbook bench` (book, chapter 0).

use std::os::unix::process::ExitStatusExt;
use std::panic;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The limit most tests use: generous for a debug build on a loaded 2-core machine, short
/// enough that a hang is reported before a learner gives up waiting.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(20);

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
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("watched: {what}"))
        .spawn(move || {
            let outcome = panic::catch_unwind(panic::AssertUnwindSafe(body));
            // The receiver may be gone if the watchdog already gave up; nothing to do then.
            let _ = done_tx.send(outcome);
        })
        .expect("watchdog: could not start the thread that runs the test body");
    match done_rx.recv_timeout(limit) {
        Ok(Ok(value)) => {
            let _ = worker.join();
            value
        }
        Ok(Err(payload)) => {
            let _ = worker.join();
            panic::resume_unwind(payload)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let state = diagnose();
            let state = if state.is_empty() {
                String::new()
            } else {
                format!("\nstate when the watchdog fired:\n{state}")
            };
            panic!(
                "watchdog: `{what}` was still stuck after {limit:?}; it never finished. \
                 A lost wake-up, a deadlock or an endless loop leaves code waiting forever: \
                 look for a wait that nobody ends.{state}"
            )
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            unreachable!("watchdog: the body's thread ended without reporting")
        }
    }
}

/// Set in the child process to the name of the test it must run for real.
const ISOLATED_ENV: &str = "TESTKIT_ISOLATED";

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
/// a wrong stack pointer"). A panic in the child fails the test with the child's output.
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

    #[test]
    #[should_panic(expected = "inner assertion")]
    fn passes_panics_through() {
        watchdog("panicking body", DEFAULT_LIMIT, || {
            panic!("inner assertion")
        });
    }
}
