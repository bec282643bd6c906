//! The netpoller in the scheduler: part 10's [`Poller`] and [`PollDesc`] wired to Gs. A G
//! whose socket says `WouldBlock` parks on the socket's descriptor ([`Shared::wait_io`]);
//! an M finds it again through `poll`, either without blocking in `find_runnable` (Go:
//! `netpoll(0)` in `findRunnable`) or as the one idle M that blocks in `poll` until the
//! next timer (Go: `netpoll(delay)` at the end of `findRunnable`), woken by
//! [`Shared::unpark_m`] when work arrives for it (Go: `netpollBreak`).
//!
//! ## The runtime checks the learner's descriptor
//!
//! A learner's `PollDesc` hands out G tokens; the runtime trusts none of them blindly:
//!
//! - Each park gets a G token never used before. The G records it in its socket's entry
//!   with a compare-and-swap (`parked[dir]`: 0 -> token) before it commits; whoever gets a
//!   token back from `ready` or `close` must swap that same token out (token -> 0) before
//!   it may wake anyone. A token handed out twice, or one that never parked (stale), finds
//!   the swap failing: a [`NetpollError`] that stops the runtime naming the rule, never a G
//!   woken twice.
//! - A socket's poller token is its slot in a table plus a generation (`Table`): readiness
//!   that comes out of `poll` for a socket closed meanwhile, whose slot and even fd number
//!   were reused, names an old generation and is dropped, never given to the new socket.
//! - Closing runs `pd.close` -> wake the parked Gs -> `deregister` -> drop the slot, and
//!   only then does the socket (its fd) close (`gmp::net`'s `Drop`).
//!
//! Not here: the sockets themselves (`net.rs`), the descriptor and the poller (part 10),
//! when an M sleeps (`find.rs`, `timer.rs`'s `idle_sleep`, which calls [`Shared::poll_idle`]).

use std::fmt::{self, Write as _};
use std::io;
use std::num::NonZeroU64;
use std::os::fd::RawFd;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Shared;
use crate::g::{self, Waiter};
use crate::lock;
use crate::parts::g::WaitReason;
use crate::parts::netpoll::{Dir, Interest, PollDesc, Poller, Prepared, Ready, Token, mio};
use crate::sched::timer::{NEVER, Timer};

/// Bits of a poller token that hold the slot index; the generation sits above them.
const SLOT_BITS: u32 = 24;
/// The most sockets one runtime registers at once (16,777,215).
const MAX_SLOTS: usize = (1 << SLOT_BITS) - 1;
/// How long a G may wait on a socket that `poll(2)` says is ready before a dump calls the
/// readiness lost.
const LOST_AFTER: Duration = Duration::from_secs(1);

/// The netpoller's state in `Shared`.
pub(crate) struct NetPoll {
    /// Made on the first socket (Go: `netpollGenericInit`). A failure is not kept: a
    /// process out of descriptors may have some again for the next socket.
    poller: OnceLock<Poller>,
    /// Held while one thread makes the poller, so two first sockets make one. A leaf lock.
    making: Mutex<()>,
    /// Set (SeqCst) once `poller` holds one: read by the idle M before it chooses between
    /// its Parker and `poll`, so a poller made meanwhile unparks it (see `register`).
    ready: AtomicBool,
    table: Mutex<Table>,
    /// Gs parked on sockets now. Go: `netpollWaiters`: nobody polls when it is 0.
    waiters: AtomicUsize,
    /// The next G token a park hands to `PollDesc::park` (never reused).
    next_park: AtomicU64,
    /// An M is inside a blocking `poll` (for dumps, and sysmon: nobody needs to poll then).
    blocked: AtomicBool,
    /// When a `poll` last returned, on the runtime's clock (ns). Go: `sched.lastpoll`.
    last_poll: AtomicU64,
}

/// The registered sockets: slot `i` of generation `gen` is poller token `gen << 24 | i`.
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

struct Slot {
    generation: u64,
    entry: Option<Arc<Entry>>,
}

/// One registered socket: its descriptor (part 10), the G parked in each direction as the
/// runtime recorded it, and what it is, for dumps.
pub(crate) struct Entry {
    token: Token,
    pub(crate) pd: PollDesc,
    /// The G token parked in `[read, write]`, 0 for none; changed only by compare-and-swap.
    parked: [AtomicU64; 2],
    /// How many Gs are inside `wait_io` for `[read, write]`: with a sound descriptor only
    /// they can leave a side WAIT or parked, so `Busy` with none but the caller is part 10's.
    /// (`in_wait` admits one G per side, so this is 0 or 1; it keeps the check explicit.)
    inside: [AtomicUsize; 2],
    /// Who to wake for the token in `parked`, and since when it waits (for dumps).
    waiters: Mutex<[Option<Parked>; 2]>,
    fd: RawFd,
    /// What the socket is ("TcpStream 127.0.0.1:5000 -> 127.0.0.1:41000"), for messages.
    what: String,
    /// Calls of `pd.ready` per direction, counted before each call, and `Prepared::Ready`
    /// answers: a descriptor says Ready at most once per `ready` call.
    readied: [AtomicU64; 2],
    ready_seen: [AtomicU64; 2],
    /// A G is inside `wait_io` for `[read, write]`. The runtime's own one-waiter rule (Go:
    /// `fdMutex`): a G whose park failed still holds its record while it backs off, and the
    /// descriptor would already let a second G say Wait.
    in_wait: [AtomicBool; 2],
}

struct Parked {
    token: u64,
    g: u64,
    since: Instant,
    waiter: Waiter,
}

impl Entry {
    /// `pd.ready`, counted first (see `readied`).
    fn ready(&self, dir: Dir) -> Option<Token> {
        self.readied[slot(dir)].fetch_add(1, SeqCst);
        self.pd.ready(dir)
    }
}

fn slot(dir: Dir) -> usize {
    match dir {
        Dir::Read => 0,
        Dir::Write => 1,
    }
}

fn dir_name(dir: Dir) -> &'static str {
    match dir {
        Dir::Read => "read",
        Dir::Write => "write",
    }
}

/// A rule of the netpoller that part 10's descriptor broke; stops the runtime (`fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NetpollError {
    /// `ready` or `close` returned a G token the runtime did not record as parked there.
    WrongToken {
        call: &'static str,
        dir: &'static str,
        what: String,
        handed: u64,
        recorded: u64,
    },
    /// `prepare` said `Wait` although a G is recorded as parked in that direction.
    WaitWhileParked {
        dir: &'static str,
        what: String,
        recorded: u64,
    },
    /// `prepare` said `Busy` although no other G waits in that direction: the descriptor
    /// still holds a waiter it should have let go (`ready` left it parked, or `prepare`
    /// turned READY into WAIT).
    BusyWithNobodyParked {
        dir: &'static str,
        what: String,
        state: String,
    },
}

impl fmt::Display for NetpollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetpollError::WrongToken {
                call,
                dir,
                what,
                handed,
                recorded,
            } => {
                let recorded = match recorded {
                    0 => "no G".to_string(),
                    t => format!("G token {t}"),
                };
                write!(
                    f,
                    "PollDesc::{call} returned G token {handed} for the {dir} side of {what}, \
                     but the runtime recorded {recorded} parked there: a token handed out \
                     twice, or one that never parked (stale). `ready` returns a parked G at \
                     most once and then leaves READY; `close` returns only Gs still parked \
                     (book: ch10-netpoll.html#polldesc)"
                )
            }
            NetpollError::WaitWhileParked {
                dir,
                what,
                recorded,
            } => write!(
                f,
                "PollDesc::prepare said Wait for the {dir} side of {what} while G token \
                 {recorded} is parked there: a second waiter must get Busy \
                 (book: ch10-netpoll.html#polldesc)"
            ),
            NetpollError::BusyWithNobodyParked { dir, what, state } => write!(
                f,
                "PollDesc::prepare said Busy for the {dir} side of {what}, but no G is \
                 parked there and no other G waits on it (the descriptor says {state}): \
                 your descriptor still holds a waiter. `ready` must leave READY (not the \
                 parked G) when it hands the G out, and `prepare` must turn READY into NIL \
                 (book: ch10-netpoll.html#polldesc)"
            ),
        }
    }
}

impl NetPoll {
    pub(crate) fn new() -> NetPoll {
        NetPoll {
            poller: OnceLock::new(),
            making: Mutex::new(()),
            ready: AtomicBool::new(false),
            table: Mutex::new(Table {
                slots: Vec::new(),
                free: Vec::new(),
            }),
            waiters: AtomicUsize::new(0),
            next_park: AtomicU64::new(1),
            blocked: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
        }
    }

    /// The poller, if a socket ever made one.
    fn poller(&self) -> Option<&Poller> {
        self.poller.get()
    }
}

/// Why a wait on a socket ended without readiness.
pub(crate) enum IoWait {
    /// The deadline passed.
    TimedOut,
    /// The socket was closed (or the runtime tears the G down).
    Closed,
    /// Another G waits in this direction already.
    Busy,
}

impl Shared {
    /// The poller, made on first use. Go: `netpollGenericInit`.
    fn poller(&self) -> io::Result<&Poller> {
        if let Some(p) = self.netpoll.poller.get() {
            return Ok(p);
        }
        let making = lock(&self.netpoll.making);
        if self.netpoll.poller.get().is_none() {
            // Part 10's error names `ulimit -n` when descriptors ran out.
            let made = Poller::new()?;
            let _ = self.netpoll.poller.set(made);
        }
        drop(making);
        if !self.netpoll.ready.swap(true, SeqCst) {
            // The idle M may have chosen its Parker before it saw the poller: it must come
            // and poll now (it stored its role before it read `ready`).
            if let Some(m) = self.sleeper_m() {
                self.ms[m].idle.unpark();
            }
        }
        Ok(self.netpoll.poller.get().expect("set above"))
    }

    /// Registers `source` (readable and writable, edge-triggered) and returns its entry.
    /// Go: `poll_runtime_pollOpen`.
    pub(crate) fn register_io<S: mio::event::Source>(
        &self,
        source: &mut S,
        fd: RawFd,
        what: String,
    ) -> io::Result<Arc<Entry>> {
        let poller = self.poller()?;
        let mut table = lock(&self.netpoll.table);
        let index = match table.free.pop() {
            Some(i) => i,
            None if table.slots.len() < MAX_SLOTS => {
                table.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                table.slots.len() - 1
            }
            None => {
                return Err(io::Error::other(format!(
                    "gmp::net: {MAX_SLOTS} sockets are registered already, the most one \
                     runtime holds; close some first"
                )));
            }
        };
        let slot = &mut table.slots[index];
        slot.generation += 1;
        let value = (slot.generation << SLOT_BITS) | index as u64;
        if value > Token::MAX {
            // 2^38 reuses of one slot: start its generations again (a stale token this old
            // is long gone from every poll).
            slot.generation = 1;
        }
        let value = (slot.generation << SLOT_BITS) | index as u64;
        let token = Token::new(NonZeroU64::new(value).expect("generation >= 1"));
        let entry = Arc::new(Entry {
            token,
            pd: PollDesc::new(),
            parked: [AtomicU64::new(0), AtomicU64::new(0)],
            inside: [AtomicUsize::new(0), AtomicUsize::new(0)],
            waiters: Mutex::new([None, None]),
            fd,
            what,
            readied: [AtomicU64::new(0), AtomicU64::new(0)],
            ready_seen: [AtomicU64::new(0), AtomicU64::new(0)],
            in_wait: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        slot.entry = Some(entry.clone());
        drop(table);
        if let Err(e) = poller.register(source, token, Interest::READABLE | Interest::WRITABLE) {
            self.free_slot(&entry);
            return Err(e);
        }
        Ok(entry)
    }

    fn free_slot(&self, entry: &Entry) {
        let index = (entry.token.get().get() & MAX_SLOTS as u64) as usize;
        let mut table = lock(&self.netpoll.table);
        if let Some(slot) = table.slots.get_mut(index)
            && slot.entry.as_ref().is_some_and(|e| e.token == entry.token)
        {
            slot.entry = None;
            table.free.push(index);
        }
    }

    /// Closes a registered socket's side of the netpoller, in this order: the descriptor
    /// (no G parks on it again), the Gs parked on it (woken, their wait fails), the
    /// registration, the slot (a late event for it is stale from now on). The caller closes
    /// the fd after. Go: `poll_runtime_pollUnblock`, then `poll_runtime_pollClose`.
    pub(crate) fn close_io<S: mio::event::Source>(&self, entry: &Entry, source: &mut S) {
        let closed = entry.pd.close();
        if let Some(t) = closed.read {
            self.hand_over(entry, Dir::Read, t, "close", true);
        }
        if let Some(t) = closed.write {
            self.hand_over(entry, Dir::Write, t, "close", true);
        }
        if let Some(poller) = self.netpoll.poller() {
            // A socket that never registered, or an epoll gone: nothing left to undo.
            let _ = poller.deregister(source);
        }
        self.free_slot(entry);
    }

    /// `call` (`ready` or `close`) gave back G token `t` for `dir`: swap it out of the
    /// record and (if `wake`) wake its G, or stop the runtime naming the broken rule.
    fn hand_over(&self, entry: &Entry, dir: Dir, t: Token, call: &'static str, wake: bool) {
        let i = slot(dir);
        let t = t.get().get();
        if let Err(recorded) = entry.parked[i].compare_exchange(t, 0, AcqRel, SeqCst) {
            let e = NetpollError::WrongToken {
                call,
                dir: dir_name(dir),
                what: entry.what.clone(),
                handed: t,
                recorded,
            };
            // A close while this thread unwinds (a socket dropped by a panicking G): a
            // second panic would abort the process, so stop the runtime without one.
            if std::thread::panicking() {
                eprintln!("gmp: netpoll (part 10): {e}");
                self.stop_broken(format!("netpoll (part 10): {e}"));
                return;
            }
            self.fail(format!("netpoll (part 10): {e}"));
        }
        let parked = {
            let mut waiters = lock(&entry.waiters);
            match &waiters[i] {
                Some(p) if p.token == t => waiters[i].take(),
                _ => None,
            }
        };
        if let Some(p) = parked.filter(|_| wake) {
            p.waiter.wake_owned();
        }
    }

    /// Hands out what one `poll` found: readiness to each socket's descriptor, and every G
    /// it returns to the scheduler. Stale tokens (a closed socket's) are dropped.
    fn dispatch(&self, events: &[(Token, Ready)]) {
        for &(token, ready) in events {
            let index = (token.get().get() & MAX_SLOTS as u64) as usize;
            let entry = lock(&self.netpoll.table)
                .slots
                .get(index)
                .and_then(|s| s.entry.clone())
                .filter(|e| e.token == token);
            let Some(entry) = entry else { continue };
            for (dir, on) in [(Dir::Read, ready.read), (Dir::Write, ready.write)] {
                if on && let Some(t) = entry.ready(dir) {
                    self.hand_over(&entry, dir, t, "ready", true);
                }
            }
        }
    }

    /// Polls without blocking and readies the Gs it finds; `true` if it found any. For an M
    /// with a P and nothing to run (Go: `netpoll(0)` in `findRunnable`). Skipped while no G
    /// waits on a socket, or while an idle M is the blocking poller: that one polls.
    pub(super) fn poll_ready(&self) -> bool {
        if self.netpoll.waiters.load(SeqCst) == 0 || self.sleeper_m().is_some() {
            return false;
        }
        let Some(poller) = self.netpoll.poller() else {
            return false;
        };
        let mut events = Vec::new();
        let polled = poller.poll(Some(Duration::ZERO), &mut events);
        self.netpoll.last_poll.store(self.now_ns(), Relaxed);
        match polled {
            Ok(_) => self.dispatch(&events),
            Err(e) => self.fail(format!("netpoll (part 10): Poller::poll failed: {e}")),
        }
        // An M became the blocking poller meanwhile: this poll may have taken the wake meant
        // for it (the eventfd's event comes out once), so pass a wake on.
        if self.sleeper_m().is_some() {
            let _ = poller.wake();
        }
        !events.is_empty()
    }

    /// The idle M `index` (the timer sleeper) waits for sockets until `until` (ns on the
    /// runtime's clock, [`NEVER`] for no timer): `false` if no poller exists yet (then it
    /// sleeps on its Parker as before). Go: `netpoll(delay)` at the end of `findRunnable`.
    pub(super) fn poll_idle(&self, index: usize, until: u64) -> bool {
        if !self.netpoll.ready.load(SeqCst) {
            return false;
        }
        let Some(poller) = self.netpoll.poller() else {
            return false;
        };
        {
            // Whoever hands this M a P (or shuts down) does it under this lock and then
            // calls `unpark_m`, which sees this M as the poller: it writes the waker, or we
            // see its work here. So a wake is never lost between this look and the poll.
            let s = lock(&self.sched);
            if s.next_p[index].is_some() || s.shutdown {
                return true;
            }
        }
        let now = self.now_ns();
        let timeout = (until != NEVER).then(|| Duration::from_nanos(until.saturating_sub(now)));
        let mut events = Vec::new();
        self.netpoll.blocked.store(true, SeqCst);
        let polled = poller.poll(timeout, &mut events);
        self.netpoll.last_poll.store(self.now_ns(), Relaxed);
        self.netpoll.blocked.store(false, SeqCst);
        match polled {
            Ok(_) => self.dispatch(&events),
            Err(e) => self.fail(format!("netpoll (part 10): Poller::poll failed: {e}")),
        }
        true
    }

    /// Sysmon's poll (Go: sysmon's `netpoll(0)`): when Gs wait on sockets, no M blocks in
    /// `poll` and nobody polled for longer than part 09's `Sysmon` allows, polls without
    /// blocking and readies what it finds, so sockets are served while every M runs a
    /// long G. `true` if it readied any.
    pub(super) fn sysmon_poll(&self, should_poll: impl FnOnce(Duration) -> bool) -> bool {
        if !self.netpoll_waiting() || self.netpoll.blocked.load(SeqCst) {
            return false;
        }
        let since = self
            .now_ns()
            .saturating_sub(self.netpoll.last_poll.load(Relaxed));
        should_poll(Duration::from_nanos(since)) && self.poll_ready()
    }

    /// Whether a G waits on a socket (so some M must poll).
    pub(super) fn netpoll_waiting(&self) -> bool {
        self.netpoll.waiters.load(SeqCst) > 0
    }

    /// The M that is the idle poller (and timer sleeper), if one is.
    fn sleeper_m(&self) -> Option<usize> {
        self.sleeper.m.load(SeqCst).checked_sub(1)
    }

    /// Wakes M `m` from its idle sleep: its Parker, and the poller if it is the M that
    /// blocks in `poll`. Go: `notewakeup(&mp.park)`, and `netpollBreak` for the poller.
    pub(super) fn unpark_m(&self, m: usize) {
        self.ms[m].idle.unpark();
        if self.sleeper_m() == Some(m) {
            self.netpoll_break();
        }
    }

    /// Ends a blocking `poll` now (or the next one). Go: `netpollBreak`.
    pub(super) fn netpoll_break(&self) {
        if self.netpoll.ready.load(SeqCst)
            && let Some(poller) = self.netpoll.poller()
        {
            let _ = poller.wake();
        }
    }

    /// The calling G waits until `dir` of `entry` may not block, `deadline` passes or the
    /// socket closes. `Ok`: try the operation again. Go: `netpollblock`,
    /// `poll_runtime_pollWait`, with the deadline of `poll_runtime_pollSetDeadline`.
    pub(crate) fn wait_io(
        &self,
        entry: &Entry,
        dir: Dir,
        deadline: Option<Instant>,
    ) -> Result<(), IoWait> {
        let i = slot(dir);
        if entry.in_wait[i].swap(true, AcqRel) {
            return Err(IoWait::Busy);
        }
        let _in_wait = InWait(&entry.in_wait[i]);
        let _inside = WaitCount::new(&entry.inside[i]);
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(IoWait::TimedOut);
            }
            match entry.pd.prepare(dir) {
                Prepared::Ready => {
                    let seen = entry.ready_seen[i].fetch_add(1, SeqCst) + 1;
                    let readied = entry.readied[i].load(SeqCst);
                    if seen > readied {
                        self.fail(format!(
                            "netpoll (part 10): PollDesc::prepare said Ready {seen} times for \
                             the {} side of {}, but the runtime called ready only {readied} \
                             times: Ready must consume readiness that `ready` left, and a \
                             descriptor with none says Wait (book: ch10-netpoll.html#polldesc)",
                            dir_name(dir),
                            entry.what
                        ));
                    }
                    return Ok(());
                }
                Prepared::Closed => return Err(IoWait::Closed),
                Prepared::Busy => {
                    self.check_busy(entry, dir);
                    return Err(IoWait::Busy);
                }
                Prepared::Wait => {}
            }
            let g = g::current_g().expect("wait_io is called on a G (net.rs checks)");
            if g::tearing_down() {
                // Nobody will run this G again: undo the announced wait and fail.
                self.take_back(entry, dir, 0);
                return Err(IoWait::Closed);
            }
            let t = self.netpoll.next_park.fetch_add(1, SeqCst);
            let token = Token::new(NonZeroU64::new(t).expect("park tokens start at 1"));
            let waiter = Waiter::current();
            lock(&entry.waiters)[i] = Some(Parked {
                token: t,
                g: g.id(),
                since: Instant::now(),
                waiter: waiter.clone(),
            });
            if let Err(recorded) = entry.parked[i].compare_exchange(0, t, AcqRel, SeqCst) {
                let e = NetpollError::WaitWhileParked {
                    dir: dir_name(dir),
                    what: entry.what.clone(),
                    recorded,
                };
                self.fail(format!("netpoll (part 10): {e}"));
            }
            if !entry.pd.park(dir, token) {
                // Readiness or a close came between prepare and park: look again.
                let _ = entry.parked[i].compare_exchange(t, 0, AcqRel, SeqCst);
                lock(&entry.waiters)[i] = None;
                continue;
            }
            // Counted while parked; a guard, since a G torn down at shutdown unwinds here.
            let _counted = WaitCount::new(&self.netpoll.waiters);
            // A G that leaves by unwinding (torn down at shutdown, or a wait refused inside
            // gmp::blocking) takes its token back: the socket keeps no G nobody runs.
            let _undo = UndoPark {
                shared: self,
                entry,
                dir,
                t,
            };
            // With no M polling, the parked G must not wait for one forever: an idle M
            // becomes the poller (Go: `netpollBreak` in `poll_runtime_pollWait`'s callers).
            if self.sleeper_m().is_none() {
                self.wakep();
            }
            let timer = deadline.map(|d| {
                let timer = Timer::new(self.current_p(), Duration::ZERO, Some(waiter.clone()));
                self.arm(&timer, self.ns_at(d));
                timer
            });
            let mut result = Ok(());
            while entry.parked[i].load(SeqCst) == t {
                let expired = deadline.is_some_and(|d| Instant::now() >= d);
                if expired && self.take_back(entry, dir, t) {
                    result = Err(IoWait::TimedOut);
                    break;
                }
                // Not expired, or the poller took the token first: it wakes us once it has
                // swapped the record (a wake-up that comes before this park is kept).
                if waiter.wait(WaitReason::Park).is_err() {
                    // Torn down (shutdown): nobody runs this G again, do not wait.
                    self.take_back(entry, dir, t);
                    result = Err(IoWait::Closed);
                    break;
                }
            }
            drop(_counted);
            if let Some(timer) = timer {
                self.disarm(&timer);
            }
            result?;
            // Woken by readiness (or a close): `prepare` consumes it at the top.
        }
    }

    /// `prepare` said Busy: fine if another G is inside `wait_io` on this side (it may
    /// sit between its `prepare` and its `park`); with only the caller there the
    /// descriptor kept a waiter nobody is, and the program is not to blame.
    fn check_busy(&self, entry: &Entry, dir: Dir) {
        let i = slot(dir);
        if entry.inside[i].load(SeqCst) == 1 && entry.parked[i].load(SeqCst) == 0 {
            let e = NetpollError::BusyWithNobodyParked {
                dir: dir_name(dir),
                what: entry.what.clone(),
                state: format!("{:?}", entry.pd.state(dir)),
            };
            self.fail(format!("netpoll (part 10): {e}"));
        }
    }

    /// The G itself ends its wait on `dir` (its deadline passed, or it is torn down): takes
    /// its G token `t` back through `ready`, as Go's deadline does with
    /// `netpollunblock(ioready=false)`. `true` if it did; `false` if the poller or a close
    /// had taken it first (they will wake it). With `t == 0` it only undoes a `Wait`.
    fn take_back(&self, entry: &Entry, dir: Dir, t: u64) -> bool {
        let Some(got) = entry.ready(dir) else {
            return false;
        };
        if got.get().get() != t {
            let e = NetpollError::WrongToken {
                call: "ready",
                dir: dir_name(dir),
                what: entry.what.clone(),
                handed: got.get().get(),
                recorded: entry.parked[slot(dir)].load(SeqCst),
            };
            self.fail(format!("netpoll (part 10): {e}"));
        }
        // The G itself: nobody to wake.
        self.hand_over(entry, dir, got, "ready", false);
        true
    }

    /// For dumps: sockets registered, Gs waiting on them, and each waiting G with what it
    /// waits for; a socket that `poll(2)` says is ready while its G has waited over a
    /// second is named as readiness the poller lost.
    pub(super) fn netpoll_summary(&self) -> String {
        if self.netpoll.poller.get().is_none() {
            return "netpoll: no poller (no socket yet)".to_string();
        }
        let entries: Vec<Arc<Entry>> = match self.netpoll.table.try_lock() {
            Ok(t) => t.slots.iter().filter_map(|s| s.entry.clone()).collect(),
            Err(_) => return "netpoll: the socket table is locked (busy)".to_string(),
        };
        let mut out = format!(
            "netpoll: {} socket(s), {} G(s) waiting on sockets, {}",
            entries.len(),
            self.netpoll.waiters.load(SeqCst),
            if self.netpoll.blocked.load(SeqCst) && self.shutdown.load(SeqCst) {
                "shutting down while an M still blocks in Poller::poll (the shutdown's \
                 Poller::wake did not end that poll: WakeFlag, part 10, \
                 book: ch10-netpoll.html#poller)"
            } else if self.netpoll.blocked.load(SeqCst) {
                "an idle M blocks in Poller::poll"
            } else {
                "no M blocks in Poller::poll"
            }
        );
        let mut shown = 0;
        for e in &entries {
            let Ok(waiters) = e.waiters.try_lock() else {
                continue;
            };
            for (i, dir) in [Dir::Read, Dir::Write].into_iter().enumerate() {
                let Some(p) = &waiters[i] else { continue };
                if shown == 16 {
                    let _ = write!(out, "\n    ...");
                    return out;
                }
                shown += 1;
                let waited = p.since.elapsed();
                let _ = write!(
                    out,
                    "\n    G {} (park token {}) waits to {} {} (fd {}) for {:.1} s, descriptor {:?}",
                    p.g,
                    p.token,
                    dir_name(dir),
                    e.what,
                    e.fd,
                    waited.as_secs_f64(),
                    e.pd.state(dir)
                );
                if waited >= LOST_AFTER && fd_ready(e.fd, dir) {
                    let _ = write!(
                        out,
                        "\n      note: poll(2) says this socket can {} now, yet the G still \
                         waits: the readiness was lost between Poller::poll and \
                         PollDesc::ready (part 10, book: ch10-netpoll.html#poller)",
                        dir_name(dir)
                    );
                }
            }
        }
        out
    }
}

/// Ends a G's turn in `wait_io` for one direction, also when it unwinds.
struct InWait<'a>(&'a AtomicBool);

impl Drop for InWait<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Takes a park's G token back if the parked G unwinds out of `wait_io`.
struct UndoPark<'a> {
    shared: &'a Shared,
    entry: &'a Entry,
    dir: Dir,
    t: u64,
}

impl Drop for UndoPark<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let (entry, i) = (self.entry, slot(self.dir));
        if entry.parked[i].load(SeqCst) != self.t {
            return; // the poller or a close took it: they clear the record
        }
        match entry.ready(self.dir) {
            Some(got)
                if got.get().get() == self.t
                    && entry.parked[i]
                        .compare_exchange(self.t, 0, AcqRel, SeqCst)
                        .is_ok() =>
            {
                let mut waiters = lock(&entry.waiters);
                if waiters[i].as_ref().is_some_and(|p| p.token == self.t) {
                    waiters[i] = None;
                }
            }
            // Ours, but the record was swapped meanwhile: nobody else clears it either way.
            Some(got) if got.get().get() == self.t => {}
            // No second panic while unwinding: record the broken rule and stop.
            Some(got) => self.shared.stop_broken(format!(
                "netpoll (part 10): PollDesc::ready returned G token {} for the {} side of \
                 {}, but G token {} is parked there",
                got.get(),
                dir_name(self.dir),
                entry.what,
                self.t
            )),
            None => {}
        }
    }
}

/// One G counted in `NetPoll::waiters` for as long as this lives.
struct WaitCount<'a>(&'a AtomicUsize);

impl<'a> WaitCount<'a> {
    fn new(n: &'a AtomicUsize) -> WaitCount<'a> {
        n.fetch_add(1, SeqCst);
        WaitCount(n)
    }
}

impl Drop for WaitCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Whether `poll(2)` says `fd` can `dir` without blocking now.
fn fd_ready(fd: RawFd, dir: Dir) -> bool {
    let events = match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: poll reads and writes one `struct pollfd` through the pointer, which points
    // at a live local of exactly that layout; a timeout of 0 never blocks. A closed or
    // reused fd number only gives a wrong answer in a dump, never memory unsafety.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & events != 0
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use crate::Runtime;
    use crate::net::{TcpListener, TcpStream};
    use mio::unix::SourceFd;

    /// A poller that loses a socket's readiness (here: the socket is taken out of epoll
    /// behind the runtime's back) leaves its G waiting on a ready socket; the dump that a
    /// watchdog prints names that G, the socket and the lost readiness.
    #[test]
    fn a_g_waiting_on_a_socket_whose_readiness_was_lost_is_named_in_the_dump() {
        let dump = testkit::watchdog(
            "a G on a socket whose readiness is lost",
            testkit::DEFAULT_LIMIT,
            || {
                let rt = Runtime::builder().procs(1).build().unwrap();
                rt.block_on(|| {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                    let (server, _) = listener.accept().unwrap();
                    let rt = crate::g::current_g().unwrap().rt.clone();
                    let fd = server.as_raw_fd();
                    rt.poller().unwrap().deregister(&mut SourceFd(&fd)).unwrap();
                    let reader = crate::go(move || {
                        let mut b = [0u8; 1];
                        // Woken only at shutdown (torn down): the error is expected.
                        let _ = (&server).read(&mut b);
                    });
                    crate::time::sleep(Duration::from_millis(50));
                    client.write_all(b"x").unwrap();
                    let start = Instant::now();
                    let mut dump = String::new();
                    while start.elapsed() < Duration::from_secs(5) {
                        crate::time::sleep(Duration::from_millis(100));
                        dump = crate::dump();
                        if dump.contains("readiness was lost") {
                            break;
                        }
                    }
                    drop(reader); // left parked: the runtime tears it down at shutdown
                    dump
                })
            },
        );
        assert!(
            dump.contains("waits to read TcpStream")
                && dump.contains("readiness was lost between Poller::poll and PollDesc::ready"),
            "the dump must name the G, the socket and the lost readiness:\n{dump}"
        );
    }

    /// Readiness that comes out of a poll for a socket closed meanwhile names an old
    /// generation of its slot: the socket that reuses the slot (and often the fd number)
    /// never sees it.
    #[test]
    fn a_stale_token_for_a_closed_and_reused_slot_readies_nothing() {
        use crate::parts::netpoll::{Dir, Ready, State};
        let rt = Runtime::builder().procs(1).build().unwrap();
        let shared = rt.shared.clone();
        let mut a = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = a.as_raw_fd();
        let old = shared.register_io(&mut a, fd, "socket A".into()).unwrap();
        let old_token = old.token;
        shared.close_io(&old, &mut a);
        drop(a);
        let mut b = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = b.as_raw_fd();
        let new = shared.register_io(&mut b, fd, "socket B".into()).unwrap();
        assert_eq!(
            new.token.get().get() & super::MAX_SLOTS as u64,
            old_token.get().get() & super::MAX_SLOTS as u64,
            "the closed socket's slot is reused"
        );
        assert_ne!(new.token, old_token, "with a new generation");
        let ready = Ready {
            read: true,
            write: true,
            error: false,
        };
        shared.dispatch(&[(old_token, ready)]);
        assert_eq!(
            new.pd.state(Dir::Read),
            State::Idle,
            "the stale event readied B"
        );
        shared.dispatch(&[(new.token, ready)]);
        assert_eq!(
            new.pd.state(Dir::Read),
            State::Ready,
            "B's own event readies it"
        );
        shared.close_io(&new, &mut b);
    }

    /// A G token the runtime never recorded as parked (handed out twice, or stale) stops
    /// the runtime with the rule's name instead of waking anyone.
    #[test]
    fn a_token_nobody_parked_is_a_named_error_not_a_wake_up() {
        use std::num::NonZeroU64;
        use std::panic::{AssertUnwindSafe, catch_unwind};

        use crate::parts::netpoll::{Dir, Token};
        let rt = Runtime::builder().procs(1).build().unwrap();
        let shared = rt.shared.clone();
        let mut a = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = a.as_raw_fd();
        let entry = shared.register_io(&mut a, fd, "socket A".into()).unwrap();
        let stale = Token::new(NonZeroU64::new(99).unwrap());
        let err = catch_unwind(AssertUnwindSafe(|| {
            shared.hand_over(&entry, Dir::Read, stale, "ready", true)
        }))
        .expect_err("a token nobody parked must stop the runtime");
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("PollDesc::ready returned G token 99")
                && text.contains("recorded no G")
                && text.contains("handed out twice"),
            "{text}"
        );
        shared.close_io(&entry, &mut a);
    }

    /// `prepare` saying Busy while no other G waits on that side is the descriptor's fault
    /// (it kept a waiter): a part-10 error, not the program's "another G waits"; with a
    /// second G inside `wait_io` on that side, Busy is the program's and passes.
    #[test]
    fn busy_with_nobody_parked_blames_the_descriptor_not_the_program() {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        use std::sync::atomic::Ordering::SeqCst;

        use crate::parts::netpoll::{Dir, Prepared};
        let rt = Runtime::builder().procs(1).build().unwrap();
        let shared = rt.shared.clone();
        let mut a = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = a.as_raw_fd();
        let entry = shared.register_io(&mut a, fd, "socket A".into()).unwrap();
        // A waiter nobody is: the side says WAIT and no G is on its way to park.
        assert_eq!(entry.pd.prepare(Dir::Read), Prepared::Wait);
        entry.inside[0].store(2, SeqCst);
        shared.check_busy(&entry, Dir::Read); // another G could be that waiter: no error
        entry.inside[0].store(1, SeqCst);
        let err = catch_unwind(AssertUnwindSafe(|| shared.check_busy(&entry, Dir::Read)))
            .expect_err("Busy with only the caller inside must stop the runtime");
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("netpoll (part 10): PollDesc::prepare said Busy for the read side")
                && text.contains("no G is parked there")
                && text.contains("your descriptor still holds a waiter"),
            "{text}"
        );
        entry.inside[0].store(0, SeqCst);
        shared.close_io(&entry, &mut a);
    }
}
