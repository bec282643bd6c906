//! Tests for part 05, `stack`. The exercise and the solution run this same file.
//!
//! Tests that exhaust mappings or overflow a stack run in their own process
//! (`testkit::isolated`), so they cannot disturb the others.

use std::fs;
use std::time::Duration;

use corosensei::{Coroutine, CoroutineResult, Yielder};
use stack::{
    CANARY_BYTES, GStack, MIN_STACK, PAGE, PoolConfig, SLAB_CHUNK, StackError, StackMode, StackPool,
};
use testkit::{isolated, run_in_child};

const LIMIT: Duration = Duration::from_secs(60);
const STEP1: &str = "ch05-stack.html#step-1";
const STEP2: &str = "ch05-stack.html#step-2";
const STEP3: &str = "ch05-stack.html#step-3";
const STEP4: &str = "ch05-stack.html#step-4";
const STEP5: &str = "ch05-stack.html#step-5";
/// The runtime takes every G's stack from your pool.
const RUNTIME: &str = "ch05-stack.html#whole-runtime";

/// The permissions column of /proc/self/maps for the mapping holding `addr`.
fn perms_at(addr: usize) -> String {
    perms_at_or_none(addr).unwrap_or_else(|| panic!("{addr:#x} is not mapped at all"))
}

/// Like `perms_at`, but `None` where nothing is mapped.
fn perms_at_or_none(addr: usize) -> Option<String> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let (range, rest) = line.split_once(' ').unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap(),
            usize::from_str_radix(hi, 16).unwrap(),
        );
        if (lo..hi).contains(&addr) {
            return Some(rest[..4].to_string());
        }
    }
    None
}

/// Every mapping of the process as `(start, end)`, from /proc/self/maps.
fn mapping_ranges() -> Vec<(usize, usize)> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .map(|line| {
            let (lo, hi) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
            (
                usize::from_str_radix(lo, 16).unwrap(),
                usize::from_str_radix(hi, 16).unwrap(),
            )
        })
        .collect()
}

/// How many of the pages in [lo, hi) are resident in RAM (mincore).
fn resident_pages(lo: usize, hi: usize) -> usize {
    let pages = (hi - lo) / PAGE;
    let mut vec = vec![0u8; pages];
    // SAFETY: [lo, hi) is a page-aligned mapped range; vec has one byte per page.
    let rc = unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, vec.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "mincore on a mapped range: {}",
        std::io::Error::last_os_error()
    );
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// A runtime of `procs` Ps for tens of thousands of Gs: the default builder where the
/// kernel has guard regions, else slab stacks, since before Linux 6.13 the default (guarded)
/// cannot hold this many and the fallback for many Gs is the unsafe slab.
///
/// # Safety
///
/// No G of the runtime may overflow its stack (`Builder::slab_stacks`'s contract).
unsafe fn runtime_for_many_gs(procs: usize) -> gmp::Runtime {
    let builder = gmp::Runtime::builder().procs(procs);
    if kernel_has_guard_regions() {
        builder.build().unwrap()
    } else {
        // SAFETY: the caller's promise.
        unsafe { builder.slab_stacks() }.build().unwrap()
    }
}

/// Asks the kernel directly, as the test's own probe: does `madvise(MADV_GUARD_INSTALL)`
/// work here (Linux 6.13)?
fn kernel_has_guard_regions() -> bool {
    // SAFETY: a fresh anonymous mapping aliases nothing; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "the test's probe could not map two pages"
    );
    // SAFETY: the first page of the mapping made above, which nothing uses.
    let rc = unsafe { libc::madvise(p, PAGE, stack::MADV_GUARD_INSTALL) };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, 2 * PAGE) };
    rc == 0
}

/// Is the page at `addr` a guard region? Reading it through the kernel
/// (`process_vm_readv` on this process) fails with EFAULT on a guard and needs no fault.
fn is_guard(addr: usize) -> bool {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: the kernel writes one byte into `byte`; `remote` is only read, and checked
    // by the kernel (an unreadable address is an error, not a fault).
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// Lines of `/proc/self/maps`, through a buffer on the stack.
fn mappings_now() -> usize {
    use std::io::Read;
    let mut file = fs::File::open("/proc/self/maps").expect("the test needs /proc");
    let mut buf = [0u8; 4096];
    let mut lines = 0;
    loop {
        match file.read(&mut buf).expect("reading /proc/self/maps") {
            0 => return lines,
            n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
}

/// A pool from `config`, which the caller knows to be valid.
#[track_caller]
fn new_pool(config: PoolConfig) -> StackPool {
    StackPool::new(config).expect("expected Ok: a valid pool configuration")
}

/// A pool of guarded-slab stacks, or (on a kernel before 6.13) a check that the pool says
/// why not, naming the kernel version; `None` then.
fn guarded_slab_pool(stack: usize, hot_limit: usize) -> Option<StackPool> {
    match StackPool::new(PoolConfig::guarded_slab(stack).hot_limit(hot_limit)) {
        Ok(pool) => {
            assert!(
                kernel_has_guard_regions(),
                "this kernel has no guard regions, so a guarded-slab pool must be refused \
                 (book: {STEP5})"
            );
            Some(pool)
        }
        Err(e) => {
            assert!(
                !kernel_has_guard_regions(),
                "this kernel has guard regions, yet the guarded-slab pool was refused: {e} \
                 (book: {STEP5})"
            );
            let msg = e.to_string();
            assert!(
                matches!(e, StackError::NoGuardRegions { .. }) && msg.contains("6.13"),
                "expected NoGuardRegions naming Linux 6.13, got: {msg} (book: {STEP5})"
            );
            None
        }
    }
}

fn touch(stack: &GStack) {
    for addr in (stack.bottom()..stack.top()).step_by(PAGE) {
        // SAFETY: the whole usable range is ours and writable.
        unsafe { (addr as *mut u8).write_volatile(1) };
    }
    // Leave the canary zone as it was (slab stacks check it).
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(stack.bottom() as *mut u8, 0, CANARY_BYTES) };
}

#[test]
fn step1_refuses_a_stack_below_the_minimum() {
    let _outcome = testkit::record!();
    let err = StackPool::new(PoolConfig::guarded(1024))
        .err()
        .expect("1 KiB is too small");
    assert!(
        matches!(err, StackError::TooSmall { requested: 1024 }),
        "expected TooSmall {{ requested: 1024 }}, got {err:?} (book: {STEP1})"
    );
    assert!(
        err.to_string().contains(&MIN_STACK.to_string()),
        "expected the message to name the minimum, got: {err} (book: {STEP1})"
    );
}

#[test]
fn step1_a_guarded_stack_is_writable_with_a_guard_page_below() {
    let _outcome = testkit::record!();
    let pool = new_pool(PoolConfig::guarded(64 << 10));
    let s = pool.alloc(1).expect("expected a stack from the pool");
    assert_eq!(
        s.top() - s.bottom(),
        64 << 10,
        "expected a usable range of exactly the configured 64 KiB (book: {STEP1})"
    );
    assert_eq!(
        s.top() % 16,
        0,
        "the top must be 16-byte aligned for the ABI (book: {STEP1})"
    );
    assert_eq!(
        s.owner(),
        1,
        "expected the owner given to alloc (book: {STEP1})"
    );
    touch(&s);
    assert_eq!(
        perms_at(s.bottom()),
        "rw-p",
        "the usable range is read-write (book: {STEP1})"
    );
    assert_eq!(
        perms_at(s.bottom() - 1),
        "---p",
        "the page below is the PROT_NONE guard (book: {STEP1})"
    );
}

#[test]
fn step2_a_freed_stack_is_reused() {
    let _outcome = testkit::record!();
    let pool = new_pool(PoolConfig::guarded(16 << 10));
    let first = pool.alloc(1).expect("expected a stack from the pool");
    let addr = first.bottom();
    drop(first);
    assert_eq!(
        pool.stats().free,
        1,
        "expected the dropped stack back in the free list (book: {STEP2})"
    );
    let second = pool.alloc(2).expect("expected a stack from the pool");
    assert_eq!(
        second.bottom(),
        addr,
        "the pool hands the freed stack out again (book: {STEP2})"
    );
    assert_eq!(
        second.owner(),
        2,
        "expected the new owner on a reused stack (book: {STEP2})"
    );
    assert_eq!(
        pool.stats().mapped,
        1,
        "expected one mapping: a reuse makes no second one (book: {STEP2})"
    );
}

#[test]
fn step2_past_the_hot_limit_pages_go_back_to_the_kernel() {
    let _outcome = testkit::record!();
    let pool = new_pool(PoolConfig::guarded(32 << 10).hot_limit(1));
    let (a, b, c) = (
        pool.alloc(1).expect("expected a stack from the pool"),
        pool.alloc(2).expect("expected a stack from the pool"),
        pool.alloc(3).expect("expected a stack from the pool"),
    );
    touch(&a);
    touch(&b);
    let (b_lo, b_hi) = (b.bottom(), b.top());
    let (a_lo, a_hi) = (a.bottom(), a.top());
    drop(a); // freed first: past the hot limit of 1 once b is freed too
    drop(b); // freed last: the warmest, kept
    assert_eq!(
        (resident_pages(a_lo, a_hi), resident_pages(b_lo, b_hi)),
        (8, 8),
        "a drop keeps the stack's pages: release_cold gives them back, off the free path \
         (book: {STEP2})"
    );
    assert_eq!(
        pool.release_cold(),
        1,
        "expected release_cold to give back the one free stack past the hot limit of 1 \
         (book: {STEP2})"
    );
    assert_eq!(
        resident_pages(a_lo, a_hi),
        0,
        "the stack freed first is past the hot limit: its pages go back (book: {STEP2})"
    );
    assert_eq!(
        resident_pages(b_lo, b_hi),
        8,
        "the most recently freed stack is within the hot limit: it keeps its 8 pages \
         (book: {STEP2})"
    );
    assert_eq!(
        pool.release_cold(),
        0,
        "a stack already given back is not given back again (book: {STEP2})"
    );
    // A third stack freed: b is no longer the warmest, so the next release takes it.
    drop(c);
    assert_eq!(
        pool.release_cold(),
        1,
        "a stack that was hot at one release and went cold since is given back at the next \
         (book: {STEP2})"
    );
    assert_eq!(
        resident_pages(b_lo, b_hi),
        0,
        "the stack that went cold gave its pages back (book: {STEP2})"
    );
}

#[test]
fn step2_release_cold_with_nothing_past_the_hot_limit_gives_nothing_back() {
    let _outcome = testkit::record!();
    // The default hot limit (64) and one free stack: fewer free stacks than the limit.
    let pool = new_pool(PoolConfig::guarded(32 << 10));
    drop(pool.alloc(1).expect("expected a stack from the pool"));
    assert_eq!(
        pool.release_cold(),
        0,
        "one free stack under a hot limit of 64: nothing is cold (watch the subtraction) \
         (book: {STEP2})"
    );
    // Hot limit 2: four freed, two released; then alloc pops one, and the released part
    // reaches past the new end of the cold part, which is now empty, not a bad range.
    let pool = new_pool(PoolConfig::guarded(32 << 10).hot_limit(2));
    let held: Vec<GStack> = (0..4)
        .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
        .collect();
    drop(held);
    assert_eq!(
        pool.release_cold(),
        2,
        "four free stacks, hot limit 2: two go back (book: {STEP2})"
    );
    let again = pool.alloc(9).expect("expected a stack from the pool");
    assert_eq!(
        pool.release_cold(),
        0,
        "after an alloc, `released` may lie past `len - hot_limit`: the cold part is empty \
         then (book: {STEP2})"
    );
    drop(again);
}

#[test]
fn step2_a_stack_reused_after_its_release_is_released_again() {
    let _outcome = testkit::record!();
    let pool = new_pool(PoolConfig::guarded(32 << 10).hot_limit(0));
    let s = pool.alloc(1).expect("expected a stack from the pool");
    touch(&s);
    let (lo, hi) = (s.bottom(), s.top());
    drop(s);
    assert_eq!(
        pool.release_cold(),
        1,
        "hot limit 0: the freed stack goes back (book: {STEP2})"
    );
    let again = pool.alloc(2).expect("expected a stack from the pool");
    assert_eq!(
        again.bottom(),
        lo,
        "the freed stack is reused (book: {STEP2})"
    );
    touch(&again);
    drop(again);
    assert_eq!(
        pool.release_cold(),
        1,
        "a stack handed out after its release and freed again holds pages again: alloc \
         must keep `released` within the shortened list (book: {STEP2})"
    );
    assert_eq!(
        resident_pages(lo, hi),
        0,
        "the second release gave its pages back (book: {STEP2})"
    );
}

#[test]
fn step2_a_dropped_pool_gives_its_mappings_back() {
    let _outcome = testkit::record!();
    // In its own process: nothing else maps memory there that could land on a freed range.
    isolated(
        "step2_a_dropped_pool_gives_its_mappings_back",
        LIMIT,
        "",
        || {
            let pool = new_pool(PoolConfig::guarded(16 << 10));
            let stacks: Vec<GStack> = (0..100)
                .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
                .collect();
            // Each stack's guard page and usable range, as addresses to probe.
            let probes: Vec<usize> = stacks
                .iter()
                .flat_map(|s| [s.bottom() - PAGE, s.bottom(), s.top() - 1])
                .collect();
            assert!(
                probes.iter().all(|&a| perms_at_or_none(a).is_some()),
                "expected held stacks to stay mapped (book: {STEP2})"
            );
            drop(stacks);
            drop(pool);
            let still: Vec<String> = probes
                .iter()
                .filter_map(|&a| perms_at_or_none(a).map(|p| format!("{a:#x} ({p})")))
                .collect();
            assert!(
                still.is_empty(),
                "expected every stack unmapped once the pool and its stacks are gone; still \
                 mapped: {} (book: {STEP2})",
                still.join(", ")
            );
        },
    );
}

#[test]
fn step3_slab_stacks_share_mappings() {
    let _outcome = testkit::record!();
    // SAFETY: these stacks only get written by this test, inside their bounds.
    let pool = new_pool(unsafe { PoolConfig::slab(16 << 10) });
    let stacks: Vec<GStack> = (0..2000)
        .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
        .collect();
    assert!(
        stacks
            .iter()
            .all(|s| s.mode() == StackMode::Slab && s.check_canary().is_ok()),
        "expected every slab stack in Slab mode with an intact canary (book: {STEP3})"
    );
    // Which mappings hold them? Asked per stack, so other tests' mappings do not count.
    let ranges = mapping_ranges();
    let holder = |addr: usize| {
        *ranges
            .iter()
            .find(|r| (r.0..r.1).contains(&addr))
            .expect("a held stack is mapped")
    };
    let mut holders: Vec<(usize, usize)> = stacks.iter().map(|s| holder(s.bottom())).collect();
    holders.sort_unstable();
    holders.dedup();
    assert!(
        holders.len() <= 2,
        "expected 2000 slab stacks in at most 2 mappings, got {} (guarded ones would need \
         4000) (book: {STEP3})",
        holders.len()
    );
}

#[test]
fn step3_a_dead_canary_is_reported() {
    let _outcome = testkit::record!();
    // SAFETY: the test writes only inside the stack.
    let pool = new_pool(unsafe { PoolConfig::slab(16 << 10) });
    let s = pool.alloc(42).expect("expected a stack from the pool");
    // SAFETY: the canary zone is inside the stack; this is what an overflow would do.
    unsafe { (s.bottom() as *mut u64).add(3).write_volatile(0xdead_beef) };
    let overflow = s
        .check_canary()
        .expect_err("expected the overwritten canary found (book: ch05-stack.html#step-3)");
    assert_eq!(
        overflow.to_string(),
        "G 42 overflowed its 16 KiB stack",
        "expected the report to name the G and the stack size (book: {STEP3})"
    );
}

/// Recurses until `depth` reaches `until` (u64::MAX: forever), 512+ bytes per frame.
fn recurse(depth: u64, until: u64) -> u64 {
    let pad = [depth; 64];
    std::hint::black_box(&pad);
    if depth == until {
        return pad[0];
    }
    recurse(depth + 1, until) + pad[0]
}

#[test]
fn step3_release_cold_spares_a_stack_in_use_between_free_neighbours() {
    let _outcome = testkit::record!();
    // SAFETY: the test writes only inside the stacks.
    let pool = new_pool(unsafe { PoolConfig::slab(16 << 10) }.hot_limit(0));
    let size = pool.stack_size();
    let mut held: Vec<GStack> = (0..16)
        .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
        .collect();
    held.sort_by_key(|s| s.bottom());
    // Three neighbours in the chunk: free the outer two, keep the middle one in use.
    let i = (1..held.len() - 1)
        .find(|&i| {
            held[i - 1].bottom() + size == held[i].bottom()
                && held[i].bottom() + size == held[i + 1].bottom()
        })
        .expect("expected neighbouring stacks among 16 from one slab chunk (book: ch05-stack.html#step-3)");
    let right = held.remove(i + 1);
    let middle = held.remove(i);
    let left = held.remove(i - 1);
    for s in [&left, &middle, &right] {
        touch(s);
    }
    // SAFETY: the top word of the middle stack is inside it; nothing else runs on it.
    unsafe { ((middle.top() - 8) as *mut u64).write_volatile(0x5eed) };
    let (left_range, right_range) = ((left.bottom(), left.top()), (right.bottom(), right.top()));
    drop(left);
    drop(right);
    assert!(
        pool.release_cold() >= 2,
        "hot limit 0: both freed neighbours go back (book: ch05-stack.html#step-2)"
    );
    assert_eq!(
        (
            resident_pages(left_range.0, left_range.1),
            resident_pages(right_range.0, right_range.1)
        ),
        (0, 0),
        "the freed neighbours gave their pages back (book: ch05-stack.html#step-2)"
    );
    assert_eq!(
        resident_pages(middle.bottom(), middle.top()),
        size / PAGE,
        "a stack in use between two free ones kept its pages: a run of neighbours must end \
         at the first stack that is not free (book: ch05-stack.html#step-2)"
    );
    // SAFETY: as above.
    let word = unsafe { ((middle.top() - 8) as *const u64).read_volatile() };
    assert_eq!(
        word, 0x5eed,
        "the stack in use lost its contents (book: ch05-stack.html#step-2)"
    );
}

/// Writes a word per page of `s` (above the canary zone) that depends on `tag` and the page.
fn stamp(s: &GStack, tag: u64) {
    for addr in (s.bottom() + PAGE..s.top()).step_by(PAGE) {
        // SAFETY: a page of a stack this test holds.
        unsafe { (addr as *mut u64).write_volatile(tag ^ addr as u64) };
    }
}

/// Whether every page of `s` still holds what `stamp(s, tag)` wrote.
fn stamped(s: &GStack, tag: u64) -> bool {
    (s.bottom() + PAGE..s.top()).step_by(PAGE).all(|addr| {
        // SAFETY: as above.
        unsafe { (addr as *const u64).read_volatile() == tag ^ addr as u64 }
    })
}

#[test]
fn step3_release_cold_racing_alloc_and_drop_never_touches_a_stack_in_use() {
    let _outcome = testkit::record!();
    testkit::watchdog(
        "3 threads taking and freeing stacks while a 4th calls release_cold",
        LIMIT,
        || {
            // SAFETY: the test writes only inside the stacks.
            let slab = unsafe { PoolConfig::slab(16 << 10) };
            for config in [
                slab.hot_limit(0),
                PoolConfig::guarded(16 << 10).hot_limit(0),
            ] {
                let pool = new_pool(config);
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let releaser = {
                    let (pool, stop) = (pool.clone(), stop.clone());
                    std::thread::spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            pool.release_cold();
                        }
                    })
                };
                let workers: Vec<_> = (0..3u64)
                    .map(|t| {
                        let pool = pool.clone();
                        std::thread::spawn(move || {
                            for round in 0..200u64 {
                                let tag = |i: usize| (t << 48) ^ (round << 24) ^ i as u64;
                                let held: Vec<GStack> = (0..32)
                                    .map(|g| pool.alloc(g).expect("expected a stack"))
                                    .collect();
                                held.iter().enumerate().for_each(|(i, s)| stamp(s, tag(i)));
                                // Free every other one: the kept ones get free neighbours.
                                let kept: Vec<(usize, GStack)> = held
                                    .into_iter()
                                    .enumerate()
                                    .filter(|(i, _)| i % 2 == 1)
                                    .collect();
                                std::thread::yield_now();
                                for (i, s) in &kept {
                                    assert!(
                                        stamped(s, tag(*i)),
                                        "a stack in use lost its contents while another thread \
                                         called release_cold: a run reached past the free \
                                         stacks, or a stack was handed out while its pages \
                                         were being dropped (book: {STEP2})"
                                    );
                                }
                            }
                        })
                    })
                    .collect();
                let outcome: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                releaser.join().expect("release_cold panicked");
                for o in outcome {
                    if let Err(payload) = o {
                        std::panic::resume_unwind(payload);
                    }
                }
            }
        },
    );
}

#[test]
fn step3_a_stack_with_a_dead_canary_is_not_reused() {
    let _outcome = testkit::record!();
    // Hot limit 0: release_cold gives back every free stack's pages, which zeroes the
    // canary zone; the check must come first, in the drop.
    // SAFETY: the test writes only inside the stack.
    let pool = new_pool(unsafe { PoolConfig::slab(16 << 10) }.hot_limit(0));
    let s = pool.alloc(1).expect("expected a stack from the pool");
    let damaged = s.bottom();
    // SAFETY: the canary zone is inside the stack; this is what an overflow would do.
    unsafe { (damaged as *mut u64).write_volatile(0xdead_beef) };
    drop(s);
    // Giving pages back zeroes them: a damaged stack let into the free list would read as
    // intact from now on.
    pool.release_cold();
    // Take every stack the first chunk holds: none of them may be the damaged one.
    let held: Vec<GStack> = (0..SLAB_CHUNK as u64)
        .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
        .collect();
    assert!(
        held.iter().all(|s| s.bottom() != damaged),
        "a stack whose canary died must not be handed out again (book: ch05-stack.html#step-3)"
    );
}

#[test]
fn step4_a_guarded_overflow_is_named_not_a_bare_segfault() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "step4_a_guarded_overflow_is_named_not_a_bare_segfault",
        LIMIT,
        || {
            stack::install_overflow_handler();
            let pool = new_pool(PoolConfig::guarded(64 << 10));
            let s = pool.alloc(7).expect("expected a stack from the pool");
            let _running = s.enter();
            let mut co = Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0, u64::MAX));
            let _ = co.resume(());
        },
    );
    assert!(
        run.output.contains("G 7 overflowed its 64 KiB stack"),
        "the child should report the overflow by G and stack size, not a bare SIGSEGV: {run:?} (book: {STEP4})"
    );
    assert!(
        !run.success,
        "expected an overflow to end the process (book: {STEP4})"
    );
}

#[test]
fn step4_a_slab_overflow_is_named_at_the_next_switch() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "step4_a_slab_overflow_is_named_at_the_next_switch",
        LIMIT,
        || {
            // SAFETY: not kept: this G overflows on purpose, into the unused stack below it.
            let pool = new_pool(unsafe { PoolConfig::slab(16 << 10) });
            let below = pool.alloc(8).expect("expected a stack from the pool");
            let s = pool.alloc(9).expect("expected a stack from the pool");
            assert!(
                s.bottom() > below.bottom(),
                "the test needs a neighbour below to overflow into (book: {STEP4})"
            );
            let info = s.info();
            let mut co = Coroutine::with_stack(s, |y: &Yielder<(), ()>, ()| {
                recurse(0, 40); // ~24 KiB of frames on a 16 KiB stack
                y.suspend(());
            });
            let _ = co.resume(());
            // What the scheduler does at every switch away from a G:
            if let Err(overflow) = info.check_canary() {
                overflow.abort();
            }
        },
    );
    assert!(
        run.output.contains("G 9 overflowed its 16 KiB stack"),
        "the canary check should name the G and its stack size: {run:?} (book: {STEP4})"
    );
    assert!(
        !run.success,
        "expected a dead canary to end the process (book: {STEP4})"
    );
}

#[test]
fn step4_many_guarded_stacks_hit_the_map_limit_with_a_clear_error() {
    let _outcome = testkit::record!();
    isolated(
        "step4_many_guarded_stacks_hit_the_map_limit_with_a_clear_error",
        LIMIT,
        "",
        || {
            let pool = new_pool(PoolConfig::guarded(MIN_STACK));
            let mut held = Vec::new();
            let err = loop {
                match pool.alloc(held.len() as u64) {
                    Ok(s) => held.push(s),
                    Err(e) => break e,
                }
                assert!(
                    held.len() < 1_000_000,
                    "expected the map limit before a million guarded stacks (book: {STEP4})"
                );
            };
            assert!(
                matches!(err, StackError::MapLimit { .. }),
                "expected MapLimit, got {err:?} after {} stacks (book: {STEP4})",
                held.len()
            );
            let msg = err.to_string();
            assert!(
                msg.contains("vm.max_map_count") && msg.contains("slab"),
                "expected the message to name vm.max_map_count and slab stacks, got: {msg} \
                 (book: {STEP4})"
            );
        },
    );
}

#[test]
fn step4_a_million_slab_stacks_fit() {
    let _outcome = testkit::record!();
    isolated("step4_a_million_slab_stacks_fit", LIMIT, "", || {
        // SAFETY: nothing runs on these stacks.
        let pool = new_pool(unsafe { PoolConfig::slab(MIN_STACK) });
        let stacks: Vec<GStack> = (0..1_000_000)
            .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
            .collect();
        assert_eq!(
            pool.stats().in_use,
            1_000_000,
            "expected a million slab stacks in use (book: {STEP3})"
        );
        drop(stacks);
    });
}

#[test]
fn step4_gs_run_on_pool_stacks_through_corosensei() {
    let _outcome = testkit::record!();
    let pool = new_pool(PoolConfig::guarded(64 << 10));
    for g in 0..100 {
        let s = pool.alloc(g).expect("expected a stack from the pool");
        let mut co = Coroutine::with_stack(s, move |y: &Yielder<u64, u64>, x: u64| {
            let doubled = y.suspend(x * 2);
            doubled + g
        });
        assert!(
            matches!(co.resume(g), CoroutineResult::Yield(v) if v == g * 2),
            "expected the coroutine on your stack to yield {} (book: {STEP4})",
            g * 2
        );
        assert!(
            matches!(co.resume(5), CoroutineResult::Return(v) if v == 5 + g),
            "expected the coroutine on your stack to return {} (book: {STEP4})",
            5 + g
        );
        drop(co.into_stack());
    }
    assert_eq!(
        pool.stats().mapped,
        1,
        "each finished G's stack went back to the pool (book: {STEP4})"
    );
}

#[test]
fn step5_the_guard_region_probe_tells_the_truth() {
    let _outcome = testkit::record!();
    let kernel = kernel_has_guard_regions();
    match stack::guard_regions() {
        Ok(()) => assert!(
            kernel,
            "guard_regions() says yes, but madvise(MADV_GUARD_INSTALL) fails here (book: {STEP5})"
        ),
        Err(e) => {
            assert!(
                !kernel,
                "guard_regions() says no ({e}), but madvise(MADV_GUARD_INSTALL) works here \
                 (book: {STEP5})"
            );
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            assert!(
                e.to_string().contains("6.13") && e.to_string().contains(release.trim()),
                "expected the refusal to name Linux 6.13 and this kernel ({}), got: {e} \
                 (book: {STEP5})",
                release.trim()
            );
        }
    }
    assert_eq!(
        stack::guard_regions().is_ok(),
        kernel,
        "a second call must give the same answer (book: {STEP5})"
    );
}

#[test]
fn step5_guarded_slab_stacks_have_a_guard_each_inside_one_mapping() {
    let _outcome = testkit::record!();
    let Some(pool) = guarded_slab_pool(16 << 10, 64) else {
        return; // the refusal was checked
    };
    let stacks: Vec<GStack> = (0..2000)
        .map(|g| pool.alloc(g).expect("expected a stack from the pool"))
        .collect();
    for s in &stacks {
        assert_eq!(
            (s.mode(), s.top() - s.bottom()),
            (StackMode::GuardedSlab, 16 << 10),
            "expected GuardedSlab stacks of the configured 16 KiB (book: {STEP5})"
        );
        assert!(
            is_guard(s.bottom() - PAGE) && !is_guard(s.bottom()) && !is_guard(s.top() - 1),
            "expected a guard region on the page below {s:?} and none on the stack itself \
             (book: {STEP5})"
        );
        assert_eq!(
            perms_at(s.bottom() - 1),
            "rw-p",
            "the guard is a guard region inside the read-write mapping, not a PROT_NONE \
             mapping of its own (book: {STEP5})"
        );
    }
    let ranges = mapping_ranges();
    let mut holders: Vec<(usize, usize)> = stacks
        .iter()
        .map(|s| {
            *ranges
                .iter()
                .find(|r| (r.0..r.1).contains(&s.bottom()))
                .expect("a held stack is mapped")
        })
        .collect();
    holders.sort_unstable();
    holders.dedup();
    assert!(
        holders.len() <= 2,
        "expected 2000 guarded-slab stacks in at most 2 mappings, got {} (book: {STEP5})",
        holders.len()
    );
}

#[test]
fn step5_the_maps_count_grows_by_one_per_chunk() {
    let _outcome = testkit::record!();
    // In its own process: no other test maps memory while the lines are counted.
    isolated(
        "step5_the_maps_count_grows_by_one_per_chunk",
        LIMIT,
        "",
        || {
            let Some(pool) = guarded_slab_pool(MIN_STACK, 64) else {
                return;
            };
            let chunks = 20;
            let mut held = Vec::with_capacity(chunks * SLAB_CHUNK);
            let before = mappings_now();
            for g in 0..chunks * SLAB_CHUNK {
                held.push(
                    pool.alloc(g as u64)
                        .expect("expected a stack from the pool"),
                );
            }
            let after = mappings_now();
            assert!(
                after <= before + chunks,
                "{} guarded-slab stacks in {chunks} chunks added {} mappings (from {before} to \
             {after}); expected at most one per chunk, {chunks} (book: {STEP5})",
                held.len(),
                after - before
            );
            assert_eq!(pool.stats().mapped, chunks * SLAB_CHUNK);
        },
    );
}

#[test]
fn step5_a_guard_outlives_the_pages_given_back() {
    let _outcome = testkit::record!();
    // Hot limit 0: release_cold gives every free stack's pages back (MADV_DONTNEED).
    let Some(pool) = guarded_slab_pool(16 << 10, 0) else {
        return;
    };
    let s = pool.alloc(1).expect("expected a stack from the pool");
    touch(&s);
    let (bottom, top) = (s.bottom(), s.top());
    drop(s);
    pool.release_cold();
    assert_eq!(
        resident_pages(bottom, top),
        0,
        "a stack past the hot limit gives its pages back (book: {STEP2})"
    );
    // release_cold sorts what it gives back: take stacks until the freed one comes back.
    let mut held = Vec::new();
    let again = loop {
        let next = pool.alloc(2).expect("expected a stack from the pool");
        if next.bottom() == bottom {
            break next;
        }
        held.push(next);
        assert!(
            held.len() <= SLAB_CHUNK,
            "the freed stack was never handed out again (book: {STEP2})"
        );
    };
    assert!(
        is_guard(again.bottom() - PAGE),
        "the guard below a reused stack must still be there (book: {STEP5})"
    );
}

#[test]
fn step5_a_guarded_slab_overflow_is_named_when_it_happens() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "step5_a_guarded_slab_overflow_is_named_when_it_happens",
        LIMIT,
        || {
            stack::install_overflow_handler();
            let Some(pool) = guarded_slab_pool(64 << 10, 64) else {
                println!("no guard regions on this kernel: refused as expected");
                return;
            };
            let below = pool.alloc(6).expect("expected a stack from the pool");
            let s = pool.alloc(7).expect("expected a stack from the pool");
            assert!(
                s.bottom() > below.bottom(),
                "the test needs a neighbour below (book: {STEP5})"
            );
            let _running = s.enter();
            let mut co = Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0, u64::MAX));
            let _ = co.resume(());
        },
    );
    if run.output.contains("refused as expected") {
        assert!(run.success, "{run:?}");
        return;
    }
    assert!(
        run.output
            .contains("G 7 overflowed its 64 KiB stack (guard page hit)"),
        "a guard region must be reported like a guard page, by G and size: {run:?} \
         (book: {STEP5})"
    );
    assert!(
        !run.success,
        "expected an overflow to end the process (book: {STEP5})"
    );
}

// ---- Whole runtime: every G's stack comes from your pool (feature mine-05). ----

/// Parks `n` Gs at once on one channel (each holds a stack from the pool), then releases
/// them by dropping the only sender. Returns how many saw the channel close.
fn park_many_gs(rt: gmp::Runtime, n: usize) -> usize {
    rt.block_on(move || {
        let (tx, rx) = gmp::chan::rendezvous::<()>();
        let wg = gmp::sync::WaitGroup::new();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (rx, wg) = (rx.clone(), wg.clone());
                wg.add(1);
                gmp::go(move || {
                    wg.done();
                    rx.recv().is_err()
                })
            })
            .collect();
        wg.wait(); // every G has run and is about to park in recv
        drop(tx);
        handles
            .into_iter()
            .map(|h| h.join().expect("a parked G panicked"))
            .filter(|closed| *closed)
            .count()
    })
}

#[test]
fn whole_runtime_ten_thousand_parked_gs_on_guarded_stacks() {
    let _outcome = testkit::record!();
    let n = 10_000;
    let closed = testkit::watchdog_with(
        "10 000 Gs parked on a channel, each on a guarded stack from your pool",
        LIMIT,
        gmp::dump_all,
        move || {
            let rt = gmp::Runtime::builder()
                .procs(1)
                .guarded_stacks()
                .build()
                .unwrap();
            park_many_gs(rt, n)
        },
    );
    assert_eq!(
        closed, n,
        "every parked G must wake when the channel closes (book: {RUNTIME})"
    );
}

#[test]
fn whole_runtime_a_hundred_thousand_parked_gs_on_slab_stacks() {
    let _outcome = testkit::record!();
    let n = 100_000;
    let closed = testkit::watchdog_with(
        "100 000 Gs parked on a channel, each on a slab stack from your pool",
        LIMIT,
        gmp::dump_all,
        move || {
            // SAFETY: these Gs use a few hundred bytes of their 16 KiB.
            let builder = unsafe {
                gmp::Runtime::builder()
                    .procs(1)
                    .stack_size(16 << 10)
                    .slab_stacks()
            };
            park_many_gs(builder.build().unwrap(), n)
        },
    );
    assert_eq!(
        closed, n,
        "every parked G must wake when the channel closes (book: {RUNTIME})"
    );
}

#[test]
fn whole_runtime_a_g_that_overflows_a_guarded_stack_is_named() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "whole_runtime_a_g_that_overflows_a_guarded_stack_is_named",
        LIMIT,
        || {
            let rt = gmp::Runtime::builder()
                .procs(1)
                .guarded_stacks()
                .build()
                .unwrap();
            rt.block_on(|| gmp::go(|| recurse(0, u64::MAX)).join().map(|_| ()).unwrap());
        },
    );
    assert!(
        run.output
            .contains("overflowed its 64 KiB stack (guard page hit)"),
        "a G running off its stack must be reported by G and size: {run:?} (book: {RUNTIME})"
    );
    assert!(
        !run.success,
        "expected an overflow to end the process (book: {STEP4})"
    );
}

#[test]
fn whole_runtime_the_default_is_guarded_slab_where_the_kernel_has_guard_regions() {
    let _outcome = testkit::record!();
    let rt = gmp::Runtime::builder().procs(1).build().unwrap();
    let want = if kernel_has_guard_regions() {
        gmp::builder::StackLayout::GuardedSlab
    } else {
        gmp::builder::StackLayout::Guarded
    };
    assert_eq!(
        rt.stack_layout(),
        want,
        "the default builder takes guarded slab stacks exactly when the kernel has guard \
         regions (book: {STEP5})"
    );
    drop(rt);
    let asked = gmp::Runtime::builder()
        .procs(1)
        .guarded_slab_stacks()
        .build();
    match asked {
        Ok(rt) => assert_eq!(rt.stack_layout(), gmp::builder::StackLayout::GuardedSlab),
        Err(e) => assert!(
            want == gmp::builder::StackLayout::Guarded && e.to_string().contains("Linux 6.13"),
            "guarded slab stacks asked for on an old kernel: the error names Linux 6.13, \
             got: {e} (book: {STEP5})"
        ),
    }
}

#[test]
fn whole_runtime_a_g_that_overflows_a_guarded_slab_stack_is_named() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "whole_runtime_a_g_that_overflows_a_guarded_slab_stack_is_named",
        LIMIT,
        || {
            let Ok(rt) = gmp::Runtime::builder()
                .procs(1)
                .guarded_slab_stacks()
                .build()
            else {
                println!("no guard regions on this kernel: refused as expected");
                return;
            };
            rt.block_on(|| {
                // A parked neighbour in the chunk, just below the G that overflows.
                let (tx, rx) = gmp::chan::rendezvous::<()>();
                let neighbour = gmp::go(move || rx.recv().is_err());
                gmp::yield_now();
                gmp::go(|| recurse(0, u64::MAX)).join().map(|_| ()).unwrap();
                drop(tx);
                neighbour.join().unwrap();
            });
        },
    );
    if run.output.contains("refused as expected") {
        assert!(!kernel_has_guard_regions() && run.success, "{run:?}");
        return;
    }
    assert!(
        run.output
            .contains("overflowed its 64 KiB stack (guard page hit)"),
        "a G running off a guarded-slab stack must be reported by G and size, as on a \
         guarded one: {run:?} (book: {RUNTIME})"
    );
    assert!(
        !run.success,
        "expected an overflow to end the process (book: {STEP5})"
    );
}

#[test]
fn whole_runtime_a_hundred_thousand_gs_yield_twice_on_the_default_builder() {
    let _outcome = testkit::record!();
    let n: u64 = 100_000;
    let sum = testkit::watchdog_with(
        "100 000 Gs that each yield twice, then are joined, on the default builder",
        LIMIT,
        gmp::dump_all,
        move || {
            // SAFETY: these Gs only yield: a few hundred bytes of their stacks.
            let rt = unsafe { runtime_for_many_gs(1) };
            rt.block_on(move || {
                let handles: Vec<_> = (0..n)
                    .map(|i| {
                        gmp::go(move || {
                            gmp::yield_now();
                            gmp::yield_now();
                            i
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a G failed"))
                    .sum::<u64>()
            })
        },
    );
    assert_eq!(
        sum,
        n * (n - 1) / 2,
        "every G must return its index once (book: {RUNTIME})"
    );
}

/// Sysmon calls your `release_cold` about once a second: after a burst of Gs has ended, the
/// pages of their stacks past the runtime's hot limit go back, without any G paying for it.
#[test]
fn whole_runtime_sysmon_gives_back_the_stack_pages_of_a_finished_burst() {
    let _outcome = testkit::record!();
    let n = 20_000;
    let (resident_at_end, resident_later) = testkit::watchdog_with(
        "20 000 Gs touching their stacks, then sysmon's release of their pages",
        LIMIT,
        gmp::dump_all,
        move || {
            // SAFETY: these Gs use 8 KiB of their 64 KiB stacks.
            let rt = unsafe { runtime_for_many_gs(2) };
            // Each G's page: a byte of a frame on its stack, rounded down to the page.
            let pages: Vec<usize> = rt.block_on(move || {
                let (tx, rx) = gmp::chan::rendezvous::<()>();
                let wg = gmp::sync::WaitGroup::new();
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        let (rx, wg) = (rx.clone(), wg.clone());
                        wg.add(1);
                        gmp::go(move || {
                            let frame = std::hint::black_box([1u8; 8192]);
                            let page = (&raw const frame[4096]) as usize & !(PAGE - 1);
                            wg.done();
                            let _ = rx.recv(); // all alive at once, until the channel closes
                            page
                        })
                    })
                    .collect();
                wg.wait();
                drop((tx, rx));
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let resident = |pages: &[usize]| {
                pages
                    .iter()
                    .filter(|&&p| resident_pages(p, p + PAGE) == 1)
                    .count()
            };
            let at_end = resident(&pages);
            let start = std::time::Instant::now();
            let mut later = at_end;
            while later > n / 4 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
                later = resident(&pages);
            }
            drop(rt);
            (at_end, later)
        },
    );
    assert!(
        resident_at_end > n / 2,
        "expected most of the {n} finished Gs' stack pages still resident right after the \
         burst (a drop keeps the pages), found {resident_at_end} (book: {STEP2})"
    );
    assert!(
        resident_later <= n / 4,
        "sysmon calls release_cold about once a second: 5 s after the burst {resident_later} \
         of {n} stack pages were still resident, above the runtime's hot limit of about 1,100 \
         (book: {STEP2})"
    );
}

#[test]
fn whole_runtime_a_g_that_overflows_into_its_slab_canary_is_named() {
    let _outcome = testkit::record!();
    let run = run_in_child(
        "whole_runtime_a_g_that_overflows_into_its_slab_canary_is_named",
        LIMIT,
        || {
            // SAFETY: not kept on purpose: the G below reaches into its canary zone (and
            // no further), which the check at its next switch must report.
            let builder = unsafe {
                gmp::Runtime::builder()
                    .procs(1)
                    .stack_size(16 << 10)
                    .slab_stacks()
            };
            builder.build().unwrap().block_on(|| {
                let g = gmp::go(|| {
                    let bottom = gmp::stack_bounds().expect("a G has a stack").start;
                    dig(bottom + CANARY_BYTES);
                    gmp::yield_now(); // the switch where the runtime checks the canary
                });
                g.join().unwrap();
            });
        },
    );
    assert!(
        run.output
            .contains("overflowed its 16 KiB stack (canary zone overwritten"),
        "a slab G that wrote into its canary zone must be reported at its next switch: {run:?} (book: {RUNTIME})"
    );
    assert!(
        !run.success,
        "expected an overflow to end the process (book: {STEP4})"
    );
}

/// Recurses with small frames (well under CANARY_BYTES each) until one lies below `floor`,
/// writing every frame: the last one lands inside the canary zone, not past the stack.
fn dig(floor: usize) {
    let pad = [0xA5u8; 32];
    std::hint::black_box(&pad);
    if (pad.as_ptr() as usize) > floor {
        dig(floor);
    }
    std::hint::black_box(&pad);
}
