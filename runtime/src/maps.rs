//! The map budget: the stack pool never spends the last memory mappings of the process.
//!
//! A guarded stack is two mappings (VMAs), a chunk of slab or guarded-slab stacks one (its
//! guard regions live inside it), and the kernel caps a process at
//! `vm.max_map_count` (65,530 by default). Part 05's pool maps until the kernel says no; by
//! then malloc, a new thread or the error message itself may need a mapping too, and the
//! process dies in the allocator ("memory allocation of 302 bytes failed"). So the pool may
//! map only while the process stays [`kept_mappings`] below the limit; past that, the G is
//! refused with the named error (`sched/stackalloc.rs` words it and decides when a stack costs a
//! mapping).
//!
//! This lives in the runtime, not in part 05: it must hold whichever part 05 the runtime is
//! built on (a learner's included), and the margin is a matter of the whole process
//! (threads, malloc, other runtimes' pools) that one pool cannot see.
//!
//! Counting is cheap on average. Reading `/proc/self/maps` costs about 0.5 µs a line (some
//! 30 ms at the limit), so it is read only when a credit runs out: a count grants part of
//! the room it found (limit − kept − mappings now) as a credit of mappings shared by every
//! runtime in the process, and each new stack takes its worst case (2 guarded, 1 a slab or
//! guarded-slab chunk) from it. A count grants at most half the room and half the margin, and its credit
//! lapses after [`CREDIT_LAPSE`]: the rest of the process may have grown since, and what it
//! took must not be mapped again by the pool on an old figure.
//!
//! A count that fails is no room, with its own error (the fd table full, say); only a
//! system without `/proc` maps without a count, and then part 05's `MapLimit` is the error.
//! The file is opened once and reread from offset 0 (`pread`), so a count needs no new fd.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::lock;

/// The kernel's default `vm.max_map_count`, assumed when the sysctl cannot be read.
const DEFAULT_MAX_MAP_COUNT: usize = 65_530;

/// How long a count's credit may be spent: after that the rest of the process may have
/// taken the room it found, so the next new stack waits for a new count.
pub(crate) const CREDIT_LAPSE: Duration = Duration::from_secs(1);

/// Mappings the pools may still add before the next count...
static CREDIT: AtomicUsize = AtomicUsize::new(0);
/// ...until this instant (nanoseconds after `epoch()`); written after `CREDIT`, with Release.
static CREDIT_UNTIL: AtomicU64 = AtomicU64::new(0);
/// Serialises counts, and holds the open `/proc/self/maps`. Only an open file lives under
/// this lock: a poisoned one is still consistent (`crate::lock`).
static READER: Mutex<Counter> = Mutex::new(Counter { maps: None });
/// Bumped whenever a runtime's stack pool is gone (and may have unmapped): a refusal made
/// before it no longer holds.
static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Counter {
    /// `/proc/self/maps`, opened once: a count then needs no fd, even with the table full.
    maps: Option<File>,
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
    /// Lines of `/proc/self/maps`; `None` on a system without `/proc`.
    pub(crate) mappings: Option<usize>,
    pub(crate) headroom: MapHeadroom,
    /// How long the count took.
    pub(crate) took: Duration,
}

impl Reading {
    /// Mappings the pools may add and still leave `kept` free.
    fn room(&self) -> usize {
        (self.headroom.max_map_count - self.headroom.kept)
            .saturating_sub(self.mappings.unwrap_or(0))
    }

    /// What a count may hand out: half the room (the rest of the process may grow before
    /// the next count) and at most half the margin, but enough for the stack that asked.
    fn grant(&self, cost: usize) -> Option<usize> {
        let room = self.room();
        (room >= cost).then(|| (room / 2).min(self.headroom.kept / 2).max(cost))
    }
}

/// Why the pool may not map now.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The count found no room above the margin.
    Full(Reading),
    /// The mappings could not be counted: what failed and what to do about it.
    Uncounted { why: String, took: Duration },
}

/// Fast path: takes `cost` mappings from the credit, if it has them and has not lapsed.
pub(crate) fn take(cost: usize) -> bool {
    if now_nanos() >= CREDIT_UNTIL.load(Acquire) {
        return false;
    }
    CREDIT
        .fetch_update(Relaxed, Relaxed, |c| c.checked_sub(cost))
        .is_ok()
}

/// Slow path, for a pool that must map: counts the mappings and grants part of the room
/// found as credit, minus `cost`; or says why there is no room.
pub(crate) fn refill(cost: usize) -> Result<(), Refused> {
    let mut counter = lock(&READER);
    if take(cost) {
        return Ok(()); // another M counted while we waited for the lock
    }
    let reading = match read(&mut counter) {
        Ok(reading) => reading,
        Err(refused) => {
            spend_all();
            return Err(refused);
        }
    };
    match reading.grant(cost) {
        Some(grant) => {
            CREDIT.store(grant - cost, Relaxed);
            CREDIT_UNTIL.store(now_nanos() + CREDIT_LAPSE.as_nanos() as u64, Release);
            Ok(())
        }
        None => {
            spend_all();
            Err(Refused::Full(reading))
        }
    }
}

/// Opens `/proc/self/maps` now, while fds are likely to be free, so that later counts need
/// none. A failure here is not an error yet: the count that needs the file says it.
pub(crate) fn prepare() {
    let mut counter = lock(&READER);
    if counter.maps.is_none() {
        counter.maps = File::open("/proc/self/maps").ok();
    }
}

/// The pool failed to map although the credit allowed it: the count is off, so the next
/// mapping waits for a count.
pub(crate) fn spend_all() {
    CREDIT.store(0, Relaxed);
    CREDIT_UNTIL.store(0, Release);
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

fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Starts at 1, so a deadline of 0 has always passed.
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

fn read(counter: &mut Counter) -> Result<Reading, Refused> {
    let start = Instant::now();
    let headroom = map_headroom();
    let mappings = count_mappings(counter).map_err(|why| Refused::Uncounted {
        why,
        took: start.elapsed(),
    })?;
    Ok(Reading {
        mappings,
        headroom,
        took: start.elapsed(),
    })
}

/// Lines of `/proc/self/maps`; `Ok(None)` only when there is no `/proc` at all (then the
/// pool maps until the kernel refuses); any other failure is an `Err` saying what failed.
fn count_mappings(counter: &mut Counter) -> Result<Option<usize>, String> {
    let file = match counter.maps.take() {
        Some(file) => file,
        None => match File::open("/proc/self/maps") {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cannot_open("/proc/self/maps", &e)),
        },
    };
    let lines = count_lines(&file).map_err(|e| format!("reading /proc/self/maps failed: {e}"))?;
    counter.maps = Some(file);
    if lines > 0 {
        return Ok(Some(lines));
    }
    // A live process has mappings: /proc/self shows none once the main thread has exited
    // (it opens the leader's view). This thread's view still counts the same address space.
    let file = File::open("/proc/thread-self/maps")
        .map_err(|e| cannot_open("/proc/thread-self/maps", &e))?;
    match count_lines(&file) {
        Ok(lines) if lines > 0 => Ok(Some(lines)),
        Ok(_) => Err("/proc/self/maps and /proc/thread-self/maps list no mappings".to_string()),
        Err(e) => Err(format!("reading /proc/thread-self/maps failed: {e}")),
    }
}

fn cannot_open(path: &str, e: &std::io::Error) -> String {
    // Linux's errno values (the same on every architecture); gmp does not link libc itself.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    let hint = match e.raw_os_error() {
        Some(EMFILE) => {
            " (the process is at its open-file limit: close files or raise \
                               it, ulimit -n)"
        }
        Some(ENFILE) => " (the system is at its open-file limit)",
        _ => "",
    };
    format!("opening {path} failed: {e}{hint}")
}

/// Lines of a maps file, read with `pread` from offset 0 (a fresh walk of the mappings)
/// through a buffer on the stack: near the limit a heap buffer of several MiB would itself
/// need a mapping.
fn count_lines(file: &File) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    let (mut lines, mut at) = (0, 0u64);
    loop {
        match file.read_at(&mut buf, at) {
            Ok(0) => return Ok(lines),
            Ok(n) => {
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
                at += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `/proc/sys/vm/max_map_count`; if it cannot be read now (no fd free, say), the last value
/// read, else the kernel's default.
fn read_max_map_count() -> usize {
    static LAST: AtomicUsize = AtomicUsize::new(0);
    let mut buf = [0u8; 32];
    let n = File::open("/proc/sys/vm/max_map_count")
        .and_then(|f| f.read_at(&mut buf, 0))
        .unwrap_or(0);
    match parse_count(&buf[..n]) {
        Some(limit) => {
            LAST.store(limit, Relaxed);
            limit
        }
        None => match LAST.load(Relaxed) {
            0 => DEFAULT_MAX_MAP_COUNT,
            last => last,
        },
    }
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
    fn a_count_grants_half_the_room_and_half_the_margin_at_most() {
        let at = |mappings| Reading {
            mappings: Some(mappings),
            headroom: MapHeadroom {
                max_map_count: 65_530,
                kept: 4_095,
            },
            took: Duration::ZERO,
        };
        // 61,435 may be used: far below, the margin's half bounds the grant.
        assert_eq!(at(1_000).grant(2), Some(2_047));
        assert_eq!(at(61_435 - 1_000).grant(2), Some(500), "half the room");
        assert_eq!(
            at(61_435 - 3).grant(2),
            Some(2),
            "enough for the stack that asked"
        );
        assert_eq!(at(61_435 - 1).grant(2), None, "no room for two");
        assert_eq!(at(70_000).grant(1), None, "past the margin");
    }

    #[test]
    fn a_reading_counts_this_process_with_one_file_reread() {
        let mut counter = Counter { maps: None };
        // Other test threads may start or end between two readings: try a few times.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = read(&mut counter).unwrap();
            assert!(
                counter.maps.is_some(),
                "the file stays open for the next count"
            );
            let after = with_split_mapping(|| read(&mut counter).unwrap());
            let (before, after) = (before.mappings.unwrap(), after.mappings.unwrap());
            seen.push((before, after));
            assert!(before > 5, "a Rust test has more mappings: {before}");
            // 3 ranges, or 2 more if a neighbour with the same permissions merged with one:
            // a pread from offset 0 walks the mappings afresh.
            if (before + 2..=before + 3).contains(&after) {
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
