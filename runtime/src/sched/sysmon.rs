//! Sysmon: one thread per runtime, without a P, that watches the Ms. Each look it retakes
//! the P of every blocking call that has lasted (`syscall.rs`, "P hand-off around a
//! blocking call"), once a second re-reads the CPU quota and gives back the pages of free G
//! stacks past the hot limit (`stackalloc.rs`), and then sleeps for as long as
//! part 09's `Sysmon` policy says (20 µs while it finds work, up to 10 ms when quiet).
//! Go: `sysmon` in `proc.go` (`retake`, the `idle`/`delay` loop).
//!
//! Until the program's first blocking call sysmon does not call part 09 at all: it sleeps
//! [`BEFORE_CALLS_DELAY`] between looks and polls the network after [`NETWORK_POLL_AFTER`].
//! So with `mine-09` an unfinished part 09 breaks only programs that make blocking calls.
//! The first call wakes sysmon, which then makes its policy.
//!
//! ## Following the CPU quota
//!
//! A runtime whose P count came from [`default_procs`] (no `Builder::procs`, no
//! `GMP_PROCS`) re-reads it every second and, when it changed, calls `set_procs` with the
//! new count, as Go 1.25 does with `GOMAXPROCS`. A program that calls `set_procs` itself
//! stops the following. Each reading is kept for [`metrics`](crate::metrics)
//! (`Metrics::quota_procs`).
//!
//! Stopping: `Runtime`'s drop sets the shutdown flag, unparks sysmon and joins it, so no
//! runtime leaves its sysmon behind. A panic in part 09 on this thread stops the runtime
//! naming it, as a panic on an M's g0 does.
//!
//! Not here: preemption of long-running Gs (chapter 12); the network poll itself
//! (`netpoll.rs`; sysmon only decides when nobody has polled for too long).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{SetBy, Shared};
use crate::builder::{MAX_PROCS, default_procs};
use crate::lock;
use crate::parts::parker::Parker;
use crate::parts::syscall::{Observed, Sysmon};
use crate::task;

/// How often sysmon re-reads the CPU quota (Go 1.25: once a second) and gives back the
/// pages of free G stacks past the hot limit.
const SLOW_LOOK_EVERY: Duration = Duration::from_secs(1);

/// Sysmon's sleep between looks before the first blocking call (no part 09 policy yet):
/// Go's longest sysmon delay.
const BEFORE_CALLS_DELAY: Duration = Duration::from_millis(10);

/// Before the first blocking call: poll the network when nobody has for this long (part
/// 09's `Sysmon::should_poll_network` decides once sysmon has its policy).
const NETWORK_POLL_AFTER: Duration = Duration::from_millis(10);

/// Sysmon's stack: it runs only the scheduler's own code.
const SYSMON_STACK: usize = 256 << 10;

/// What the runtime keeps of its sysmon.
pub(crate) struct SysmonState {
    /// Sysmon sleeps here between looks; shutdown unparks it.
    parker: Arc<Parker>,
    /// Joined by `Runtime`'s drop. Taken alone.
    handle: Mutex<Option<JoinHandle<()>>>,
    /// The P count follows the CPU quota (it was not set; `set_procs` clears this).
    pub(super) follow_quota: AtomicBool,
    /// The P count the quota allows, as last read (0 before the first reading).
    pub(super) quota_procs: AtomicUsize,
    /// Tests: sysmon has made part 09's policy.
    #[cfg(test)]
    policy_made: AtomicBool,
}

impl SysmonState {
    pub(super) fn new(follow_quota: bool, procs: usize) -> SysmonState {
        SysmonState {
            parker: Arc::new(Parker::new()),
            handle: Mutex::new(None),
            follow_quota: AtomicBool::new(follow_quota),
            quota_procs: AtomicUsize::new(if follow_quota { procs } else { 0 }),
            #[cfg(test)]
            policy_made: AtomicBool::new(false),
        }
    }
}

/// The new P count when the quota's count moved from `before` to `now`, if the runtime
/// follows the quota. Go: the `GOMAXPROCS` update in `sysmon` (`updateMaxProcsG`).
fn procs_for_quota(follow: bool, before: usize, now: usize) -> Option<usize> {
    (follow && now != before).then_some(now)
}

impl Shared {
    /// Starts this runtime's sysmon thread, named `gmp-sysmon<id>`.
    pub(super) fn start_sysmon(self: &Arc<Self>) -> Result<(), String> {
        let shared = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("gmp-sysmon{}", self.id))
            .stack_size(SYSMON_STACK)
            .spawn(move || sysmon_main(&shared))
            .map_err(|e| format!("cannot start sysmon's thread: {e}"))?;
        *lock(&self.sysmon.handle) = Some(handle);
        Ok(())
    }

    /// Wakes sysmon for an early look (the first blocking call).
    pub(super) fn wake_sysmon(&self) {
        self.sysmon.parker.unpark();
    }

    /// Wakes sysmon to see the shutdown flag; with `join`, waits until it has stopped.
    pub(super) fn stop_sysmon(&self, join: bool) {
        self.sysmon.parker.unpark();
        let handle = lock(&self.sysmon.handle).take();
        if let Some(handle) = handle.filter(|_| join)
            && handle.join().is_err()
        {
            eprintln!("gmp: sysmon died of a panic (see the message above)");
        }
    }

    /// The P count the CPU quota allows, as sysmon last read it (0: the runtime's count was
    /// set, sysmon does not read it).
    pub(crate) fn quota_procs(&self) -> usize {
        self.sysmon.quota_procs.load(Relaxed)
    }
}

/// Sysmon's thread: its loop, and a panic in a part turned into a stopped runtime.
fn sysmon_main(shared: &Shared) {
    let looped = panic::catch_unwind(AssertUnwindSafe(|| sysmon_loop(shared)));
    let why = match looped {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(payload) => format!(
            "sysmon panicked: {}. Sysmon calls part 09 (syscall): SyscallSlot::observe and \
             retake, Sysmon::should_retake, should_poll_network and next_delay; the panic's \
             first line above names the file and line (book: ch09-syscall.html#step-3)",
            task::payload_message(&*payload).unwrap_or("a non-string panic")
        ),
    };
    shared.stop_broken(why);
}

/// Look, act, sleep, until shutdown. Go: the `for` loop of `sysmon`.
fn sysmon_loop(shared: &Shared) -> Result<(), String> {
    // Part 09's policy, made once the program has made a blocking call (see the top).
    let mut policy: Option<Sysmon> = None;
    // Per P: the call seen on an earlier look and when it was first seen. Go: `pd.syscalltick`,
    // `pd.syscallwhen`.
    let mut seen: Vec<Option<(Observed, Instant)>> = Vec::new();
    let mut idle_rounds = 0u32;
    let mut slow_look = Instant::now();
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        let mut retook = false;
        let made = shared.calls.made.load(Relaxed).min(MAX_PROCS);
        if made > 0 && policy.is_none() {
            let made_policy = panic::catch_unwind(Sysmon::new).map_err(|payload| {
                format!(
                    "syscall (part 09): Sysmon::new panicked: {}",
                    task::payload_message(&*payload).unwrap_or("a non-string panic")
                )
            })?;
            #[cfg(test)]
            shared.sysmon.policy_made.store(true, Relaxed);
            policy = Some(made_policy);
        }
        seen.resize(made, None);
        for (id, last) in seen.iter_mut().enumerate() {
            let Some(call) = shared.calls.ps[id].get() else {
                continue;
            };
            let Some(observed) = call.slot.observe() else {
                *last = None;
                continue;
            };
            let Some(policy) = &policy else { break };
            match *last {
                Some((before, since)) if before == observed => {
                    if policy.should_retake(now.duration_since(since))
                        && shared.retake_call(id, observed)?
                    {
                        retook = true;
                        *last = None;
                    }
                }
                // A call not seen before (or a new one since the last look): the clock
                // starts now. Go: `pd.syscalltick != t` resets `pd.syscallwhen`.
                _ => *last = Some((observed, now)),
            }
        }
        if now.duration_since(slow_look) >= SLOW_LOOK_EVERY {
            slow_look = now;
            follow_quota(shared);
            shared.release_cold_stacks()?;
        }
        // When nobody has polled the network for a while (part 09's policy: 10 ms), poll it
        // without blocking and ready what it finds. Go: sysmon's `netpoll(0)`, `injectglist`.
        let should_poll = |since: Duration| match &policy {
            Some(policy) => policy.should_poll_network(since),
            None => since >= NETWORK_POLL_AFTER,
        };
        if shared.sysmon_poll(should_poll) {
            retook = true;
        }
        idle_rounds = if retook {
            0
        } else {
            idle_rounds.saturating_add(1)
        };
        let delay = match &mut policy {
            Some(policy) => policy.next_delay(idle_rounds),
            None => BEFORE_CALLS_DELAY,
        };
        let _ = shared.sysmon.parker.park_timeout(delay);
    }
}

/// Re-reads the CPU quota, records it, and follows it if the runtime does.
fn follow_quota(shared: &Shared) {
    let state = &shared.sysmon;
    if !state.follow_quota.load(Relaxed) {
        return;
    }
    let now = default_procs();
    let before = state.quota_procs.swap(now, Relaxed);
    if let Some(n) = procs_for_quota(state.follow_quota.load(Relaxed), before, now) {
        // `n` is within 1..=MAX_PROCS (`default_procs` clamps) and, clamped to the M cap,
        // within what `set_procs` takes, so this cannot fail.
        let _ = shared.set_procs(n.min(shared.calls.max_threads), SetBy::Quota);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p_count_follows_the_quota_only_when_it_was_not_set_and_only_on_a_change() {
        assert_eq!(procs_for_quota(true, 4, 2), Some(2));
        assert_eq!(procs_for_quota(true, 2, 2), None);
        assert_eq!(procs_for_quota(false, 4, 2), None);
    }

    /// Sysmon calls part 09 only once the program has made a blocking call, so with
    /// `mine-09` an unfinished part 09 breaks no program that makes none.
    #[test]
    fn sysmon_calls_part_09_only_after_the_first_blocking_call() {
        let (before, after) = testkit::watchdog_with(
            "sysmon's policy on the first call",
            Duration::from_secs(20),
            crate::dump_all,
            || {
                let rt = crate::Runtime::builder().procs(1).build().unwrap();
                let made = |rt: &crate::Runtime| rt.shared.sysmon.policy_made.load(Relaxed);
                // Several sysmon looks (10 ms apart) without a blocking call.
                rt.block_on(|| std::thread::sleep(Duration::from_millis(50)));
                let before = made(&rt);
                rt.block_on(|| crate::blocking(|| ()).unwrap());
                let start = Instant::now();
                while !made(&rt) && start.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (before, made(&rt))
            },
        );
        assert!(
            !before,
            "sysmon made part 09's policy before any blocking call"
        );
        assert!(
            after,
            "sysmon did not make its policy after the first blocking call"
        );
    }

    /// No runtime leaves its sysmon thread behind: a count of threads named `gmp-sysmon<id>`.
    #[test]
    fn sysmon_stops_when_the_runtime_drops() {
        let rt = crate::Runtime::builder().procs(1).build().unwrap();
        let id = rt.shared.id;
        let name = format!("gmp-sysmon{id}");
        let mine = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim() == name)
                .count()
        };
        // The new thread names itself once it runs: give it a moment.
        let start = Instant::now();
        while mine() == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(mine(), 1, "a runtime runs one sysmon");
        drop(rt);
        assert_eq!(mine(), 0, "the runtime's sysmon outlived its drop");
    }
}
