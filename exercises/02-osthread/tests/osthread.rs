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

/// The name the kernel keeps for a thread (`/proc/self/task/<tid>/comm`).
fn comm(tid: u32) -> String {
    fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .unwrap_or_else(|e| panic!("thread {tid} is not in /proc/self/task: {e}"))
        .trim_end()
        .to_string()
}

/// A line of `/proc/self/task/<tid>/status`, such as `Cpus_allowed_list`.
fn task_status_field(tid: u32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
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
        "tid {main_tid} should be an entry of /proc/self/task"
    );
    let other = std::thread::spawn(current_tid).join().unwrap();
    assert_ne!(other, main_tid, "two threads never share a tid");
}

#[test]
fn step1_allowed_cpus_lists_this_process_cpus() {
    let _outcome = testkit::record!();
    let cpus = allowed_cpus().expect("sched_getaffinity works on Linux");
    assert!(!cpus.is_empty());
    assert!(
        cpus.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats: {cpus:?}"
    );
    // std counts the same set, then may lower it for a cgroup CPU quota.
    let std_count = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus.len() >= std_count,
        "{cpus:?} has fewer CPUs than std sees ({std_count})"
    );
}

#[test]
fn step2_starts_a_named_thread_and_reports_its_tid() {
    let _outcome = testkit::record!();
    watchdog("a named M", DEFAULT_LIMIT, || {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let m = MBuilder::new("ex02-named")
            .spawn(move || {
                release_rx.recv().unwrap();
                current_tid()
            })
            .expect("a small named thread can start");
        // spawn returns only once the thread runs, so /proc already lists it.
        assert_eq!(m.name(), "ex02-named");
        assert_eq!(comm(m.tid()), "ex02-named", "the kernel's name for the M");
        let tid = m.tid();
        release_tx.send(()).unwrap();
        assert_eq!(
            m.join().unwrap(),
            tid,
            "tid() is what gettid() says on the thread"
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
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(
        got >= asked && got <= asked + (64 << 10),
        "asked for a {asked}-byte stack, the thread has {got} bytes (book: ch02-osthread.html#step-2)"
    );
}

/// The calling thread's stack size as pthreads recorded it.
fn own_stack_size() -> usize {
    // SAFETY: attr is initialised by pthread_getattr_np before use and destroyed after;
    // pthread_self is always valid for the calling thread.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut size = 0;
        assert_eq!(libc::pthread_attr_getstacksize(&attr, &mut size), 0);
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
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("4096") && msg.contains(&MIN_STACK_SIZE.to_string()),
        "{msg}"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "the body must not run when spawn fails"
    );
}

#[test]
fn step2_refuses_a_name_linux_cannot_keep() {
    let _outcome = testkit::record!();
    let err = MBuilder::new("a-name-longer-than-15")
        .spawn(|| ())
        .expect_err("too long");
    assert!(matches!(err, SpawnError::BadName { .. }), "{err:?}");
}

#[test]
fn step2_a_panicking_body_is_reported_by_join() {
    let _outcome = testkit::record!();
    let m = MBuilder::new("ex02-panic")
        .spawn(|| panic!("boom"))
        .unwrap();
    assert!(m.join().is_err(), "join returns Err when the body panicked");
}

#[test]
fn step3_pins_a_thread_to_one_cpu() {
    let _outcome = testkit::record!();
    let cpu = *allowed_cpus().unwrap().last().unwrap();
    let (seen, tid) = watchdog("a pinned M", DEFAULT_LIMIT, move || {
        let m = MBuilder::new("ex02-pinned")
            .cpus(&[cpu])
            .spawn(move || {
                // SAFETY: sched_getcpu has no preconditions.
                unsafe { libc::sched_getcpu() }
            })
            .unwrap();
        let tid = m.tid();
        (m.join().unwrap(), tid)
    });
    assert_eq!(
        seen, cpu as i32,
        "a thread pinned to CPU {cpu} ran on CPU {seen} (tid {tid})"
    );
}

#[test]
fn step3_pins_the_calling_thread() {
    let _outcome = testkit::record!();
    let cpu = allowed_cpus().unwrap()[0];
    let allowed = std::thread::spawn(move || {
        pin_current_thread(&[cpu]).unwrap();
        task_status_field(current_tid(), "Cpus_allowed_list")
    })
    .join()
    .unwrap();
    assert_eq!(allowed, cpu.to_string());
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
        } => assert!(!allowed.is_empty()),
        other => panic!("expected BadCpu {{ cpu: Some(4000), .. }}, got {other:?}"),
    }
    assert!(
        err.to_string().contains("4000"),
        "the message names the CPU: {err}"
    );
    let err = MBuilder::new("ex02-nocpu")
        .cpus(&[])
        .spawn(|| ())
        .expect_err("empty set");
    assert!(
        matches!(err, SpawnError::BadCpu { cpu: None, .. }),
        "{err:?}"
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
        let tids = rt.block_on(|| gmp::metrics().unwrap().m_tids);
        for (i, tid) in tids.iter().enumerate() {
            assert_eq!(
                comm(*tid),
                format!("gmp-m{i}"),
                "M{i} is named by your MBuilder"
            );
        }
        tids
    });
    assert_eq!(tids.len(), 2);
    assert_ne!(tids[0], tids[1]);
}

#[test]
fn whole_runtime_pins_ms_when_asked() {
    let _outcome = testkit::record!();
    watchdog("gmp runtime with pinned Ms", DEFAULT_LIMIT, || {
        let cpus = allowed_cpus().unwrap();
        let rt = gmp::Runtime::builder()
            .procs(2)
            .pin_ms(true)
            .build()
            .unwrap();
        let tids = rt.block_on(|| gmp::metrics().unwrap().m_tids);
        for (i, tid) in tids.iter().enumerate() {
            let want = cpus[i % cpus.len()].to_string();
            assert_eq!(task_status_field(*tid, "Cpus_allowed_list"), want, "M{i}");
        }
    });
}

#[test]
fn whole_runtime_reports_a_bad_stack_size() {
    let _outcome = testkit::record!();
    let err = match gmp::Runtime::builder().procs(1).m_stack_size(1024).build() {
        Ok(_) => panic!("a 1 KiB M stack must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("M 0") && err.contains("1024"),
        "names the M and the size: {err}"
    );
}
