//! The runtime's G stacks at scale: the default layout (guarded slab where the kernel has
//! guard regions), its map budget of one mapping per chunk, and the fallback on a kernel
//! without guard regions (simulated with a seccomp filter in a child process).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gmp::Runtime;
use testkit::DEFAULT_LIMIT;

const PAGE: usize = 4096;
/// Stacks in one chunk of a slab or guarded-slab pool (part 05's `SLAB_CHUNK`).
const CHUNK: usize = 1024;

/// Does `madvise(MADV_GUARD_INSTALL)` work here (Linux 6.13)? Asked of the kernel directly.
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
    let rc = unsafe { libc::madvise(p, PAGE, 102) };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, 2 * PAGE) };
    rc == 0
}

/// Lines of `/proc/self/maps`, through a buffer on the stack.
fn mappings_now() -> usize {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/self/maps").expect("the test needs /proc");
    let mut buf = [0u8; 4096];
    let mut lines = 0;
    loop {
        match file.read(&mut buf).expect("reading /proc/self/maps") {
            0 => return lines,
            n => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
}

/// Makes `madvise(_, _, MADV_GUARD_INSTALL)` fail with EINVAL for this thread and every
/// thread it starts, as a kernel before 6.13 answers; other calls are untouched.
fn pretend_the_kernel_has_no_guard_regions() {
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ADVICE: u32 = 16 + 2 * 8; // args[2], its low half (little-endian)
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        op(ld, 0, 0, NR),
        op(jeq, 0, 3, libc::SYS_madvise as u32),
        op(ld, 0, 0, ADVICE),
        op(jeq, 0, 1, 102),
        op(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        op(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that lives across the call; the kernel copies it.
    // No-new-privs first, which lets an unprivileged process install a filter.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn on_a_kernel_without_guard_regions_the_default_is_guarded_and_asking_names_the_kernel() {
    let run = testkit::run_in_child(
        "on_a_kernel_without_guard_regions_the_default_is_guarded_and_asking_names_the_kernel",
        DEFAULT_LIMIT,
        || {
            pretend_the_kernel_has_no_guard_regions();
            assert!(
                !kernel_has_guard_regions(),
                "the filter must refuse the advice"
            );
            let rt = Runtime::builder().procs(1).build().unwrap();
            println!("default layout: {:?}", rt.stack_layout());
            println!(
                "a G ran: {}",
                rt.block_on(|| gmp::go(|| 6 * 7).join().unwrap())
            );
            drop(rt);
            match Runtime::builder().procs(1).guarded_slab_stacks().build() {
                Ok(rt) => println!("asked: built anyway, {:?}", rt.stack_layout()),
                Err(e) => println!("asked: refused: {e}"),
            }
        },
    );
    assert!(run.success, "the child must exit normally: {run:?}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    for needle in [
        "default layout: Guarded\n",
        "a G ran: 42",
        "asked: refused: bad G stack setting",
        "guarded-slab stacks need guard regions",
        "Linux 6.13",
        release.trim(),
        "use guarded stacks",
    ] {
        assert!(
            run.output.contains(needle),
            "expected {needle:?} in: {}",
            run.output
        );
    }
}

#[test]
fn guarded_slab_stacks_cost_one_mapping_per_chunk() {
    let run = testkit::run_in_child(
        "guarded_slab_stacks_cost_one_mapping_per_chunk",
        DEFAULT_LIMIT,
        || {
            let Ok(rt) = Runtime::builder().procs(1).guarded_slab_stacks().build() else {
                assert!(
                    !kernel_has_guard_regions(),
                    "refused on a kernel that has them"
                );
                println!("skipped: no guard regions on this kernel");
                return;
            };
            let chunks = 10;
            let n = chunks * CHUNK - 1; // and the main G: exactly `chunks` chunks
            let (before, after) = rt.block_on(move || {
                let before = mappings_now();
                let started = Arc::new(AtomicUsize::new(0));
                let (tx, rx) = gmp::chan::rendezvous::<()>();
                let hs: Vec<_> = (0..n)
                    .map(|_| {
                        let (rx, started) = (rx.clone(), started.clone());
                        gmp::go(move || {
                            started.fetch_add(1, Ordering::Relaxed);
                            rx.recv().is_err()
                        })
                    })
                    .collect();
                while started.load(Ordering::Relaxed) < n {
                    gmp::yield_now();
                }
                let after = mappings_now();
                drop((tx, rx));
                assert!(hs.into_iter().all(|h| h.join().unwrap()));
                (before, after)
            });
            println!("chunks {chunks} before {before} after {after}");
        },
    );
    assert!(run.success, "the child must exit normally: {run:?}");
    if run.output.contains("skipped:") {
        return;
    }
    let (chunks, before, after) = (
        run.figure("chunks"),
        run.figure("before"),
        run.figure("after"),
    );
    // The stacks' chunks, plus a little for malloc (the Vec of handles is one mapping of
    // its own above 128 KiB); guarded stacks would have added 2 per G, 20,478.
    assert!(
        after <= before + chunks + 16,
        "{} Gs on guarded slab stacks added {} mappings; expected at most one per chunk \
         ({chunks}) and a few for malloc: {}",
        chunks * CHUNK - 1,
        after.saturating_sub(before),
        run.output
    );
}
