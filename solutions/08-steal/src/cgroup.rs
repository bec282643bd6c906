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

    /// Is `self` a tighter limit than `other`? Compared exactly, as fractions.
    fn tighter_than(&self, other: &CpuLimit) -> bool {
        (self.quota_us as u128) * (other.period_us as u128)
            < (other.quota_us as u128) * (self.period_us as u128)
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

/// Which cgroup version holds the `cpu` controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The CPU limit of this process: the tightest of its cgroup's and every parent's up to
/// the mount root, or `None` when there is none (no cgroups, no `cpu` controller mounted,
/// no quota set anywhere). Every path is read under `root` (`/` for the real system).
///
/// Errors only for files that exist but are unreadable or malformed, or a cgroup outside
/// its mount; each names the file.
pub fn cgroup_cpu_limit(root: &Path) -> Result<Option<CpuLimit>, CgroupError> {
    let cgroup_file = root.join("proc/self/cgroup");
    let Some(cgroups) = read_optional(&cgroup_file)? else {
        return Ok(None);
    };
    let Some((version, path)) = cpu_cgroup(&cgroup_file, &cgroups)? else {
        return Ok(None);
    };
    let mountinfo_file = root.join("proc/self/mountinfo");
    let Some(mountinfo) = read_optional(&mountinfo_file)? else {
        return Ok(None);
    };
    let mounts = cgroup_mounts(&mountinfo_file, &mountinfo, version)?;
    if mounts.is_empty() {
        return Ok(None);
    }
    // The first mount that shows our cgroup; several mounts of one hierarchy are legal.
    let found = mounts
        .iter()
        .find_map(|(mount_root, mountpoint)| Some((relative_to(&path, mount_root)?, mountpoint)));
    let Some((relative, mountpoint)) = found else {
        let (mount_root, mountpoint) = &mounts[0];
        return Err(CgroupError::OutsideMount {
            cgroup: path,
            mount_root: mount_root.clone(),
            mountpoint: under(root, mountpoint),
        });
    };
    let top = under(root, mountpoint);
    let mut dir = under(&top, relative);
    let mut tightest: Option<CpuLimit> = None;
    loop {
        if let Some(limit) = read_limit(&dir, version)?
            && tightest.as_ref().is_none_or(|t| limit.tighter_than(t))
        {
            tightest = Some(limit);
        }
        if dir == top || !dir.pop() {
            break;
        }
    }
    Ok(tightest)
}

/// `path` joined under `base`, with `path`'s leading `/` dropped.
fn under(base: &Path, path: &str) -> PathBuf {
    let rest = path.trim_start_matches('/');
    if rest.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rest)
    }
}

/// `path` relative to the mount's root, if it lies under it.
fn relative_to<'a>(path: &'a str, mount_root: &str) -> Option<&'a str> {
    let base = mount_root.trim_end_matches('/');
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// A file's text, `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// From `proc/self/cgroup`: the version that holds `cpu` and our path in it.
fn cpu_cgroup(file: &Path, text: &str) -> Result<Option<(Version, String)>, CgroupError> {
    let mut v2 = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(CgroupError::Malformed {
                path: file.to_path_buf(),
                content: line.to_string(),
                expected: "lines of the form ID:CONTROLLERS:PATH (\"4:cpu,cpuacct:/a\" or \"0::/a\")",
            });
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "cpu") {
            return Ok(Some((Version::V1, path.to_string())));
        }
    }
    Ok(v2.map(|path| (Version::V2, path)))
}

/// From `proc/self/mountinfo`: `(root, mountpoint)` of every mount of the hierarchy.
fn cgroup_mounts(
    file: &Path,
    text: &str,
    version: Version,
) -> Result<Vec<(String, String)>, CgroupError> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let sep = fields.iter().position(|&f| f == "-");
        let Some(sep) = sep.filter(|&s| s >= 6 && fields.len() >= s + 3) else {
            return Err(CgroupError::Malformed {
                path: file.to_path_buf(),
                content: line.to_string(),
                expected: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPER",
            });
        };
        let fstype = fields[sep + 1];
        let wanted = match version {
            Version::V2 => fstype == "cgroup2",
            Version::V1 => {
                fstype == "cgroup"
                    && fields
                        .get(sep + 3)
                        .is_some_and(|opts| opts.split(',').any(|o| o == "cpu"))
            }
        };
        if wanted {
            mounts.push((unescape(fields[3]), unescape(fields[4])));
        }
    }
    Ok(mounts)
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\040`-style octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(digits) = octal {
            let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The limit set in one cgroup folder, if any. A missing file means no limit at this level
/// (a v2 root has no `cpu.max`; a v2 child has none when `cpu` is not enabled for it).
fn read_limit(dir: &Path, version: Version) -> Result<Option<CpuLimit>, CgroupError> {
    match version {
        Version::V2 => {
            let file = dir.join("cpu.max");
            let Some(text) = read_optional(&file)? else {
                return Ok(None);
            };
            const EXPECTED: &str = "\"QUOTA PERIOD\" in microseconds, QUOTA a positive number \
                                    or \"max\", PERIOD a positive number";
            let malformed = || CgroupError::Malformed {
                path: file.clone(),
                content: text.trim().to_string(),
                expected: EXPECTED,
            };
            let mut fields = text.split_whitespace();
            let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let period = positive(period).ok_or_else(malformed)?;
            if quota == "max" {
                return Ok(None);
            }
            let quota = positive(quota).ok_or_else(malformed)?;
            Ok(Some(CpuLimit {
                quota_us: quota,
                period_us: period,
                at: file.clone(),
            }))
        }
        Version::V1 => {
            let quota_file = dir.join("cpu.cfs_quota_us");
            let Some(text) = read_optional(&quota_file)? else {
                return Ok(None);
            };
            let quota = text.trim();
            if quota == "-1" {
                return Ok(None);
            }
            let Some(quota) = positive(quota) else {
                return Err(CgroupError::Malformed {
                    path: quota_file,
                    content: quota.to_string(),
                    expected: "a positive number of microseconds, or -1 for no limit",
                });
            };
            let period_file = dir.join("cpu.cfs_period_us");
            let text = fs::read_to_string(&period_file).map_err(|error| CgroupError::Read {
                path: period_file.clone(),
                error,
            })?;
            let Some(period) = positive(text.trim()) else {
                return Err(CgroupError::Malformed {
                    path: period_file,
                    content: text.trim().to_string(),
                    expected: "a positive number of microseconds",
                });
            };
            Ok(Some(CpuLimit {
                quota_us: quota,
                period_us: period,
                at: quota_file,
            }))
        }
    }
}

fn positive(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().filter(|&n| n > 0)
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
    let cpus = cpus.max(1);
    let Some(limit) = limit else {
        return cpus;
    };
    let quota = u128::from(limit.quota_us);
    let period = u128::from(limit.period_us.max(1));
    let ceil = quota.div_ceil(period);
    usize::try_from(ceil).unwrap_or(usize::MAX).clamp(1, cpus)
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
    let Some(raw) = value else {
        return Ok(None);
    };
    let text = raw.trim();
    if text.is_empty() {
        return Err(ProcsError::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProcsError::NotANumber {
            value: raw.to_string(),
        });
    }
    let too_big = || ProcsError::TooBig {
        value: text.to_string(),
        max,
    };
    // All digits: a parse error can only be an overflow.
    let n: usize = text.parse().map_err(|_| too_big())?;
    match n {
        0 => Err(ProcsError::Zero),
        n if n > max => Err(too_big()),
        n => Ok(Some(n)),
    }
}
