//! Criterion benches of chapter 7's run queue: part 07's ring (the solution's, and the
//! learner's once it works) beside crossbeam-deque's `Worker`/`Stealer`, in the same run.
//!
//! ```text
//! cargo bench -p gmp-benches --bench runq               # full: HTML under target/criterion/
//! cargo bench -p gmp-benches --bench runq -- --quick    # quick
//! cargo bench -p gmp-benches --bench runq -- steal      # one group
//! ```
//!
//! Groups, one owner thread each (no contention: the uncontended cost of each operation):
//!
//! - `runq/push_pop`: one push and one pop on a ring kept near empty; crossbeam's `Worker`
//!   (FIFO and LIFO) doing the same.
//! - `runq/overflow`: one push onto a full ring of 256, which hands 129 tokens to a
//!   crossbeam `Injector` (the runtime's global queue); beside it, 129 single pushes onto
//!   the `Injector`, what the owner would pay without batching. Timed one push at a time,
//!   so each figure includes a clock read (about 20-30 ns).
//! - `runq/steal_half`: one steal from a full ring of 256 into an empty one (128 tokens
//!   moved); crossbeam's `steal_batch_with_limit_and_pop` with a limit of 128 from a
//!   `Worker` of 256 (its plain `steal_batch_and_pop` stops at 32). The run prints how many
//!   tokens each steal moved, to divide by. Timed one steal at a time, like the overflow.
//!
//! The learner's rows ("your part 07") appear only when `exercises/07-runq` works: a probe
//! runs it first and the rows are skipped, with a note, while it panics.

use std::hint::black_box;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use crossbeam_deque::{Injector, Steal, Worker};

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

/// Does the learner's ring do a push, an overflow, a pop and a steal without panicking?
/// The skeleton's `todo!()` panics; its message is kept quiet here.
fn mine_works() -> bool {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let ok = panic::catch_unwind(AssertUnwindSafe(|| {
        let (mut local, stealer) = runq_mine::new::<4>();
        let (mut thief, _) = runq_mine::new::<4>();
        let mut spilled = 0;
        for v in 1..=6 {
            local.push_back(runq_mine::Token::new(nz(v)), |_| spilled += 1);
        }
        local.push_next(runq_mine::Token::new(nz(7)), |_| spilled += 1);
        let stolen = stealer.steal_into(&mut thief, true).is_some();
        stolen && local.pop().is_some() && spilled == 3
    }))
    .unwrap_or(false);
    panic::set_hook(hook);
    ok
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).expect("bench tokens start at 1")
}

/// The same three benches for each ring crate: both crates have the same API, but their
/// types differ, so a macro stamps the code out once per crate.
macro_rules! ring_benches {
    ($module:ident, $runq:ident) => {
        mod $module {
            use super::*;
            use ::$runq::{CAPACITY, Token, new};

            pub fn push_pop(g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
                let (mut local, _stealer) = new::<CAPACITY>();
                let token = Token::new(nz(1));
                g.bench_function(name, |b| {
                    b.iter(|| {
                        local.push_back(black_box(token), |_| unreachable!("ring never full"));
                        black_box(local.pop())
                    })
                });
            }

            pub fn overflow(g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
                let injector = Injector::new();
                g.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let (mut local, _stealer) = new::<CAPACITY>();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Refill to full (untimed): after an overflow the ring holds half.
                            let mut v = 1;
                            while local.len() < CAPACITY {
                                local.push_back(Token::new(nz(v)), |_| unreachable!("not full"));
                                v += 1;
                            }
                            let start = Instant::now();
                            local.push_back(Token::new(nz(v)), |t| injector.push(t));
                            total += start.elapsed();
                            while !injector.steal().is_empty() {}
                        }
                        total
                    })
                });
            }

            /// The tokens one steal moves from a full ring (the one returned included).
            pub fn steal_moves() -> usize {
                let (mut victim, stealer) = new::<CAPACITY>();
                let (mut thief, _) = new::<CAPACITY>();
                for v in 1..=CAPACITY as u64 {
                    victim.push_back(Token::new(nz(v)), |_| unreachable!("not full"));
                }
                let got = stealer.steal_into(&mut thief, false).is_some();
                thief.len() + usize::from(got)
            }

            pub fn steal_half(g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
                g.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        let (mut victim, stealer) = new::<CAPACITY>();
                        let (mut thief, _) = new::<CAPACITY>();
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Victim full, thief empty (untimed).
                            while thief.pop().is_some() {}
                            let mut v = 1;
                            while victim.len() < CAPACITY {
                                victim.push_back(Token::new(nz(v)), |_| unreachable!("not full"));
                                v += 1;
                            }
                            let start = Instant::now();
                            let got = stealer.steal_into(&mut thief, false);
                            total += start.elapsed();
                            black_box(got);
                        }
                        total
                    })
                });
            }
        }
    };
}

ring_benches!(solution, runq_ref);
ring_benches!(mine, runq_mine);

const SOLUTION: &str = "gmp ring (solution)";
const MINE: &str = "gmp ring (your part 07)";

fn push_pop(c: &mut Criterion) {
    let mine_ok = mine_works();
    let mut g = c.benchmark_group("runq/push_pop");
    g.measurement_time(measurement_time());
    solution::push_pop(&mut g, SOLUTION);
    if mine_ok {
        mine::push_pop(&mut g, MINE);
    } else {
        eprintln!("runq/push_pop: your part 07 is skipped: exercises/07-runq still panics");
    }
    for (name, worker) in [
        ("crossbeam Worker (fifo)", Worker::new_fifo()),
        ("crossbeam Worker (lifo)", Worker::new_lifo()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                worker.push(black_box(1u64));
                black_box(worker.pop())
            })
        });
    }
    g.finish();
}

fn overflow(c: &mut Criterion) {
    let mine_ok = mine_works();
    let mut g = c.benchmark_group("runq/overflow");
    g.measurement_time(measurement_time());
    solution::overflow(&mut g, SOLUTION);
    if mine_ok {
        mine::overflow(&mut g, MINE);
    }
    // What the same 129 tokens cost pushed one by one onto the global queue.
    let injector = Injector::new();
    g.bench_function("crossbeam Injector, 129 single pushes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for v in 0..129u64 {
                    injector.push(black_box(v));
                }
                total += start.elapsed();
                while !injector.steal().is_empty() {}
            }
            total
        })
    });
    g.finish();
}

fn steal_half(c: &mut Criterion) {
    let mine_ok = mine_works();
    let mut g = c.benchmark_group("runq/steal_half");
    g.measurement_time(measurement_time());
    eprintln!(
        "runq/steal_half: tokens moved by one steal from 256: gmp ring {}{}, crossbeam {}",
        solution::steal_moves(),
        if mine_ok {
            format!(", your part 07 {}", mine::steal_moves())
        } else {
            String::new()
        },
        crossbeam_steal_moves()
    );
    solution::steal_half(&mut g, SOLUTION);
    if mine_ok {
        mine::steal_half(&mut g, MINE);
    }
    g.bench_function("crossbeam steal_batch_with_limit_and_pop", |b| {
        b.iter_custom(|iters| {
            let victim = Worker::new_fifo();
            let stealer = victim.stealer();
            let thief = Worker::new_fifo();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                while thief.pop().is_some() {}
                while victim.len() < 256 {
                    victim.push(1u64);
                }
                let start = Instant::now();
                let got = stealer.steal_batch_with_limit_and_pop(&thief, 128);
                total += start.elapsed();
                black_box(got.is_success());
            }
            total
        })
    });
    g.finish();
}

/// The tokens one crossbeam batch steal moves from a `Worker` of 256 (the popped one included).
fn crossbeam_steal_moves() -> usize {
    let victim = Worker::new_fifo();
    for v in 0..256u64 {
        victim.push(v);
    }
    let thief = Worker::new_fifo();
    match victim.stealer().steal_batch_with_limit_and_pop(&thief, 128) {
        Steal::Success(_) => thief.len() + 1,
        _ => 0,
    }
}

fn config() -> Criterion {
    let c = Criterion::default().warm_up_time(Duration::from_secs(1));
    if quick() { c.nresamples(10_000) } else { c }
}

criterion_group! {
    name = runq;
    config = config();
    targets = push_pop, overflow, steal_half
}
criterion_main!(runq);
