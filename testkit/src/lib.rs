//! Test support shared by every part's tests and the runtime's: the watchdog.
//!
//! A test that can block (a lost wake-up, a learner's infinite loop, a deadlock in the
//! runtime) must end as a red test with a message that says what was stuck, never as a
//! frozen terminal. [`watchdog`] runs the test body on its own thread and fails the test if
//! the body has not finished within the limit. The stuck thread is left behind: the test
//! binary exits when the harness is done, which ends it.
//!
//! What does not live here: anything that measures time for performance. Timing claims live
//! in the criterion benches and `cargo workbook bench` (book, chapter 0).

use std::panic;
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
    #[should_panic(expected = "inner assertion")]
    fn passes_panics_through() {
        watchdog("panicking body", DEFAULT_LIMIT, || {
            panic!("inner assertion")
        });
    }
}
