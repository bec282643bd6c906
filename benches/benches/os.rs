//! Criterion benches of the OS costs of chapters 1–3: process spawn, thread spawn+join, and
//! the ping-pong hand-off over three mechanisms, cross-core and same-core; and the
//! user-space switch of chapter 4 (part 04's asm switch and step-3 fiber against corosensei);
//! and the Gs of chapter 6 at P=1 (spawn+join, channel hand-off, yield) on both engines.
//!
//! ```text
//! cargo bench -p gmp-benches               # full: HTML under target/criterion/report/
//! cargo bench -p gmp-benches -- --quick    # quick: criterion's --quick, shorter limits
//! cargo bench -p gmp-benches -- handoff    # one group
//! cargo bench -p gmp-benches -- switch     # asm switch vs asm fiber vs corosensei round trip
//! cargo bench -p gmp-benches -- g/         # Gs on one P (Go's twins are in the class bench)
//! ```
//!
//! The measurements are the crate's (`gmp_benches::*`), the same code the class bench runs.
//! Each returns its own timing, so the benches use `iter_custom`: the hand-off's thread
//! start and pinning are outside the timed part. The 10k sleeping threads are in the class
//! bench only; they measure memory, which criterion does not.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gmp_benches::{
    Engine, Mechanism, Placement, gs, handoff, osthread_spawn_join, process_spawn_wait,
    std_spawn_join, switch_round_trip,
};

/// `--quick` on the command line (criterion's flag: stop once the estimate is stable, at
/// most `measurement_time` per bench). We also shorten the limit so the whole quick set
/// stays within seconds.
fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Per-bench measurement time: the upper bound in quick mode, the target otherwise.
fn measurement_time() -> Duration {
    if quick() {
        Duration::from_millis(800)
    } else {
        Duration::from_secs(3)
    }
}

fn process(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    g.sample_size(20).measurement_time(measurement_time());
    g.bench_function("spawn", |b| {
        b.iter_custom(|iters| process_spawn_wait(iters).expect("spawning /bin/true"))
    });
    g.finish();
}

fn thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("thread/spawn_join");
    g.sample_size(30).measurement_time(measurement_time());
    g.bench_function("std", |b| {
        b.iter_custom(|iters| std_spawn_join(iters).expect("std::thread spawn"))
    });
    // Includes MBuilder's tid handshake: spawn returns only once the thread reported its tid.
    g.bench_function("osthread", |b| {
        b.iter_custom(|iters| osthread_spawn_join(iters).expect("osthread::MBuilder spawn"))
    });
    g.finish();
}

fn handoffs(c: &mut Criterion) {
    for mechanism in Mechanism::ALL {
        let mut g = c.benchmark_group(format!("handoff/{}", mechanism.name()));
        g.sample_size(20).measurement_time(measurement_time());
        for placement in Placement::ALL {
            let cpus = match placement.cpus() {
                Ok(cpus) => cpus,
                Err(why) => {
                    eprintln!("handoff/{}/{}: {why}", mechanism.name(), placement.name());
                    continue;
                }
            };
            // One criterion iteration is one hand-off; a rally does them in round trips.
            g.bench_function(placement.name(), |b| {
                b.iter_custom(|iters| {
                    handoff(mechanism, cpus, iters.div_ceil(2))
                        .expect("ping-pong")
                        .scaled_to(iters)
                })
            });
        }
        g.finish();
    }
}

fn switches(c: &mut Criterion) {
    let mut g = c.benchmark_group("switch");
    // A round trip takes nanoseconds: criterion's iteration counts reach millions quickly,
    // so a shorter warm-up is enough in quick mode.
    g.measurement_time(measurement_time());
    if quick() {
        g.warm_up_time(Duration::from_millis(300));
    }
    for engine in Engine::ALL {
        // One criterion iteration is one round trip (resume + suspend); each sample sets up
        // its own stack and context outside the timed loop.
        g.bench_function(engine.name(), |b| {
            b.iter_custom(|iters| switch_round_trip(engine, iters).expect("switch round trip"))
        });
    }
    g.finish();
}

fn gs(c: &mut Criterion) {
    let mut g = c.benchmark_group("g");
    g.measurement_time(measurement_time());
    for engine in [gmp::Engine::Corosensei, gmp::Engine::Asm] {
        // Each sample starts its own one-P runtime outside the timed part.
        g.bench_function(format!("spawn_join/{}", engine.name()), |b| {
            b.iter_custom(|iters| gs::g_spawn_join(engine, iters).expect("G spawn+join"))
        });
        g.bench_function(format!("handoff/{}", engine.name()), |b| {
            b.iter_custom(|iters| gs::g_ping_pong(engine, iters).expect("G hand-off"))
        });
        g.bench_function(format!("yield/{}", engine.name()), |b| {
            b.iter_custom(|iters| gs::g_yield(engine, iters).expect("G yield"))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    let c = Criterion::default().warm_up_time(Duration::from_secs(1));
    if quick() {
        // The bootstrap dominates a quick run's time (most of it is CPU spent analysing, not
        // measuring): 10^4 resamples instead of 10^5 keep its confidence intervals usable.
        c.nresamples(10_000)
    } else {
        c
    }
}

criterion_group! {
    name = os;
    config = config();
    targets = process, thread, handoffs, switches, gs
}
criterion_main!(os);
