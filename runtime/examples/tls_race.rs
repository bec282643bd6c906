//! The thread-local hazard of chapter 8 ("The thread-local hazard"), run: Gs that yield
//! inside a `thread_local!`'s `with` closure, on 2 Ps, once on the default builder and once
//! with the `unsafe` opt-in `Builder::migrate_gs`.
//!
//! ```text
//! cargo run --release -p gmp --example tls_race
//! ```
//!
//! Each mode runs in a child process of its own (`tls_race default`, `tls_race migrate`):
//! the migrating one is a data race, undefined behaviour, kept away from the other run. Each
//! prints how many yields brought a G back on another OS thread, in how many rounds a G then
//! incremented another thread's counter through the borrow it still held, and the
//! increments made beside the ones the threads' counters hold when the threads end.

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use gmp::Runtime;

const GS: u64 = 64;
const ROUNDS: u64 = 200;
/// Increments between two yields: enough that two threads touch one counter at once.
const BURST: u64 = 1000;

/// Every M's counter, added up when its thread ends (the runtime's drop joins the Ms).
static COUNTED: AtomicU64 = AtomicU64::new(0);

/// A thread's own counter. Its destructor runs when the thread ends, on that thread.
struct Counter(Cell<u64>);

impl Drop for Counter {
    fn drop(&mut self) {
        COUNTED.fetch_add(self.0.get(), Ordering::Relaxed);
    }
}

thread_local! {
    static COUNT: Counter = const { Counter(Cell::new(0)) };
}

fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {
            for mode in ["default", "migrate"] {
                child(mode);
            }
        }
        ["default"] => race(false),
        ["migrate"] => race(true),
        _ => {
            eprintln!("tls_race: usage: tls_race [default | migrate] (no argument runs both)");
            std::process::exit(2);
        }
    }
}

/// Runs this example again as `tls_race MODE` and passes its output on.
fn child(mode: &str) {
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("tls_race: cannot find this program to run it again: {e}");
        std::process::exit(1)
    });
    let status = Command::new(exe).arg(mode).status().unwrap_or_else(|e| {
        eprintln!("tls_race: cannot start `tls_race {mode}`: {e}");
        std::process::exit(1)
    });
    if !status.success() {
        eprintln!("tls_race: `tls_race {mode}` failed: {status}");
        std::process::exit(1);
    }
}

fn race(migrate: bool) {
    let builder = Runtime::builder().procs(2);
    let (builder, title) = if migrate {
        // SAFETY: deliberately broken: the Gs below hold a thread-local borrow across a
        // yield, which the contract of migrate_gs forbids. This process exists to show the
        // race, and runs apart from the other mode.
        let b = unsafe { builder.migrate_gs() };
        (b, "with unsafe migrate_gs(), 2 Ps")
    } else {
        (builder, "default builder, 2 Ps")
    };
    let rt = builder.build().unwrap_or_else(|e| {
        eprintln!("tls_race: cannot start the runtime: {e}");
        std::process::exit(1)
    });
    let (moved, elsewhere) = rt.block_on(|| {
        let gs: Vec<_> = (0..GS).map(|_| gmp::go(one_g)).collect();
        gs.into_iter()
            .map(|g| g.join().expect("a G of tls_race panicked"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    drop(rt); // the Ms end, and their counters add themselves up
    let expected = GS * ROUNDS * BURST;
    let counted = COUNTED.load(Ordering::Relaxed);
    println!("{title}:");
    println!("  yields after which a G was on another thread: {moved}");
    println!("  rounds a G incremented another thread's counter: {elsewhere}");
    let off = if counted <= expected {
        format!("{} lost", expected - counted)
    } else {
        format!("{} more than made", counted - expected)
    };
    println!("  increments: {expected} made, {counted} counted ({off})");
}

/// One G: `ROUNDS` bursts of increments on its thread's counter, a yield after each, all
/// inside one `with`. Returns (yields that came back on another thread, rounds that
/// incremented another thread's counter).
fn one_g() -> (u64, u64) {
    let (mut moved, mut elsewhere) = (0, 0);
    COUNT.with(|count| {
        // black_box: the compiler assumes a function never changes threads, so it may
        // recompute `count` from the current thread's base at each use. The borrow the
        // source holds is the first thread's counter; keep exactly that pointer.
        let count: &Counter = std::hint::black_box(count);
        for _ in 0..ROUNDS {
            for _ in 0..BURST {
                // One load and one store per increment, as code that does more between
                // them would have; otherwise the burst folds into a single add.
                count.0.set(std::hint::black_box(count.0.get()) + 1);
            }
            let before = tid();
            gmp::yield_now();
            moved += u64::from(tid() != before);
            elsewhere += u64::from(!std::ptr::eq(this_threads_counter(), count));
        }
    });
    (moved, elsewhere)
}

/// The calling thread's counter, looked up afresh (not inlined, for the reason above).
#[inline(never)]
fn this_threads_counter() -> *const Counter {
    COUNT.with(|c| c as *const Counter)
}
