//! Tests for part 04, `context`. The exercise and the solution run this same file.
//!
//! `stepN_…` tests follow the steps of chapter 4. A wrong stack switch does not fail, it
//! crashes; so every test that switches runs in its own process (`testkit::isolated`) and a
//! crash becomes a red test that says which signal and what it usually means.

use std::arch::asm;
use std::time::Duration;

use context::{Context, MIN_STACK, StackTooSmall, prepare, switch};
use testkit::isolated;

const LIMIT: Duration = Duration::from_secs(20);
const STEP1: &str = "ch04-context.html#step-1";
const STEP2: &str = "ch04-context.html#step-2";
const STEP3: &str = "ch04-context.html#step-3";
/// The asm engine runs every G on part 04's fibers (`prepare_fiber` and `resume`).
const RUNTIME: &str = STEP3;
const CRASH_HINT: &str = "A crash in a switch usually means a wrong stack pointer or return \
    address was restored: check the offsets of Context, that rsp is loaded last, and that \
    prepare left the trampoline's address at the new rsp (book: ch04-context.html#step-2).";

/// A 16-byte-aligned stack of `bytes` bytes, and its top.
struct Stack {
    memory: Vec<u128>,
}

impl Stack {
    fn new(bytes: usize) -> Stack {
        Stack {
            memory: vec![0; bytes / 16],
        }
    }
    fn len(&self) -> usize {
        self.memory.len() * 16
    }
    fn bottom(&self) -> usize {
        self.memory.as_ptr() as usize
    }
    fn top(&mut self) -> *mut u8 {
        // SAFETY: one past the end of the allocation is a valid pointer to form.
        unsafe { self.memory.as_mut_ptr().add(self.memory.len()).cast() }
    }
}

/// What a test context shares with the test: both contexts and what the entry function saw.
struct Shared {
    main: Context,
    coro: Context,
    seen: Vec<usize>,
}

impl Shared {
    fn new() -> Box<Shared> {
        Box::new(Shared {
            main: Context::default(),
            coro: Context::default(),
            seen: Vec::new(),
        })
    }
}

/// Records its argument, then counts 0, 1, 2, … one number per switch back.
extern "C" fn counter(arg: usize) -> ! {
    let shared = arg as *mut Shared;
    for i in 0.. {
        // SAFETY: `arg` is the Box<Shared> of the test, alive while this context runs, and
        // the test is suspended in `switch` while we touch it.
        unsafe {
            (*shared).seen.push(i);
            switch(&raw mut (*shared).coro, &raw const (*shared).main);
        }
    }
    unreachable!()
}

/// Starts `entry` on `stack` and switches into it `rounds` times.
fn run_rounds(stack: &mut Stack, entry: context::Entry, shared: &mut Shared, rounds: usize) {
    let me = shared as *mut Shared;
    // SAFETY: the stack outlives the rounds below and is used by nothing else.
    shared.coro = unsafe { prepare(stack.top(), stack.len(), entry, me as usize) }
        .expect("expected Ok: the test stacks are big enough (book: ch04-context.html#step-1)");
    for _ in 0..rounds {
        // SAFETY: coro was prepared or saved by a switch and is not running.
        unsafe { switch(&raw mut (*me).main, &raw const (*me).coro) };
    }
}

#[test]
fn step1_prepare_refuses_a_tiny_stack() {
    let _outcome = testkit::record!();
    let mut stack = Stack::new(1024);
    // SAFETY: prepare must refuse before writing anything.
    let err = unsafe { prepare(stack.top(), stack.len(), counter, 0) }.expect_err(
        "expected Err: a 1 KiB stack is below MIN_STACK (book: ch04-context.html#step-1)",
    );
    assert_eq!(
        err,
        StackTooSmall { len: 1024 },
        "expected the refused length in the error (book: {STEP1})"
    );
    assert!(
        err.to_string().contains(&MIN_STACK.to_string()),
        "expected the message to name the minimum, got: {err} (book: {STEP1})"
    );
}

#[test]
fn step1_prepare_aligns_the_stack_as_the_abi_wants() {
    let _outcome = testkit::record!();
    let mut stack = Stack::new(16 << 10);
    // An odd top: prepare must align it down itself.
    // SAFETY: top - 3 is inside the allocation; the stack is ours.
    let ctx = unsafe { prepare(stack.top().sub(3), stack.len() - 3, counter, 0) }
        .expect("expected Ok: 16 KiB is enough (book: ch04-context.html#step-1)");
    let sp = ctx.stack_pointer();
    assert!(
        sp >= stack.bottom() && sp < stack.top() as usize,
        "expected rsp inside the given stack, got {sp:#x} (book: {STEP1})"
    );
    assert_eq!(
        sp % 16,
        8,
        "rsp {sp:#x}: `ret` must leave rsp 16-byte aligned in the trampoline (book: {STEP1})"
    );
    // SAFETY: sp is inside our stack, 8-aligned.
    let ret = unsafe { *(sp as *const usize) };
    assert!(
        ret != 0 && !(stack.bottom()..stack.top() as usize).contains(&ret),
        "the word at rsp ({ret:#x}) must be a code address for `ret` to jump to (book: {STEP1})"
    );
}

#[test]
fn step2_switch_enters_and_comes_back() {
    let _outcome = testkit::record!();
    isolated(
        "step2_switch_enters_and_comes_back",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stack = Stack::new(64 << 10);
            let mut shared = Shared::new();
            run_rounds(&mut stack, counter, &mut shared, 1000);
            assert_eq!(
                shared.seen,
                (0..1000).collect::<Vec<_>>(),
                "each switch runs one step (book: {STEP2})"
            );
        },
    );
}

extern "C" fn record_arg_and_stack(arg: usize) -> ! {
    let shared = arg as *mut Shared;
    let local = 0u8;
    // SAFETY: as in `counter`.
    unsafe {
        (*shared).seen.push(arg);
        (*shared).seen.push(&local as *const u8 as usize);
        switch(&raw mut (*shared).coro, &raw const (*shared).main);
    }
    unreachable!("never resumed")
}

#[test]
fn step2_entry_gets_its_argument_and_runs_on_the_new_stack() {
    let _outcome = testkit::record!();
    isolated(
        "step2_entry_gets_its_argument_and_runs_on_the_new_stack",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stack = Stack::new(64 << 10);
            let mut shared = Shared::new();
            let arg = &mut *shared as *mut Shared as usize;
            run_rounds(&mut stack, record_arg_and_stack, &mut shared, 1);
            assert_eq!(
                shared.seen[0], arg,
                "entry(arg) receives prepare's arg in rdi (book: {STEP2})"
            );
            let local = shared.seen[1];
            assert!(
                (stack.bottom()..stack.top() as usize).contains(&local),
                "a local of the entry function lives at {local:#x}, outside the stack it was given (book: {STEP2})"
            );
        },
    );
}

/// Switches back with every callee-saved register overwritten.
extern "C" fn clobber_and_return(arg: usize) -> ! {
    let shared = arg as *mut Shared;
    // SAFETY: `switch` is called with valid contexts (as in `counter`); the garbage in the
    // callee-saved registers is never used, since this context is never resumed.
    unsafe {
        asm!(
            "mov rbx, 0xbad1", "mov rbp, 0xbad2", "mov r12, 0xbad3",
            "mov r13, 0xbad4", "mov r14, 0xbad5", "mov r15, 0xbad6",
            "call {switch}",
            "ud2",
            switch = sym switch,
            in("rdi") &raw mut (*shared).coro,
            in("rsi") &raw const (*shared).main,
            options(noreturn),
        )
    }
}

#[test]
fn step2_callee_saved_registers_survive_a_round_trip() {
    let _outcome = testkit::record!();
    isolated(
        "step2_callee_saved_registers_survive_a_round_trip",
        LIMIT,
        CRASH_HINT,
        || {
            // First an ordinary round trip, so an unfinished switch fails here with its message.
            let mut warm_up = Stack::new(16 << 10);
            run_rounds(&mut warm_up, counter, &mut Shared::new(), 1);

            let mut stack = Stack::new(64 << 10);
            let mut shared = Shared::new();
            let me = &mut *shared as *mut Shared;
            // SAFETY: as in run_rounds.
            shared.coro =
                unsafe { prepare(stack.top(), stack.len(), clobber_and_return, me as usize) }
                    .expect("expected Ok: 64 KiB is enough");
            let (rbx, rbp, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64);
            // SAFETY: rbx and rbp are saved and restored around the call by push/pop, the others
            // are declared outputs; `switch` follows the C ABI, whose clobbers are declared.
            unsafe {
                asm!(
                    "push rbx", "push rbp",
                    "mov rbx, 0x1111", "mov rbp, 0x2222", "mov r12, 0x3333",
                    "mov r13, 0x4444", "mov r14, 0x5555", "mov r15, 0x6666",
                    "call {switch}",
                    "mov rax, rbx", "mov rcx, rbp",
                    "pop rbp", "pop rbx",
                    switch = sym switch,
                    in("rdi") &raw mut (*me).main,
                    in("rsi") &raw const (*me).coro,
                    out("rax") rbx, out("rcx") rbp,
                    out("r12") r12, out("r13") r13, out("r14") r14, out("r15") r15,
                    clobber_abi("C"),
                );
            }
            let got = [rbx, rbp, r12, r13, r14, r15];
            assert_eq!(
                got,
                [0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666],
                "rbx, rbp, r12-r15 must come back as they were (book: ch04-context.html#step-2)"
            );
        },
    );
}

struct Ring {
    contexts: [Context; 4], // 0: the test, 1-3: the workers
    order: Vec<usize>,
}

extern "C" fn ring_worker(arg: usize) -> ! {
    let (ring, me) = (arg & !7, arg & 7);
    let ring = ring as *mut Ring;
    for _ in 0..100 {
        let next = (me % 3) + 1; // 1 -> 2 -> 3 -> 1 ...
        // SAFETY: the Ring outlives every worker; only the running context touches it.
        unsafe {
            (*ring).order.push(me);
            let to = if (*ring).order.len() == 300 { 0 } else { next };
            switch(
                &raw mut (*ring).contexts[me],
                &raw const (*ring).contexts[to],
            );
        }
    }
    unreachable!("the last worker switches to the test")
}

#[test]
fn step2_three_contexts_pass_the_cpu_round_robin() {
    let _outcome = testkit::record!();
    isolated(
        "step2_three_contexts_pass_the_cpu_round_robin",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stacks: Vec<Stack> = (0..3).map(|_| Stack::new(32 << 10)).collect();
            let mut ring = Box::new(Ring {
                contexts: Default::default(),
                order: Vec::new(),
            });
            let base = &mut *ring as *mut Ring as usize;
            assert_eq!(
                base & 7,
                0,
                "a Box<Ring> is 8-aligned: its low bits carry the index"
            );
            for (i, stack) in stacks.iter_mut().enumerate() {
                // SAFETY: each stack outlives the ring's run and is used by one context only.
                ring.contexts[i + 1] =
                    unsafe { prepare(stack.top(), stack.len(), ring_worker, base | (i + 1)) }
                        .expect("expected Ok: 32 KiB is enough");
            }
            let r = &mut *ring as *mut Ring;
            // SAFETY: context 1 is prepared; the last worker switches back to context 0.
            unsafe { switch(&raw mut (*r).contexts[0], &raw const (*r).contexts[1]) };
            let expected: Vec<usize> = (0..300).map(|i| i % 3 + 1).collect();
            assert_eq!(
                ring.order, expected,
                "each worker resumes exactly where it left off (book: {STEP2})"
            );
        },
    );
}

// Step 3: fibers, entered with a call (resume) and left with the matching ret (suspend).

use context::{Fiber, prepare_fiber, resume, suspend};

struct FiberLog {
    fiber: Fiber,
    seen: Vec<usize>,
}

/// Logs 0, 1, 2, … one number per resume.
extern "C" fn fiber_counter(arg: usize, fiber: *mut Fiber) -> ! {
    let log = arg as *mut FiberLog;
    for i in 0.. {
        // SAFETY: `arg` is the test's Box<FiberLog>, alive while the fiber runs; the test
        // is inside `resume` while we touch it, and `fiber` is our own Fiber.
        unsafe {
            (*log).seen.push(i);
            suspend(fiber);
        }
    }
    unreachable!()
}

#[test]
fn step3_resume_runs_a_fiber_until_it_suspends() {
    let _outcome = testkit::record!();
    isolated(
        "step3_resume_runs_a_fiber_until_it_suspends",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stack = Stack::new(64 << 10);
            let mut log = Box::new(FiberLog {
                fiber: Fiber::default(),
                seen: Vec::new(),
            });
            let arg = &mut *log as *mut FiberLog as usize;
            // SAFETY: the stack outlives the fiber's use below.
            log.fiber = unsafe { prepare_fiber(stack.top(), stack.len(), fiber_counter, arg) }
                .expect("expected Ok: 64 KiB is enough");
            for _ in 0..1000 {
                // SAFETY: the fiber is prepared or suspended, and its stack is alive.
                unsafe { resume(&raw mut log.fiber) };
            }
            assert_eq!(
                log.seen,
                (0..1000).collect::<Vec<_>>(),
                "each resume runs one step (book: {STEP3})"
            );
        },
    );
}

extern "C" fn fiber_where(arg: usize, fiber: *mut Fiber) -> ! {
    let log = arg as *mut FiberLog;
    let local = 0u8;
    // SAFETY: as in fiber_counter.
    unsafe {
        (*log).seen.push(arg);
        (*log).seen.push(&local as *const u8 as usize);
        (*log).seen.push(fiber as usize);
        suspend(fiber);
    }
    unreachable!("never resumed again")
}

#[test]
fn step3_a_fiber_gets_its_argument_and_runs_on_its_stack() {
    let _outcome = testkit::record!();
    isolated(
        "step3_a_fiber_gets_its_argument_and_runs_on_its_stack",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stack = Stack::new(64 << 10);
            let mut log = Box::new(FiberLog {
                fiber: Fiber::default(),
                seen: Vec::new(),
            });
            let arg = &mut *log as *mut FiberLog as usize;
            // SAFETY: as above.
            log.fiber = unsafe { prepare_fiber(stack.top(), stack.len(), fiber_where, arg) }
                .expect("expected Ok: 64 KiB is enough");
            // SAFETY: as above.
            unsafe { resume(&raw mut log.fiber) };
            assert_eq!(
                log.seen[0], arg,
                "entry(arg, fiber) receives prepare_fiber's arg (book: {STEP3})"
            );
            let local = log.seen[1];
            assert!(
                (stack.bottom()..stack.top() as usize).contains(&local),
                "a local of the entry function lives at {local:#x}, outside the fiber's stack (book: {STEP3})"
            );
            assert_eq!(
                log.seen[2], &raw mut log.fiber as usize,
                "entry gets its own Fiber (book: {STEP3})"
            );
        },
    );
}

/// Suspends with r12-r15 overwritten; resume must give the resumer its own back.
extern "C" fn fiber_clobber(_arg: usize, fiber: *mut Fiber) -> ! {
    loop {
        // SAFETY: r12-r15 are declared as outputs, so the compiler expects them changed.
        unsafe {
            asm!(
                "mov r12, 0xbad3", "mov r13, 0xbad4", "mov r14, 0xbad5", "mov r15, 0xbad6",
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            );
            suspend(fiber);
        }
    }
}

#[test]
fn step3_resume_keeps_the_resumers_callee_saved_registers() {
    let _outcome = testkit::record!();
    isolated(
        "step3_resume_keeps_the_resumers_callee_saved_registers",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stack = Stack::new(64 << 10);
            // SAFETY: as above.
            let mut fiber = Box::new(
                unsafe { prepare_fiber(stack.top(), stack.len(), fiber_clobber, 0) }
                    .expect("expected Ok: 64 KiB is enough"),
            );
            let f = &raw mut *fiber;
            let (rbx, rbp, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64);
            // SAFETY: rbx and rbp are saved and restored around the call by push/pop, the others
            // are declared outputs; `resume` follows the C ABI, whose clobbers are declared.
            unsafe {
                asm!(
                    "push rbx", "push rbp",
                    "mov rbx, 0x1111", "mov rbp, 0x2222", "mov r12, 0x3333",
                    "mov r13, 0x4444", "mov r14, 0x5555", "mov r15, 0x6666",
                    "call {resume}",
                    "mov rax, rbx", "mov rcx, rbp",
                    "pop rbp", "pop rbx",
                    resume = sym resume,
                    in("rdi") f,
                    out("rax") rbx, out("rcx") rbp,
                    out("r12") r12, out("r13") r13, out("r14") r14, out("r15") r15,
                    clobber_abi("C"),
                );
            }
            let got = [rbx, rbp, r12, r13, r14, r15];
            assert_eq!(
                got,
                [0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666],
                "rbx, rbp, r12-r15 must come back as they were (book: ch04-context.html#step-3)"
            );
        },
    );
}

struct Scheduled {
    fibers: [Fiber; 3],
    order: Vec<usize>,
}

extern "C" fn fiber_worker(arg: usize, fiber: *mut Fiber) -> ! {
    let (sched, me) = ((arg & !7) as *mut Scheduled, arg & 7);
    loop {
        // SAFETY: the Scheduled outlives every fiber; only the running fiber touches it.
        unsafe {
            (*sched).order.push(me);
            suspend(fiber);
        }
    }
}

#[test]
fn step3_a_scheduler_loop_resumes_fibers_in_turn() {
    let _outcome = testkit::record!();
    isolated(
        "step3_a_scheduler_loop_resumes_fibers_in_turn",
        LIMIT,
        CRASH_HINT,
        || {
            let mut stacks: Vec<Stack> = (0..3).map(|_| Stack::new(32 << 10)).collect();
            let mut sched = Box::new(Scheduled {
                fibers: Default::default(),
                order: Vec::new(),
            });
            let base = &mut *sched as *mut Scheduled as usize;
            for (i, stack) in stacks.iter_mut().enumerate() {
                // SAFETY: each stack outlives the run and belongs to one fiber.
                sched.fibers[i] =
                    unsafe { prepare_fiber(stack.top(), stack.len(), fiber_worker, base | i) }
                        .expect("expected Ok: 32 KiB is enough");
            }
            // The shape of a one-P scheduler loop: g0 resumes each G in turn.
            for round in 0..100 {
                for i in 0..3 {
                    // SAFETY: each fiber is suspended between resumes.
                    unsafe { resume(&raw mut sched.fibers[i]) };
                    assert_eq!(
                        sched.order.len(),
                        round * 3 + i + 1,
                        "expected one step per resume (book: {STEP3})"
                    );
                }
            }
            let expected: Vec<usize> = (0..300).map(|i| i % 3).collect();
            assert_eq!(
                sched.order, expected,
                "each fiber resumes exactly where it left off (book: {STEP3})"
            );
        },
    );
}

// ---- Whole runtime: every G runs on your Fiber pair (the asm engine, feature mine-04). ----

fn asm_runtime() -> gmp::Runtime {
    let rt = gmp::Runtime::builder()
        .procs(1)
        .engine(gmp::Engine::Asm)
        .build()
        .expect("a runtime on the asm engine starts");
    assert_eq!(
        rt.engine(),
        gmp::Engine::Asm,
        "expected the asm engine, which runs Gs on your part (book: {RUNTIME})"
    );
    rt
}

#[test]
fn whole_runtime_gs_spawn_and_join_on_your_switch() {
    let _outcome = testkit::record!();
    let run = testkit::run_in_child(
        "whole_runtime_gs_spawn_and_join_on_your_switch",
        LIMIT,
        || {
            let sum = asm_runtime().block_on(|| {
                let hs: Vec<_> = (0..2_000u64).map(|i| gmp::go(move || i)).collect();
                hs.into_iter()
                    .map(|h| h.join().expect("a G that returns its number cannot panic"))
                    .sum::<u64>()
            });
            assert_eq!(
                sum,
                2_000 * 1_999 / 2,
                "expected every G to run once and return its number (book: {RUNTIME})"
            );
        },
    );
    assert!(run.success, "{CRASH_HINT}\n{run:?}");
}

#[test]
fn whole_runtime_ping_pong_and_yield_on_your_switch() {
    let _outcome = testkit::record!();
    let run = testkit::run_in_child(
        "whole_runtime_ping_pong_and_yield_on_your_switch",
        LIMIT,
        || {
            let (echoed, turns) = asm_runtime().block_on(|| {
                let (tx, rx) = gmp::chan::rendezvous::<u32>();
                let (back_tx, back_rx) = gmp::chan::rendezvous::<u32>();
                let echo = gmp::go(move || {
                    while let Ok(v) = rx.recv() {
                        back_tx
                            .send(v * 2)
                            .expect("the main G receives every answer");
                    }
                });
                let echoed: u32 = (0..1_000)
                    .map(|i| {
                        tx.send(i).expect("the echo G receives until the end");
                        back_rx.recv().expect("the echo G answers every number")
                    })
                    .sum();
                drop(tx);
                echo.join().expect("the echo G only echoes");
                let turns = gmp::go(|| (0..1_000).map(|_| gmp::yield_now()).count());
                (echoed, turns.join().expect("a yielding G cannot panic"))
            });
            assert_eq!(
                echoed,
                2 * (1_000 * 999 / 2),
                "expected every number echoed doubled (book: {RUNTIME})"
            );
            assert_eq!(
                turns, 1_000,
                "expected 1000 yields to come back (book: {RUNTIME})"
            );
        },
    );
    assert!(run.success, "{CRASH_HINT}\n{run:?}");
}

#[test]
fn whole_runtime_a_panicking_g_leaves_your_switch_working() {
    let _outcome = testkit::record!();
    let run = testkit::run_in_child(
        "whole_runtime_a_panicking_g_leaves_your_switch_working",
        LIMIT,
        || {
            let after = asm_runtime().block_on(|| {
                let err = gmp::go(|| -> u32 { panic!("boom on a fiber") })
                    .join()
                    .expect_err("expected the G's panic to come back from join");
                assert_eq!(
                    err.message(),
                    Some("boom on a fiber"),
                    "expected the panic's own message (book: {RUNTIME})"
                );
                gmp::go(|| 7)
                    .join()
                    .expect("a G after a panicking one runs")
            });
            assert_eq!(
                after, 7,
                "expected the runtime to keep working after a G panicked (book: {RUNTIME})"
            );
        },
    );
    assert!(run.success, "{CRASH_HINT}\n{run:?}");
}
