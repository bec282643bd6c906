//! Tests for part 01, `procinfo`. The exercise and the solution run this same file.
//!
//! Tests are named `stepN_…` so the first failure (they print in name order) points at the
//! step of chapter 1 to work on next. The `whole_runtime_…` tests run the gmp runtime on
//! your part: `gmp::metrics()` reads `/proc` through the code you wrote.

use procinfo::{Pid, ProcError, ProcStatus, parse_status, status, thread_ids};
use testkit::{DEFAULT_LIMIT, watchdog};

const STEP1: &str = "ch01-procinfo.html#step-1";
const STEP2: &str = "ch01-procinfo.html#step-2";
const STEP3: &str = "ch01-procinfo.html#step-3";

/// A real status file, trimmed, from a process with 3 threads (kernel 6.x layout).
const SAMPLE: &str = "Name:\tping_pong\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
Pid:\t4242\nVmPeak:\t   22408 kB\nVmSize:\t   22404 kB\nVmLck:\t       0 kB\n\
VmRSS:\t    1812 kB\nRssAnon:\t     128 kB\nThreads:\t3\n\
voluntary_ctxt_switches:\t2000007\nnonvoluntary_ctxt_switches:\t31\n";

#[test]
fn step1_parses_every_field() {
    let _outcome = testkit::record!();
    let parsed = parse_status(SAMPLE).expect("SAMPLE is a valid status text");
    assert_eq!(
        parsed,
        ProcStatus {
            threads: 3,
            vm_rss_kib: 1812,
            vm_size_kib: 22404,
            voluntary_switches: 2_000_007,
            involuntary_switches: 31,
        },
        "each field is the number after the colon; `kB` is a unit to drop (book: ch01-procinfo.html#step-1)"
    );
    assert_eq!(
        parsed.rss_bytes(),
        1812 * 1024,
        "expected VmRSS in bytes: 1812 KiB times 1024 (book: {STEP1})"
    );
}

#[test]
fn step1_ignores_line_order_and_unknown_lines() {
    let _outcome = testkit::record!();
    let mut lines: Vec<&str> = SAMPLE.lines().collect();
    lines.reverse();
    let reversed = lines.join("\n") + "\nSomeNewField:\tnot a number\n";
    assert_eq!(
        parse_status(&reversed).expect("expected Ok: unknown lines are skipped"),
        parse_status(SAMPLE).expect("SAMPLE is a valid status text"),
        "expected the same fields: they may come in any order, and new kernels add lines you \
         must skip (book: {STEP1})"
    );
}

#[test]
fn step1_names_a_missing_field() {
    let _outcome = testkit::record!();
    let without_rss: String = SAMPLE
        .lines()
        .filter(|l| !l.starts_with("VmRSS"))
        .map(|l| format!("{l}\n"))
        .collect();
    match parse_status(&without_rss) {
        Err(ProcError::MissingField { field }) => assert_eq!(
            field, "VmRSS",
            "expected the missing field named (book: {STEP1})"
        ),
        other => {
            panic!("expected MissingField {{ field: \"VmRSS\" }}, got {other:?} (book: {STEP1})")
        }
    }
}

#[test]
fn step1_names_a_bad_value() {
    let _outcome = testkit::record!();
    let garbled = SAMPLE.replace("Threads:\t3", "Threads:\tthree");
    match parse_status(&garbled) {
        Err(ProcError::BadValue { field, found }) => {
            assert_eq!(
                field, "Threads",
                "expected the bad field named (book: {STEP1})"
            );
            assert_eq!(
                found, "three",
                "expected the bad text quoted (book: {STEP1})"
            );
        }
        other => panic!("expected BadValue for Threads, got {other:?} (book: {STEP1})"),
    }
}

#[test]
fn step2_reads_this_process() {
    let _outcome = testkit::record!();
    let me = status(Pid::Current).expect("/proc/self/status is readable");
    assert!(
        me.threads >= 1,
        "expected at least one thread in a process, got {me:?} (book: {STEP2})"
    );
    assert!(
        me.vm_rss_kib > 0 && me.vm_size_kib >= me.vm_rss_kib,
        "expected 0 < VmRSS <= VmSize, got {me:?} (book: {STEP2})"
    );
}

#[test]
fn step2_sees_a_new_thread() {
    let _outcome = testkit::record!();
    watchdog("counting a parked helper thread", DEFAULT_LIMIT, || {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || rx.recv());
        // This test's thread and the helper are both alive now (other tests add more).
        let during = status(Pid::Current)
            .expect("/proc/self/status is readable")
            .threads;
        drop(tx);
        helper
            .join()
            .expect("the helper only waits")
            .expect_err("the channel was closed, not sent on");
        assert!(
            during >= 2,
            "expected Threads >= 2 while two threads were alive, got {during} (book: {STEP2})"
        );
    });
}

#[test]
fn step2_reads_another_pid() {
    let _outcome = testkit::record!();
    let parent = std::os::unix::process::parent_id();
    let theirs = status(Pid::Id(parent)).expect("the test runner's parent process exists");
    assert!(
        theirs.threads >= 1,
        "expected the parent's status with at least one thread, got {theirs:?} (book: {STEP2})"
    );
}

#[test]
fn step2_names_a_missing_pid() {
    let _outcome = testkit::record!();
    // Above the kernel's pid_max (at most 2^22), so no process can have it.
    let pid = 9_999_999;
    let err = status(Pid::Id(pid)).expect_err("pid 9999999 cannot exist");
    assert!(
        matches!(err, ProcError::NoSuchProcess { pid: 9_999_999 }),
        "expected NoSuchProcess for a missing /proc/<pid>, not a raw I/O error; got {err:?} \
         (book: {STEP2})"
    );
    assert!(
        err.to_string().contains("9999999"),
        "expected the message to name the pid, got: {err} (book: {STEP2})"
    );
}

#[test]
fn step3_lists_thread_ids() {
    let _outcome = testkit::record!();
    let tids = thread_ids(Pid::Current).expect("/proc/self/task is readable");
    assert!(
        tids.contains(&std::process::id()),
        "expected the pid among the tids (the main thread's tid is the pid), got {tids:?} \
         (book: {STEP3})"
    );
    assert!(
        tids.windows(2).all(|w| w[0] < w[1]),
        "expected tids sorted ascending, got {tids:?} (book: {STEP3})"
    );
    // SAFETY: gettid has no preconditions.
    let mine = unsafe { libc::gettid() } as u32;
    assert!(
        tids.contains(&mine),
        "expected this test's own thread {mine} in {tids:?} (book: {STEP3})"
    );
}

#[test]
fn step3_names_a_missing_pid() {
    let _outcome = testkit::record!();
    let got = thread_ids(Pid::Id(9_999_999));
    assert!(
        matches!(got, Err(ProcError::NoSuchProcess { pid: 9_999_999 })),
        "expected NoSuchProcess {{ pid: 9999999 }}, got {got:?} (book: {STEP3})"
    );
}

#[test]
fn whole_runtime_counts_its_ms_through_your_part() {
    let _outcome = testkit::record!();
    let procs = 3;
    let report = watchdog("gmp runtime with 3 Ps", DEFAULT_LIMIT, move || {
        let rt = gmp::Runtime::builder()
            .procs(procs)
            .build()
            .expect("a runtime with 3 Ps starts");
        rt.block_on(|| gmp::metrics().expect("gmp::metrics reads /proc through part 01"))
    });
    assert_eq!(
        report.procs, procs,
        "expected the P count asked for (book: {STEP3})"
    );
    assert_eq!(
        report.m_tids.len(),
        procs,
        "expected one M per P (book: {STEP3})"
    );
    // Each M is a kernel thread: /proc/self/task must have listed it while it was running.
    assert!(
        report.os_threads as usize > procs,
        "expected Threads to count the caller plus {procs} Ms, got {} (book: {STEP2})",
        report.os_threads
    );
    for tid in &report.m_tids {
        assert!(
            report.task_tids.contains(tid),
            "expected the M with tid {tid} in /proc/self/task {:?} (book: {STEP3})",
            report.task_tids
        );
    }
}

#[test]
fn whole_runtime_sees_rss_grow() {
    let _outcome = testkit::record!();
    let grown = watchdog("gmp runtime touching 32 MiB", DEFAULT_LIMIT, || {
        gmp::Runtime::builder()
            .procs(1)
            .build()
            .expect("a runtime with 1 P starts")
            .block_on(|| {
                let before = gmp::metrics().expect("metrics read /proc").rss_bytes;
                let block = vec![1u8; 32 << 20];
                let after = gmp::metrics().expect("metrics read /proc").rss_bytes;
                std::hint::black_box(&block);
                after.saturating_sub(before)
            })
    });
    // Other tests allocate and free at the same time; half the block is a safe floor.
    assert!(
        grown >= 16 << 20,
        "expected RSS to grow by at least 16 MiB after touching 32 MiB, got {grown} bytes \
         (book: {STEP2})"
    );
}
