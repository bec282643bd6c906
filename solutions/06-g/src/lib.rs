//! Part 06, `g`: the states of a G and the protocol that parks and readies it.
//!
//! What lives here: [`GState`], one atomic word per G saying where it is in its life
//! (runnable, running, parking, waiting with a [`WaitReason`], dead), and the transitions
//! the scheduler, the G itself and its wakers make on it. Every transition is one
//! compare-and-swap, so a waker on another OS thread can race a G that is going to sleep.
//!
//! Go: `g.atomicstatus` with `_Grunnable`, `_Grunning`, `_Gwaiting`, `_Gdead`
//! (`runtime2.go`), `casgstatus`, `gopark` / `park_m` / `goready`, `waitReason`.
//!
//! ## Park without lost wake-up, for Gs
//!
//! A G that waits for something publishes itself first (it puts its handle in a channel's
//! waiter list, say) and then parks. A waker on another thread can find it at any moment
//! after it is published:
//!
//! 1. **Still running** (it has not called `park` yet): [`GState::ready`] leaves a *token*;
//!    the G's next [`GState::park`] consumes it and returns `false`: do not switch out.
//! 2. **Parking** (it called `park` and is switching to g0, but is still on its stack): the
//!    G cannot be queued yet, or a second M could run it while it still runs here. `ready`
//!    moves it to *readied while parking*; g0, once the switch-out is done, calls
//!    [`GState::parked`], sees that, and queues the G itself ([`AfterPark::Requeue`]).
//! 3. **Waiting** (off every CPU and in no queue): `ready` makes it runnable and tells the
//!    caller to queue it ([`Ready::Enqueue`]).
//!
//! Exactly one party queues the G in each case, so a wake-up is never lost and a G is never
//! in a run queue twice. [`GState::run`] refuses a G that is not runnable, which is the
//! check that a G never runs on two Ms at once. A `ready` for a dead G is an error, not a
//! crash: the caller kept a handle too long.
//!
//! Like `std::thread::park`, a park may return without a wake-up meant for *this* wait (a
//! token left by an earlier `ready`), so callers wait in a loop on their own condition.
//!
//! Go does case 2 differently: `gopark` takes an `unlockf` that g0 runs after the switch, so
//! the waiter list stays locked until the G is fully off its stack and case 2 cannot happen.
//! Here the waker never waits for that lock, at the price of one more state.
//!
//! Not here: the stack (part 05), the register switch (part 04 / corosensei), run queues
//! (part 07). The runtime's G (`gmp`'s `g.rs`) holds a `GState` beside those.
//!
//! Book: chapter 6, "A G and one P" (`book/src/ch06-g.md`).
#![warn(missing_docs)]

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::AcqRel, Ordering::Acquire};

/// Why a G is waiting. Shown by `gmp::dump()` and the leak detector. Go: `waitReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WaitReason {
    /// `gmp::park()` called by library code.
    Park = 1,
    /// Waiting for another G to finish (`JoinHandle::join`).
    Join = 2,
    /// Blocked sending on a channel.
    ChanSend = 3,
    /// Blocked receiving from a channel.
    ChanRecv = 4,
    /// Waiting on a `WaitGroup`.
    WaitGroup = 5,
    /// Sleeping until a timer fires.
    Sleep = 6,
}

impl WaitReason {
    const ALL: [WaitReason; 6] = [
        WaitReason::Park,
        WaitReason::Join,
        WaitReason::ChanSend,
        WaitReason::ChanRecv,
        WaitReason::WaitGroup,
        WaitReason::Sleep,
    ];

    /// The reason as Go's `goroutine` dumps would word it.
    pub fn describe(self) -> &'static str {
        match self {
            WaitReason::Park => "park",
            WaitReason::Join => "join",
            WaitReason::ChanSend => "chan send",
            WaitReason::ChanRecv => "chan receive",
            WaitReason::WaitGroup => "wait group",
            WaitReason::Sleep => "sleep",
        }
    }
}

/// Where a G is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Ready to run: in a run queue, or about to be put in one.
    Runnable,
    /// On an M, running its own code.
    Running,
    /// Has called [`GState::park`] and is switching out; still on its stack.
    Parking(WaitReason),
    /// Was readied while parking; g0 queues it once the switch-out is done.
    ReadiedWhileParking(WaitReason),
    /// Off every M and in no queue, until someone calls [`GState::ready`].
    Waiting(WaitReason),
    /// Returned (or panicked); never runs again.
    Dead,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Runnable => f.write_str("runnable"),
            Status::Running => f.write_str("running"),
            Status::Parking(r) => write!(f, "parking ({})", r.describe()),
            Status::ReadiedWhileParking(r) => {
                write!(f, "readied while parking ({})", r.describe())
            }
            Status::Waiting(r) => write!(f, "waiting ({})", r.describe()),
            Status::Dead => f.write_str("dead"),
        }
    }
}

/// What the caller of [`GState::ready`] must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The G was waiting and is now runnable: put it in a run queue (exactly once).
    Enqueue,
    /// The G will run without help: it is running (it got a token), parking (g0 will queue
    /// it), or already runnable. Do not queue it.
    Pending,
}

/// What g0 must do after a G switched out by parking. Returned by [`GState::parked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPark {
    /// The G is waiting; whoever readies it will queue it.
    Waiting,
    /// The G was readied while parking and is runnable again: queue it.
    Requeue,
}

/// A wake-up that cannot be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyError {
    /// The G has finished; nothing will ever wait for this wake-up.
    Dead {
        /// The G's id.
        g: u64,
    },
}

impl fmt::Display for ReadyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyError::Dead { g } => write!(
                f,
                "cannot ready G {g}: it is dead (it returned or panicked); a waker must \
                 drop its handle to a G once that G has stopped waiting"
            ),
        }
    }
}

impl std::error::Error for ReadyError {}

// The state word: the status in the low byte, the wait reason in the next, and one bit for
// a token left by a `ready` that found the G running or runnable.
const RUNNABLE: u32 = 0;
const RUNNING: u32 = 1;
const PARKING: u32 = 2;
const READIED_WHILE_PARKING: u32 = 3;
const WAITING: u32 = 4;
const DEAD: u32 = 5;
const STATUS_MASK: u32 = 0xff;
const REASON_SHIFT: u32 = 8;
const TOKEN: u32 = 1 << 16;

fn encode(status: Status) -> u32 {
    match status {
        Status::Runnable => RUNNABLE,
        Status::Running => RUNNING,
        Status::Parking(r) => PARKING | (r as u32) << REASON_SHIFT,
        Status::ReadiedWhileParking(r) => READIED_WHILE_PARKING | (r as u32) << REASON_SHIFT,
        Status::Waiting(r) => WAITING | (r as u32) << REASON_SHIFT,
        Status::Dead => DEAD,
    }
}

fn decode(word: u32) -> Status {
    let reason = || {
        let code = (word >> REASON_SHIFT) as u8;
        WaitReason::ALL
            .into_iter()
            .find(|r| *r as u8 == code)
            .unwrap_or(WaitReason::Park)
    };
    match word & STATUS_MASK {
        RUNNABLE => Status::Runnable,
        RUNNING => Status::Running,
        PARKING => Status::Parking(reason()),
        READIED_WHILE_PARKING => Status::ReadiedWhileParking(reason()),
        WAITING => Status::Waiting(reason()),
        _ => Status::Dead,
    }
}

/// The state of one G. Shared by the G, the scheduler and every waker (`Sync`).
pub struct GState {
    id: u64,
    word: AtomicU32,
}

impl fmt::Debug for GState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G {} {}", self.id, self.status())?;
        if self.has_token() {
            f.write_str(" (wake-up pending)")?;
        }
        Ok(())
    }
}

impl GState {
    /// A new G, runnable, with no token. Go: `newproc1` puts a fresh G in `_Grunnable`.
    pub fn new(id: u64) -> GState {
        GState {
            id,
            word: AtomicU32::new(encode(Status::Runnable)),
        }
    }

    /// The G's id, as dumps and error messages show it (Go: `goid`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The status right now (another thread may change it a moment later).
    pub fn status(&self) -> Status {
        decode(self.word.load(Acquire))
    }

    /// Is a wake-up token waiting for this G's next [`park`](GState::park)?
    pub fn has_token(&self) -> bool {
        self.word.load(Acquire) & TOKEN != 0
    }

    /// Applies `step` to the word until a compare-and-swap succeeds; `step` returns the new
    /// word and a result, or `Err(())` for a transition that is not allowed from here.
    fn transition<R>(&self, step: impl Fn(u32) -> Result<(u32, R), ()>) -> Result<R, Status> {
        let mut word = self.word.load(Acquire);
        loop {
            let Ok((new, result)) = step(word) else {
                return Err(decode(word));
            };
            match self.word.compare_exchange_weak(word, new, AcqRel, Acquire) {
                Ok(_) => return Ok(result),
                Err(now) => word = now,
            }
        }
    }

    fn illegal(&self, function: &str, found: Status, expected: &str, why: &str) -> ! {
        panic!(
            "GState::{function}: G {} is {found}, expected {expected} ({why})",
            self.id
        )
    }

    /// The scheduler is about to switch to this G: runnable -> running. A token stays.
    ///
    /// # Panics
    ///
    /// If the G is not runnable: running it would run it twice at once, or run a G that
    /// is waiting or dead. The message names the G and both states.
    pub fn run(&self) {
        let done = self.transition(|w| match w & STATUS_MASK {
            RUNNABLE => Ok(((w & TOKEN) | RUNNING, ())),
            _ => Err(()),
        });
        if let Err(found) = done {
            self.illegal(
                "run",
                found,
                "runnable",
                "a G must be in exactly one run queue before an M runs it, and never on two Ms",
            );
        }
    }

    /// On g0, after the G switched out by yielding: running -> runnable. A token stays.
    ///
    /// # Panics
    ///
    /// If the G was not running.
    pub fn yielded(&self) {
        let done = self.transition(|w| match w & STATUS_MASK {
            RUNNING => Ok(((w & TOKEN) | RUNNABLE, ())),
            _ => Err(()),
        });
        if let Err(found) = done {
            self.illegal("yielded", found, "running", "only a running G can yield");
        }
    }

    /// On g0, after the G's function returned or panicked: running -> dead. A token left
    /// for it is dropped: nothing will park again.
    ///
    /// # Panics
    ///
    /// If the G was not running.
    pub fn exit(&self) {
        let done = self.transition(|w| match w & STATUS_MASK {
            RUNNING => Ok((DEAD, ())),
            _ => Err(()),
        });
        if let Err(found) = done {
            self.illegal("exit", found, "running", "only a running G can finish");
        }
    }

    /// On the G itself, before switching out to wait: returns `true` if it must switch out
    /// (running -> parking), or `false` if a token was waiting (consumed; keep running).
    ///
    /// Go: the first half of `gopark`.
    ///
    /// # Panics
    ///
    /// If the G is not running: only a G on an M can decide to wait.
    pub fn park(&self, reason: WaitReason) -> bool {
        let done = self.transition(|w| match w & STATUS_MASK {
            RUNNING if w & TOKEN != 0 => Ok((RUNNING, false)),
            RUNNING => Ok((encode(Status::Parking(reason)), true)),
            _ => Err(()),
        });
        match done {
            Ok(switch_out) => switch_out,
            Err(found) => self.illegal("park", found, "running", "only the running G parks"),
        }
    }

    /// On g0, once a parking G is off its stack: parking -> waiting, or, if it was readied
    /// meanwhile, readied while parking -> runnable, and g0 must queue it.
    ///
    /// Go: `park_m`, after `unlockf`.
    ///
    /// # Panics
    ///
    /// If the G was neither parking nor readied while parking.
    pub fn parked(&self) -> AfterPark {
        let done = self.transition(|w| match w & STATUS_MASK {
            PARKING => Ok(((w & !STATUS_MASK) | WAITING, AfterPark::Waiting)),
            READIED_WHILE_PARKING => Ok((RUNNABLE, AfterPark::Requeue)),
            _ => Err(()),
        });
        match done {
            Ok(after) => after,
            Err(found) => self.illegal(
                "parked",
                found,
                "parking",
                "g0 calls parked() once, after the G that called park() switched out",
            ),
        }
    }

    /// Wakes the G from any thread. Go: `goready`.
    ///
    /// - waiting -> runnable: returns [`Ready::Enqueue`]; the caller queues the G.
    /// - parking -> readied while parking: [`Ready::Pending`]; g0 queues it.
    /// - running or runnable: leaves a token for its next park; [`Ready::Pending`].
    /// - a token already there, or already readied while parking: nothing; `Pending`.
    ///
    /// # Errors
    ///
    /// [`ReadyError::Dead`] if the G has finished.
    pub fn ready(&self) -> Result<Ready, ReadyError> {
        let done = self.transition(|w| match w & STATUS_MASK {
            WAITING => Ok((RUNNABLE, Ready::Enqueue)),
            PARKING => Ok(((w & !STATUS_MASK) | READIED_WHILE_PARKING, Ready::Pending)),
            READIED_WHILE_PARKING => Ok((w, Ready::Pending)),
            RUNNING | RUNNABLE => Ok((w | TOKEN, Ready::Pending)),
            _ => Err(()),
        });
        done.map_err(|_| ReadyError::Dead { g: self.id })
    }
}
