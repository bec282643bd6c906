//! Many Gs on the default builder, with what they cost: chapter 5's "Measure it" and issue
//! 10's scale targets.
//!
//! ```text
//! cargo run --release -p gmp --example scale -- parked 1000000
//! cargo run --release -p gmp --example scale -- yield2 100000
//! cargo run --release -p gmp --example scale -- sleep 100000
//! ```
//!
//! `parked N`: N Gs park on one channel at once; prints the RSS they added per G (VmRSS,
//! through part 01), the mappings they added and the page tables (VmPTE). `yield2 N`: N Gs
//! each yield twice, then the main G joins them all. `sleep N`: N Gs each sleep 100 ms
//! (`gmp::time::sleep`, chapter 11) and are joined: the wall time from the first spawn to the
//! last join, the peak RSS per G and the OS threads, as Go's twin in `benches/go` measures;
//! it first says whose timer heap runs (the solution, or yours with `--features
//! gmp/mine-11`). Each prints the stack layout the default builder chose.

use std::time::Instant;

use gmp::{PARTS, Runtime, Source};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, n) = match args.as_slice() {
        [what, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => (what.as_str(), n),
            _ => usage(&format!("{n:?} is not a count of Gs")),
        },
        _ => usage("two arguments expected"),
    };
    let rt = Runtime::builder()
        .build()
        .unwrap_or_else(|e| usage(&format!("cannot start the runtime: {e}")));
    println!(
        "default builder: {} Ps, {:?} stacks",
        rt.procs(),
        rt.stack_layout()
    );
    match what {
        "parked" => parked(&rt, n),
        "yield2" => yield2(&rt, n),
        "sleep" => sleepers(&rt, n),
        other => usage(&format!("unknown measurement {other:?}")),
    }
}

fn usage(why: &str) -> ! {
    eprintln!("scale: {why}; usage: scale parked N | scale yield2 N | scale sleep N");
    std::process::exit(2)
}

fn parked(rt: &Runtime, n: usize) {
    let before = Reading::now();
    let start = Instant::now();
    let (after, failed) = rt.block_on(move || {
        let (tx, rx) = gmp::chan::rendezvous::<()>();
        let wg = gmp::sync::WaitGroup::new();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (rx, wg) = (rx.clone(), wg.clone());
                wg.add(1);
                gmp::go(move || {
                    wg.done();
                    let _ = rx.recv();
                })
            })
            .collect();
        wg.wait(); // every G has run and is about to park in recv
        gmp::yield_now();
        let after = Reading::now();
        drop((tx, rx));
        let failed = handles.into_iter().filter_map(|h| h.join().err()).count();
        (after, failed)
    });
    println!(
        "{n} parked Gs in {:.2?} (this machine, shared: not a final figure), {failed} failed",
        start.elapsed()
    );
    before.report(&after, n);
}

fn yield2(rt: &Runtime, n: usize) {
    let before = Reading::now();
    let start = Instant::now();
    let (spawned, sum) = rt.block_on(move || {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                gmp::go(move || {
                    gmp::yield_now();
                    gmp::yield_now();
                    i as u64
                })
            })
            .collect();
        let spawned = Reading::now();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        (spawned, sum)
    });
    assert_eq!(
        sum,
        (n as u64) * (n as u64 - 1) / 2,
        "every G returned its index"
    );
    println!(
        "{n} Gs yielded twice and were joined in {:.2?} (this machine, shared: not a final \
         figure)",
        start.elapsed()
    );
    println!("when every G was spawned:");
    before.report(&spawned, n);
    println!("after every G was joined:");
    before.report(&Reading::now(), n);
    // Sysmon gives back the pages of free stacks past the hot limit about once a second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    println!("1.5 s later (sysmon has given back the free stacks' pages past the hot limit):");
    before.report(&Reading::now(), n);
}

fn sleepers(rt: &Runtime, n: usize) {
    // Say whose heap this is, so a learner's run on their own part is not taken on trust.
    match PARTS.iter().find(|&&(number, ..)| number == 11) {
        Some((_, _, Source::Mine)) => {
            println!("timer heap: your part 11 (exercises/11-timer, feature gmp/mine-11)")
        }
        Some((_, _, Source::Solution)) => println!(
            "timer heap: the solution (solutions/11-timer); --features gmp/mine-11 runs yours"
        ),
        None => println!("timer heap: part 11 is missing from gmp::PARTS"),
    }
    let before = Reading::now();
    let start = Instant::now();
    let (threads, early) = rt.block_on(move || {
        let nap = std::time::Duration::from_millis(100);
        let handles: Vec<_> = (0..n)
            .map(|_| {
                gmp::go(move || {
                    let start = Instant::now();
                    gmp::time::sleep(nap);
                    start.elapsed() < nap
                })
            })
            .collect();
        let threads = gmp::metrics().map_or(0, |m| m.os_threads);
        let early = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&e| e)
            .count();
        (threads, early)
    });
    println!(
        "{n} Gs slept 100 ms each: {:.0?} from the first spawn to the last join, {threads} OS \
         threads, {early} woke early (this machine, shared: not a final figure)",
        start.elapsed()
    );
    before.report(&Reading::now(), n);
}

/// RSS (through part 01), mappings and page tables of this process.
struct Reading {
    rss: u64,
    /// Peak RSS so far (VmHWM), in KiB.
    hwm_kib: u64,
    maps: usize,
    pte_kib: u64,
}

impl Reading {
    fn now() -> Reading {
        let rss = gmp::metrics().expect("/proc/self/status").rss_bytes;
        let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Reading {
            rss,
            hwm_kib: kib("VmHWM:"),
            maps,
            pte_kib: kib("VmPTE:"),
        }
    }

    fn report(&self, after: &Reading, n: usize) {
        let rss = after.rss.saturating_sub(self.rss);
        let peak = (after.hwm_kib * 1024).saturating_sub(self.rss);
        println!(
            "RSS added: {} KiB, {:.0} B per G (peak, VmHWM: {:.0} B per G); mappings {} -> {}; \
             page tables (VmPTE, not in RSS) {} -> {} KiB",
            rss / 1024,
            rss as f64 / n as f64,
            peak as f64 / n as f64,
            self.maps,
            after.maps,
            self.pte_kib,
            after.pte_kib
        );
    }
}
