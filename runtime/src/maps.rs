//! The map budget: the stack pool never spends the last memory mappings of the process.
//!
//! A guarded stack is two mappings (VMAs), and the kernel caps a process at
//! `vm.max_map_count` (65,530 by default). Part 05's pool maps until the kernel says no; by
//! then malloc, a new thread or the error message itself may need a mapping too, and the
//! process dies in the allocator ("memory allocation of 302 bytes failed"). So the pool may
//! map only while the process stays [`kept_mappings`] below the limit; past that, the G is
//! refused with the named error (`sched.rs` words it).
//!
//! This lives in the runtime, not in part 05: it must hold whichever part 05 the runtime is
//! built on (a learner's included), and the margin is a matter of the whole process
//! (threads, malloc, other runtimes' pools) that one pool cannot see.
//!
//! Counting is cheap on average. Reading `/proc/self/maps` costs about 0.5 µs a line (some
//! 30 ms at the limit), so it is read only when a credit runs out: a reading grants the room
//! it found (limit − kept − mappings now) as a credit of mappings shared by every runtime in
//! the process, and each stack allocation takes its worst case (2 guarded, 1 slab) from it
//! without a look at the pool. Once the credit is spent, a pool with a free stack reuses it
//! without a reading (counting again only when that stays under 1% of the time); only a pool
//! that must map waits for a count.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

/// The kernel's default `vm.max_map_count`, assumed when the sysctl cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// Mappings the pools may still add before the next reading.
static CREDIT: AtomicUsize = AtomicUsize::new(0);
/// Serialises readings, and remembers when the last one was and how long it took.
static READER: Mutex<LastReading> = Mutex::new(LastReading {
    at: None,
    took: Duration::ZERO,
});
/// Bumped whenever a runtime's stack pool is gone (and may have unmapped): a refusal made
/// before it no longer holds.
static GENERATION: AtomicU64 = AtomicU64::new(0);

struct LastReading {
    at: Option<Instant>,
    took: Duration,
}

/// How many mappings gmp keeps free below `vm.max_map_count` for everything that is not
/// a G stack: malloc's arenas and its large blocks (each allocation above 128 KiB is a
/// mapping of its own), thread stacks (2 to 4 mappings a thread), shared libraries.
///
/// A sixteenth of the limit, at least 1,024 and at most 16,384, and never more than half:
/// 4,095 of the default 65,530 (room for a thousand more threads or four thousand large
/// buffers), which costs 2,048 of the 32,750 guarded stacks the limit would allow.
pub fn kept_mappings(max_map_count: usize) -> usize {
    (max_map_count / 16)
        .clamp(1024, 16_384)
        .min(max_map_count / 2)
}

/// The live `vm.max_map_count` and the mappings gmp keeps free below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapHeadroom {
    /// The limit on mappings per process (`/proc/sys/vm/max_map_count`).
    pub max_map_count: usize,
    /// How many of them the stack pool leaves to the rest of the process ([`kept_mappings`]).
    pub kept: usize,
}

/// Reads the limit now; see [`kept_mappings`] for the margin below it.
pub fn map_headroom() -> MapHeadroom {
    let max_map_count = read_max_map_count();
    MapHeadroom {
        max_map_count,
        kept: kept_mappings(max_map_count),
    }
}

/// One count of the process's mappings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    /// Lines of `/proc/self/maps` (0 when it cannot be read).
    pub(crate) mappings: usize,
    pub(crate) headroom: MapHeadroom,
    /// How long the count took.
    pub(crate) took: Duration,
}

impl Reading {
    /// Mappings the pools may add and still leave `kept` free.
    fn room(&self) -> usize {
        (self.headroom.max_map_count - self.headroom.kept).saturating_sub(self.mappings)
    }
}

/// Fast path: takes `cost` mappings from the credit, if it has them.
pub(crate) fn take(cost: usize) -> bool {
    CREDIT
        .fetch_update(Relaxed, Relaxed, |c| c.checked_sub(cost))
        .is_ok()
}

/// Slow path, for a pool that must map: counts the mappings and grants the room found as
/// credit, minus `cost`; or says why there is no room.
pub(crate) fn refill(cost: usize) -> Result<(), Reading> {
    let mut last = lock_reader();
    if take(cost) {
        return Ok(()); // another M counted while we waited for the lock
    }
    let reading = read(&mut last);
    match reading.room().checked_sub(cost) {
        Some(rest) => {
            CREDIT.store(rest, Relaxed);
            Ok(())
        }
        None => {
            CREDIT.store(0, Relaxed);
            Err(reading)
        }
    }
}

/// For a pool about to reuse a free stack with the credit spent: counts again only if that
/// keeps counting under 1% of the time, so a long-running program goes back to the fast path
/// without paying 30 ms readings near the limit.
pub(crate) fn refill_if_cheap() {
    let mut last = match READER.try_lock() {
        Ok(last) => last,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return, // someone is counting right now
    };
    if last.at.is_some_and(|at| at.elapsed() < last.took * 100) {
        return;
    }
    let reading = read(&mut last);
    CREDIT.store(reading.room(), Relaxed);
}

/// The pool failed to map although the credit allowed it: the count is off, so the next
/// mapping waits for a reading.
pub(crate) fn spend_all() {
    CREDIT.store(0, Relaxed);
}

/// Changes whenever a runtime's stack pool is dropped.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Relaxed)
}

/// Kept in a runtime after its stack pool: dropped after the pool (and its mappings, if no
/// leaked stack holds them) is gone, it tells other runtimes' refusals to look again.
pub(crate) struct PoolGone;

impl Drop for PoolGone {
    fn drop(&mut self) {
        GENERATION.fetch_add(1, Relaxed);
    }
}

fn lock_reader() -> std::sync::MutexGuard<'static, LastReading> {
    // Only plain numbers live under this lock: a poisoned one is still consistent.
    READER.lock().unwrap_or_else(|e| e.into_inner())
}

fn read(last: &mut LastReading) -> Reading {
    let start = Instant::now();
    let headroom = map_headroom();
    // Without /proc the count is unknown: the pool then maps until the kernel refuses, and
    // part 05's MapLimit is the error.
    let mappings = count_mappings().unwrap_or(0);
    let took = start.elapsed();
    *last = LastReading {
        at: Some(Instant::now()),
        took,
    };
    Reading {
        mappings,
        headroom,
        took,
    }
}

/// Lines of `/proc/self/maps`, read through a buffer on the stack: near the limit a heap
/// buffer of several MiB would itself need a mapping.
fn count_mappings() -> Option<usize> {
    let mut file = File::open("/proc/self/maps").ok()?;
    let mut buf = [0u8; 4096];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// `/proc/sys/vm/max_map_count`, or the kernel's default if it cannot be read.
fn read_max_map_count() -> usize {
    let mut buf = [0u8; 32];
    let n = File::open("/proc/sys/vm/max_map_count")
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    parse_count(&buf[..n]).unwrap_or(DEFAULT_MAX_MAP_COUNT)
}

/// A decimal count followed by optional whitespace; `None` for anything else or zero.
fn parse_count(text: &[u8]) -> Option<usize> {
    let digits = text.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_sixteenth_within_bounds() {
        assert_eq!(kept_mappings(65_530), 4_095);
        assert_eq!(kept_mappings(262_144), 16_384);
        assert_eq!(
            kept_mappings(10_000_000),
            16_384,
            "capped: a raised limit needs no more"
        );
        assert_eq!(kept_mappings(8_000), 1_024, "at least 1,024");
        assert_eq!(kept_mappings(1_500), 750, "never more than half");
    }

    #[test]
    fn the_limit_parses_or_is_refused() {
        assert_eq!(parse_count(b"65530\n"), Some(65_530));
        assert_eq!(parse_count(b"  262144 "), Some(262_144));
        for bad in [
            &b""[..],
            b"\n",
            b"0\n",
            b"-1",
            b"12a",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_count(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_reading_counts_this_process() {
        let mut last = LastReading {
            at: None,
            took: Duration::ZERO,
        };
        // Other test threads may start or end between two readings: try a few times.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = read(&mut last);
            let after = with_split_mapping(|| read(&mut last));
            seen.push((before.mappings, after.mappings));
            assert!(
                before.mappings > 5,
                "a Rust test has more mappings: {before:?}"
            );
            assert_eq!(after.headroom, map_headroom());
            assert!(last.at.is_some());
            // 3 ranges, or 2 more if a neighbour with the same permissions merged with one.
            if (before.mappings + 2..=before.mappings + 3).contains(&after.mappings) {
                return;
            }
        }
        panic!("a mapping split in three should add 2 or 3 lines; (before, after): {seen:?}");
    }

    /// Runs `f` while the process holds one more mapping, split in three by a PROT_NONE page.
    fn with_split_mapping<T>(f: impl FnOnce() -> T) -> T {
        // SAFETY: a fresh anonymous mapping aliases nothing; unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the middle page of the mapping made above.
        let rc = unsafe { libc::mprotect(p.cast::<u8>().add(4096).cast(), 4096, libc::PROT_NONE) };
        assert_eq!(rc, 0);
        let out = f();
        // SAFETY: the mapping made above; nothing points into it.
        unsafe { libc::munmap(p, 3 * 4096) };
        out
    }
}
