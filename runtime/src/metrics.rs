//! [`metrics`]: what the kernel says about this process, read through part 01, plus what the
//! runtime knows of its own Ms. Go: `runtime.NumGoroutine`, `/sched/...` metrics; the kernel
//! figures are those of `/proc/self/status`.

use std::fmt;

use crate::parts::procinfo::{self, Pid};
use crate::sched;

/// One reading of the process and, inside a runtime, of the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Kernel threads in the process (`Threads:`).
    pub os_threads: u32,
    /// Their ids (`/proc/self/task`), ascending.
    pub task_tids: Vec<u32>,
    /// Resident set in bytes (`VmRSS:`).
    pub rss_bytes: u64,
    /// Virtual size in bytes (`VmSize:`).
    pub vm_bytes: u64,
    /// Voluntary context switches of the main thread so far (`voluntary_ctxt_switches:` of
    /// `/proc/self/status`, which counts the main thread only; `getrusage(RUSAGE_SELF)`
    /// sums every thread).
    pub voluntary_switches: u64,
    /// Involuntary context switches of the main thread so far (`nonvoluntary_ctxt_switches:`).
    pub involuntary_switches: u64,
    /// Ps of the runtime the caller runs on; 0 outside a runtime.
    pub procs: usize,
    /// Kernel thread id of each M of that runtime, by M index; empty outside a runtime.
    pub m_tids: Vec<u32>,
    /// The P count the CPU quota allows, as that runtime's sysmon last read it (once a
    /// second); 0 outside a runtime or when its P count was set (then sysmon does not
    /// follow the quota). See chapter 9, "Sysmon".
    pub quota_procs: usize,
}

/// `/proc` could not be read; the message is part 01's.
#[derive(Debug)]
pub struct MetricsError(String);

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gmp::metrics: {}", self.0)
    }
}

impl std::error::Error for MetricsError {}

/// Reads the process's figures from `/proc/self` (through part 01) and, inside a runtime,
/// the runtime's Ms. Any thread.
pub fn metrics() -> Result<Metrics, MetricsError> {
    let status = procinfo::status(Pid::Current).map_err(|e| MetricsError(e.to_string()))?;
    let task_tids = procinfo::thread_ids(Pid::Current).map_err(|e| MetricsError(e.to_string()))?;
    let (procs, m_tids, quota_procs) = match sched::current() {
        Some(rt) => (rt.procs(), rt.m_tids(), rt.quota_procs()),
        None => (0, Vec::new(), 0),
    };
    Ok(Metrics {
        os_threads: status.threads,
        task_tids,
        rss_bytes: status.rss_bytes(),
        vm_bytes: status.vm_bytes(),
        voluntary_switches: status.voluntary_switches,
        involuntary_switches: status.involuntary_switches,
        procs,
        m_tids,
        quota_procs,
    })
}
