//! Measurements of gmp's Gs at P=1 (chapter 6): spawn + join, ping-pong over a rendezvous
//! channel, yield, and the memory of parked Gs. Each has an OS-thread twin here and a Go twin
//! in `go.rs`, so the report shows them side by side from one run.
//!
//! Not here: the raw switch (lib.rs `switch_round_trip`), the report (report.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use gmp::{Engine, Runtime};

use crate::BenchError;
use crate::parts::{osthread, procinfo};

fn runtime(engine: Engine) -> Result<Runtime, BenchError> {
    Runtime::builder()
        .procs(1)
        .engine(engine)
        .build()
        .map_err(|e| BenchError::new("starting a gmp runtime with one P", e))
}

/// Time to start one G and join it, `iters` times one after the other, on one P.
pub fn g_spawn_join(engine: Engine, iters: u64) -> Result<Duration, BenchError> {
    runtime(engine)?.block_on(move || {
        let start = Instant::now();
        for i in 0..iters {
            let h = gmp::go(move || std::hint::black_box(i));
            if h.join().is_err() {
                return Err(BenchError::new("G spawn+join", "a G failed"));
            }
        }
        Ok(start.elapsed())
    })
}

/// Time for `handoffs` messages between two Gs on one P over unbuffered channels (a round
/// trip is two hand-offs), as Go's unbuffered ping-pong.
pub fn g_ping_pong(engine: Engine, handoffs: u64) -> Result<Duration, BenchError> {
    let rounds = handoffs.div_ceil(2);
    runtime(engine)?.block_on(move || {
        let (tx, rx) = gmp::chan::rendezvous::<u64>();
        let (back_tx, back_rx) = gmp::chan::rendezvous::<u64>();
        let echo = gmp::go(move || {
            while let Ok(v) = rx.recv() {
                if back_tx.send(v).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        for i in 0..rounds {
            tx.send(i).map_err(|e| BenchError::new("G ping-pong", e))?;
            back_rx
                .recv()
                .map_err(|e| BenchError::new("G ping-pong", e))?;
        }
        let elapsed = start.elapsed();
        drop(tx);
        let _ = echo.join();
        Ok(elapsed.mul_f64(handoffs as f64 / (2 * rounds) as f64))
    })
}

/// Time for `yields` calls of `yield_now`, made in turn by two Gs on one P (each yield hands
/// the P to the other), as Go's Gosched between two goroutines.
pub fn g_yield(engine: Engine, yields: u64) -> Result<Duration, BenchError> {
    let each = yields.div_ceil(2);
    runtime(engine)?.block_on(move || {
        let start = Instant::now();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                gmp::go(move || {
                    for _ in 0..each {
                        gmp::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|e| BenchError::new("G yield", e))?;
        }
        Ok(start.elapsed().mul_f64(yields as f64 / (2 * each) as f64))
    })
}

/// Time for `yields` calls of `sched_yield` made in turn by two threads pinned to one CPU:
/// the OS-thread twin of [`g_yield`].
pub fn thread_yield(cpu: usize, yields: u64) -> Result<Duration, BenchError> {
    let each = yields.div_ceil(2);
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let mut handles = Vec::new();
    for name in ["yield-a", "yield-b"] {
        let b = barrier.clone();
        let h = osthread::MBuilder::new(name)
            .cpus(&[cpu])
            .spawn(move || {
                b.wait();
                for _ in 0..each {
                    thread::yield_now();
                }
            })
            .map_err(|e| BenchError::new("starting a yield thread", e))?;
        handles.push(h);
    }
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join()
            .map_err(|_| BenchError::new("thread yield", "a thread panicked"))?;
    }
    Ok(start.elapsed().mul_f64(yields as f64 / (2 * each) as f64))
}

/// What [`parked_gs`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedGs {
    /// Gs asked for.
    pub asked: usize,
    /// Gs that started and parked.
    pub parked: usize,
    /// Why the others could not start (the first error), if any did not.
    pub failure: Option<String>,
    /// Resident memory added while they were parked, in bytes.
    pub rss_bytes: u64,
    /// Wall time to start them all and see them parked.
    pub create: Duration,
}

impl ParkedGs {
    /// Resident bytes per parked G.
    pub fn rss_per_g(&self) -> f64 {
        self.rss_bytes as f64 / self.parked.max(1) as f64
    }

    /// Creation time per parked G.
    pub fn create_per_g(&self) -> Duration {
        self.create / self.parked.max(1) as u32
    }
}

/// Parks `n` Gs at once on one channel, on one P, with `stack` bytes each, guarded or in
/// slab mode; reports the resident memory they added. Run it in a fresh process (the class
/// bench does) so the before/after RSS is not blurred by earlier runs.
pub fn parked_gs(n: usize, stack: usize, slab: bool) -> Result<ParkedGs, BenchError> {
    let builder = Runtime::builder().procs(1).stack_size(stack);
    let builder = if slab {
        // SAFETY: these Gs only wait on a channel: a few hundred bytes of their stack.
        unsafe { builder.slab_stacks() }
    } else {
        // Explicit: the default is guarded slab where the kernel has guard regions.
        builder.guarded_stacks()
    };
    let before = rss_bytes()?;
    let rt = builder
        .build()
        .map_err(|e| BenchError::new("starting the runtime", e))?;
    rt.block_on(move || {
        let started = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = gmp::chan::rendezvous::<()>();
        let start = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (rx, started) = (rx.clone(), started.clone());
                gmp::go(move || {
                    started.fetch_add(1, Relaxed);
                    let _ = rx.recv();
                })
            })
            .collect();
        // Yield until every G above has run up to its recv and parked (or failed to get a
        // stack, and so stopped counting): the main G may get a turn before the last of
        // them (the scheduler looks past the local queue every 61st turn), so wait until a
        // few turns in a row see no new one.
        let mut quiet = 0;
        let mut parked = 0;
        while parked < n && quiet < 3 {
            gmp::yield_now();
            let now = started.load(Relaxed);
            quiet = if now == parked { quiet + 1 } else { 0 };
            parked = now;
        }
        let create = start.elapsed();
        let after = rss_bytes()?;
        drop(tx);
        drop(rx);
        let mut failure = None;
        for h in handles {
            if let Err(e) = h.join() {
                failure.get_or_insert_with(|| e.to_string());
            }
        }
        Ok(ParkedGs {
            asked: n,
            parked,
            failure,
            rss_bytes: after.saturating_sub(before),
            create,
        })
    })
}

/// What [`sleeping_gs`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct SleepingGs {
    /// Gs that slept.
    pub n: usize,
    /// From the first spawn to the last join.
    pub wall: Duration,
    /// Resident memory added once every G was started (they sleep then), in bytes.
    pub rss_bytes: u64,
    /// Gs that woke before their time (a broken timer; the class bench reports it).
    pub early: usize,
}

impl SleepingGs {
    /// Resident bytes per sleeping G.
    pub fn rss_per_g(&self) -> f64 {
        self.rss_bytes as f64 / self.n.max(1) as f64
    }
}

/// How long `sleeping_gs` waits for its Gs to start before it reads RSS anyway.
const STARTING_BOUND: Duration = Duration::from_secs(30);

/// `n` Gs that each sleep `nap` (chapter 11's row, Go's `gobench sleep` twin) on a runtime
/// of `procs` Ps: the wall time from the first spawn to the last join, and the RSS they
/// added, read once every G has started. Run it in a fresh process (the class bench does).
pub fn sleeping_gs(n: usize, nap: Duration, procs: usize) -> Result<SleepingGs, BenchError> {
    let before = rss_bytes()?;
    let rt = Runtime::builder()
        .procs(procs)
        .build()
        .map_err(|e| BenchError::new("starting the runtime", e))?;
    rt.block_on(move || {
        let started = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let started = started.clone();
                gmp::go(move || {
                    let t = Instant::now();
                    started.fetch_add(1, Relaxed);
                    gmp::time::sleep(nap);
                    t.elapsed() < nap
                })
            })
            .collect();
        // Every G has started (as Go's twin waits for all). Not bounded by the nap: at P=2
        // starting 100k Gs can take longer than 100 ms, and reading RSS before they all run
        // counted only the stacks touched so far (0.8 KiB per G instead of about 4.5). The
        // first ones may have woken by then; their stacks stay resident in the pool.
        while started.load(Relaxed) < n && start.elapsed() < STARTING_BOUND {
            gmp::yield_now();
        }
        let after = rss_bytes()?;
        let mut early = 0;
        for h in handles {
            match h.join() {
                Ok(woke_early) => early += usize::from(woke_early),
                Err(e) => return Err(BenchError::new("a sleeping G", e)),
            }
        }
        Ok(SleepingGs {
            n,
            wall: start.elapsed(),
            rss_bytes: after.saturating_sub(before),
            early,
        })
    })
}

fn rss_bytes() -> Result<u64, BenchError> {
    procinfo::status(procinfo::Pid::Current)
        .map(|s| s.vm_rss_kib * 1024)
        .map_err(|e| BenchError::new("reading VmRSS", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_measurements_run_on_both_engines() {
        for engine in [Engine::Corosensei, Engine::Asm] {
            assert!(g_spawn_join(engine, 10).unwrap() > Duration::ZERO);
            assert!(g_ping_pong(engine, 10).unwrap() > Duration::ZERO);
            assert!(g_yield(engine, 10).unwrap() > Duration::ZERO);
        }
        assert!(thread_yield(0, 10).unwrap() > Duration::ZERO);
    }

    #[test]
    fn parked_gs_counts_every_g() {
        let p = parked_gs(500, 16 << 10, true).unwrap();
        assert_eq!(p.parked, 500, "{p:?}");
        assert_eq!(p.failure, None);
    }
}
