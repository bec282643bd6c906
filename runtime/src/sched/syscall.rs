//! Blocking calls on the scheduler's side: the M's half of Go's `entersyscall` and
//! `exitsyscall` ([`Shared::call_blocking`]), the per-P home of a P whose M is in a call
//! ([`CallP`]), and how an M whose P was retaken gets one back while keeping its G.
//!
//! ## The hand-off around a call ("P hand-off around a blocking call")
//!
//! 1. Enter (M, on the G's stack): take the P out of the M's context, put it in its
//!    [`CallP::parked`], then `SyscallSlot::enter` (part 09). From now on the M has no P.
//! 2. Sysmon (`sysmon.rs`): a call seen in progress on two looks at least
//!    `Sysmon::should_retake` apart is retaken: `SyscallSlot::retake` and the take of
//!    `parked` happen under `parked`'s lock, so a won retake always finds the P there. The
//!    P goes to another M if it has work (Go: `handoffp` -> `startm`), else to the idle list.
//! 3. Exit (M): `SyscallSlot::exit`. `Kept`: the P is still in `parked`; take it back (Go:
//!    `exitsyscallfast`). `Retaken`: take an idle P, or wait for one **keeping the G**
//!    ([`Shared::wait_for_p`]): the M goes on the idle list marked `wants_p`, so the next
//!    P given up (`release_p`, or a busy M every `HANDOFF_EVERY` looks) comes to it first.
//!
//! Go's `exitsyscall0` instead puts the G on the global queue and parks the M: any M may
//! resume any G there. Here a started G never leaves its M (S1, "Started Gs stay on their
//! M" in `mod.rs`), so the M waits with it. The cost: Gs that started on an M in a long
//! call wait for that call too (chapter 9, "What S1 costs around a call").
//!
//! ## The runtime checks part 09's answers
//!
//! Exactly one of exit and retake may win each call. A `Kept` exit that finds `parked`
//! empty (sysmon won too), or a `Retaken` exit that finds the P still there (nobody
//! retook it), stops the runtime naming part 09 (`Shared::fail`); a P is never lost or
//! held twice.
//!
//! Not here: sysmon's loop (`sysmon.rs`); `gmp::blocking` and `gmp::Bound` (`blocking.rs`).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use super::Shared;
use super::m::with_m;
use super::p::P;
use crate::blocking::BlockingError;
use crate::builder::MAX_PROCS;
use crate::lock;
use crate::parts::syscall::{Exit, SyscallSlot};
use crate::task;

/// One P's side of a blocking call, by P id, made on the first call on that P.
pub(crate) struct CallP {
    /// Part 09: who wins the P of each call, the M or sysmon.
    pub(super) slot: SyscallSlot,
    /// The P while its M is in a call. Put by the M before `enter`; taken by the M after a
    /// `Kept` exit or by sysmon after a won retake, which it makes under this lock. Leaf lock.
    pub(super) parked: Mutex<Option<Box<P>>>,
    /// The latest call sysmon retook here (0: none). Written under `parked`'s lock. Calls on
    /// one P follow each other, so an exit of call `c` was retaken iff this is `>= c`: a
    /// later call exists only if sysmon took the P from `c`.
    retaken: AtomicU64,
}

/// The runtime's blocking-call state: the slots, the M cap and the calls in flight.
pub(crate) struct Calls {
    pub(super) ps: Box<[OnceLock<CallP>]>,
    /// Ps that ever had a call: sysmon looks at `ps[..made]`. Only grows.
    pub(super) made: AtomicUsize,
    /// Calls in flight now (Ms without a P, in a call). Go: `sched.nmsys`, roughly.
    pub(super) in_flight: AtomicUsize,
    /// `Builder::max_threads`.
    pub(super) max_threads: usize,
    /// P hand-offs sysmon made, for dumps and tests.
    pub(super) retakes: AtomicUsize,
}

impl Calls {
    pub(super) fn new(max_threads: usize) -> Calls {
        Calls {
            ps: (0..MAX_PROCS).map(|_| OnceLock::new()).collect(),
            made: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_threads,
            retakes: AtomicUsize::new(0),
        }
    }

    /// P `id`'s call state, made on first use (so a skeleton part 09 is called only when a
    /// program makes a blocking call). Part 09's `SyscallSlot::new` runs here: the caller
    /// guards it, as it does every call into part 09.
    /// Returns whether this was the runtime's first call, which wakes sysmon
    /// (`sysmon.rs`: until then it does not call part 09).
    fn of(&self, id: usize) -> (&CallP, bool) {
        let made = self.ps[id].get_or_init(|| CallP {
            slot: new_slot(),
            parked: Mutex::new(None),
            retaken: AtomicU64::new(0),
        });
        let first = self.made.fetch_max(id + 1, Relaxed) == 0;
        (made, first)
    }
}

/// Part 09's `SyscallSlot::new`; in this crate's tests, a panic when this thread asked for
/// one (`SLOT_NEW_PANICS`), to stand for a broken part.
fn new_slot() -> SyscallSlot {
    #[cfg(test)]
    if SLOT_NEW_PANICS.with(Cell::get) {
        panic!("not yet implemented (a test's broken SyscallSlot::new)");
    }
    SyscallSlot::new()
}

#[cfg(test)]
thread_local! {
    /// Tests: `SyscallSlot::new` panics on this thread (see `new_slot`).
    pub(crate) static SLOT_NEW_PANICS: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// This thread runs the function of a blocking call: `park` and `yield_now` refuse.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Is this thread inside the function of a [`blocking`](crate::blocking) call? Never
/// inlined (see `m::m_ctx_here`).
#[inline(never)]
pub(crate) fn in_call() -> bool {
    IN_CALL.with(Cell::get)
}

/// Marks this thread as inside (or out of) a blocking call's function. Never inlined (see
/// `m::m_ctx_here`): the caller may have switched since it last touched a thread-local.
#[inline(never)]
fn set_in_call(inside: bool) {
    IN_CALL.with(|c| c.set(inside));
}

/// A panic's message, for a named error.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    task::payload_message(payload)
        .unwrap_or("a non-string panic")
        .to_string()
}

impl Shared {
    /// Runs `f` as a blocking call of the G running on this M: the P waits in its slot
    /// where sysmon may hand it on, and the M gets a P back afterwards (see "P hand-off
    /// around a blocking call"). On an M without a P (a call inside a call, or shutdown)
    /// `f` just runs. A panic in `f` goes on after the M has its P back. Go:
    /// `entersyscall`, `exitsyscall`.
    ///
    /// The running G only.
    pub(crate) fn call_blocking<T>(&self, f: impl FnOnce() -> T) -> Result<T, BlockingError> {
        let Some((index, id)) =
            with_m(self.id, |m| m.p.as_ref().map(|p| (m.index, p.id))).flatten()
        else {
            return Ok(f());
        };
        let calls = &self.calls;
        // Part 09 runs on the G's stack; a panic there is a broken part, not the G's. The
        // slot is made before the P leaves the M, so a panic loses no P and counts no call.
        let (call, first) =
            panic::catch_unwind(AssertUnwindSafe(|| calls.of(id))).unwrap_or_else(|payload| {
                self.fail(format!(
                    "syscall (part 09): SyscallSlot::new panicked: {}",
                    message(&*payload)
                ))
            });
        if first {
            self.wake_sysmon();
        }
        let Some(p) = with_m(self.id, |m| m.p.take()).flatten() else {
            return Ok(f());
        };
        // The cap: one M per P, plus one per call in flight (each call's P may need an M).
        let in_flight = calls.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let procs = self.procs();
        if procs + in_flight > calls.max_threads {
            calls.in_flight.fetch_sub(1, Ordering::SeqCst);
            with_m(self.id, |m| m.p = Some(p));
            return Err(BlockingError::TooManyThreads {
                max_threads: calls.max_threads,
                procs,
                in_flight: in_flight - 1,
            });
        }
        *lock(&call.parked) = Some(p);
        let entered = panic::catch_unwind(AssertUnwindSafe(|| {
            let ticket = call.slot.enter();
            let number = ticket.call();
            (ticket, number)
        }));
        let (ticket, number) = match entered {
            Ok(entered) => entered,
            Err(payload) => {
                let p = lock(&call.parked).take();
                with_m(self.id, |m| m.p = p);
                calls.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.fail(format!(
                    "syscall (part 09): SyscallSlot::enter panicked: {}",
                    message(&*payload)
                ));
            }
        };
        self.ms[index].call_since_ns.store(self.now_ns(), Relaxed);
        self.ms[index].in_call.store(true, Relaxed);
        set_in_call(true);
        let out = panic::catch_unwind(AssertUnwindSafe(f));
        set_in_call(false);
        let exit = panic::catch_unwind(AssertUnwindSafe(|| call.slot.exit(ticket)));
        self.ms[index].in_call.store(false, Relaxed);
        calls.in_flight.fetch_sub(1, Ordering::SeqCst);
        let exit = exit.unwrap_or_else(|payload| {
            self.fail(format!(
                "syscall (part 09): SyscallSlot::exit panicked: {}",
                message(&*payload)
            ))
        });
        let mut parked = lock(&call.parked);
        let retaken = call.retaken.load(Relaxed) >= number;
        match exit {
            // Checked before the take: after a won retake `parked` may hold the P of a
            // later call on that P, which is not this M's to take.
            Exit::Kept => match (!retaken).then(|| parked.take()).flatten() {
                Some(p) => {
                    drop(parked);
                    with_m(self.id, |m| m.p = Some(p));
                }
                None => {
                    drop(parked);
                    self.fail(format!(
                        "syscall (part 09): exit of call {number} said Exit::Kept, but sysmon's \
                         retake of that call had won: both sides won one call; exit and retake \
                         must compare-and-swap the same expected word (book: \
                         ch09-syscall.html#step-2)"
                    ))
                }
            },
            Exit::Retaken => {
                drop(parked);
                if !retaken {
                    self.fail(format!(
                        "syscall (part 09): exit of call {number} said Exit::Retaken, but sysmon \
                         never retook it (its P was still waiting in the slot): the exit lost a \
                         call it should have won, or a retake moved the word but returned false \
                         (book: ch09-syscall.html#step-1, #step-2)"
                    ));
                }
                self.wait_for_p(index);
            }
        }
        match out {
            Ok(value) => Ok(value),
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// M `index`, back from a call whose P was retaken, gets a P while its G waits on it:
    /// its P hand-off if one came, else an idle P, else it waits on the idle list marked
    /// `wants_p` until handed one. At shutdown it returns without a P (the G finishes, the
    /// M exits). Go: `exitsyscall0` (which queues the G instead; see the top of this file).
    fn wait_for_p(&self, index: usize) {
        let me = &self.ms[index];
        let mut listed = false;
        let got = loop {
            let mut s = lock(&self.sched);
            if let Some(handed) = s.next_p[index].take() {
                break Some(handed);
            }
            if s.shutdown {
                if let Some(pos) = s.midle.iter().position(|&m| m == index) {
                    s.midle.swap_remove(pos);
                }
                break None;
            }
            if let Some(p) = s.pidle.pop() {
                self.npidle.fetch_sub(1, Ordering::SeqCst);
                if let Some(pos) = s.midle.iter().position(|&m| m == index) {
                    s.midle.swap_remove(pos);
                }
                break Some((p, false));
            }
            if !listed {
                me.wants_p.store(true, Relaxed);
                s.midle.push(index);
                listed = true;
            }
            drop(s);
            me.idle.park();
        };
        me.wants_p.store(false, Relaxed);
        let Some((p, spinning)) = got else { return };
        with_m(self.id, |m| m.p = Some(p));
        // Handed a P as a spinning M (`wakep` -> `start_m`): it runs a G instead of looking,
        // so it stops spinning; the last spinner to stop starts another (Go: `resetspinning`).
        if spinning && self.spinning.stop() {
            self.wakep();
        }
    }

    /// Sysmon's grab of the P of call `seen` on P `id`: the retake and the take of the P
    /// under `parked`'s lock, then the hand-off. Returns whether the P was taken.
    pub(super) fn retake_call(
        &self,
        id: usize,
        seen: crate::parts::syscall::Observed,
    ) -> Result<bool, String> {
        let Some(call) = self.calls.ps[id].get() else {
            return Ok(false);
        };
        let p = {
            let mut parked = lock(&call.parked);
            let won = panic::catch_unwind(AssertUnwindSafe(|| call.slot.retake(seen))).map_err(
                |payload| {
                    format!(
                        "syscall (part 09): SyscallSlot::retake panicked: {}",
                        message(&*payload)
                    )
                },
            )?;
            if !won {
                return Ok(false);
            }
            call.retaken.fetch_max(seen.call(), Relaxed);
            parked.take().ok_or_else(|| {
                format!(
                    "syscall (part 09): retake won call {} of P {id}, which is not in a call \
                     (its M has its P back): both sides won one call (book: \
                     ch09-syscall.html#step-2)",
                    seen.call()
                )
            })?
        };
        self.calls.retakes.fetch_add(1, Relaxed);
        let mut s = lock(&self.sched);
        if s.shutdown {
            s.pidle.push(p);
            self.npidle.fetch_add(1, Ordering::SeqCst);
        } else if !p.runq.is_empty() || !self.global.is_empty() {
            // Work waits on it: another M runs it. Go: `handoffp` -> `startm`.
            self.handoff_p(&mut s, p);
        } else {
            self.release_p(&mut s, p);
        }
        drop(s);
        // Its timers need an M too: wake the sleeper, or start an M to become one (with the
        // only M in this call, nobody else would). Go: `handoffp` -> `wakeNetPoller`.
        let next = self.earliest_timer();
        if next != super::timer::NEVER {
            self.timer_armed(next);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A part 09 whose `SyscallSlot::new` panics stops the runtime naming it, instead of
    /// losing the P (taken before the slot was made) and hanging.
    #[test]
    fn a_panic_in_syscall_slot_new_stops_the_runtime_by_name() {
        let got = testkit::watchdog_with(
            "a panicking SyscallSlot::new",
            Duration::from_secs(20),
            crate::dump_all,
            || {
                let rt = crate::Runtime::builder().procs(1).build().unwrap();
                let out = panic::catch_unwind(AssertUnwindSafe(|| {
                    rt.block_on(|| {
                        let broken = crate::go(|| {
                            SLOT_NEW_PANICS.with(|p| p.set(true));
                            let r = crate::blocking(|| 1);
                            SLOT_NEW_PANICS.with(|p| p.set(false));
                            r
                        });
                        let _ = broken.join();
                        crate::go(|| 2).join().unwrap()
                    })
                }));
                out.map_err(|payload| message(&*payload))
            },
        );
        let why = got.expect_err("the runtime went on with a broken part 09");
        assert!(
            why.contains("SyscallSlot::new panicked"),
            "the stop should name part 09's SyscallSlot::new: {why}"
        );
    }
}
