//! The default P count: the CPU limit of this process's cgroup (v1 or v2, the tightest of
//! the leaf and its parents), the rounding from a fractional limit to whole Ps, and the
//! `GMP_PROCS` override.
//!
//! How the limit is found, every path read under a `root` so the tests can hand in a tree
//! of fixture files (the real system is `root = "/"`):
//!
//! 1. `proc/self/cgroup` says which cgroup this process is in, per hierarchy:
//!    `4:cpu,cpuacct:/a/b` for a v1 hierarchy with the `cpu` controller, `0::/a/b` for v2.
//!    A v1 hierarchy that has `cpu` wins: the kernel binds a controller to one hierarchy, so
//!    in a hybrid setup v2 then has no `cpu.max` to read.
//! 2. `proc/self/mountinfo` says where that hierarchy is mounted, and which of its folders
//!    the mount shows (field 4, the *root*: a container often sees only its own subtree).
//! 3. From the process's folder up to the mount point, each level's limit is read
//!    (v1: `cpu.cfs_quota_us`, `-1` meaning none, over `cpu.cfs_period_us`; v2: `cpu.max`,
//!    `max 100000` meaning none), and the tightest one wins: the kernel throttles a cgroup
//!    when it or any parent has spent its quota. Go 1.25–1.27 read only the leaf
//!    (golang/go#81180); a parent above the mount root stays invisible to both.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The environment variable that sets the P count.
pub const PROCS_ENV: &str = "GMP_PROCS";

/// The largest P count worth accepting by default (the runtime's `MAX_PROCS`): a typo like
/// `GMP_PROCS=20000` should not start thousands of threads. Go allows up to 2^31.
pub const MAX_PROCS: usize = 1024;

/// A CPU bandwidth limit: `quota_us` of CPU time every `period_us` of wall time, read from
/// the file `at`. 150000 over 100000 is one and a half CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuLimit {
    /// CPU time allowed per period, in microseconds (over all the cgroup's threads).
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
    /// The file the quota came from (`…/cpu.max` or `…/cpu.cfs_quota_us`), under `root`.
    pub at: PathBuf,
}

impl CpuLimit {
    /// The limit in CPUs: `quota_us / period_us`.
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// Why the cgroup CPU limit could not be read. Every variant names the file; the fix when
/// the limit cannot be trusted is to set `GMP_PROCS`.
#[derive(Debug)]
pub enum CgroupError {
    /// A file exists but could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// A file does not have the shape the kernel writes.
    Malformed {
        /// The file.
        path: PathBuf,
        /// The offending line or value.
        content: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// `proc/self/cgroup` places the process in a cgroup outside the part of the
    /// hierarchy that is mounted (the mount's root in `mountinfo`).
    OutsideMount {
        /// The process's cgroup path, from `proc/self/cgroup`.
        cgroup: String,
        /// The folder of the hierarchy the mount shows.
        mount_root: String,
        /// Where it is mounted, under `root`.
        mountpoint: PathBuf,
    },
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str = "set GMP_PROCS to choose the P count yourself";
        match self {
            CgroupError::Read { path, error } => {
                write!(f, "cannot read {}: {error}; {FIX}", path.display())
            }
            CgroupError::Malformed {
                path,
                content,
                expected,
            } => write!(
                f,
                "{} holds {content:?}, expected {expected}; {FIX}",
                path.display()
            ),
            CgroupError::OutsideMount {
                cgroup,
                mount_root,
                mountpoint,
            } => write!(
                f,
                "this process's cgroup {cgroup:?} is not under {mount_root:?}, the part of the \
                 hierarchy mounted at {}, so its CPU limit cannot be read; {FIX}",
                mountpoint.display()
            ),
        }
    }
}

impl std::error::Error for CgroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CgroupError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The CPU limit of this process: the tightest of its cgroup's and every parent's up to
/// the mount root, or `None` when there is none (no cgroups, no `cpu` controller mounted,
/// no quota set anywhere). Every path is read under `root` (`/` for the real system).
///
/// Errors only for files that exist but are unreadable or malformed, or a cgroup outside
/// its mount; each names the file.
pub fn cgroup_cpu_limit(root: &Path) -> Result<Option<CpuLimit>, CgroupError> {
    todo!(
        "ch08 step 4: find this process's cpu cgroup in proc/self/cgroup and mountinfo, then \
         walk up to the mount point taking the tightest limit (book: ch08-steal.html#step-4)"
    )
}

/// The default P count for `cpus` usable CPUs (the affinity mask's count) under `limit`.
///
/// The rounding: **up** (a limit of 1.5 CPUs gives 2 Ps, so the whole quota can be used),
/// **at least 1**, **at most `cpus`** (a limit above the CPUs this process may run on
/// cannot be used). Beside the others:
///
/// | limit | here | Go 1.25+ (ceil, at least 2, at most the CPUs) | std `available_parallelism` (floor, at least 1) |
/// |-------|------|------|------|
/// | 0.5   | 1    | 2    | 1    |
/// | 1.5   | 2    | 2    | 1    |
/// | 2.5   | 3    | 3    | 2    |
///
/// Go's minimum of 2 leaves room for its garbage collector's worker beside the program;
/// gmp has no collector, and a second P under half a CPU of quota only adds throttling.
/// std rounds down so a thread pool never exceeds the quota, leaving up to one CPU unused.
pub fn default_procs(cpus: usize, limit: Option<&CpuLimit>) -> usize {
    todo!(
        "ch08 step 4: round the limit up, at least 1, at most the CPUs \
         (book: ch08-steal.html#step-4)"
    )
}

/// Why `GMP_PROCS` was refused. Each message names the variable, the value and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcsError {
    /// Set, but empty or only spaces.
    Empty,
    /// Zero: a runtime needs a P to run anything.
    Zero,
    /// Not a whole number.
    NotANumber {
        /// The value as given.
        value: String,
    },
    /// Above the largest P count accepted.
    TooBig {
        /// The value as given.
        value: String,
        /// The largest accepted.
        max: usize,
    },
}

impl fmt::Display for ProcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNSET: &str = "unset it to use the CPU count and the cgroup limit";
        match self {
            ProcsError::Empty => write!(
                f,
                "{PROCS_ENV} is set but empty: set it to a whole number of Ps, or {UNSET}"
            ),
            ProcsError::Zero => write!(
                f,
                "{PROCS_ENV}=0: a runtime needs at least one P to run anything; set it to 1 or \
                 more, or {UNSET}"
            ),
            ProcsError::NotANumber { value } => write!(
                f,
                "{PROCS_ENV}={value:?} is not a whole number; set it to a P count such as 4, \
                 or {UNSET}"
            ),
            ProcsError::TooBig { value, max } => write!(
                f,
                "{PROCS_ENV}={value} is more than the {max} Ps this runtime accepts; set it to \
                 {max} or less, or {UNSET}"
            ),
        }
    }
}

impl std::error::Error for ProcsError {}

/// The P count `GMP_PROCS` asks for: `value` is the variable's value (`None` when unset),
/// `max` the largest count accepted ([`MAX_PROCS`] by default). `Ok(None)`: not set, use
/// [`default_procs`]. Spaces around the number are ignored.
pub fn procs_from_env(value: Option<&str>, max: usize) -> Result<Option<usize>, ProcsError> {
    todo!(
        "ch08 step 4: parse GMP_PROCS into a P count or a named ProcsError \
         (book: ch08-steal.html#step-4)"
    )
}
