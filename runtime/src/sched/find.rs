//! Where an M finds its next G: [`find_runnable`] (Go: `findRunnable` in `proc.go`), and
//! what an M does when there is none: give its P back and park until handed one (Go:
//! `stopm`, with the "spinning to non-spinning" recheck).
//!
//! The order it looks in, and when it may steal, are part 08's (`Finder`); the mechanics
//! of each source are here ([`Look`]). Not here: the other side of the idle protocol,
//! `wakep`, `wake_home` and `release_p` (`mod.rs`); what an M does with the G (`m.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::m::{MCtx, MState, with_m};
use super::p::{P, Rng, Runq};
use super::{Sched, Shared};
use crate::g::G;
use crate::lock;
use crate::parts::runq::{CAPACITY, Token};
use crate::parts::steal::Sources;

/// How long a thief leaves a victim's runnext alone before taking it (Go: 3 µs, asked of
/// `usleep`; both sleep longer, see `steal`).
const RUNNEXT_GRACE: Duration = Duration::from_micros(3);

/// How long an M keeps looking before it gives its P back and parks: a spinning M
/// everywhere, another M at its own queues while Gs that only it may run are waiting.
/// Parking and being woken again cost a futex call each, and waking an idle CPU tens of
/// microseconds; Go's spinning M looks about this long too (four rounds over every P, with
/// `RUNNEXT_GRACE` pauses).
const SPIN_FOR: Duration = Duration::from_micros(20);

/// The most `spin_loop` pauses between two looks of a spinning M: the pause doubles from
/// one, so a busy P's queue lines are not read back-to-back while its owner writes them.
const SPIN_PAUSE_MAX: u32 = 64;

/// Every this many looks for work, an M that holds a P gives it to a parked M whose own
/// started Gs wait for one, if there is such an M. Started Gs cannot move to a P's holder
/// (see "Started Gs stay on their M" in `mod.rs`), so without this a G whose M lost its P
/// (to a locked G's hand-off, or `set_procs`) could wait for as long as other Ms stay busy.
const HANDOFF_EVERY: u32 = 61;

/// Started Gs taken from the M's own queue in a row before the P's ring gets a turn (the
/// ring holds fresh Gs; without a bound, two Gs handing a value back and forth would keep
/// them waiting forever). Go's `runnext` has the same problem and bounds it with the time
/// slice a readied G inherits.
const PINNED_STREAK: u32 = 61;

/// The sources `Finder` looks in, for the P held by M `m`: the parts of the P it needs,
/// borrowed apart from the P's `Finder`, which is looking.
struct Look<'a> {
    shared: &'a Shared,
    m: usize,
    p: usize,
    runq: &'a mut Runq,
    pinned_streak: &'a mut u32,
    rng: &'a mut Rng,
    runnable: &'a mut VecDeque<Token>,
    yielded: &'a mut VecDeque<Token>,
}

impl Sources for Look<'_> {
    type G = Token;

    fn local(&mut self) -> Option<Token> {
        let pinned = &self.shared.ms[self.m].pinned;
        if *self.pinned_streak < PINNED_STREAK {
            let started = self
                .runnable
                .pop_front()
                .or_else(|| Shared::pop_injector(pinned));
            if started.is_some() {
                *self.pinned_streak += 1;
                return started;
            }
        }
        *self.pinned_streak = 0;
        self.runq
            .pop()
            .or_else(|| self.runnable.pop_front())
            .or_else(|| Shared::pop_injector(pinned))
    }

    /// Go: `globrunqget`: one G to run, and, when the local ring is empty, up to a fair
    /// share more into it. (With work in the ring this is the every-61st-tick fairness look,
    /// which Go also answers with one G: a batch would only push the ring's own Gs back out
    /// to the global queue when it overflows again.) Then this M's yielded Gs, which Go
    /// would have put in the global queue.
    fn global(&mut self) -> Option<Token> {
        let global = &self.shared.global;
        let share = if self.runq.is_empty() {
            (global.len() / self.shared.procs() + 1).min(CAPACITY / 2)
        } else {
            1
        };
        let mut spill = Vec::new();
        let runq = &mut *self.runq;
        let first = global.pop_batch(share - 1, |t| runq.push_back(t, |t| spill.push(t)));
        global.push_batch(&mut spill);
        first.or_else(|| self.yielded.pop_front())
    }

    /// Go: `netpoll(0)` in `findRunnable`: the Gs whose sockets became ready go to their
    /// Ms' queues (started Gs stay on their M); this M runs one of its own, if any.
    fn netpoll(&mut self) -> Option<Token> {
        if !self.shared.poll_ready() {
            return None;
        }
        // Readied from inside this M's look (its context is borrowed), `ready` queued this
        // M's own Gs in its shared queue.
        Shared::pop_injector(&self.shared.ms[self.m].pinned)
            .or_else(|| self.runnable.pop_front())
            .or_else(|| self.runq.pop())
    }

    fn steal(&mut self, victim: usize, runnext_too: bool) -> Option<Token> {
        if victim == self.p {
            return None;
        }
        if runnext_too {
            // Go: `stealWork`'s last round runs a victim's due timers, so a timer never waits
            // behind a long G on its own P (`timer.rs`, "Who runs a P's timers").
            self.shared.run_due_timers(victim);
        }
        let queues = self.shared.stealer(victim)?;
        // The ring first, as Go; then the oldest of the victim's LIFO (`p.rs`): older
        // siblings of the G it runs next, in a fork-join tree the biggest subtrees.
        let got = queues
            .ring
            .steal_into(&mut self.runq.ring, false)
            .or_else(|| queues.steal_oldest());
        if got.is_some() || !runnext_too || queues.ring.is_empty() {
            return got;
        }
        // Only the victim's runnext holds a G: most likely its P's M is about to run it (a
        // parent that spawned it and now joins). Give that M a moment first, as Go's
        // `runqgrab` does (`usleep(3)`): taking it now sends a G and its parent's wake-up
        // across Ms for nothing. And only a G that sat there the whole grace is taken: if the holder put another in
        // meanwhile, it ran the one seen and is busy with its own chain (Go: `runqgrab`'s
        // `runnext.cas(next, 0)` after its `usleep(3)` fails and it looks again).
        let seen = self.shared.runnext_puts(victim);
        // Sleep through it, as Go's `usleep(3)`: with Linux's default timer slack that lasts
        // about 75 µs, and meanwhile this M neither reads the lines the owner writes on
        // every spawn nor burns its CPU, yet still counts as spinning, so the owner's
        // spawns start no other M. Spinning through the grace instead made a spawn chain
        // at two Ps about an eighth slower, and spawn+join a tenth (book, chapter 8).
        std::thread::sleep(RUNNEXT_GRACE);
        if queues.ring.is_empty() || self.shared.runnext_puts(victim) != seen {
            return None;
        }
        queues.ring.steal_into(&mut self.runq.ring, true)
    }

    fn random(&mut self) -> u32 {
        self.rng.next()
    }
}

/// The next G for M `index` to run, parking until there is one; `None` at shutdown.
/// Go: `findRunnable`.
pub(super) fn find_runnable(shared: &Shared, index: usize) -> Option<Arc<G>> {
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            return None;
        }
        // Go: `checkTimers` at the top of `findRunnable`: this P's due timers ready their Gs
        // before the M looks at its queues (`timer.rs`, "Who runs a P's timers").
        if let Some(p) = with_m(shared.id, |m| m.p.as_ref().map(|p| p.id)).flatten() {
            shared.run_due_timers(p);
        }
        let found = with_m(shared.id, |m| {
            let p = m.p.as_mut()?;
            p.looks = p.looks.wrapping_add(1);
            if p.looks % HANDOFF_EVERY == 0 && shared.give_p_to_waiting_m(m) {
                return None; // this M parks (`stop_m`) until a P comes back to it
            }
            if m.lockers > 0 {
                // Locked by a G (`lock_os_thread`): only Gs that live here, and no spinning.
                // Readied ones first; but before a yielded one, work this M may not run (its
                // P's queues, the global queue) goes with the P to another M (`stop_m` ->
                // `handoff_p`), or a locked G that yields until that work is done would spin
                // forever. Go: `stoplockedm`.
                let own = m
                    .runnable
                    .pop_front()
                    .or_else(|| Shared::pop_injector(&shared.ms[m.index].pinned));
                if own.is_some() {
                    return own;
                }
                let p = m.p.as_ref()?;
                if !p.runq.is_empty() || !shared.global.is_empty() {
                    return None;
                }
                return m.yielded.pop_front();
            }
            let id = m.p.as_ref()?.id;
            let mut procs = shared.procs();
            if id >= procs {
                // `set_procs` lowered the count below this P: give it up, unless the count
                // rose again meanwhile (read under the lock it changes under; a raise keeps a
                // held P rather than making a second one with its id).
                let mut s = lock(&shared.sched);
                procs = shared.procs();
                if id >= procs {
                    let p = m.p.take().expect("checked above");
                    shared.retire(&mut s, p);
                    return None;
                }
            }
            let p = m.p.as_mut()?;
            if p.finder.procs() != procs {
                p.finder.resize(procs);
            }
            let P {
                id,
                runq,
                finder,
                pinned_streak,
                rng,
                ..
            } = &mut **p;
            let mut look = Look {
                shared,
                m: index,
                p: *id,
                runq,
                pinned_streak,
                rng,
                runnable: &mut m.runnable,
                yielded: &mut m.yielded,
            };
            // Go: an M steals only when its own queues and the global one are empty, and
            // only as a spinning M, of which at most half the busy Ps' worth may exist.
            let mut token = finder.find(&mut look, m.spinning);
            if token.is_none() && !m.spinning {
                let idle = shared.npidle.load(Ordering::SeqCst);
                m.spinning = shared.spinning.try_start(procs, idle);
                if m.spinning {
                    shared.ms[index].spinning.store(true, Ordering::Relaxed);
                    token = finder.find(&mut look, true);
                }
            }
            // Before parking, keep looking a little: as a spinning M, everywhere; otherwise
            // at this M's own queues, if Gs that only it may run are waiting somewhere (a
            // G on another M about to answer one of them, say). Waking a parked M costs a
            // futex call and, on an idle CPU, tens of microseconds.
            let waiting_here = shared.ms[index].homed.load(Ordering::Relaxed) > 0;
            if token.is_none() && (m.spinning || waiting_here) {
                let until = Instant::now() + SPIN_FOR;
                let mut pause = 1u32;
                while token.is_none()
                    && Instant::now() < until
                    && !shared.shutdown.load(Ordering::Relaxed)
                {
                    for _ in 0..pause {
                        std::hint::spin_loop();
                    }
                    pause = (pause * 2).min(SPIN_PAUSE_MAX);
                    token = finder.find(&mut look, m.spinning);
                }
            }
            if token.is_some() && m.spinning {
                m.spinning = false;
                shared.ms[index].spinning.store(false, Ordering::Relaxed);
                // Go: `resetspinning`: the last spinner found work, so more may be coming:
                // start another spinner to look for it.
                if shared.spinning.stop() {
                    shared.wakep();
                }
            }
            // A fairness turn (`Runq::pop`) held Gs outside the queues for a moment, where
            // the last spinner's look before parking may have missed them: make sure an M
            // looks, as after a push (`ready`).
            if m.p
                .as_mut()
                .is_some_and(|p| p.runq.take_turned() && !p.runq.is_empty())
            {
                fence(Ordering::SeqCst);
                shared.wakep();
            }
            token
        })
        .expect("an M's context is set by m_main and free between Gs");
        if let Some(token) = found {
            return Some(shared.take(token));
        }
        if !stop_m(shared, index) {
            return None;
        }
    }
}

/// M `index` found nothing: gives its P back, parks, and returns once it holds a P again
/// (`true`), or at shutdown (`false`). Go: the end of `findRunnable`, `stopm`.
fn stop_m(shared: &Shared, index: usize) -> bool {
    let (p, was_spinning) = with_m(shared.id, |m| {
        // Started Gs still in this M's private queues (it is giving up a retired P, say)
        // move to its shared queue, where `release_p` and `wake_home` can see them.
        let pinned = &shared.ms[index].pinned;
        m.runnable
            .drain(..)
            .chain(m.yielded.drain(..))
            .for_each(|t| pinned.push(t));
        (m.p.take(), std::mem::take(&mut m.spinning))
    })
    .expect("an M's context is free between Gs");
    shared.ms[index].spinning.store(false, Ordering::Relaxed);
    {
        let mut s = lock(&shared.sched);
        if s.shutdown {
            if let Some(p) = p {
                s.pidle.push(p);
                shared.npidle.fetch_add(1, Ordering::SeqCst);
            }
            return false;
        }
        match p {
            // A locked M leaves work in its P: another M must run it. Go: `handoffp`.
            Some(p) if !p.runq.is_empty() || !shared.global.is_empty() => {
                shared.handoff_p(&mut s, p);
            }
            Some(p) => shared.release_p(&mut s, p),
            None => {}
        }
        s.midle.push(index);
    }
    // Go's "spinning to non-spinning" protocol: a G queued while we were giving up was
    // either seen by us here or its `wakep` saw our idle P. The fence pairs with the one in
    // `ready`, after the push and before `wakep` reads `npidle`.
    let last = was_spinning && shared.spinning.stop();
    fence(Ordering::SeqCst);
    let me = &shared.ms[index];
    let locked = me.locked.load(Ordering::Relaxed);
    // This M's private queues are empty here: it looked at them, and only it fills them.
    let work = !me.pinned.is_empty()
        || (!locked && !shared.global.is_empty())
        || (!locked
            && last
            && (0..shared.procs()).any(|p| shared.stealer(p).is_some_and(|s| !s.is_empty())));
    if work && take_p_back(shared, index) {
        return true;
    }
    me.set_state(index, MState::Idle);
    loop {
        // One parked M sleeps until the next timer and runs the due ones (`timer.rs`);
        // the others sleep until handed a P.
        shared.idle_sleep(index);
        let mut s = lock(&shared.sched);
        if let Some((p, spinning)) = s.next_p[index].take() {
            drop(s);
            shared.leave_idle(index);
            hold_p(shared, index, p, spinning);
            me.set_state(index, MState::Scheduling);
            return true;
        }
        if s.shutdown {
            drop(s);
            shared.leave_idle(index);
            me.set_state(index, MState::Scheduling);
            return false;
        }
        drop(s);
        // The timers this M just ran may have readied its own Gs (`ready` queues them
        // privately here): like any M with started Gs waiting, it needs a P back.
        if own_gs_waiting(shared, index) && take_p_back(shared, index) {
            shared.leave_idle(index);
            me.set_state(index, MState::Scheduling);
            return true;
        }
        // A wake-up meant for an earlier wait (the Parker keeps one), a timer that readied
        // nobody here, or no P free for our Gs yet (`release_p` brings one): sleep again.
    }
}

/// Moves Gs that `ready` queued in M `index`'s private queues while it was parked into its
/// shared queue, where `release_p` sees them; `true` if that queue holds any.
fn own_gs_waiting(shared: &Shared, index: usize) -> bool {
    let pinned = &shared.ms[index].pinned;
    with_m(shared.id, |m| {
        m.runnable
            .drain(..)
            .chain(m.yielded.drain(..))
            .for_each(|t| pinned.push(t));
    });
    !pinned.is_empty()
}

/// Work appeared while M `index` was giving up: takes a P back if it is still listed as
/// idle and a P is free (otherwise whoever took it off the list handed it one).
fn take_p_back(shared: &Shared, index: usize) -> bool {
    let mut s = lock(&shared.sched);
    let got = s.next_p[index]
        .take()
        .or_else(|| shared.idle_p_for(&mut s, index).map(|p| (p, false)));
    drop(s);
    match got {
        Some((p, spinning)) => {
            hold_p(shared, index, p, spinning);
            true
        }
        None => false,
    }
}

/// M `index` holds `p` from now on (spinning if `spinning`, as `wakep` started it).
fn hold_p(shared: &Shared, index: usize, p: Box<P>, spinning: bool) {
    with_m(shared.id, |m| {
        m.p = Some(p);
        m.spinning = spinning;
    });
    shared.ms[index].spinning.store(spinning, Ordering::Relaxed);
}

impl Shared {
    /// If a parked M has started Gs waiting (and so needs a P), gives it the caller's P and
    /// returns true; the caller then parks like any M without work.
    fn give_p_to_waiting_m(&self, m: &mut MCtx) -> bool {
        let mut s = lock(&self.sched);
        let Some(pos) = self.waiting_m(&s) else {
            return false;
        };
        let Some(p) = m.p.take() else { return false };
        let to = self.give_p(&mut s, pos, p, false);
        drop(s);
        self.unpark_m(to);
        true
    }

    /// Gives `p`, which has work, to a parked M that may run it, or to a new M. Go:
    /// `handoffp` -> `startm(pp, false)`.
    pub(super) fn handoff_p(&self, s: &mut Sched, p: Box<P>) {
        match self.start_m(s, p, false) {
            Ok(Some(m)) => self.unpark_m(m),
            Ok(None) => {}
            Err(why) => *lock(&self.newm_failed) = Some(why),
        }
    }

    /// Gives `p` up: to a parked M whose shared queue has started Gs waiting (it can run
    /// them nowhere else; `stop_m` moves an M's private queues there before it parks), or
    /// to the idle list. Go: `pidleput` (and `handoffp`'s choice).
    pub(super) fn release_p(&self, s: &mut Sched, p: Box<P>) {
        match self.waiting_m(s) {
            Some(pos) => {
                let m = self.give_p(s, pos, p, false);
                self.unpark_m(m);
            }
            None => {
                s.pidle.push(p);
                self.npidle.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}
