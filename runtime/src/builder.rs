//! Configuring a runtime: P count, M stack size, pinning. Every bad value is a
//! [`BuildError`] that names the setting and how to fix it; nothing is checked later.

use std::fmt;

use crate::parts::osthread;
use crate::sched::Runtime;

/// The most Ps a runtime accepts. Go's limit is 2^31; ours keeps a typo (`GMP_PROCS=20000`)
/// from starting thousands of threads.
pub const MAX_PROCS: usize = 1024;

/// Default stack of an M: closures run on it directly in stage 0, so it matches Rust's
/// default for spawned threads.
pub const DEFAULT_M_STACK: usize = 2 << 20;

/// The stack size of each M, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSize(pub usize);

/// Settings for a [`Runtime`]; start from [`Runtime::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    procs: Option<usize>,
    m_stack: StackSize,
    pin_ms: bool,
}

/// Why a runtime could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// A P count of zero, above [`MAX_PROCS`], or not a number.
    BadProcs {
        /// Where the value came from (`"GMP_PROCS"` or `"Builder::procs"`).
        from: &'static str,
        /// The value as given.
        value: String,
    },
    /// A part broke the contract the runtime relies on (usually: a learner's part that
    /// compiles and runs but answers wrongly). Names the part and the invariant.
    PartInvariant {
        /// The part, as `"02 osthread"`.
        part: &'static str,
        /// What should have held, and what happened instead.
        invariant: String,
    },
    /// Part 02 refused to start an M (stack too small, bad CPU, out of threads).
    StartM {
        /// Which M (0-based).
        index: usize,
        /// Part 02's explanation.
        reason: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BadProcs { from, value } => write!(
                f,
                "bad P count {value:?} from {from}: it must be a whole number from 1 to \
                 {MAX_PROCS}; unset GMP_PROCS to use one P per CPU"
            ),
            BuildError::PartInvariant { part, invariant } => write!(
                f,
                "part {part} broke an invariant the runtime relies on: {invariant} \
                 (run `cargo test -p ex-{}` to find the step)",
                part.replace(' ', "-")
            ),
            BuildError::StartM { index, reason } => {
                write!(f, "could not start M {index}: {reason}")
            }
        }
    }
}

impl std::error::Error for BuildError {}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            procs: None,
            m_stack: StackSize(DEFAULT_M_STACK),
            pin_ms: false,
        }
    }
}

impl Builder {
    /// Number of Ps (and, in stage 0, Ms). Default: `GMP_PROCS`, else the CPUs this process
    /// may use (`std::thread::available_parallelism`, which honours cgroup quotas).
    pub fn procs(mut self, procs: usize) -> Builder {
        self.procs = Some(procs);
        self
    }

    /// Stack size of each M in bytes (at least part 02's minimum, 16 KiB).
    pub fn m_stack_size(mut self, bytes: usize) -> Builder {
        self.m_stack = StackSize(bytes);
        self
    }

    /// Pins M `i` to the i-th allowed CPU (wrapping), as the chapter 3 benches do.
    pub fn pin_ms(mut self, pin: bool) -> Builder {
        self.pin_ms = pin;
        self
    }

    /// Checks every setting and starts the Ms.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let procs = match self.procs {
            Some(n) => check_procs("Builder::procs", &n.to_string())?,
            None => match std::env::var("GMP_PROCS") {
                Ok(value) => check_procs("GMP_PROCS", &value)?,
                Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        let cpus = if self.pin_ms {
            osthread::allowed_cpus().map_err(|e| BuildError::StartM {
                index: 0,
                reason: format!("cannot read the allowed CPUs to pin to: {e}"),
            })?
        } else {
            Vec::new()
        };
        Runtime::start(procs, self.m_stack.0, &cpus)
    }
}

fn check_procs(from: &'static str, value: &str) -> Result<usize, BuildError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_PROCS).contains(&n) => Ok(n),
        _ => Err(BuildError::BadProcs {
            from,
            value: value.to_string(),
        }),
    }
}
