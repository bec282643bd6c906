//! Criterion benches of chapter 11's timer heap: part 11's 4-ary heap (the solution's, and
//! the learner's once it works) beside std's `BinaryHeap`, in the same run.
//!
//! ```text
//! cargo bench -p gmp-benches --bench timer               # full: HTML under target/criterion/
//! cargo bench -p gmp-benches --bench timer -- --quick    # quick
//! ```
//!
//! Groups, each on a heap that already holds `N` timers (1,000 and 100,000: a few sleeping
//! Gs per P, and the chapter's 100k sleepers on one P), so every operation pays the heap's
//! depth:
//!
//! - `timer/add_run/N`: add one timer due after all the others, and `run_expired` at the
//!   earliest deadline, which fires one: what one `sleep` costs the heap. Beside it, a
//!   `BinaryHeap<Reverse<(when, token)>>` push and pop (binary, no index, no cancel).
//! - `timer/add_cancel/N`: add one timer with a random deadline and cancel it: what a
//!   `recv_timeout` that gets its value in time costs the heap. `BinaryHeap` cannot take an
//!   entry out of the middle, so it has no row here.
//!
//! The learner's rows ("your part 11") appear only when `exercises/11-timer` works: a probe
//! runs it first and the rows are skipped, with a note, while it panics.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};

/// `--quick` on the command line, as in benches/os.rs.
fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn measurement_time() -> Duration {
    if quick() {
        Duration::from_millis(800)
    } else {
        Duration::from_secs(3)
    }
}

/// The standing heap sizes.
const SIZES: [u64; 2] = [1_000, 100_000];

/// Does the learner's heap add, cancel and run without panicking (the skeleton's `todo!()`
/// does)? Its message is kept quiet here.
fn mine_works() -> bool {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let ok = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut heap = timer_mine::TimerHeap::new();
        let a = heap.add(5, timer_mine::Token::new(nz(1)));
        heap.add(3, timer_mine::Token::new(nz(2)));
        let cancelled = heap.cancel(a);
        let mut fired = 0;
        heap.run_expired(10, |_| fired += 1);
        cancelled && fired == 1 && heap.is_empty()
    }))
    .unwrap_or(false);
    panic::set_hook(hook);
    ok
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).expect("bench tokens start at 1")
}

/// A small deterministic random source (xorshift64*), for spread-out deadlines.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The same benches for each heap crate: same API, different types, so a macro stamps the
/// code out once per crate.
macro_rules! heap_benches {
    ($module:ident, $timer:ident) => {
        mod $module {
            use super::*;
            use ::$timer::{TimerHeap, Token};

            /// `n` timers at deadlines 1..=n (one ns apart), and the clock at 0.
            fn standing(n: u64) -> TimerHeap {
                let mut heap = TimerHeap::new();
                for v in 1..=n {
                    heap.add(v, Token::new(nz(v)));
                }
                heap
            }

            pub fn add_run(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, n: u64) {
                let mut heap = standing(n);
                let mut next = n + 1;
                g.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter(|| {
                        // Due after all the others; then the earliest (next - n) fires.
                        heap.add(next, Token::new(nz(next)));
                        let fired = heap.run_expired(next - n, |t| {
                            black_box(t);
                        });
                        next += 1;
                        black_box(fired)
                    })
                });
            }

            pub fn add_cancel(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, n: u64) {
                let mut heap = standing(n);
                let mut rng = Rng(0x5eed);
                g.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter(|| {
                        let id = heap.add(rng.next() % (n + 1), Token::new(nz(1)));
                        black_box(heap.cancel(id))
                    })
                });
            }
        }
    };
}

heap_benches!(solution, timer_ref);
heap_benches!(mine, timer_mine);

const SOLUTION: &str = "gmp 4-ary heap (solution)";
const MINE: &str = "gmp 4-ary heap (your part 11)";

fn add_run(c: &mut Criterion) {
    let mine_ok = mine_works();
    let mut g = c.benchmark_group("timer/add_run");
    g.measurement_time(measurement_time());
    for n in SIZES {
        solution::add_run(&mut g, SOLUTION, n);
        if mine_ok {
            mine::add_run(&mut g, MINE, n);
        }
        let mut heap: BinaryHeap<Reverse<(u64, u64)>> = (1..=n).map(|v| Reverse((v, v))).collect();
        let mut next = n + 1;
        g.bench_function(BenchmarkId::new("std BinaryHeap push + pop", n), |b| {
            b.iter(|| {
                heap.push(Reverse((next, next)));
                next += 1;
                black_box(heap.pop())
            })
        });
    }
    if !mine_ok {
        eprintln!("timer: your part 11 is skipped: exercises/11-timer still panics");
    }
    g.finish();
}

fn add_cancel(c: &mut Criterion) {
    let mine_ok = mine_works();
    let mut g = c.benchmark_group("timer/add_cancel");
    g.measurement_time(measurement_time());
    for n in SIZES {
        solution::add_cancel(&mut g, SOLUTION, n);
        if mine_ok {
            mine::add_cancel(&mut g, MINE, n);
        }
    }
    g.finish();
}

fn config() -> Criterion {
    let c = Criterion::default().warm_up_time(Duration::from_secs(1));
    if quick() { c.nresamples(10_000) } else { c }
}

criterion_group! {
    name = timer;
    config = config();
    targets = add_run, add_cancel
}
criterion_main!(timer);
