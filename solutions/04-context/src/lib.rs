//! Part 04, `context`: switch from one stack to another in user space.
//!
//! What lives here: [`Context`], the registers a suspended computation needs to resume;
//! [`switch`], which saves the caller's into one `Context` and resumes another; and
//! [`prepare`], which lays out a fresh stack so that the first `switch` to it calls an entry
//! function with one argument.
//!
//! Go: `gogo` and `mcall` (`asm_amd64.s`) with the `gobuf` struct (`runtime2.go`). xv6:
//! `swtch.S` with `struct context`.
//!
//! ## Why so few registers
//!
//! `switch` is an ordinary function call as far as the caller knows. The System V ABI says a
//! callee may clobber rax, rcx, rdx, rsi, rdi, r8–r11 and the vector registers, so the
//! caller has already saved whatever it needed from them. Only the callee-saved registers
//! (rbx, rbp, r12–r15) and the stack pointer must come back as they were. The return
//! address is already on the stack, pushed by the `call`. Seven words in all; a kernel switch
//! saves every register, the FPU/vector state and more.
//!
//! Invariant: a `Context` describes a stack that is suspended inside `switch` (or, once,
//! freshly prepared); resuming it any other way is undefined behaviour.
//!
//! Not here: where stacks come from (part 05), which G to run next (the scheduler).
//!
//! Book: chapter 4, "Switching in user space" (`book/src/ch04-context.md`).
#![warn(missing_docs)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "part 04 `context` has a stack switch for x86_64 only; supported targets: \
     x86_64-unknown-linux-gnu (and other x86_64 System V targets)"
);

use std::arch::{asm, naked_asm};
use std::mem::offset_of;

/// The saved state of a suspended stack: its stack pointer and the callee-saved registers.
///
/// The field order is the layout `switch` reads and writes; the offsets are checked below.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Context {
    rsp: usize,
    rbx: usize,
    rbp: usize,
    r12: usize,
    r13: usize,
    r14: usize,
    r15: usize,
}

// The asm below addresses fields by these offsets; fail the build if the struct drifts.
const _: () = {
    assert!(offset_of!(Context, rsp) == 0x00);
    assert!(offset_of!(Context, rbx) == 0x08);
    assert!(offset_of!(Context, rbp) == 0x10);
    assert!(offset_of!(Context, r12) == 0x18);
    assert!(offset_of!(Context, r13) == 0x20);
    assert!(offset_of!(Context, r14) == 0x28);
    assert!(offset_of!(Context, r15) == 0x30);
};

impl Context {
    /// The saved stack pointer (where the stack will resume).
    pub fn stack_pointer(&self) -> usize {
        self.rsp
    }
}

/// Saves the caller's registers into `*from` and resumes the stack saved in `*to`.
///
/// Returns when some other `switch` resumes `*from`. The ABI is `"C-unwind"` only so that an
/// unfinished exercise's `todo!` panic can unwind into its test; this assembly never unwinds.
///
/// # Safety
///
/// `from` must be valid for writes and `to` must hold a context saved by `switch` or made by
/// [`prepare`] whose stack is still alive and not running. `from` and `to` may not be the
/// same context.
#[unsafe(naked)]
pub unsafe extern "C-unwind" fn switch(from: *mut Context, to: *const Context) {
    // On entry: rdi = from, rsi = to, [rsp] = the caller's return address.
    naked_asm!(
        // Save: the stack pointer (still pointing at our return address) and the
        // callee-saved registers.
        "mov [rdi + 0x00], rsp",
        "mov [rdi + 0x08], rbx",
        "mov [rdi + 0x10], rbp",
        "mov [rdi + 0x18], r12",
        "mov [rdi + 0x20], r13",
        "mov [rdi + 0x28], r14",
        "mov [rdi + 0x30], r15",
        // Restore the other side's, stack pointer last…
        "mov rbx, [rsi + 0x08]",
        "mov rbp, [rsi + 0x10]",
        "mov r12, [rsi + 0x18]",
        "mov r13, [rsi + 0x20]",
        "mov r14, [rsi + 0x28]",
        "mov r15, [rsi + 0x30]",
        "mov rsp, [rsi + 0x00]",
        // …and return on its stack: into its own call of `switch`, or, for a fresh stack,
        // into `trampoline`.
        "ret",
    )
}

/// First code run on a fresh stack; `prepare` left the entry function in r12 and its
/// argument in r13.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() {
    // On entry: rsp is 16-byte aligned (prepare arranged it), so the `call` below gives
    // the entry function the alignment the ABI promises.
    naked_asm!(
        "mov rdi, r13",
        "call r12",
        // The entry function must never return: there is no caller on this stack.
        "call {returned}",
        "ud2",
        returned = sym entry_returned,
    )
}

extern "C" fn entry_returned() -> ! {
    eprintln!(
        "context: an entry function returned; it must switch away instead, since nothing \
         called it on its stack"
    );
    std::process::abort()
}

/// The type of a function a fresh stack starts in. It must never return: nothing called it
/// on its stack, so there is nowhere to return to. It ends by switching away for good.
pub type Entry = extern "C" fn(arg: usize) -> !;

/// The smallest stack [`prepare`] accepts: room for the entry function's first frames.
pub const MIN_STACK: usize = 4096;

/// [`prepare`] was given a stack it cannot use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackTooSmall {
    /// Bytes given.
    pub len: usize,
}

impl std::fmt::Display for StackTooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {}-byte stack is too small to start a context on: give at least {MIN_STACK} bytes",
            self.len
        )
    }
}

impl std::error::Error for StackTooSmall {}

/// Lays out a fresh stack of `len` bytes ending at `stack_top`, so that the first
/// [`switch`] to the returned context calls `entry(arg)` on it.
///
/// ```text
///   top = stack_top aligned down to 16
///   ┌───────────────────────┐ <- top
///   │ address of trampoline │    popped by `ret` in switch
///   └───────────────────────┘ <- rsp of the context (top - 8)
///   r12 = entry, r13 = arg, rbp = 0 (ends frame-pointer backtraces)
/// ```
///
/// # Safety
///
/// The `len` bytes below `stack_top` must be writable, stay alive, and be used by nothing
/// else for as long as the context may run.
pub unsafe fn prepare(
    stack_top: *mut u8,
    len: usize,
    entry: Entry,
    arg: usize,
) -> Result<Context, StackTooSmall> {
    if len < MIN_STACK {
        return Err(StackTooSmall { len });
    }
    let top = (stack_top as usize) & !15;
    // `ret` pops the slot, leaving rsp = top (16-aligned) in the trampoline, whose `call`
    // then gives the entry function the ABI's "rsp ≡ 8 mod 16" on entry.
    let slot = top - 8;
    // SAFETY: the caller guarantees the len >= MIN_STACK bytes below stack_top are ours.
    unsafe { (slot as *mut usize).write(trampoline as *const () as usize) };
    Ok(Context {
        rsp: slot,
        rbx: 0,
        rbp: 0,
        r12: entry as *const () as usize,
        r13: arg,
        r14: 0,
        r15: 0,
    })
}

/// A stack run as a fiber: entered with [`resume`], which is a `call`, and left with
/// [`suspend`], which is the `ret` that matches it. See "Why balance call and ret" in
/// chapter 4: the CPU predicts each `ret` from the `call`s it saw, so a switch that returns
/// somewhere else (as [`switch`] does, twice per round trip) pays a misprediction each time.
///
/// Go: the asymmetric pair is `mcall` (from a G to g0) and `gogo` (from g0 to a G).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Fiber {
    /// While the fiber runs: the resumer's stack pointer, whose top word is the return
    /// address into `resume`.
    resumer_rsp: usize,
    /// While the fiber is suspended: its stack pointer, whose top word is where it resumes.
    fiber_rsp: usize,
}

const _: () = {
    assert!(offset_of!(Fiber, resumer_rsp) == 0x00);
    assert!(offset_of!(Fiber, fiber_rsp) == 0x08);
};

/// The function a fiber starts in. It must never return; it ends by suspending for good.
pub type FiberEntry = extern "C" fn(arg: usize, fiber: *mut Fiber) -> !;

/// Runs `fiber` until it calls [`suspend`]. The resumer's callee-saved registers are kept on
/// its own stack across the call.
///
/// # Safety
///
/// `fiber` must come from [`prepare_fiber`] and be suspended (not running), with its stack
/// alive. Any thread may resume a fiber, one at a time.
#[unsafe(naked)]
pub unsafe extern "C-unwind" fn resume(fiber: *mut Fiber) {
    // On entry: rdi = fiber, [rsp] = our caller's return address.
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // The fiber's side expects rcx = fiber and rdx = its saved rsp.
        "mov rcx, rdi",
        "mov rdx, [rcx + 0x08]",
        // Enter it: the `call` pushes our return address, which its suspend will `ret` to.
        "call [rdx]",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// Leaves the running fiber and returns into the `resume` that entered it; returns here when
/// the fiber is resumed again.
///
/// Inlined into the fiber's code on purpose: its `ret` is the one that matches `resume`'s
/// `call`, and a call to a separate `suspend` function would put another return address in
/// between.
///
/// # Safety
///
/// Only code running on `fiber`'s own stack may call it.
#[inline(always)]
pub unsafe fn suspend(fiber: *mut Fiber) {
    // SAFETY: the caller runs on `fiber`'s stack, so `resumer_rsp` holds a live resumer's
    // stack pointer. r12-r15 and the C ABI's scratch registers are declared clobbered (they
    // hold the resumer's values when we come back); rbx and rbp cannot be operands, so they
    // are saved on the fiber's stack by hand.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            // Where to resume: label 2 below.
            "lea rax, [rip + 2f]",
            "push rax",
            "mov [rcx + 0x08], rsp",
            // Back to the resumer: its rsp points at the return address of its `call`.
            "mov rsp, [rcx + 0x00]",
            "ret",
            // Resumed: `resume` set rcx = fiber, rdx = our saved rsp.
            "2:",
            "mov [rcx + 0x00], rsp",
            "lea rsp, [rdx + 8]",
            "pop rbx",
            "pop rbp",
            in("rcx") fiber,
            out("rdx") _,
            out("rax") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        )
    }
}

/// First code of a fresh fiber, reached by `resume`'s `call`: rcx = fiber, rdx = its rsp,
/// and the two words above the return slot hold `arg` and `entry` (see `prepare_fiber`).
#[unsafe(naked)]
unsafe extern "C" fn fiber_start() {
    naked_asm!(
        "mov [rcx + 0x00], rsp",
        "lea rsp, [rdx + 8]",
        // rsp is now 16-byte aligned (prepare_fiber arranged it): a `call` is ABI-correct.
        "mov rdi, [rsp]",
        "mov rsi, rcx",
        "call [rsp + 8]",
        "call {returned}",
        "ud2",
        returned = sym entry_returned,
    )
}

/// Lays out a fresh fiber on the `len` bytes below `stack_top`: the first [`resume`] calls
/// `entry(arg, fiber)` on it.
///
/// ```text
///   top = stack_top aligned down to 16
///   top - 8   entry                      read by fiber_start
///   top - 16  arg                        read by fiber_start
///   top - 24  address of fiber_start  <- fiber_rsp (called by resume)
/// ```
///
/// # Safety
///
/// As for [`prepare`]: the memory must be writable, alive and used by nothing else while
/// the fiber may run.
pub unsafe fn prepare_fiber(
    stack_top: *mut u8,
    len: usize,
    entry: FiberEntry,
    arg: usize,
) -> Result<Fiber, StackTooSmall> {
    if len < MIN_STACK {
        return Err(StackTooSmall { len });
    }
    let top = (stack_top as usize) & !15;
    let slot = top - 24;
    // SAFETY: the caller guarantees the len >= MIN_STACK bytes below stack_top are ours.
    unsafe {
        (slot as *mut usize).write(fiber_start as *const () as usize);
        ((slot + 8) as *mut usize).write(arg);
        ((slot + 16) as *mut usize).write(entry as *const () as usize);
    }
    Ok(Fiber {
        resumer_rsp: 0,
        fiber_rsp: slot,
    })
}
