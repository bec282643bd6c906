//! The picture of a runtime that watchdogs print: each M, the queue, the live Gs, and notes
//! on facts that point at a broken part (a lost wake-up, a G readied but never queued).
//! Go: `schedtrace(detailed)` (`GODEBUG=schedtrace=1000,scheddetail=1`).
//!
//! Not here: the figures of `gmp::metrics` (`metrics.rs`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use super::m::MState;
use super::{RUNTIMES, Shared, current};
use crate::lock;

/// A blocking call this long, with Gs waiting for its M, gets a note in the dump.
const LONG_CALL_NS: u64 = 1_000_000_000;

impl Shared {
    /// What `Runtime::dump`, `gmp::dump` and `dump_all` print for this runtime.
    pub(super) fn dump(&self) -> String {
        const SHOWN: usize = 32;
        let live = self.gtable.live();
        let (idle_ms, idle_ps, shutdown) = {
            let s = lock(&self.sched);
            let idle_ps: Vec<usize> = s.pidle.iter().map(|p| p.id).collect();
            (s.midle.clone(), idle_ps, s.shutdown)
        };
        let rings: Vec<usize> = (0..self.procs())
            .map(|p| self.stealer(p).map_or(0, |s| s.len()))
            .collect();
        let mut out = format!(
            "runtime {}: {} P(s), engine {}{}, global queue {}, P run queues {:?}, \
             {} live G(s), idle Ps {:?}, idle Ms {:?}, spinning Ms {}{}\n",
            self.id,
            self.procs(),
            self.engine.name(),
            if self.migrate { ", Gs migrate" } else { "" },
            self.global.len(),
            rings,
            live.len(),
            idle_ps,
            idle_ms,
            self.spinning.count(),
            if shutdown { ", shutting down" } else { "" }
        );
        let _ = writeln!(out, "  {}", self.timer_summary());
        let _ = writeln!(
            out,
            "  blocking calls: {} in flight, {} P retake(s) by sysmon, thread cap {}",
            self.calls.in_flight.load(Relaxed),
            self.calls.retakes.load(Relaxed),
            self.calls.max_threads
        );
        let _ = writeln!(out, "  {}", self.netpoll_summary());
        for (i, m) in self.ms.iter().enumerate() {
            let _ = write!(
                out,
                "  M{i} tid {}: {}",
                m.tid.load(Relaxed),
                m.state().name(),
            );
            if m.spinning.load(Relaxed) {
                let _ = write!(out, ", spinning");
            }
            if m.in_call.load(Relaxed) {
                let _ = write!(out, ", in a blocking call (no P)");
            }
            if m.wants_p.load(Relaxed) {
                let _ = write!(out, ", back from a call, waiting for a P");
            }
            let running = m.running_g.load(Relaxed);
            if running != 0 {
                let _ = write!(out, " G {running}");
            }
            let _ = writeln!(
                out,
                ", {} started G(s) readied here from other threads, {} switches to Gs",
                m.pinned.len(),
                m.switches.load(Relaxed)
            );
        }
        // S1: Gs that started on an M wait for its call; a call that waits for one of
        // them never ends (chapter 9, "What S1 costs around a call").
        let now = self.now_ns();
        for (i, m) in self.ms.iter().enumerate() {
            let waiting = m.pinned.len();
            let lasted = now.saturating_sub(m.call_since_ns.load(Relaxed));
            if m.in_call.load(Relaxed) && lasted > LONG_CALL_NS && waiting > 0 {
                let _ = writeln!(
                    out,
                    "  note: M{i} has been in a blocking call for {} ms while {waiting} G(s) \
                     that started on it wait to run there: they wait for the call to end, \
                     so a call that waits for one of them never ends (chapter 9, \
                     \"What S1 costs around a call\")",
                    lasted / 1_000_000
                );
            }
        }
        // Facts that, if they last until a watchdog fires, point at a lost wake-up: an M
        // is taken off the idle list (by `wakep`, `wake_home` or `release_p`) only to be
        // handed a P and unparked, so a parked M that is no longer listed idle should be
        // running within microseconds; if it is not, part 03's unpark lost the wake-up.
        let unwoken: Vec<usize> = (0..self.ms.len())
            .filter(|i| self.ms[*i].state() == MState::Idle && !idle_ms.contains(i))
            .collect();
        let queued = self.global.len() + rings.iter().sum::<usize>();
        if queued > 0 && !unwoken.is_empty() && !shutdown {
            let _ = writeln!(
                out,
                "  note: M(s) {unwoken:?} parked although taken off the idle list to be woken, \
                 while {queued} G(s) wait in run queues: if this lasts, the wake-up was lost \
                 (part 03, parker)"
            );
        }
        for g in live.iter().take(SHOWN) {
            let nowhere = !shutdown
                && g.state.status() == crate::parts::g::Status::Runnable
                && !self.gtable.is_queued(g)
                && !self.ms.iter().any(|m| m.running_g.load(Relaxed) == g.id());
            let note = if nowhere {
                ": runnable, but in no run queue and on no M at this instant; if this \
                 lasts, it was readied and never queued (part 06, g)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {:?}{note}", g.state);
        }
        if live.len() > SHOWN {
            let _ = writeln!(out, "  ... and {} more G(s)", live.len() - SHOWN);
        }
        out
    }
}

/// The state of the runtime the caller runs on, or a note that there is none.
pub fn dump() -> String {
    match current() {
        Some(shared) => shared.dump(),
        None => "not inside a gmp runtime\n".to_string(),
    }
}

/// The state of every runtime alive in this process; watchdogs print it when they fire.
pub fn dump_all() -> String {
    let all: Vec<Arc<Shared>> = lock(&RUNTIMES).iter().filter_map(Weak::upgrade).collect();
    if all.is_empty() {
        return "no gmp runtime is alive\n".to_string();
    }
    all.iter().map(|s| s.dump()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Runtime;

    #[test]
    fn dump_names_a_parked_m_whose_wake_up_was_lost() {
        let dump = testkit::watchdog("a lost wake-up in the dump", testkit::DEFAULT_LIMIT, || {
            let rt = Runtime::builder().procs(1).build().unwrap();
            let shared = rt.shared.clone();
            // Wait for M0 to park with nothing to do.
            while !(lock(&shared.sched).midle == [0] && shared.ms[0].state() == MState::Idle) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Lose its wake-up: hand it its P as `wakep` does, and never unpark it.
            {
                let mut s = lock(&shared.sched);
                s.midle.clear();
                let p = s.pidle.pop().unwrap();
                shared
                    .npidle
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                s.next_p[0] = Some((p, false));
            }
            let h = shared.spawn(|| 7);
            let dump = shared.dump();
            shared.ms[0].idle.unpark(); // found: wake it after all
            assert_eq!(h.join().unwrap(), 7);
            dump
        });
        assert!(
            dump.contains("M(s) [0] parked although taken off the idle list")
                && dump.contains("1 G(s) wait in run queues"),
            "{dump}"
        );
    }
}
