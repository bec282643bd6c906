//! Tests for part 01, `procinfo`. The exercise and the solution run this same file.
//!
//! Tests are named `stepN_…` so the first failure (they print in name order) points at the
//! step of chapter 1 to work on next. The `whole_runtime_…` tests run the gmp runtime on
//! your part: `gmp::metrics()` reads `/proc` through the code you wrote.

use procinfo::{Pid, ProcError, ProcStatus, parse_status, status, thread_ids};
use testkit::{DEFAULT_LIMIT, watchdog};

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
    assert_eq!(parsed.rss_bytes(), 1812 * 1024);
}

#[test]
fn step1_ignores_line_order_and_unknown_lines() {
    let _outcome = testkit::record!();
    let mut lines: Vec<&str> = SAMPLE.lines().collect();
    lines.reverse();
    let reversed = lines.join("\n") + "\nSomeNewField:\tnot a number\n";
    assert_eq!(
        parse_status(&reversed).unwrap(),
        parse_status(SAMPLE).unwrap(),
        "fields may come in any order, and new kernels add lines you must skip"
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
        Err(ProcError::MissingField { field }) => assert_eq!(field, "VmRSS"),
        other => panic!("expected MissingField {{ field: \"VmRSS\" }}, got {other:?}"),
    }
}

#[test]
fn step1_names_a_bad_value() {
    let _outcome = testkit::record!();
    let garbled = SAMPLE.replace("Threads:\t3", "Threads:\tthree");
    match parse_status(&garbled) {
        Err(ProcError::BadValue { field, found }) => {
            assert_eq!(field, "Threads");
            assert_eq!(found, "three");
        }
        other => panic!("expected BadValue for Threads, got {other:?}"),
    }
}

#[test]
fn step2_reads_this_process() {
    let _outcome = testkit::record!();
    let me = status(Pid::Current).expect("/proc/self/status is readable");
    assert!(me.threads >= 1, "a process has at least one thread");
    assert!(
        me.vm_rss_kib > 0 && me.vm_size_kib >= me.vm_rss_kib,
        "{me:?}"
    );
}

#[test]
fn step2_sees_a_new_thread() {
    let _outcome = testkit::record!();
    watchdog("counting a parked helper thread", DEFAULT_LIMIT, || {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || rx.recv());
        // This test's thread and the helper are both alive now (other tests add more).
        let during = status(Pid::Current).unwrap().threads;
        drop(tx);
        helper.join().unwrap().unwrap_err();
        assert!(
            during >= 2,
            "Threads: {during} while at least two threads were alive"
        );
    });
}

#[test]
fn step2_reads_another_pid() {
    let _outcome = testkit::record!();
    let parent = std::os::unix::process::parent_id();
    let theirs = status(Pid::Id(parent)).expect("the test runner's parent process exists");
    assert!(theirs.threads >= 1);
}

#[test]
fn step2_names_a_missing_pid() {
    let _outcome = testkit::record!();
    // Above the kernel's pid_max (at most 2^22), so no process can have it.
    let pid = 9_999_999;
    let err = status(Pid::Id(pid)).expect_err("pid 9999999 cannot exist");
    assert!(
        matches!(err, ProcError::NoSuchProcess { pid: 9_999_999 }),
        "a missing /proc/<pid> is NoSuchProcess, not a raw I/O error; got {err:?}"
    );
    assert!(
        err.to_string().contains("9999999"),
        "the message names the pid: {err}"
    );
}

#[test]
fn step3_lists_thread_ids() {
    let _outcome = testkit::record!();
    let tids = thread_ids(Pid::Current).unwrap();
    assert!(
        tids.contains(&std::process::id()),
        "the main thread's tid is the pid"
    );
    assert!(
        tids.windows(2).all(|w| w[0] < w[1]),
        "tids sorted ascending: {tids:?}"
    );
    // SAFETY: gettid has no preconditions.
    let mine = unsafe { libc::gettid() } as u32;
    assert!(
        tids.contains(&mine),
        "this test's own thread {mine} is in {tids:?}"
    );
}

#[test]
fn step3_names_a_missing_pid() {
    let _outcome = testkit::record!();
    assert!(matches!(
        thread_ids(Pid::Id(9_999_999)),
        Err(ProcError::NoSuchProcess { pid: 9_999_999 })
    ));
}

#[test]
fn whole_runtime_counts_its_ms_through_your_part() {
    let _outcome = testkit::record!();
    let procs = 3;
    let report = watchdog("gmp runtime with 3 Ps", DEFAULT_LIMIT, move || {
        let rt = gmp::Runtime::builder().procs(procs).build().unwrap();
        rt.block_on(|| gmp::metrics().expect("gmp::metrics reads /proc through part 01"))
    });
    assert_eq!(report.procs, procs);
    assert_eq!(report.m_tids.len(), procs, "one M per P");
    // Each M is a kernel thread: /proc/self/task must have listed it while it was running.
    assert!(
        report.os_threads as usize > procs,
        "Threads: {} should count the caller plus {procs} Ms",
        report.os_threads
    );
    for tid in &report.m_tids {
        assert!(
            report.task_tids.contains(tid),
            "M with tid {tid} missing from /proc/self/task {:?}",
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
            .unwrap()
            .block_on(|| {
                let before = gmp::metrics().unwrap().rss_bytes;
                let block = vec![1u8; 32 << 20];
                let after = gmp::metrics().unwrap().rss_bytes;
                std::hint::black_box(&block);
                after.saturating_sub(before)
            })
    });
    // Other tests allocate and free at the same time; half the block is a safe floor.
    assert!(
        grown >= 16 << 20,
        "RSS grew by only {grown} bytes after touching 32 MiB"
    );
}
