//! Exercise 01, `procinfo` (skeleton: fill in every `todo!()`).
//!
//! Part 01, `procinfo`: what the kernel knows about a process, read from `/proc`.
//!
//! What lives here: parsing `/proc/<pid>/status` (thread count, resident and virtual size,
//! voluntary and involuntary context switches) and listing `/proc/<pid>/task`, the kernel
//! threads of a process. Go has no such part; its runtime counts its own Ms
//! (`runtime.NumGoroutine`, `sched.mcount`), but the kernel's view is what `ps -T` shows, and
//! it is the only honest way to count the threads a runtime really started.
//!
//! Invariant: every figure comes from the kernel's own text, unchanged in meaning; sizes are
//! kept in KiB exactly as `/proc` prints them (`kB` there means 1024 bytes).
//!
//! Not here: starting threads (part 02, `osthread`), anything the runtime adds on top
//! (`gmp::metrics`).
//!
//! Book: chapter 1, "Processes" (`book/src/ch01-procinfo.md`).
#![warn(missing_docs)]
// A skeleton's parameters are unused until you fill it in.
#![allow(unused_variables, dead_code, unused_imports)]

use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The calling process (`/proc/self`).
    Current,
    /// Another process by its id.
    Id(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::Current => PathBuf::from("/proc/self"),
            Pid::Id(id) => PathBuf::from(format!("/proc/{id}")),
        }
    }
}

/// The figures of `/proc/<pid>/status` this workbook uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStatus {
    /// `Threads:` kernel threads in the process (the Ms, for a Go-style runtime).
    pub threads: u32,
    /// `VmRSS:` resident set: memory actually backed by RAM, in KiB.
    pub vm_rss_kib: u64,
    /// `VmSize:` virtual size: every mapping, touched or not, in KiB.
    pub vm_size_kib: u64,
    /// `voluntary_ctxt_switches:` times the thread gave up the CPU because it blocked.
    /// Like the next field, it counts one thread: `/proc/<pid>/status` reports the main
    /// thread's, `/proc/<pid>/task/<tid>/status` another thread's.
    pub voluntary_switches: u64,
    /// `nonvoluntary_ctxt_switches:` times the kernel took the CPU away from the thread
    /// (time slice over, or a higher-priority thread woke).
    pub involuntary_switches: u64,
}

impl ProcStatus {
    /// Resident set in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.vm_rss_kib * 1024
    }

    /// Virtual size in bytes.
    pub fn vm_bytes(&self) -> u64 {
        self.vm_size_kib * 1024
    }
}

/// Why a read of `/proc` failed.
#[derive(Debug)]
pub enum ProcError {
    /// No process has this id (it exited, or never existed).
    NoSuchProcess {
        /// The id that was asked for.
        pid: u32,
    },
    /// The text had no line for a field this part needs.
    MissingField {
        /// The field name, without its colon (`"VmRSS"`).
        field: &'static str,
    },
    /// A field's value was not the number it should be.
    BadValue {
        /// The field name.
        field: &'static str,
        /// The text found after the colon.
        found: String,
    },
    /// Another I/O error while reading a file under `/proc`.
    Io {
        /// The file or folder that could not be read.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::NoSuchProcess { pid } => write!(
                f,
                "no process with pid {pid}: it has exited or never existed (check with `ps -p {pid}`)"
            ),
            ProcError::MissingField { field } => write!(
                f,
                "/proc status text has no `{field}:` line (kernel threads have no Vm* lines; is this a user process?)"
            ),
            ProcError::BadValue { field, found } => {
                write!(f, "`{field}:` should be a number, found {found:?}")
            }
            ProcError::Io { path, source } => write!(f, "reading {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ProcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Parses the text of a `/proc/<pid>/status` file.
///
/// Lines look like `Threads:\t4` or `VmRSS:\t    2048 kB`; order is not fixed and unknown
/// lines are skipped. A missing field is [`ProcError::MissingField`].
pub fn parse_status(text: &str) -> Result<ProcStatus, ProcError> {
    todo!(
        "ch01 step 1: parse the Threads, VmRSS, VmSize and *_ctxt_switches lines \
         (book: ch01-procinfo.html#step-1)"
    )
}

/// Reads and parses `/proc/<pid>/status`.
pub fn status(pid: Pid) -> Result<ProcStatus, ProcError> {
    todo!(
        "ch01 step 2: read /proc/<pid>/status; a missing pid is ProcError::NoSuchProcess \
         (book: ch01-procinfo.html#step-2)"
    )
}

/// The kernel thread ids (tids) of a process, sorted ascending, from `/proc/<pid>/task`.
///
/// The first thread's tid equals the pid. A tid is what `gettid()` returns on that thread
/// and what `ps -T` prints as SPID.
pub fn thread_ids(pid: Pid) -> Result<Vec<u32>, ProcError> {
    todo!(
        "ch01 step 3: list /proc/<pid>/task as sorted tids \
         (book: ch01-procinfo.html#step-3)"
    )
}
