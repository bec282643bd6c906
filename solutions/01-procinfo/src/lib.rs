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
    let mut threads = None;
    let mut rss = None;
    let mut size = None;
    let mut voluntary = None;
    let mut involuntary = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "Threads" => &mut threads,
            "VmRSS" => &mut rss,
            "VmSize" => &mut size,
            "voluntary_ctxt_switches" => &mut voluntary,
            "nonvoluntary_ctxt_switches" => &mut involuntary,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(ProcStatus {
        threads: number(threads, "Threads")? as u32,
        vm_rss_kib: number(rss, "VmRSS")?,
        vm_size_kib: number(size, "VmSize")?,
        voluntary_switches: number(voluntary, "voluntary_ctxt_switches")?,
        involuntary_switches: number(involuntary, "nonvoluntary_ctxt_switches")?,
    })
}

/// The number at the start of a field's value; a trailing unit (`kB`) is dropped.
fn number(value: Option<&str>, field: &'static str) -> Result<u64, ProcError> {
    let value = value.ok_or(ProcError::MissingField { field })?;
    let digits = value.split_whitespace().next().unwrap_or("");
    digits.parse().map_err(|_| ProcError::BadValue {
        field,
        found: value.trim().to_string(),
    })
}

/// Reads and parses `/proc/<pid>/status`.
pub fn status(pid: Pid) -> Result<ProcStatus, ProcError> {
    let path = pid.dir().join("status");
    let text = fs::read_to_string(&path).map_err(|e| io_error(pid, path, e))?;
    parse_status(&text)
}

/// The kernel thread ids (tids) of a process, sorted ascending, from `/proc/<pid>/task`.
///
/// The first thread's tid equals the pid. A tid is what `gettid()` returns on that thread
/// and what `ps -T` prints as SPID.
pub fn thread_ids(pid: Pid) -> Result<Vec<u32>, ProcError> {
    let path = pid.dir().join("task");
    let entries = fs::read_dir(&path).map_err(|e| io_error(pid, path.clone(), e))?;
    let mut tids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(pid, path.clone(), e))?;
        // Every entry of task/ is a decimal tid; skip anything else rather than fail.
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

/// A missing folder under `/proc` means the process is gone: say so, not "file not found".
fn io_error(pid: Pid, path: PathBuf, source: io::Error) -> ProcError {
    match (pid, source.kind()) {
        (Pid::Id(pid), io::ErrorKind::NotFound) => ProcError::NoSuchProcess { pid },
        _ => ProcError::Io { path, source },
    }
}
