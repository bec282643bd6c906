//! Tests for part 02, `osthread`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 2; `whole_runtime_…` tests start the gmp
//! runtime, whose Ms are started by your `MBuilder`.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use osthread::{
    MBuilder, MIN_STACK_SIZE, SpawnError, allowed_cpus, current_tid, pin_current_thread,
};
use testkit::{DEFAULT_LIMIT, watchdog};

const STEP1: &str = "ch02-osthread.html#step-1";
const STEP2: &str = "ch02-osthread.html#step-2";
const STEP3: &str = "ch02-osthread.html#step-3";

/// The name the kernel keeps for a thread (`/proc/self/task/<tid>/comm`).
fn comm(tid: u32) -> String {
    fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .unwrap_or_else(|e| panic!("thread {tid} is not in /proc/self/task: {e}"))
        .trim_end()
        .to_string()
}

/// A line of `/proc/self/task/<tid>/status`, such as `Cpus_allowed_list`.
fn task_status_field(tid: u32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .unwrap_or_else(|e| panic!("thread {tid} is not in /proc/self/task: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in task {tid}'s status"))
        .trim()
        .to_string()
}

#[test]
fn step1_current_tid_is_the_kernel_thread_id() {
    let _outcome = testkit::record!();
    let main_tid = current_tid();
    assert!(
        fs::metadata(format!("/proc/self/task/{main_tid}")).is_ok(),
        "expected tid {main_tid} to be an entry of /proc/self/task (book: {STEP1})"
    );
    let other = std::thread::spawn(current_tid)
        .join()
        .expect("current_tid panicked on another thread");
    assert_ne!(
        other, main_tid,
        "expected two threads to have two tids: gettid, not getpid (book: {STEP1})"
    );
}

#[test]
fn step1_allowed_cpus_lists_this_process_cpus() {
    let _outcome = testkit::record!();
    let cpus = allowed_cpus().expect("sched_getaffinity works on Linux");
    assert!(
        !cpus.is_empty(),
        "expected at least the CPU this test runs on (book: {STEP1})"
    );
    assert!(
        cpus.windows(2).all(|w| w[0] < w[1]),
        "expected CPUs ascending, no repeats, got {cpus:?} (book: {STEP1})"
    );
    // std counts the same set, then may lower it for a cgroup CPU quota.
    let std_count = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus.len() >= std_count,
        "expected at least the {std_count} CPUs std sees, got {cpus:?} (book: {STEP1})"
    );
}

#[test]
fn step2_starts_a_named_thread_and_reports_its_tid() {
    let _outcome = testkit::record!();
    watchdog("a named M", DEFAULT_LIMIT, || {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let m = MBuilder::new("ex02-named")
            .spawn(move || {
                release_rx.recv().expect("the test releases the M");
                current_tid()
            })
            .expect("a small named thread can start");
        // spawn returns only once the thread runs, so /proc already lists it.
        assert_eq!(
            m.name(),
            "ex02-named",
            "expected the name given to MBuilder::new (book: {STEP2})"
        );
        assert_eq!(
            comm(m.tid()),
            "ex02-named",
            "expected the kernel's name for the M to be the builder's (book: {STEP2})"
        );
        let tid = m.tid();
        release_tx.send(()).expect("the M waits for the release");
        assert_eq!(
            m.join().expect("the M's body only returns its tid"),
            tid,
            "expected tid() to be what gettid() says on the thread (book: {STEP2})"
        );
    });
}

#[test]
fn step2_honours_the_stack_size() {
    let _outcome = testkit::record!();
    let asked = 4 << 20; // neither Rust's 2 MiB default nor glibc's 8 MiB
    let got = watchdog("an M with a 4 MiB stack", DEFAULT_LIMIT, move || {
        MBuilder::new("ex02-stack")
            .stack_size(asked)
            .spawn(own_stack_size)
            .expect("a 4 MiB stack is allowed")
            .join()
            .expect("the M only measures its stack")
    });
    assert!(
        got >= asked && got <= asked + (64 << 10),
        "expected a stack of {asked} bytes (at most 64 KiB more), the thread has {got} \
         (book: {STEP2})"
    );
}

/// The calling thread's stack size as pthreads recorded it.
fn own_stack_size() -> usize {
    // SAFETY: attr is initialised by pthread_getattr_np before use and destroyed after;
    // pthread_self is always valid for the calling thread.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_getattr_np(libc::pthread_self(), &mut attr),
            0,
            "expected pthread_getattr_np to succeed on a live thread"
        );
        let mut size = 0;
        assert_eq!(
            libc::pthread_attr_getstacksize(&attr, &mut size),
            0,
            "expected pthread_attr_getstacksize to succeed"
        );
        libc::pthread_attr_destroy(&mut attr);
        size
    }
}

#[test]
fn step2_refuses_a_stack_below_the_minimum() {
    let _outcome = testkit::record!();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let err = MBuilder::new("ex02-tiny")
        .stack_size(4096)
        .spawn(move || flag.store(true, Ordering::SeqCst))
        .expect_err("4 KiB is below PTHREAD_STACK_MIN");
    assert!(
        matches!(err, SpawnError::StackTooSmall { requested: 4096 }),
        "expected StackTooSmall {{ requested: 4096 }}, got {err:?} (book: {STEP2})"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("4096") && msg.contains(&MIN_STACK_SIZE.to_string()),
        "expected the message to name 4096 and the minimum {MIN_STACK_SIZE}, got: {msg} \
         (book: {STEP2})"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "expected the body not to run when spawn fails (book: {STEP2})"
    );
}

#[test]
fn step2_refuses_a_name_linux_cannot_keep() {
    let _outcome = testkit::record!();
    let err = MBuilder::new("a-name-longer-than-15")
        .spawn(|| ())
        .expect_err("too long");
    assert!(
        matches!(err, SpawnError::BadName { .. }),
        "expected BadName: Linux keeps 15 bytes of a thread's name; got {err:?} (book: {STEP2})"
    );
}

#[test]
fn step2_a_panicking_body_is_reported_by_join() {
    let _outcome = testkit::record!();
    let m = MBuilder::new("ex02-panic")
        .spawn(|| panic!("boom"))
        .expect("a small named thread can start");
    assert!(
        m.join().is_err(),
        "expected join to return Err when the body panicked (book: {STEP2})"
    );
}

#[test]
fn step3_pins_a_thread_to_one_cpu() {
    let _outcome = testkit::record!();
    let cpu = *allowed_cpus()
        .expect("sched_getaffinity works on Linux")
        .last()
        .expect("at least one CPU is allowed");
    let (seen, tid) = watchdog("a pinned M", DEFAULT_LIMIT, move || {
        let m = MBuilder::new("ex02-pinned")
            .cpus(&[cpu])
            .spawn(move || {
                // SAFETY: sched_getcpu has no preconditions.
                unsafe { libc::sched_getcpu() }
            })
            .expect("an allowed CPU can be pinned");
        let tid = m.tid();
        (m.join().expect("the M only reads its CPU"), tid)
    });
    assert_eq!(
        seen, cpu as i32,
        "expected a thread pinned to CPU {cpu} to run there, it ran on CPU {seen} (tid {tid}) \
         (book: {STEP3})"
    );
}

#[test]
fn step3_pins_the_calling_thread() {
    let _outcome = testkit::record!();
    let cpu = allowed_cpus().expect("sched_getaffinity works on Linux")[0];
    let allowed = std::thread::spawn(move || {
        pin_current_thread(&[cpu]).expect("an allowed CPU can be pinned");
        task_status_field(current_tid(), "Cpus_allowed_list")
    })
    .join()
    .expect("the pinning thread panicked");
    assert_eq!(
        allowed,
        cpu.to_string(),
        "expected the calling thread's Cpus_allowed_list to be only CPU {cpu} (book: {STEP3})"
    );
}

#[test]
fn step3_refuses_a_cpu_outside_the_allowed_set() {
    let _outcome = testkit::record!();
    let err = MBuilder::new("ex02-badcpu")
        .cpus(&[4000])
        .spawn(|| ())
        .expect_err("no CPU 4000");
    match &err {
        SpawnError::BadCpu {
            cpu: Some(4000),
            allowed,
        } => assert!(
            !allowed.is_empty(),
            "expected the allowed CPUs listed in the error (book: {STEP3})"
        ),
        other => panic!("expected BadCpu {{ cpu: Some(4000), .. }}, got {other:?} (book: {STEP3})"),
    }
    assert!(
        err.to_string().contains("4000"),
        "expected the message to name CPU 4000, got: {err} (book: {STEP3})"
    );
    let err = MBuilder::new("ex02-nocpu")
        .cpus(&[])
        .spawn(|| ())
        .expect_err("empty set");
    assert!(
        matches!(err, SpawnError::BadCpu { cpu: None, .. }),
        "expected BadCpu {{ cpu: None, .. }} for an empty set, got {err:?} (book: {STEP3})"
    );
}

#[test]
fn whole_runtime_names_its_ms() {
    let _outcome = testkit::record!();
    let tids = watchdog("gmp runtime with 2 Ps", DEFAULT_LIMIT, || {
        let rt = gmp::Runtime::builder()
            .procs(2)
            .build()
            .expect("your MBuilder starts the Ms");
        let tids = rt.block_on(|| gmp::metrics().expect("metrics read /proc").m_tids);
        for (i, tid) in tids.iter().enumerate() {
            assert_eq!(
                comm(*tid),
                format!("gmp-m{i}"),
                "expected M{i} named gmp-m{i} by your MBuilder (book: {STEP2})"
            );
        }
        tids
    });
    assert_eq!(tids.len(), 2, "expected one M per P (book: {STEP2})");
    assert_ne!(
        tids[0], tids[1],
        "expected two Ms with two tids (book: {STEP2})"
    );
}

#[test]
fn whole_runtime_pins_ms_when_asked() {
    let _outcome = testkit::record!();
    watchdog("gmp runtime with pinned Ms", DEFAULT_LIMIT, || {
        let cpus = allowed_cpus().expect("sched_getaffinity works on Linux");
        let rt = gmp::Runtime::builder()
            .procs(2)
            .pin_ms(true)
            .build()
            .expect("your MBuilder starts pinned Ms");
        let tids = rt.block_on(|| gmp::metrics().expect("metrics read /proc").m_tids);
        for (i, tid) in tids.iter().enumerate() {
            let want = cpus[i % cpus.len()].to_string();
            assert_eq!(
                task_status_field(*tid, "Cpus_allowed_list"),
                want,
                "expected M{i} pinned to CPU {want} (book: {STEP3})"
            );
        }
    });
}

#[test]
fn whole_runtime_reports_a_bad_stack_size() {
    let _outcome = testkit::record!();
    let err = match gmp::Runtime::builder().procs(1).m_stack_size(1024).build() {
        Ok(_) => panic!("expected a 1 KiB M stack to be refused (book: {STEP2})"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("M 0") && err.contains("1024"),
        "expected the error to name M 0 and the size 1024, got: {err} (book: {STEP2})"
    );
}
