//! The G engine: runs a G's code on its own stack and switches between it and g0.
//!
//! Two engines with one shape, chosen per runtime ([`Engine`], `Builder::engine`,
//! `GMP_ENGINE`):
//!
//! - default: corosensei's `Coroutine` (unwinds a G's stack when a waiting G is dropped at
//!   shutdown, so its destructors run);
//! - `asm` (the default with feature `engine-asm`): part 04's `Fiber` pair, the switch
//!   written in chapter 4, x86_64 only. A G
//!   still waiting at shutdown cannot be unwound: its stack is leaked, not reused, since
//!   another thread may still hold a pointer into it (a channel's waiter slot).
//!
//! The G side holds a `Suspender`; g0 holds the `Context`. Both live inside the runtime's
//! G (`g.rs`), which never moves (it is behind an `Arc`).
//!
//! Not here: which G runs next (`sched/`), G states (part 06), stacks (part 05).

use crate::parts::stack::GStack;

/// Why a G switched back to g0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SwitchOut {
    /// `yield_now`: still runnable.
    Yield,
    /// `park`: the state says parking (part 06); g0 finishes the park.
    Park,
    /// The G's function returned (or panicked; the panic was caught inside).
    Exit,
}

/// A G's function, wrapped so that the G's own panics never unwind out of it (a part
/// panicking while the body wakes a joiner still can; each engine carries that to g0).
pub(crate) use crate::task::Body;

/// Which engine runs the Gs of a runtime; see [`Builder::engine`](crate::Builder::engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// corosensei's `Coroutine` (the default).
    Corosensei,
    /// Part 04's `Fiber` pair, chapter 4's switch (x86_64 only).
    Asm,
}

impl Engine {
    /// The engine's name, as `GMP_ENGINE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Corosensei => "corosensei",
            Engine::Asm => "asm",
        }
    }

    /// The engine a runtime uses unless told otherwise: `asm` with feature `engine-asm`,
    /// else `corosensei`.
    pub const DEFAULT: Engine = if cfg!(feature = "engine-asm") {
        Engine::Asm
    } else {
        Engine::Corosensei
    };
}

/// The G side of either engine: how the G's code gets back to g0.
pub(crate) struct Suspender {
    engine: Engine,
    coro: coro::Suspender,
    #[cfg(target_arch = "x86_64")]
    asm: asm::Suspender,
}

impl Suspender {
    pub(crate) fn new(engine: Engine) -> Suspender {
        Suspender {
            engine,
            coro: coro::Suspender::new(),
            #[cfg(target_arch = "x86_64")]
            asm: asm::Suspender::new(),
        }
    }

    /// Switches to g0, which sees `why`; returns when g0 resumes this G.
    ///
    /// # Safety
    ///
    /// Only the G's own code, running on its stack, may call this.
    #[inline(always)]
    pub(crate) unsafe fn suspend(&self, why: SwitchOut) {
        match self.engine {
            // SAFETY: the caller's promise, passed on.
            Engine::Corosensei => unsafe { self.coro.suspend(why) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Engine::Asm => unsafe { self.asm.suspend(why) },
            #[cfg(not(target_arch = "x86_64"))]
            Engine::Asm => unreachable!("the builder refuses the asm engine off x86_64"),
        }
    }
}

/// g0's side of a G: its stack and saved context, in one engine or the other.
pub(crate) enum Context {
    Coro(coro::Engine),
    #[cfg(target_arch = "x86_64")]
    Asm(asm::Engine),
}

impl Context {
    /// # Safety
    ///
    /// `suspender` must outlive the context and not move (it lives beside it in the G).
    pub(crate) unsafe fn new(
        stack: GStack,
        suspender: *const Suspender,
        body: Body,
    ) -> Result<Context, (String, Body)> {
        // SAFETY: the caller's promise, passed on to the engine's half of the suspender.
        unsafe {
            match (*suspender).engine {
                Engine::Corosensei => {
                    coro::Engine::new(stack, &(*suspender).coro, body).map(Context::Coro)
                }
                #[cfg(target_arch = "x86_64")]
                Engine::Asm => asm::Engine::new(stack, &(*suspender).asm, body).map(Context::Asm),
                #[cfg(not(target_arch = "x86_64"))]
                Engine::Asm => Err(("the asm engine supports x86_64 only".to_string(), body)),
            }
        }
    }

    /// Runs the G until it switches out.
    pub(crate) fn resume(&mut self) -> SwitchOut {
        match self {
            Context::Coro(e) => e.resume(),
            #[cfg(target_arch = "x86_64")]
            Context::Asm(e) => e.resume(),
        }
    }

    /// Will dropping this context leak its stack, with whatever the G had on it (a G the
    /// asm engine left suspended)? Those frames then stay in memory and never run again.
    pub(crate) fn leaks_stack(&self) -> bool {
        match self {
            Context::Coro(_) => false,
            #[cfg(target_arch = "x86_64")]
            Context::Asm(e) => !e.finished,
        }
    }

    /// The stack of a G that ran to its end, for the next G; `None` if it did not finish.
    pub(crate) fn into_stack(self) -> Option<GStack> {
        match self {
            Context::Coro(e) => e.into_stack(),
            #[cfg(target_arch = "x86_64")]
            Context::Asm(e) => e.into_stack(),
        }
    }
}

mod coro {
    use std::cell::Cell;
    use std::ptr;

    use corosensei::{Coroutine, CoroutineResult, Yielder};

    use super::{Body, GStack, SwitchOut};

    /// The G's side: how to get back to g0.
    pub(crate) struct Suspender {
        yielder: Cell<*const Yielder<(), SwitchOut>>,
    }

    impl Suspender {
        pub(crate) fn new() -> Suspender {
            Suspender {
                yielder: Cell::new(ptr::null()),
            }
        }

        /// Switches to g0, which sees `why`; returns when g0 resumes this G.
        ///
        /// # Safety
        ///
        /// Only the G's own code, running on its stack, may call this.
        pub(crate) unsafe fn suspend(&self, why: SwitchOut) {
            let yielder = self.yielder.get();
            // SAFETY: the coroutine stored its yielder before running any G code, and the
            // yielder lives on the coroutine's stack for as long as that code runs (we are
            // that code, by the caller's promise).
            unsafe { (*yielder).suspend(why) }
        }
    }

    pub(crate) struct Engine {
        co: Coroutine<(), SwitchOut, (), GStack>,
    }

    impl Engine {
        /// # Safety
        ///
        /// `suspender` must outlive the engine and not move (it lives beside it in the G).
        pub(crate) unsafe fn new(
            stack: GStack,
            suspender: *const Suspender,
            body: Body,
        ) -> Result<Engine, (String, Body)> {
            let co = Coroutine::with_stack(stack, move |yielder: &Yielder<(), SwitchOut>, ()| {
                // SAFETY: the caller keeps `suspender` alive and in place while we run.
                unsafe { (*suspender).yielder.set(yielder) };
                body.run();
            });
            Ok(Engine { co })
        }

        /// Runs the G until it switches out.
        pub(crate) fn resume(&mut self) -> SwitchOut {
            match self.co.resume(()) {
                CoroutineResult::Yield(why) => why,
                CoroutineResult::Return(()) => SwitchOut::Exit,
            }
        }

        pub(crate) fn into_stack(self) -> Option<GStack> {
            self.co.done().then(|| self.co.into_stack())
        }
    }
    // Dropping a suspended Coroutine unwinds its stack (corosensei's forced unwind), which
    // runs the destructors of everything the G had on it.
}

#[cfg(target_arch = "x86_64")]
mod asm {
    use std::cell::{Cell, UnsafeCell};

    use crate::parts::context::{self, Fiber};

    use super::{Body, GStack, SwitchOut};

    /// The G's side: the fiber pair's shared record, and the reason it switched out.
    pub(crate) struct Suspender {
        fiber: UnsafeCell<Fiber>,
        why: Cell<SwitchOut>,
        body: Cell<Option<Body>>,
        /// A panic that escaped the body, for g0 to re-raise.
        panic: Cell<Option<Box<dyn std::any::Any + Send>>>,
    }

    impl Suspender {
        pub(crate) fn new() -> Suspender {
            Suspender {
                fiber: UnsafeCell::new(Fiber::default()),
                why: Cell::new(SwitchOut::Exit),
                body: Cell::new(None),
                panic: Cell::new(None),
            }
        }

        /// Switches to g0, which sees `why`; returns when g0 resumes this G.
        ///
        /// # Safety
        ///
        /// Only the G's own code, running on its stack, may call this.
        #[inline(always)]
        pub(crate) unsafe fn suspend(&self, why: SwitchOut) {
            self.why.set(why);
            // SAFETY: we run on this fiber's stack (the caller's promise), entered by
            // `Engine::resume`.
            unsafe { context::suspend(self.fiber.get()) }
        }
    }

    pub(crate) struct Engine {
        stack: Option<GStack>,
        suspender: *const Suspender,
        pub(super) finished: bool,
    }

    /// The first code on a G's fiber: run the body, then hand control back for good.
    extern "C" fn fiber_main(arg: usize, fiber: *mut Fiber) -> ! {
        let suspender = arg as *const Suspender;
        // SAFETY: `arg` is the Suspender that Engine::new prepared this fiber with; it
        // outlives the fiber (Engine::new's contract).
        let body = unsafe { (*suspender).body.take() };
        if let Some(body) = body {
            // The runtime catches the G's own panics inside `body`; what is left is a part
            // panicking as it wakes a joiner. It must not unwind out of this extern "C"
            // frame: carry it to g0, which re-raises it (and reports a broken runtime).
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.run()))
            {
                // SAFETY: as above.
                unsafe { (*suspender).panic.set(Some(payload)) };
            }
        }
        loop {
            // SAFETY: as above; we are on this fiber's stack. g0 never resumes it again.
            unsafe {
                (*suspender).why.set(SwitchOut::Exit);
                context::suspend(fiber);
            }
        }
    }

    impl Engine {
        /// # Safety
        ///
        /// `suspender` must outlive the engine and not move (it lives beside it in the G).
        pub(crate) unsafe fn new(
            stack: GStack,
            suspender: *const Suspender,
            body: Body,
        ) -> Result<Engine, (String, Body)> {
            let len = stack.top() - stack.bottom();
            // SAFETY: the stack's `len` bytes below top are ours until the GStack drops,
            // and the Engine keeps it.
            let fiber = match unsafe {
                context::prepare_fiber(stack.top() as *mut u8, len, fiber_main, suspender as usize)
            } {
                Ok(fiber) => fiber,
                // The body goes back to the G, which drops it as itself (not here, on g0).
                Err(e) => return Err((e.to_string(), body)),
            };
            // SAFETY: the caller keeps `suspender` alive; nothing runs on the fiber yet.
            unsafe {
                *(*suspender).fiber.get() = fiber;
                (*suspender).body.set(Some(body));
            }
            Ok(Engine {
                stack: Some(stack),
                suspender,
                finished: false,
            })
        }

        /// Runs the G until it switches out.
        pub(crate) fn resume(&mut self) -> SwitchOut {
            // SAFETY: the fiber was prepared on our stack and is suspended (g0 resumes a G
            // only when part 06 let it move it to running); `suspender` is alive (new's
            // contract).
            let why = unsafe {
                context::resume((*self.suspender).fiber.get());
                (*self.suspender).why.get()
            };
            self.finished = why == SwitchOut::Exit;
            // SAFETY: as above; the fiber is suspended, so nothing else touches the cell.
            if let Some(payload) = unsafe { (*self.suspender).panic.take() } {
                std::panic::resume_unwind(payload);
            }
            why
        }

        pub(crate) fn into_stack(mut self) -> Option<GStack> {
            if self.finished {
                self.stack.take()
            } else {
                None
            }
        }
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            // A body the fiber never took (it never ran): dropped with the engine, while
            // the G's runner still keeps what it borrows.
            // SAFETY: `suspender` is alive (new's contract) and the fiber is not running.
            drop(unsafe { (*self.suspender).body.take() });
            if !self.finished {
                // Suspended mid-function: its frames cannot be unwound, and something may
                // still point into them (a channel's waiter slot; any value pinned there,
                // whose memory Pin promises is not reused before its drop), so the stack is
                // never reused. The GStack keeps its pool, so this leaks the whole pool;
                // freeing the rest needs part 05 to give up one region for good, a change
                // to chapter 5's API not made (book: appendix, "Why Gs left at shutdown").
                std::mem::forget(self.stack.take());
            }
        }
    }
}
