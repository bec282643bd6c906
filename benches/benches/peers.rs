//! Criterion benches of the five programs of chapters 7–8 on gmp, tokio and may, at P=1 and
//! P=2: spawn+join, hand-off, yield, nested fib(35) to fib(10), a spawn chain of 10^6.
//!
//! ```text
//! cargo bench -p gmp-benches --bench peers              # all of them
//! cargo bench -p gmp-benches --bench peers -- fib       # one program
//! ```
//!
//! The programs are the crate's (`gmp_benches::peers`), the ones the class bench runs. Each
//! sample runs in a fresh copy of this bench binary (`--peer …`, under a time limit), as in the
//! class bench: may's worker count is fixed per process, and a runtime that fails (gmp's fib
//! on stage 1 runs out of mappings) or hangs must skip its bench, not stop the others. A
//! probe run decides that: a program that fails it is reported on stderr and not benched
//! (probes run before criterion's name filter applies, about half a minute in all). Go's
//! twins run in the class bench only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use gmp_benches::peers::{self, CHAIN_LEN, FIB_N, Peer, Program};

/// How long one sample's child may run; generous, for a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);
/// How long the probe of one program may run: one whole program takes about a second; a
/// runtime that needs more (may's chain at P=2 here) is named and not benched.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn exe() -> PathBuf {
    std::env::current_exe().expect("the bench binary's own path")
}

/// (size, repeat) of a child that runs `iters` criterion iterations: ops for the one-op
/// programs; whole programs repeated for fib and the chain.
fn sizes(program: Program, iters: u64) -> (u64, u64) {
    match program {
        Program::Fib => (FIB_N, iters),
        Program::Chain => (CHAIN_LEN, iters),
        _ => (iters, 1),
    }
}

fn bench_program(c: &mut Criterion, exe: &Path, program: Program) {
    for procs in [1, 2] {
        let mut g = c.benchmark_group(format!("peers/{}/p{procs}", program.name()));
        if program.whole_run() || program == Program::Chain {
            // One iteration is a whole program (about 0.1–1 s): criterion's least samples.
            g.sample_size(10);
        }
        g.measurement_time(if quick() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        });
        for peer in Peer::ALL {
            let probe = sizes(program, 1);
            if let Err(e) = peers::run_in_child(exe, peer, program, procs, probe, PROBE_LIMIT) {
                eprintln!(
                    "peers/{}/p{procs}/{}: not benched: {e}",
                    program.name(),
                    peer.name()
                );
                continue;
            }
            g.bench_function(peer.name(), |b| {
                b.iter_custom(|iters| {
                    peers::run_in_child(exe, peer, program, procs, sizes(program, iters), LIMIT)
                        .unwrap_or_else(|e| panic!("it passed its probe, then failed: {e}"))
                        .elapsed
                })
            });
        }
        g.finish();
    }
}

fn programs(c: &mut Criterion) {
    let exe = exe();
    for program in Program::ALL {
        bench_program(c, &exe, program);
    }
}

criterion_group! {
    name = peer_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500));
    targets = programs
}

/// criterion_main!, with the child mode first: `--peer …` runs one program and exits.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(peers::CHILD_FLAG) {
        return peers::child_main(&args[1..]);
    }
    peer_benches();
    Criterion::default().configure_from_args().final_summary();
    ExitCode::SUCCESS
}
