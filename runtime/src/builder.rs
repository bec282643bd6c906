//! Configuring a runtime: P count, G stacks and their layout, M stack size, pinning. Every
//! bad value is a [`BuildError`] that names the setting and how to fix it; nothing is
//! checked later.

use std::fmt;

use crate::engine::Engine;
use crate::parts::osthread;
use crate::parts::stack::{self, PoolConfig, SLAB_CHUNK};
use crate::parts::steal;
use crate::sched::Runtime;

/// The most Ps a runtime accepts. Go's limit is 2^31; ours keeps a typo (`GMP_PROCS=20000`)
/// from starting thousands of threads.
pub const MAX_PROCS: usize = 1024;

/// Default cap on a runtime's Ms ([`Builder::max_threads`]): Go's `SetMaxThreads` default.
pub const DEFAULT_MAX_THREADS: usize = 10_000;

/// Default stack of an M: g0 runs on it (Gs have their own), as large as Rust's default for
/// spawned threads, so a G's code that runs on g0 by mistake still has room.
pub const DEFAULT_M_STACK: usize = 2 << 20;

/// Default stack of a G. It cannot grow (chapter 5 says why), so it is larger than Go's
/// 2 KiB start (`stackMin` in `stack.go`); only the pages a G touches cost memory.
pub const DEFAULT_G_STACK: usize = 64 << 10;

/// How a runtime lays out its G stacks (chapter 5, part 05's modes); see
/// [`Runtime::stack_layout`] and the `Builder` methods that choose one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackLayout {
    /// One mapping per stack with a `PROT_NONE` guard page: 2 mappings each, so about
    /// 30,000 Gs fit under the default `vm.max_map_count`. Any kernel.
    Guarded,
    /// Chunks of 1,024 stacks in one mapping, each above a kernel guard region
    /// (`MADV_GUARD_INSTALL`, Linux 6.13): overflows caught as in `Guarded`, a million Gs
    /// fit. The default where the kernel has it.
    GuardedSlab,
    /// Chunks of 1,024 stacks in one mapping without guards (`unsafe`, a canary checked
    /// at each switch).
    Slab,
}

/// Free G stacks whose pages stay resident when sysmon gives the rest back (part 05's hot
/// limit): a chunk's worth and a little, so a program that keeps about a thousand Gs coming
/// and going never pays page faults for their stacks again.
pub(crate) const HOT_STACKS: usize = SLAB_CHUNK + 64;

/// The stack size of each M, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSize(pub usize);

/// Settings for a [`Runtime`]; start from [`Runtime::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    procs: Option<usize>,
    m_stack: StackSize,
    pin_ms: bool,
    g_stack: usize,
    /// `None`: guarded slab where the kernel has guard regions, else guarded.
    layout: Option<StackLayout>,
    migrate: bool,
    engine: Option<Engine>,
    max_threads: usize,
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
    /// `GMP_ENGINE` names no engine, or the asm engine on a CPU it does not support.
    BadEngine {
        /// The value as given.
        value: String,
    },
    /// The G stack settings were refused by part 05 (a stack below its minimum, or guarded
    /// slab stacks on a kernel before Linux 6.13).
    Stacks {
        /// Part 05's explanation.
        reason: String,
    },
    /// A cap on Ms ([`Builder::max_threads`]) below the P count or above
    /// [`DEFAULT_MAX_THREADS`].
    BadMaxThreads {
        /// The cap as given.
        value: usize,
        /// The P count it must be at least.
        procs: usize,
    },
    /// `set_procs` asked for more Ps than [`Builder::max_threads`] allows Ms: every P needs
    /// an M, so every blocking call would fail.
    ProcsAboveMaxThreads {
        /// The P count asked for.
        procs: usize,
        /// The runtime's `Builder::max_threads`.
        max_threads: usize,
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
            BuildError::BadEngine { value } => write!(
                f,
                "bad G engine {value:?} (from GMP_ENGINE or Builder::engine): use \"corosensei\" \
                 or \"asm\" (asm needs x86_64); unset GMP_ENGINE for the default"
            ),
            BuildError::Stacks { reason } => write!(
                f,
                "bad G stack setting (Builder::stack_size or the stack layout): {reason}"
            ),
            BuildError::BadMaxThreads { value, procs } => write!(
                f,
                "bad Builder::max_threads({value}): every P needs an M, so it must be from the \
                 P count ({procs}) to {DEFAULT_MAX_THREADS}; leave it out for {DEFAULT_MAX_THREADS}"
            ),
            BuildError::ProcsAboveMaxThreads { procs, max_threads } => write!(
                f,
                "set_procs({procs}) is above the runtime's Builder::max_threads({max_threads}): \
                 every P needs an M (and each blocking call one more), so ask for at most \
                 {max_threads} Ps, or build the runtime with a higher Builder::max_threads"
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
            g_stack: DEFAULT_G_STACK,
            layout: None,
            migrate: false,
            engine: None,
            max_threads: DEFAULT_MAX_THREADS,
        }
    }
}

impl Builder {
    /// Number of Ps. Default: `GMP_PROCS`, else [`default_procs`]: the CPUs this process may
    /// run on, lowered to the tightest cgroup CPU quota of its cgroup and its parents.
    pub fn procs(mut self, procs: usize) -> Builder {
        self.procs = Some(procs);
        self
    }

    /// Stack size of each M in bytes (at least part 02's minimum, 16 KiB).
    pub fn m_stack_size(mut self, bytes: usize) -> Builder {
        self.m_stack = StackSize(bytes);
        self
    }

    /// Usable stack of each G in bytes (rounded up to pages; at least part 05's `MIN_STACK`).
    /// Default [`DEFAULT_G_STACK`].
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.g_stack = bytes;
        self
    }

    /// One mapping and one guard page per G stack ([`StackLayout::Guarded`]), whatever the
    /// kernel: about 30,000 Gs fit under the default `vm.max_map_count`. The default only
    /// on kernels before Linux 6.13.
    pub fn guarded_stacks(mut self) -> Builder {
        self.layout = Some(StackLayout::Guarded);
        self
    }

    /// Chunks of 1,024 G stacks in one mapping, each above a kernel guard region
    /// ([`StackLayout::GuardedSlab`]): an overflow is caught when it happens, and a million
    /// Gs fit under `vm.max_map_count`. The default where the kernel has guard regions;
    /// asked for explicitly on an older kernel, [`build`](Builder::build) fails naming the
    /// kernel version it needs (Linux 6.13).
    pub fn guarded_slab_stacks(mut self) -> Builder {
        self.layout = Some(StackLayout::GuardedSlab);
        self
    }

    /// Carves G stacks out of large shared mappings without guard pages (part 05's slab
    /// mode), so that a million Gs fit under `vm.max_map_count` on any kernel. An overflow
    /// is found at the G's next switch (and aborts with `G <id> overflowed its <N> KiB
    /// stack`). On Linux 6.13 or later the default guarded slab does the same safely.
    ///
    /// # Safety
    ///
    /// No G may overflow its stack: until the check at its next switch finds it, the
    /// overflow writes into the stack of another G.
    pub unsafe fn slab_stacks(mut self) -> Builder {
        self.layout = Some(StackLayout::Slab);
        self
    }

    /// Lets a started G resume on any M, as Go's Gs do, so an idle M can take over any
    /// runnable G rather than only the ones not yet started. By default a G stays on the M
    /// (the OS thread) it first ran on; see chapter 8, "The thread-local hazard".
    ///
    /// # Safety
    ///
    /// No G may hold a value tied to its thread across a point where it can switch (a park,
    /// a yield, any blocking call of this crate): a borrow from a `thread_local!` (its
    /// `with` closure), a `!Send` value such as `Rc`, a `MutexGuard` of std, or a panic being
    /// unwound. After the switch it may run on another thread, which Rust's types cannot
    /// see: another thread's thread-local, or a guard unlocked on the wrong thread. Nor may
    /// a function that can switch read a thread-local (std's too, such as
    /// `std::thread::current`) both before and after the switch: the compiler may compute
    /// the thread-local's address once for the whole function, inlining included. Read it
    /// in a function of its own marked `#[inline(never)]`, as the runtime does.
    pub unsafe fn migrate_gs(mut self) -> Builder {
        self.migrate = true;
        self
    }

    /// Which engine runs the Gs. Default: `GMP_ENGINE` (`corosensei` or `asm`), else
    /// [`Engine::DEFAULT`].
    pub fn engine(mut self, engine: Engine) -> Builder {
        self.engine = Some(engine);
        self
    }

    /// The most Ms (OS threads running Gs or blocking calls) the runtime starts. Ms start on
    /// demand: one per P, plus one for each P handed on while its M is in a
    /// [`blocking`](crate::blocking) call. A blocking call that could need an M past the cap
    /// fails with [`BlockingError::TooManyThreads`](crate::BlockingError::TooManyThreads)
    /// naming it. Default [`DEFAULT_MAX_THREADS`], as Go's `debug.SetMaxThreads`; at least
    /// the P count. (Go exits the process past its cap; gmp tells the calling G.)
    ///
    /// At exactly the P count there is no M to spare, so every blocking call fails; allow
    /// at least one more. `set_procs` above the cap is refused.
    pub fn max_threads(mut self, n: usize) -> Builder {
        self.max_threads = n;
        self
    }

    /// Pins M `i` to the i-th allowed CPU (wrapping), as the chapter 3 benches do.
    pub fn pin_ms(mut self, pin: bool) -> Builder {
        self.pin_ms = pin;
        self
    }

    /// Checks every setting and starts the Ms.
    pub fn build(self) -> Result<Runtime, BuildError> {
        // `None`: the count is the CPU quota's, which sysmon follows (`sched/sysmon.rs`).
        let procs_set = match self.procs {
            Some(n) => Some(check_procs("Builder::procs", &n.to_string())?),
            None => match std::env::var("GMP_PROCS") {
                Ok(value) => Some(check_procs("GMP_PROCS", &value)?),
                Err(_) => None,
            },
        };
        let procs = procs_set.unwrap_or_else(default_procs);
        if !(procs..=DEFAULT_MAX_THREADS).contains(&self.max_threads) {
            return Err(BuildError::BadMaxThreads {
                value: self.max_threads,
                procs,
            });
        }
        let cpus = if self.pin_ms {
            osthread::allowed_cpus().map_err(|e| BuildError::StartM {
                index: 0,
                reason: format!("cannot read the allowed CPUs to pin to: {e}"),
            })?
        } else {
            Vec::new()
        };
        let layout = match self.layout {
            Some(layout) => layout,
            // Probed once per process (part 05): EINVAL before Linux 6.13.
            None if stack::guard_regions().is_ok() => StackLayout::GuardedSlab,
            None => StackLayout::Guarded,
        };
        // A finished G's stack keeps its pages; sysmon gives back those of the free stacks
        // past the hot limit about once a second, neighbours in one madvise (part 05's
        // `release_cold`). Not on the free path: each madvise in a process running on
        // several CPUs costs a TLB shootdown (an interrupt to every other CPU running it),
        // and when the free path paid it, 100k sleepers ending took about 570 ms, not 350.
        let stacks = match layout {
            StackLayout::Guarded => PoolConfig::guarded(self.g_stack),
            StackLayout::GuardedSlab => PoolConfig::guarded_slab(self.g_stack),
            StackLayout::Slab => {
                // SAFETY: the caller of `slab_stacks` promised that no G overflows.
                unsafe { PoolConfig::slab(self.g_stack) }
            }
        }
        .hot_limit(HOT_STACKS);
        let engine = match self.engine {
            Some(engine) => engine,
            None => match std::env::var("GMP_ENGINE") {
                Ok(value) => match value.trim() {
                    "corosensei" => Engine::Corosensei,
                    "asm" => Engine::Asm,
                    _ => return Err(BuildError::BadEngine { value }),
                },
                Err(_) => Engine::DEFAULT,
            },
        };
        if engine == Engine::Asm && !cfg!(target_arch = "x86_64") {
            return Err(BuildError::BadEngine {
                value: "asm".to_string(),
            });
        }
        // The map budget charges a chunked pool one mapping per chunk (sched/stackalloc.rs).
        let chunked = layout != StackLayout::Guarded;
        Runtime::start(
            procs,
            procs_set.is_none(),
            self.max_threads,
            self.m_stack.0,
            &cpus,
            stacks,
            chunked,
            self.migrate,
            engine,
        )
    }
}

/// The P count a runtime gets when neither [`Builder::procs`] nor `GMP_PROCS` sets one (Go:
/// the default `GOMAXPROCS`): the CPUs in this thread's affinity mask, lowered to the
/// tightest cgroup v1/v2 CPU quota of this process's cgroup and its parents, rounded up
/// (part 08, chapter 8 "GOMAXPROCS in containers"). A cgroup file that cannot be read
/// counts as no limit, as in Go.
pub fn default_procs() -> usize {
    let cpus = osthread::allowed_cpus().map_or_else(
        |_| std::thread::available_parallelism().map_or(1, |n| n.get()),
        |cpus| cpus.len(),
    );
    let limit = steal::cgroup_cpu_limit(std::path::Path::new("/"))
        .ok()
        .flatten();
    steal::default_procs(cpus, limit.as_ref()).clamp(1, MAX_PROCS)
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
