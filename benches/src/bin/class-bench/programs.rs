//! The class bench's chapters 7–8 section: five programs (spawn+join, hand-off, yield, nested
//! fib, spawn chain) on gmp, Go, tokio and may, at P=1 and P=2, in one run.
//!
//! gmp, tokio and may run in a fresh copy of this program each (`--peer`, see
//! `gmp_benches::peers`) under a time limit, so a runtime that fails or hangs costs its row,
//! not the bench, and may gets its worker count before its scheduler starts. Go runs its twin
//! in `benches/go`. Within every run the runtimes take turns, so drift hits them alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, GoBench, GoKind, go_on_path};
use gmp_benches::peers::{self, Peer, Program, fib_tasks};
use gmp_benches::report::{BLUE, Bar, Chart, GREEN, ORANGE, Report, Row, fmt_ns};
use gmp_benches::{Plan, median};

use crate::Out;

/// The P counts every program runs at.
pub(crate) const PROCS: [usize; 2] = [1, 2];

/// A runtime of the table: gmp, tokio, may (run here) or Go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Rt {
    Rust(Peer),
    Go,
}

impl Rt {
    /// Table order: gmp, then its yardstick Go, then the Rust peers.
    pub(crate) const ALL: [Rt; 4] = [
        Rt::Rust(Peer::Gmp),
        Rt::Go,
        Rt::Rust(Peer::Tokio),
        Rt::Rust(Peer::May),
    ];

    fn name(self) -> &'static str {
        match self {
            Rt::Rust(p) => p.name(),
            Rt::Go => "go",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Rt::Rust(Peer::Gmp) => "gmp",
            Rt::Rust(Peer::Tokio) => "tokio",
            Rt::Rust(Peer::May) => "may",
            Rt::Go => "Go",
        }
    }
}

fn key(program: Program) -> &'static str {
    match program {
        Program::SpawnJoin => "spawn_join",
        Program::Handoff => "handoff",
        Program::Yield => "yield",
        Program::Fib => "fib",
        Program::Chain => "chain",
    }
}

fn unit(program: Program) -> &'static str {
    if program.whole_run() { "ms" } else { "ns" }
}

fn what(program: Program, plan: Plan) -> String {
    match program {
        Program::SpawnJoin => "spawn+join one task".to_string(),
        Program::Handoff => "hand-off over a channel (ping-pong)".to_string(),
        Program::Yield => "yield to the other runnable task".to_string(),
        Program::Fib => format!(
            "nested fib({}) to fib({}), {} tasks, whole run",
            plan.fib_n,
            peers::FIB_CUTOFF,
            grouped(fib_tasks(plan.fib_n))
        ),
        Program::Chain => format!("spawn chain of {} tasks, per task", grouped(plan.chain_len)),
    }
}

fn go_kind(program: Program) -> GoKind {
    match program {
        Program::SpawnJoin => GoKind::SpawnJoin,
        Program::Handoff => GoKind::PingPong,
        Program::Yield => GoKind::Yield,
        Program::Fib => GoKind::Fib,
        Program::Chain => GoKind::Chain,
    }
}

/// The reference machine's figure for a row (ANCHORS.md, as the book quotes it), or "—".
fn reference(rt: Rt, program: Program, procs: usize) -> String {
    let f = match (rt, program, procs) {
        (Rt::Go, Program::SpawnJoin, 1) => fig("go.spawn_join_p1"),
        (Rt::Go, Program::SpawnJoin, _) => fig("go.spawn_join_p2"),
        (Rt::Go, Program::Handoff, 1) => fig("go.handoff"),
        (Rt::Go, Program::Yield, 1) => fig("go.gosched"),
        (Rt::Go, Program::Fib, 1) => fig("go.fib35_p1"),
        (Rt::Go, Program::Fib, _) => fig("go.fib35_p2"),
        (Rt::Rust(Peer::Tokio), Program::SpawnJoin, _) => fig("peer.tokio_spawn_join"),
        (Rt::Rust(Peer::Tokio), Program::Handoff, _) => fig("peer.tokio_handoff"),
        (Rt::Rust(Peer::Tokio), Program::Yield, _) => fig("peer.tokio_yield"),
        (Rt::Rust(Peer::May), Program::SpawnJoin, _) => fig("peer.may_spawn_join"),
        (Rt::Rust(Peer::May), Program::Handoff, _) => fig("peer.may_handoff"),
        (Rt::Rust(Peer::May), Program::Yield, _) => fig("peer.may_yield"),
        (Rt::Rust(Peer::Gmp), Program::Fib, _) => {
            return format!(
                "stage 1: fails, out of mappings at {} live Gs",
                fig("ref.fib35_stage1_live_gs").text()
            );
        }
        _ => return "—".to_string(),
    };
    f.text()
}

/// A figure (ns per op, or ms per whole run for fib), or why there is none.
type Figure = Result<f64, String>;

pub(crate) struct Programs {
    /// (runtime, program, P) → median, or the first failure.
    cells: HashMap<(Rt, Program, usize), Figure>,
    /// The Rust runtimes' cores busy over the timed part (process CPU time / wall time),
    /// median of the runs: what keeps a speed-up below the P count.
    busy: HashMap<(Rt, Program, usize), f64>,
    /// Why Go has no figures (not on PATH, build failed), if so.
    go_skipped: Option<String>,
    plan: Plan,
}

/// Which runtimes this run measures.
#[derive(Clone, Copy)]
pub(crate) struct Select {
    /// gmp's rows (the section `programs`).
    pub gmp: bool,
    /// Go's, tokio's and may's rows (the section `peers`).
    pub peers: bool,
}

impl Select {
    fn runs(self, rt: Rt) -> bool {
        match rt {
            Rt::Rust(Peer::Gmp) => self.gmp,
            _ => self.peers,
        }
    }
}

impl Programs {
    pub(crate) fn skipped(plan: Plan) -> Programs {
        Programs {
            cells: HashMap::new(),
            busy: HashMap::new(),
            go_skipped: None,
            plan,
        }
    }

    fn value(&self, rt: Rt, program: Program, procs: usize) -> Option<f64> {
        self.cells
            .get(&(rt, program, procs))
            .and_then(|f| f.as_ref().ok().copied())
    }
}

/// One run of one cell: ns per op, or ms per whole run (fib); for the Rust runtimes also
/// the cores busy (CPU time over wall time).
fn measure_once(
    exe: &Path,
    go: Option<&GoBench>,
    rt: Rt,
    program: Program,
    procs: usize,
    plan: Plan,
) -> Result<(f64, Option<f64>), String> {
    let n = match program {
        Program::Fib => plan.fib_n,
        Program::Chain => plan.chain_len,
        _ => plan.peer_ops,
    };
    let (elapsed_ns, ops, busy) = match rt {
        Rt::Go => {
            let bench = go.ok_or("Go skipped")?;
            let f = bench
                .run(go_kind(program), n, procs)
                .map_err(|e| e.to_string())?;
            // Go's fib prints ns per whole run (one op), the others ns per op.
            (f.ns_per_op, 1.0, None)
        }
        Rt::Rust(peer) => {
            let r = peers::run_in_child(exe, peer, program, procs, (n, 1), plan.peer_limit)
                .map_err(|e| e.to_string())?;
            let per = if program.whole_run() { 1 } else { r.ops };
            let busy = r
                .cpu
                .map(|cpu| cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9));
            (r.elapsed.as_nanos() as f64, per as f64, busy)
        }
    };
    let figure = if program.whole_run() {
        elapsed_ns / 1e6
    } else {
        elapsed_ns / ops
    };
    Ok((figure, busy))
}

pub(crate) fn measure(out: &Out, plan: Plan, dir: &Path, select: Select) -> Programs {
    out.line("");
    out.line(
        "Five programs at P=1 and P=2 (chapters 7–8): gmp beside Go, tokio and may, each run \
         in its own process",
    );
    out.predict(&format!(
        "nested fib({}) starts {} tasks. How long on gmp, Go, tokio and may at one P, and \
         how much faster at two? And how many ns per task for a chain of {} tasks, each \
         starting the next?",
        plan.fib_n,
        grouped(fib_tasks(plan.fib_n)),
        grouped(plan.chain_len)
    ));
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("class-bench"));
    let (go, go_skipped) = match go_on_path() {
        _ if !select.peers => (None, None),
        None => (None, Some(GO_SKIP_LINE.to_string())),
        Some(go) => match GoBench::build(&go, &dir.join("go")) {
            Ok(bench) => (Some(bench), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    if let Some(why) = &go_skipped {
        out.result(why);
    }
    let runtimes: Vec<Rt> = Rt::ALL
        .into_iter()
        .filter(|rt| select.runs(*rt) && (*rt != Rt::Go || go.is_some()))
        .collect();
    let mut samples: HashMap<(Rt, Program, usize), Result<Vec<f64>, String>> = HashMap::new();
    let mut busy_samples: HashMap<(Rt, Program, usize), Vec<f64>> = HashMap::new();
    for _ in 0..plan.peer_runs {
        for procs in PROCS {
            for program in Program::ALL {
                for &rt in &runtimes {
                    let acc = samples
                        .entry((rt, program, procs))
                        .or_insert_with(|| Ok(Vec::new()));
                    // A program that failed or hung once is not run again.
                    if let Ok(v) = acc {
                        match measure_once(&exe, go.as_ref(), rt, program, procs, plan) {
                            Ok((x, busy)) => {
                                v.push(x);
                                if let Some(b) = busy {
                                    busy_samples
                                        .entry((rt, program, procs))
                                        .or_default()
                                        .push(b);
                                }
                            }
                            Err(e) => *acc = Err(e),
                        }
                    }
                }
            }
        }
    }
    let cells: HashMap<_, _> = samples
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| median(&v))))
        .collect();
    // Only where the figure itself stands: a failed cell has no busy cores either.
    let busy: HashMap<_, _> = busy_samples
        .into_iter()
        .filter(|(k, _)| cells.get(k).is_some_and(Result::is_ok))
        .map(|(k, v)| (k, median(&v)))
        .collect();
    for procs in PROCS {
        for program in Program::ALL {
            let figures: Vec<String> = runtimes
                .iter()
                .map(|rt| match &cells[&(*rt, program, procs)] {
                    Ok(v) => format!("{} {} {}", rt.label(), fmt_ns(*v), unit(program)),
                    Err(e) => format!("{} failed ({})", rt.label(), short(e)),
                })
                .collect();
            out.result(&format!(
                "P={procs} {}: {}",
                what(program, plan),
                figures.join(", ")
            ));
            if program == Program::Fib {
                let cores: Vec<String> = runtimes
                    .iter()
                    .filter_map(|rt| {
                        let b = busy.get(&(*rt, program, procs))?;
                        Some(format!("{} {b:.2}", rt.label()))
                    })
                    .collect();
                if !cores.is_empty() {
                    out.result(&format!(
                        "P={procs} nested fib, cores busy (process CPU time / wall time): {}",
                        cores.join(", ")
                    ));
                }
            }
        }
    }
    Programs {
        cells,
        busy,
        go_skipped,
        plan,
    }
}

/// The start of a failure for a table cell: up to its first `;`, at most 110 characters.
fn short(e: &str) -> String {
    let first = e.split(';').next().unwrap_or(e).trim();
    if first.chars().count() <= 110 {
        first.to_string()
    } else {
        let cut: String = first.chars().take(109).collect();
        format!("{cut}…")
    }
}

/// 196417 -> "196,417".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

pub(crate) fn rows(report: &mut Report, p: &Programs) {
    report.notes.push(
        "Programs at P=1 and P=2: gmp through its public API (Runtime::builder().procs(P), \
         go, join, chan::rendezvous, yield_now; the default builder otherwise); Go with \
         GOMAXPROCS=P (benches/go); tokio's Builder::new_multi_thread().worker_threads(P), \
         the program itself a spawned task; may with may::config().set_workers(P). Each \
         figure is the median of runs in a fresh process (`class-bench --peer`), after an \
         untimed warm-up in the same runtime; every run checks its result (the joined sum, \
         the rally's count, the yields, fib's value, the chain's length), so wrong work is a \
         failure, not a time. A run that fails or outlives its time limit is killed and not \
         repeated; its row shows why. Cores busy: the child's CPU time (getrusage, every \
         thread, user + system) over the wall time of the timed run, median of the runs; at \
         P=1 it should be near 1, and less means something else had the CPU. The speed-up \
         is the cores busy at P=2 over those at P=1, divided by how much more CPU the same \
         tree took at P=2."
            .to_string(),
    );
    report.notes.push(
        "tokio at P=1 is the multi-thread runtime with one worker: the shape comparable with \
         one P of gmp and GOMAXPROCS=1, since a multi-P program runs on it. tokio also has a \
         current_thread runtime (the caller's thread drives every task, no worker), which \
         skips the cross-thread wake-ups and is faster on one core. tokio and may have no \
         unbuffered channel: their ping-pong uses tokio's mpsc::channel(1) and may's mpsc, \
         which in a ping-pong never hold more than one message, so each message is still one \
         hand-off."
            .to_string(),
    );
    report.notes.push(
        "may's spawn is an `unsafe fn`: a coroutine may resume on another worker thread, so a \
         thread-local read or borrowed across a blocking call can be another thread's, which \
         Rust's Send bound cannot see because it is the stack that moves (the S1 hazard of \
         issue 10, chapter 8). The bench's closures touch no thread-local; that is the \
         contract its `unsafe` blocks state. may's worker count is global and fixed once its \
         scheduler starts, one more reason each figure runs in its own process."
            .to_string(),
    );
    if let Some(why) = &p.go_skipped {
        report
            .notes
            .push(format!("Go rows of the programs skipped: {why}"));
    }
    for procs in PROCS {
        for program in Program::ALL {
            for rt in Rt::ALL {
                let cell = p.cells.get(&(rt, program, procs));
                let this = match cell {
                    Some(Ok(v)) => fmt_ns(*v),
                    Some(Err(e)) => format!("failed: {}", short(e)),
                    None if rt == Rt::Go && p.go_skipped.is_some() => "skipped (no go)".to_string(),
                    None => "skipped".to_string(),
                };
                if let Some(Err(e)) = cell
                    && short(e) != e.trim()
                {
                    report.notes.push(format!(
                        "{} {} at P={procs}: {e}",
                        rt.label(),
                        program.name()
                    ));
                }
                report.rows.push(Row::new(
                    &format!(
                        "peer.{}.{}.p{procs}.{}",
                        key(program),
                        rt.name(),
                        unit(program)
                    ),
                    format!(
                        "P={procs} {}: {} ({})",
                        what(program, p.plan),
                        rt.label(),
                        unit(program)
                    ),
                    this,
                    p.value(rt, program, procs),
                    "—",
                    &reference(rt, program, procs),
                ));
            }
        }
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.2}×"))
}

pub(crate) fn ratios(report: &mut Report, p: &Programs) {
    let target = format!("target ≤ {}×", fig("target.g_over_go").text());
    for procs in PROCS {
        for program in Program::ALL {
            let go = p.value(Rt::Go, program, procs);
            for peer in Peer::ALL {
                let rt = Rt::Rust(peer);
                let r = p.value(rt, program, procs).zip(go).map(|(x, g)| x / g);
                report.ratios.push(Row::new(
                    &format!(
                        "ratio.peer.{}.p{procs}.{}_over_go",
                        key(program),
                        peer.name()
                    ),
                    format!("P={procs} {}: {} / Go", what(program, p.plan), rt.label()),
                    ratio_text(r),
                    r,
                    "—",
                    if peer == Peer::Gmp { &target } else { "—" },
                ));
            }
        }
    }
    // fib's speed-up from one P to two, each runtime against itself.
    let (go1, go2) = (fig("go.fib35_p1"), fig("go.fib35_p2"));
    for rt in Rt::ALL {
        let r = p
            .value(rt, Program::Fib, 1)
            .zip(p.value(rt, Program::Fib, 2))
            .map(|(one, two)| one / two);
        let reference = match rt {
            Rt::Go => format!(
                "≈{:.1}× ({} / {})",
                go1.mid_in("ms") / go2.mid_in("ms"),
                go1.text(),
                go2.text()
            ),
            Rt::Rust(Peer::Gmp) => format!("target ≥ {}×", fig("target.fib_speedup").text()),
            _ => "—".to_string(),
        };
        report.ratios.push(Row::new(
            &format!("ratio.peer.fib.{}.p1_over_p2", rt.name()),
            format!("nested fib, P=1 / P=2 (speed-up): {}", rt.label()),
            ratio_text(r),
            r,
            "—",
            &reference,
        ));
    }
    // Why a speed-up stays below 2: the speed-up is the cores busy at P=2 over those at P=1,
    // divided by how much more CPU the same tree took at P=2.
    for peer in Peer::ALL {
        let rt = Rt::Rust(peer);
        let busy = |procs| p.busy.get(&(rt, Program::Fib, procs)).copied();
        let cpu = |procs| {
            p.value(rt, Program::Fib, procs)
                .zip(busy(procs))
                .map(|(ms, b)| ms * b)
        };
        let more_cpu = cpu(2).zip(cpu(1)).map(|(two, one)| two / one);
        report.ratios.push(Row::new(
            &format!("ratio.peer.fib.{}.p2_cores_busy", peer.name()),
            format!("nested fib at P=2, cores busy (CPU / wall): {}", rt.label()),
            busy(2).map_or("—".to_string(), |b| format!("{b:.2}")),
            busy(2),
            "—",
            "—",
        ));
        report.ratios.push(Row::new(
            &format!("ratio.peer.fib.{}.cpu_p2_over_p1", peer.name()),
            format!("nested fib, CPU time at P=2 / at P=1: {}", rt.label()),
            ratio_text(more_cpu),
            more_cpu,
            "—",
            "—",
        ));
    }

    // The chart: the whole programs as multiples of Go's time at the same P.
    let mut bars = Vec::new();
    for program in [Program::Fib, Program::Chain] {
        for procs in PROCS {
            let Some(go) = p.value(Rt::Go, program, procs) else {
                continue;
            };
            for (peer, color) in [(Peer::Gmp, BLUE), (Peer::Tokio, GREEN), (Peer::May, ORANGE)] {
                if let Some(v) = p.value(Rt::Rust(peer), program, procs) {
                    bars.push(Bar {
                        label: format!("{} P={procs}, {}", program.name(), peer.name()),
                        value: v / go,
                        reference: Some(1.0),
                        color,
                    });
                }
            }
        }
    }
    let failed: Vec<String> = p
        .cells
        .iter()
        .filter(|((_, program, _), f)| {
            // Only the charted programs: the one-op loops have no bar anyway.
            f.is_err() && matches!(program, Program::Fib | Program::Chain)
        })
        .map(|((rt, program, procs), _)| format!("{} {} P={procs}", rt.label(), program.name()))
        .collect();
    let mut legend = vec![
        "Time over Go's at the same P, from this run; dashed: Go (1×). Shorter is faster."
            .to_string(),
        "Blue gmp, green tokio (multi-thread), orange may.".to_string(),
    ];
    if !failed.is_empty() {
        let mut failed = failed;
        failed.sort();
        legend.push(format!(
            "No bar (failed, see the table): {}",
            failed.join(", ")
        ));
    }
    report.charts.push(Chart {
        title: "Whole programs: time / Go's, same P (shorter is faster)".to_string(),
        bars,
        legend,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_cut_for_its_cell() {
        assert_eq!(short("out of mappings; use slab"), "out of mappings");
        let long = "x".repeat(300);
        assert_eq!(short(&long).chars().count(), 110);
        assert_eq!(grouped(196_417), "196,417");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }

    /// A failed cell shows its message in the table and the whole of it in the notes; a
    /// measured one gets its ratio to Go.
    #[test]
    fn failed_rows_show_why_and_ratios_divide_by_go() {
        let mut p = Programs::skipped(Plan::QUICK);
        let why = "gmp fib 35: G 59727 could not start: out of memory mappings; use slab stacks";
        p.cells
            .insert((Rt::Rust(Peer::Gmp), Program::Fib, 1), Err(why.to_string()));
        p.cells.insert((Rt::Go, Program::Chain, 2), Ok(300.0));
        p.cells
            .insert((Rt::Rust(Peer::Tokio), Program::Chain, 2), Ok(450.0));
        let mut report = Report::default();
        rows(&mut report, &p);
        ratios(&mut report, &p);
        let row = |key: &str| {
            report
                .rows
                .iter()
                .chain(&report.ratios)
                .find(|r| r.key == key)
                .unwrap_or_else(|| panic!("no row {key}"))
                .clone()
        };
        let fib = row("peer.fib.gmp.p1.ms");
        assert!(fib.this.starts_with("failed: "), "{}", fib.this);
        assert!(fib.this.contains("out of memory mappings"), "{}", fib.this);
        assert!(report.notes.iter().any(|n| n.contains("use slab stacks")));
        assert_eq!(row("ratio.peer.chain.p2.tokio_over_go").value, Some(1.5));
        assert_eq!(row("ratio.peer.chain.p2.gmp_over_go").value, None);
        assert_eq!(report.charts.last().unwrap().bars.len(), 1);
        // 4 runtimes × 5 programs × 2 Ps.
        assert_eq!(
            report
                .rows
                .iter()
                .filter(|r| r.key.starts_with("peer."))
                .count(),
            40
        );
    }
}
