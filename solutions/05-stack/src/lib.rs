//! Part 05, `stack`: where every G's stack comes from, and what happens when one runs out.
//!
//! What lives here: [`StackPool`], which hands out [`GStack`]s and takes them back; three
//! modes ([`StackMode::Guarded`], [`StackMode::GuardedSlab`], [`StackMode::Slab`]); the
//! kernel probe for guard regions ([`guard_regions`]); the overflow report
//! ([`install_overflow_handler`], [`GStack::check_canary`]).
//!
//! Go: `stackalloc` / `stackfree` (`stack.go`) with per-P caches, `newstack` /
//! `copystack` for growth. Rust cannot grow a stack by copying it, because references into
//! the stack would dangle (Go's compiler knows every pointer into a stack and rewrites them;
//! rustc does not), so a G gets a fixed-size stack and an overflow must be *caught*.
//!
//! ## Three modes
//!
//! - **Guarded**: each stack is its own `mmap` with a `PROT_NONE` page below it. Running off
//!   the end touches the guard page; the SIGSEGV handler sees the address is in a G's guard
//!   and reports "G <id> overflowed its <N> KiB stack". Cost: the guard splits the mapping,
//!   so each stack is 2 VMAs, and `vm.max_map_count` (65,530 by default) caps the process
//!   near 32k stacks.
//! - **Guarded slab**: many stacks carved out of one mapping, each with a guard page below it
//!   that the kernel keeps *inside* the mapping (`madvise(MADV_GUARD_INSTALL)`, Linux 6.13):
//!   the guard faults like a `PROT_NONE` page but does not split the VMA, so a chunk of
//!   [`SLAB_CHUNK`] stacks is 1 VMA and a million stacks fit, with overflows caught as in
//!   guarded mode. On an older kernel [`StackPool::new`] refuses it, naming the kernel.
//! - **Slab**: many stacks carved out of one large mapping, no guard pages, 1 VMA per chunk:
//!   a million stacks fit. An overflow is no longer caught when it happens; the lowest bytes
//!   of each stack (the *canary zone*) must still read zero, and the scheduler checks that on
//!   every switch. An overflow may have scribbled on the neighbour by then, which is why
//!   choosing slab mode is `unsafe`.
//!
//! Memory: stacks are mapped with `MAP_NORESERVE` and never pre-touched, so a G costs RSS
//! only for the pages its frames touched. A freed stack keeps its pages; the owner of the
//! pool calls [`StackPool::release_cold`] now and then (gmp: sysmon), which gives back with
//! `madvise(MADV_DONTNEED)` the pages of every free stack past the `hot_limit` most recently
//! freed, one call per run of neighbouring stacks. Not on the free path: each `madvise` in a
//! process running on several CPUs interrupts every other one (a TLB shootdown).
//!
//! Invariant: a stack is used by one G at a time; its memory outlives every use.
//!
//! Not here: switching onto a stack (part 04, corosensei), G ids and states (part 06), and
//! headroom at the map limit: the pool maps until the kernel refuses and then names the
//! limit (`MapLimit`); the runtime (gmp's `maps.rs`) stops a sixteenth of the limit (4,095
//! of 65,530) earlier, so that malloc and threads still get theirs (book: appendix, "Why
//! the runtime keeps the last mappings").
//!
//! Book: chapter 5, "Stacks for a million Gs" (`book/src/ch05-stack.md`).
#![warn(missing_docs)]

use std::cell::Cell;
use std::fmt;
use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once, OnceLock};

use corosensei::stack::{Stack, StackPointer};

/// The page size this part assumes (x86_64 and most aarch64 Linux).
pub const PAGE: usize = 4096;
/// The smallest usable stack: corosensei's minimum.
pub const MIN_STACK: usize = corosensei::stack::MIN_STACK_SIZE;
/// Bytes at the low end of a slab stack that must stay zero (the canary zone).
pub const CANARY_BYTES: usize = 256;
/// Stacks carved from one mapping in slab and guarded-slab mode.
pub const SLAB_CHUNK: usize = 1024;
/// `madvise` advice that turns a range into a guard region (Linux 6.13); libc 0.2.191 does
/// not name it yet. Older kernels answer `EINVAL`.
pub const MADV_GUARD_INSTALL: libc::c_int = 102;
/// The first Linux release with guard regions, for error messages.
pub const GUARD_REGIONS_SINCE: &str = "6.13";

/// How stacks are laid out. See "Three modes" above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackMode {
    /// One mapping per stack, with a guard page: overflows are caught when they happen.
    Guarded,
    /// Many stacks per mapping, each with a kernel guard region below it (Linux 6.13):
    /// overflows are caught when they happen, and a chunk is one mapping.
    GuardedSlab,
    /// Many stacks per mapping, no guard: overflows are found at the next switch.
    Slab,
}

/// Settings of a [`StackPool`].
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    stack_size: usize,
    mode: StackMode,
    hot_limit: usize,
}

impl PoolConfig {
    /// Guarded stacks of `stack_size` usable bytes (rounded up to whole pages).
    pub fn guarded(stack_size: usize) -> PoolConfig {
        PoolConfig {
            stack_size,
            mode: StackMode::Guarded,
            hot_limit: 64,
        }
    }

    /// Slab stacks of `stack_size` usable bytes, each above a guard region inside the
    /// chunk's one mapping. Needs Linux 6.13 ([`guard_regions`]); [`StackPool::new`] says so
    /// on an older kernel.
    pub fn guarded_slab(stack_size: usize) -> PoolConfig {
        PoolConfig {
            stack_size,
            mode: StackMode::GuardedSlab,
            hot_limit: 64,
        }
    }

    /// Slab stacks of `stack_size` usable bytes, without guard pages.
    ///
    /// # Safety
    ///
    /// Gs run on these stacks must not overflow them: an overflow writes into the stack
    /// below before the canary check at the next switch reports it and aborts.
    pub unsafe fn slab(stack_size: usize) -> PoolConfig {
        PoolConfig {
            stack_size,
            mode: StackMode::Slab,
            hot_limit: 64,
        }
    }

    /// How many of the most recently freed stacks keep their pages through
    /// [`StackPool::release_cold`], for quick reuse (default 64).
    pub fn hot_limit(mut self, stacks: usize) -> PoolConfig {
        self.hot_limit = stacks;
        self
    }
}

/// Why a stack could not be had.
#[derive(Debug)]
pub enum StackError {
    /// The size asked for is below [`MIN_STACK`].
    TooSmall {
        /// Bytes asked for.
        requested: usize,
    },
    /// The kernel's limit on mappings per process (`vm.max_map_count`) is reached.
    MapLimit {
        /// Mappings the process has now (`/proc/self/maps`).
        mappings: usize,
        /// The limit (`/proc/sys/vm/max_map_count`).
        max_map_count: usize,
    },
    /// Guarded-slab mode on a kernel without guard regions (before Linux 6.13).
    NoGuardRegions {
        /// The running kernel's release (`uname -r`), or "unknown".
        kernel: String,
        /// What the probe's `madvise` answered.
        source: io::Error,
    },
    /// The kernel refused the memory itself.
    OutOfMemory {
        /// Bytes of the mapping that failed.
        bytes: usize,
        /// What the kernel said.
        source: io::Error,
    },
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::TooSmall { requested } => write!(
                f,
                "a {requested}-byte G stack is too small: ask for at least {MIN_STACK} bytes"
            ),
            StackError::MapLimit {
                mappings,
                max_map_count,
            } => write!(
                f,
                "out of memory mappings: the process has {mappings} of vm.max_map_count = \
                 {max_map_count}, and each guarded stack takes 2; use guarded-slab mode \
                 (StackMode::GuardedSlab, Linux {GUARD_REGIONS_SINCE}: many stacks per \
                 mapping), slab mode (StackMode::Slab) or raise the limit with \
                 `sysctl -w vm.max_map_count=262144`"
            ),
            StackError::NoGuardRegions { kernel, source } => write!(
                f,
                "guarded-slab stacks need guard regions (madvise MADV_GUARD_INSTALL), which \
                 Linux {GUARD_REGIONS_SINCE} added; this kernel ({kernel}) answered: {source}; \
                 use guarded stacks (PoolConfig::guarded) or run on Linux {GUARD_REGIONS_SINCE} \
                 or later"
            ),
            StackError::OutOfMemory { bytes, source } => write!(
                f,
                "the kernel refused a {bytes}-byte stack mapping: {source}; lower the stack \
                 size or the number of Gs"
            ),
        }
    }
}

impl std::error::Error for StackError {}

/// A pool of G stacks. Cheap to clone (shared); any thread.
#[derive(Clone)]
pub struct StackPool {
    inner: Arc<Pool>,
}

struct Pool {
    mode: StackMode,
    /// Usable bytes per stack, a whole number of pages.
    size: usize,
    hot_limit: usize,
    free: Mutex<FreeList>,
    mapped: AtomicUsize,
    in_use: AtomicUsize,
    /// Every mapping made, `(address, length)`, unmapped when the pool goes away (every
    /// GStack holds the pool, so by then no stack is in use).
    mappings: Mutex<Vec<(usize, usize)>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for &(addr, len) in self
            .mappings
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // SAFETY: no GStack is alive (each holds an Arc<Pool>), so nothing uses the memory.
            unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        }
    }
}

/// The free stacks, most recently freed (warmest) last: `alloc` pops the last one.
struct FreeList {
    stacks: Vec<Region>,
    /// `stacks[..released]` have had their pages given back since they were freed.
    released: usize,
}

/// The usable part of a stack: `[bottom, bottom + size)`.
#[derive(Clone, Copy, Debug)]
struct Region {
    bottom: usize,
}

/// Counters of a pool, for tests and `gmp::metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Stacks ever mapped (in use or free).
    pub mapped: usize,
    /// Stacks handed out and not yet returned.
    pub in_use: usize,
    /// Stacks waiting in the pool.
    pub free: usize,
}

impl StackPool {
    /// A pool with the given settings; maps nothing yet.
    pub fn new(config: PoolConfig) -> Result<StackPool, StackError> {
        if config.stack_size < MIN_STACK {
            return Err(StackError::TooSmall {
                requested: config.stack_size,
            });
        }
        if config.mode == StackMode::GuardedSlab {
            guard_regions()?;
        }
        let size = config.stack_size.next_multiple_of(PAGE);
        Ok(StackPool {
            inner: Arc::new(Pool {
                mode: config.mode,
                size,
                hot_limit: config.hot_limit,
                free: Mutex::new(FreeList {
                    stacks: Vec::new(),
                    released: 0,
                }),
                mapped: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                mappings: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A stack for G `owner`: a freed one if the pool has one, else freshly mapped.
    pub fn alloc(&self, owner: u64) -> Result<GStack, StackError> {
        let pool = &self.inner;
        let reused = {
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            let region = free.stacks.pop();
            free.released = free.released.min(free.stacks.len());
            region
        };
        let region = match reused {
            Some(region) => region,
            None => self.map_more()?,
        };
        pool.in_use.fetch_add(1, Relaxed);
        Ok(GStack {
            region,
            owner,
            pool: self.inner.clone(),
        })
    }

    /// Counters: mapped, in use, free.
    pub fn stats(&self) -> PoolStats {
        let free = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stacks
            .len();
        PoolStats {
            mapped: self.inner.mapped.load(Relaxed),
            in_use: self.inner.in_use.load(Relaxed),
            free,
        }
    }

    /// Gives back the pages of the free stacks past the `hot_limit` most recently freed,
    /// unless already given back, and says how many stacks that was. Neighbours go back in
    /// one `madvise(MADV_DONTNEED)` (the guard page between them keeps its guard), so a
    /// burst of Gs ending costs a call per run of neighbours, not one per stack.
    /// Go: the background scavenger (`mgcscavenge.go`) returning free pages to the OS.
    pub fn release_cold(&self) -> usize {
        let pool = &self.inner;
        // Out of the list under the lock, given back without it: no `alloc` can hand out a
        // stack that is not in the list, and none waits while the kernel drops the pages
        // (a quarter of a second for a million stacks).
        let mut cold: Vec<Region> = {
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            let (start, end) = (
                free.released,
                free.stacks.len().saturating_sub(pool.hot_limit),
            );
            if end <= start {
                return 0;
            }
            free.stacks.drain(start..end).collect()
        };
        cold.sort_unstable_by_key(|r| r.bottom);
        // From one stack's bottom to its upper neighbour's: the stack, and its guard page
        // unless in slab mode.
        let stride = match pool.mode {
            StackMode::Slab => pool.size,
            StackMode::Guarded | StackMode::GuardedSlab => pool.size + PAGE,
        };
        let mut run = 0;
        for i in 1..=cold.len() {
            if i == cold.len() || cold[i].bottom != cold[i - 1].bottom + stride {
                let (low, high) = (cold[run].bottom, cold[i - 1].bottom + pool.size);
                // SAFETY: [low, high) holds free stacks of this pool and the guard pages
                // between them (all inside its mappings); no G uses a free stack, and these
                // are out of the free list, so none can be handed out until they are back.
                unsafe { libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED) };
                run = i;
            }
        }
        // Back in, just above the released part (which `alloc` may have shortened).
        let n = cold.len();
        let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
        let at = free.released;
        free.stacks.splice(at..at, cold);
        free.released = at + n;
        n
    }

    /// Usable bytes of each stack (the size asked for, rounded up to pages).
    pub fn stack_size(&self) -> usize {
        self.inner.size
    }

    /// The mode the pool was configured with.
    pub fn mode(&self) -> StackMode {
        self.inner.mode
    }

    /// Maps one guarded stack, or a chunk of slab stacks (all but one go to the free list).
    fn map_more(&self) -> Result<Region, StackError> {
        let pool = &self.inner;
        match pool.mode {
            StackMode::Guarded => {
                let len = pool.size + PAGE;
                let base = map(len, libc::PROT_NONE)?;
                // SAFETY: [base + PAGE, base + len) lies inside the mapping just made.
                let rc = unsafe {
                    libc::mprotect(
                        (base + PAGE) as *mut libc::c_void,
                        pool.size,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                };
                if rc != 0 {
                    let err = io::Error::last_os_error();
                    // SAFETY: unmapping the mapping made above, which nothing else uses.
                    unsafe { libc::munmap(base as *mut libc::c_void, len) };
                    return Err(map_error(len, err));
                }
                pool.mapped.fetch_add(1, Relaxed);
                pool.mappings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((base, len));
                Ok(Region {
                    bottom: base + PAGE,
                })
            }
            StackMode::Slab => {
                let len = pool.size * SLAB_CHUNK;
                let base = map(len, libc::PROT_READ | libc::PROT_WRITE)?;
                pool.mapped.fetch_add(SLAB_CHUNK, Relaxed);
                pool.mappings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((base, len));
                let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
                // Highest first, so pops hand out low addresses first (easier to read in
                // a dump); fresh pages read zero, so every canary zone is intact.
                for i in (1..SLAB_CHUNK).rev() {
                    free.stacks.push(Region {
                        bottom: base + i * pool.size,
                    });
                }
                Ok(Region { bottom: base })
            }
            StackMode::GuardedSlab => {
                // Each slot is a guard page and a stack above it, all in one mapping.
                let slot = PAGE + pool.size;
                let len = slot * SLAB_CHUNK;
                let base = map(len, libc::PROT_READ | libc::PROT_WRITE)?;
                for i in 0..SLAB_CHUNK {
                    if let Err(source) = install_guard(base + i * slot) {
                        // SAFETY: the mapping made above; no stack of it was handed out.
                        unsafe { libc::munmap(base as *mut libc::c_void, len) };
                        return Err(map_error(len, source));
                    }
                }
                pool.mapped.fetch_add(SLAB_CHUNK, Relaxed);
                pool.mappings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((base, len));
                let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
                for i in (1..SLAB_CHUNK).rev() {
                    free.stacks.push(Region {
                        bottom: base + i * slot + PAGE,
                    });
                }
                Ok(Region {
                    bottom: base + PAGE,
                })
            }
        }
    }
}

/// Makes the page at `addr` a guard region: any access faults, the mapping stays one VMA,
/// and the guard outlives `MADV_DONTNEED` (only `MADV_GUARD_REMOVE` or `munmap` lift it).
fn install_guard(addr: usize) -> io::Result<()> {
    loop {
        // SAFETY: `addr` is a page of a mapping this pool owns and has not handed out; the
        // advice discards that page's contents, which nothing uses.
        let rc = unsafe { libc::madvise(addr as *mut libc::c_void, PAGE, MADV_GUARD_INSTALL) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // The kernel may ask to retry when it races a page fault or a signal.
        if !matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// Whether this kernel has guard regions (Linux 6.13): probed once, on a scratch mapping.
/// `Err` says what the kernel answered and names its release.
pub fn guard_regions() -> Result<(), StackError> {
    static PROBE: OnceLock<Result<(), (String, i32)>> = OnceLock::new();
    let probed = PROBE.get_or_init(|| {
        let err = match map(2 * PAGE, libc::PROT_READ | libc::PROT_WRITE) {
            Ok(scratch) => {
                let got = install_guard(scratch);
                // SAFETY: the scratch mapping made above, which nothing else knows.
                unsafe { libc::munmap(scratch as *mut libc::c_void, 2 * PAGE) };
                match got {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            }
            Err(StackError::OutOfMemory { source, .. }) => source,
            Err(other) => io::Error::other(other.to_string()),
        };
        Err((kernel_release(), err.raw_os_error().unwrap_or(0)))
    });
    match probed {
        Ok(()) => Ok(()),
        Err((kernel, errno)) => Err(StackError::NoGuardRegions {
            kernel: kernel.clone(),
            source: io::Error::from_raw_os_error(*errno),
        }),
    }
}

/// `uname -r`, as the kernel reports it; "unknown" if it cannot be read.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `mmap` of `len` bytes of private, anonymous, not-reserved memory.
fn map(len: usize, prot: libc::c_int) -> Result<usize, StackError> {
    // SAFETY: a fresh anonymous mapping aliases nothing; we check the result.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(map_error(len, io::Error::last_os_error()));
    }
    Ok(p as usize)
}

/// ENOMEM means either "no memory" or "no more mappings": tell which.
fn map_error(bytes: usize, source: io::Error) -> StackError {
    if source.raw_os_error() == Some(libc::ENOMEM) {
        let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65_530);
        let mappings = count_mappings();
        // +4: a little slack for mappings the allocator or the kernel ([vsyscall]) adds.
        if mappings + 4 >= max_map_count {
            return StackError::MapLimit {
                mappings,
                max_map_count,
            };
        }
    }
    StackError::OutOfMemory { bytes, source }
}

/// Lines of /proc/self/maps, read through a buffer on the stack: at the map limit, a heap
/// `String` of several MiB may itself need a new mapping and fail.
fn count_mappings() -> usize {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open("/proc/self/maps") else {
        return 0;
    };
    let mut buf = [0u8; 4096];
    let mut lines = 0;
    while let Ok(n @ 1..) = file.read(&mut buf) {
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    lines
}

/// One G's stack, from a [`StackPool`]. Dropping it returns it to the pool.
pub struct GStack {
    region: Region,
    owner: u64,
    pool: Arc<Pool>,
}

impl fmt::Debug for GStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GStack {{ G {}, {:#x}..{:#x} }}",
            self.owner,
            self.bottom(),
            self.top()
        )
    }
}

impl GStack {
    /// Lowest usable address.
    pub fn bottom(&self) -> usize {
        self.region.bottom
    }

    /// One past the highest usable address; the stack grows down from here.
    pub fn top(&self) -> usize {
        self.region.bottom + self.pool.size
    }

    /// The G this stack belongs to.
    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// Gives the stack to G `owner`, when a runtime hands a finished G's stack straight to
    /// the next one (a per-P cache, as Go's `stackcache`) instead of through the pool.
    pub fn set_owner(&mut self, owner: u64) {
        self.owner = owner;
    }

    /// Which mode its pool runs in.
    pub fn mode(&self) -> StackMode {
        self.pool.mode
    }

    /// Slab mode: is the canary zone still all zero? The guarded modes: always `Ok`.
    pub fn check_canary(&self) -> Result<(), Overflow> {
        self.info().check_canary()
    }

    /// A copy of what the canary check and reports need, to keep beside a coroutine that
    /// owns the stack (corosensei gives no access to it while it runs).
    pub fn info(&self) -> StackInfo {
        StackInfo {
            bottom: self.bottom(),
            owner: self.owner,
            stack_kib: self.pool.size / 1024,
            mode: self.pool.mode,
        }
    }

    /// Marks this stack as the one running on this thread until the guard is dropped, so
    /// the SIGSEGV handler can name its G. Call around every switch onto it.
    pub fn enter(&self) -> Running {
        self.info().enter()
    }
}

impl Drop for GStack {
    fn drop(&mut self) {
        let pool = &self.pool;
        pool.in_use.fetch_sub(1, Relaxed);
        // A slab stack whose canary died is not reused (its neighbour may be damaged too,
        // and the scheduler is about to abort anyway). Checked now: once `release_cold`
        // has given its pages back, any canary reads zero.
        if self.check_canary().is_ok() {
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            free.stacks.push(self.region);
        }
    }
}

// SAFETY: base() is the 16-aligned top and limit() the bottom of `size` usable bytes, in
// guarded mode with a PROT_NONE page below, in guarded-slab mode with a guard region below
// (installed before the chunk's first stack is handed out). In slab mode there is no guard page: corosensei's
// contract is kept only because choosing slab mode was `unsafe` (PoolConfig::slab) and the
// caller promised no G overflows.
unsafe impl Stack for GStack {
    fn base(&self) -> StackPointer {
        StackPointer::new(self.top()).expect("a mapped stack is never at address 0")
    }

    fn limit(&self) -> StackPointer {
        StackPointer::new(self.bottom()).expect("a mapped stack is never at address 0")
    }
}

/// Where a G's stack is and how to check it; see [`GStack::info`]. Valid while the
/// [`GStack`] it came from is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackInfo {
    bottom: usize,
    owner: u64,
    stack_kib: usize,
    mode: StackMode,
}

impl StackInfo {
    /// As [`GStack::enter`], for a stack that a coroutine owns: marks it as the one running
    /// on this thread until the guard is dropped.
    pub fn enter(&self) -> Running {
        let previous = RUNNING.replace(RunningStack {
            guard_low: self.bottom.saturating_sub(PAGE),
            guard_high: self.bottom,
            owner: self.owner,
            stack_kib: self.stack_kib,
        });
        Running { previous }
    }

    /// Slab mode: is the canary zone still all zero? The guarded modes: always `Ok`.
    /// The scheduler calls this on every switch away from the G.
    pub fn check_canary(&self) -> Result<(), Overflow> {
        if self.mode != StackMode::Slab {
            return Ok(());
        }
        // SAFETY: the canary zone is inside the stack, whose GStack is alive (see the type's
        // docs); reading bytes has no other requirement.
        let zone = unsafe { std::slice::from_raw_parts(self.bottom as *const u8, CANARY_BYTES) };
        if zone.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(Overflow {
                owner: self.owner,
                stack_kib: self.stack_kib,
            })
        }
    }
}

/// A G ran past the end of its stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// The G.
    pub owner: u64,
    /// Its stack size in KiB.
    pub stack_kib: usize,
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "G {} overflowed its {} KiB stack",
            self.owner, self.stack_kib
        )
    }
}

impl Overflow {
    /// Prints the report and aborts: memory past the stack may be damaged, so nothing is
    /// safe to run after this.
    pub fn abort(self) -> ! {
        eprintln!("fatal: {self} (canary zone overwritten; found at a switch)");
        std::process::abort()
    }
}

#[derive(Clone, Copy)]
struct RunningStack {
    guard_low: usize,
    guard_high: usize,
    owner: u64,
    stack_kib: usize,
}

const NOT_RUNNING: RunningStack = RunningStack {
    guard_low: 0,
    guard_high: 0,
    owner: 0,
    stack_kib: 0,
};

thread_local! {
    /// The G stack this thread runs on, if any. Read by the signal handler: a const-init
    /// Cell of a Copy type needs no lazy setup and no destructor, so reading it there is sound.
    static RUNNING: Cell<RunningStack> = const { Cell::new(NOT_RUNNING) };
}

/// Returned by [`GStack::enter`]; restores the previous running stack when dropped.
pub struct Running {
    previous: RunningStack,
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(self.previous);
    }
}

/// The SIGSEGV action that was in place before ours; faults that are not a G's go there.
/// Set before our handler is installed, so the handler always finds it.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Installs the SIGSEGV/SIGBUS handler that reports a G's guard-page hit as
/// "G <id> overflowed its <N> KiB stack" and aborts. Faults elsewhere go to the handler that
/// was there before (Rust's own, which reports thread stack overflows). Idempotent.
///
/// The handler runs on the thread's alternate signal stack, which std gives every thread
/// it starts (a faulting G has no stack left to run a handler on).
pub fn install_overflow_handler() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid out-parameter; a null new action only reads.
        let mut previous: libc::sigaction = unsafe { mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaction(libc::SIGSEGV, ptr::null(), &mut previous) };
        previous
    });
    INSTALL.call_once(|| {
        // SAFETY: a valid handler, flags and empty mask; PREVIOUS is already set above.
        unsafe {
            let mut action: libc::sigaction = mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSEGV, &action, ptr::null_mut());
            libc::sigaction(libc::SIGBUS, &action, ptr::null_mut());
        }
    });
}

extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let running = RUNNING.get();
    if running.guard_high != 0 && (running.guard_low..running.guard_high).contains(&addr) {
        let mut buf = [0u8; 96];
        let len = format_report(&mut buf, running.owner, running.stack_kib);
        // SAFETY: write(2) and abort(3) are async-signal-safe; buf outlives the call.
        unsafe {
            libc::write(2, buf.as_ptr().cast(), len);
            libc::abort();
        }
    }
    // Not ours: hand over to the previous handler, or to the default action.
    let Some(previous) = PREVIOUS.get() else {
        // Cannot happen (PREVIOUS is set first); fall back to the default action.
        // SAFETY: resetting a signal's action is async-signal-safe.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: resetting to the default action; returning re-runs the faulting
        // instruction, which then kills the process with the signal as usual.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it takes 3 args.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: a plain handler takes the signal number only.
        let f: extern "C" fn(libc::c_int) = unsafe { mem::transmute(handler) };
        f(signal);
    }
}

/// "fatal: G <owner> overflowed its <kib> KiB stack (guard page hit)\n", without allocating.
fn format_report(buf: &mut [u8; 96], owner: u64, kib: usize) -> usize {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    let mut digits = [0u8; 20];
    put(b"fatal: G ");
    put(decimal(owner, &mut digits));
    put(b" overflowed its ");
    put(decimal(kib as u64, &mut digits));
    put(b" KiB stack (guard page hit)\n");
    len
}

fn decimal(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_formatted_without_allocating() {
        let mut buf = [0u8; 96];
        let len = format_report(&mut buf, 1_000_007, 64);
        assert_eq!(
            &buf[..len],
            b"fatal: G 1000007 overflowed its 64 KiB stack (guard page hit)\n"
        );
    }
}
