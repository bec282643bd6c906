//! The class bench's chapter 6 section: Gs on one P beside OS threads and Go.
//!
//! Spawn + join, ping-pong hand-off and yield run in this process on both engines; Go's
//! twins run in the Go program of `benches/go` when `go` is on PATH. Parked-G memory runs in
//! a fresh copy of this program (`--parked`), so one measurement's pages do not blur the
//! next one's RSS.

use std::path::Path;
use std::process::{Command, ExitCode};

use gmp::Engine;
use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, GoBench, GoFigure, GoKind, go_on_path};
use gmp_benches::gs::{ParkedGs, g_ping_pong, g_spawn_join, g_yield, parked_gs, thread_yield};
use gmp_benches::report::{Report, Row, fmt_ns};
use gmp_benches::{Plan, median};

use crate::{Out, push};

const ENGINES: [Engine; 2] = [Engine::Corosensei, Engine::Asm];

/// The three timed operations, in the order of the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    SpawnJoin,
    PingPong,
    Yield,
}

impl Op {
    const ALL: [Op; 3] = [Op::SpawnJoin, Op::PingPong, Op::Yield];

    fn what(self) -> &'static str {
        match self {
            Op::SpawnJoin => "spawn+join one G",
            Op::PingPong => "hand-off over an unbuffered channel",
            Op::Yield => "yield to the other runnable G",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Op::SpawnJoin => "spawn_join",
            Op::PingPong => "handoff",
            Op::Yield => "yield",
        }
    }

    fn go_kind(self) -> GoKind {
        match self {
            Op::SpawnJoin => GoKind::SpawnJoin,
            Op::PingPong => GoKind::PingPong,
            Op::Yield => GoKind::Yield,
        }
    }

    /// Go at P=1 on the reference machine, as the book quotes it.
    fn reference(self) -> String {
        let go = match self {
            Op::SpawnJoin => fig("go.spawn_join_p1"),
            Op::PingPong => fig("go.handoff"),
            Op::Yield => fig("go.gosched"),
        };
        format!("Go {}", go.text())
    }

    fn seed(self) -> String {
        match self {
            Op::SpawnJoin => format!("{} (create)", fig("seed.goroutine_create").text()),
            Op::PingPong | Op::Yield => {
                format!("{} (switch)", fig("seed.switch_goroutine").text())
            }
        }
    }

    fn run(self, engine: Engine, n: u64) -> Result<f64, String> {
        let t = match self {
            Op::SpawnJoin => g_spawn_join(engine, n),
            Op::PingPong => g_ping_pong(engine, n),
            Op::Yield => g_yield(engine, n),
        };
        t.map(|d| d.as_secs_f64() * 1e9 / n.max(1) as f64)
            .map_err(|e| e.to_string())
    }
}

/// Parked-G memory runs: (label, key, Gs, stack bytes, slab?).
const PARKED: [(&str, &str, usize, usize, bool); 2] = [
    (
        "1M Gs, slab, 16 KiB stacks",
        "slab_1m",
        1_000_000,
        16 << 10,
        true,
    ),
    (
        "100k Gs, guarded, 64 KiB stacks",
        "guarded_100k",
        100_000,
        64 << 10,
        false,
    ),
];

/// The keys of the parked-G rows (written only when measured).
#[cfg(test)]
pub(crate) fn parked_keys() -> Vec<String> {
    PARKED
        .iter()
        .map(|(_, key, _, _, _)| format!("g.parked.{key}.rss_kib"))
        .collect()
}

/// A figure, or why there is none.
type Figure<T> = Result<T, String>;

pub(crate) struct Gs {
    ns: Vec<((Op, Engine), Figure<f64>)>,
    thread_yield: Figure<f64>,
    /// `Err`: Go skipped (not on PATH, or its build failed).
    go: Figure<Vec<(Op, Figure<f64>)>>,
    go_parked: Figure<Vec<(usize, Figure<GoFigure>)>>,
    parked: Vec<(usize, Figure<ParkedGs>)>,
}

/// Which of this section's measurements run (`--only`, or a learner's run).
#[derive(Clone, Copy)]
pub(crate) struct Select {
    /// gmp's spawn+join, hand-off and yield, and the OS-thread yield.
    pub g: bool,
    /// Go's twins (when `go` is on PATH): its ops, and with `parked` its parked goroutines.
    pub go: bool,
    /// Parked-G memory, gmp and Go.
    pub parked: bool,
}

impl Select {
    pub(crate) fn any(self) -> bool {
        self.g || self.go || self.parked
    }
}

impl Gs {
    /// Nothing measured (the rows of sections that did not run are dropped).
    pub(crate) fn skipped() -> Gs {
        Gs {
            ns: Vec::new(),
            thread_yield: Err("skipped".to_string()),
            go: Err("skipped".to_string()),
            go_parked: Err("skipped".to_string()),
            parked: Vec::new(),
        }
    }

    fn gmp(&self, op: Op, engine: Engine) -> Option<f64> {
        self.ns
            .iter()
            .find(|(k, _)| *k == (op, engine))
            .and_then(|(_, r)| r.as_ref().ok().copied())
    }

    fn go(&self, op: Op) -> Option<f64> {
        let all = self.go.as_ref().ok()?;
        all.iter()
            .find(|(o, _)| *o == op)
            .and_then(|(_, r)| r.as_ref().ok().copied())
    }
}

pub(crate) fn measure(out: &Out, plan: Plan, dir: &Path, select: Select) -> Gs {
    out.line("");
    out.line("Gs on one P (chapter 6), beside OS threads and Go (GOMAXPROCS=1)");
    out.predict(
        "spawn+join of one G, a hand-off between two Gs over an unbuffered channel, one \
         yield: how many ns each, next to a thread spawn+join (above) and Go? And how many \
         KiB of memory does a parked G cost?",
    );
    let n = plan.g_ops;
    type Samples = Figure<Vec<f64>>;
    let mut runs: Vec<((Op, Engine), Samples)> = Op::ALL
        .iter()
        .flat_map(|op| ENGINES.map(|e| ((*op, e), Ok(Vec::new()))))
        .collect();
    let mut yields = Ok(Vec::new());
    // sched_yield costs µs: fewer of them keep the run short.
    let thread_yields = n.clamp(1, 200_000);
    let g_runs = if select.g { plan.runs } else { 0 };
    for _ in 0..g_runs {
        for ((op, engine), acc) in &mut runs {
            push(acc, op.run(*engine, n));
        }
        push(
            &mut yields,
            thread_yield(0, thread_yields).map(|d| d.as_secs_f64() * 1e9 / thread_yields as f64),
        );
    }
    let ns: Vec<_> = runs
        .into_iter()
        .map(|(k, r)| (k, r.map(|v| median(&v))))
        .collect();
    for ((op, engine), r) in ns.iter().filter(|_| select.g) {
        match r {
            Ok(v) => out.result(&format!(
                "gmp {:<10} {:<36} {:>7} ns",
                engine.name(),
                op.what(),
                fmt_ns(*v)
            )),
            Err(e) => out.result(&format!("gmp {} {}: failed: {e}", engine.name(), op.what())),
        }
    }
    let thread_yield = yields.map(|v| median(&v));
    if let (true, Ok(v)) = (select.g, &thread_yield) {
        out.result(&format!(
            "OS threads: sched_yield between two threads on one CPU: {} ns",
            fmt_ns(*v)
        ));
    }

    let bench = match go_on_path() {
        // The Go twins, spawn+join to parked, belong to the `go` section: a learner's build
        // (which runs only the rows of their parts) must not spend half a minute on Go.
        _ if !select.go => Err("skipped".to_string()),
        None => Err(GO_SKIP_LINE.to_string()),
        Some(go) => {
            let version = GoBench::version(&go).unwrap_or_else(|e| e.to_string());
            out.result(&format!("Go: {version}"));
            GoBench::build(&go, &dir.join("go")).map_err(|e| e.to_string())
        }
    };
    let go = bench.as_ref().map_err(Clone::clone).map(|bench| {
        Op::ALL
            .iter()
            .filter(|_| select.go)
            .map(|op| {
                let mut acc = Ok(Vec::new());
                for _ in 0..plan.runs {
                    push(&mut acc, bench.run(op.go_kind(), n, 1).map(|f| f.ns_per_op));
                }
                let r = acc.map(|v| median(&v));
                match &r {
                    Ok(v) => out.result(&format!("Go {:<47} {:>7} ns", op.what(), fmt_ns(*v))),
                    Err(e) => out.result(&format!("Go {}: failed: {e}", op.what())),
                }
                (*op, r)
            })
            .collect()
    });
    if let (true, Err(why)) = (select.go, &go) {
        out.result(why);
    }

    if select.parked {
        out.predict(
            "a million Gs parked on one channel: how much memory per G? And how many guarded \
         stacks fit under vm.max_map_count before the pool says no?",
        );
    }
    let parked: Vec<_> = PARKED
        .iter()
        .filter(|_| select.parked)
        .map(|(label, _, count, stack, slab)| {
            let count = count.min(&plan.parked_max).to_owned();
            let r = parked_in_child(count, *stack, *slab);
            match &r {
                Ok(p) => {
                    out.result(&format!(
                        "gmp {label}: {} of {} parked, {:.2} KiB RSS per G, {} µs to create each",
                        p.parked,
                        p.asked,
                        p.rss_per_g() / 1024.0,
                        fmt_ns(p.create_per_g().as_secs_f64() * 1e6)
                    ));
                    if let Some(f) = &p.failure {
                        out.result(&format!("  {}; the others: {f}", why_fewer_fit(p, *slab)));
                    }
                }
                Err(e) => out.result(&format!("gmp {label}: failed: {e}")),
            }
            (count, r)
        })
        .collect();
    let go_parked = bench.map_err(|e| e.clone()).map(|bench| {
        PARKED
            .iter()
            .filter(|_| select.parked)
            .map(|(_, _, count, _, _)| {
                let count = count.min(&plan.parked_max).to_owned();
                let r = bench
                    .run(GoKind::Parked, count as u64, 1)
                    .map_err(|e| e.to_string());
                if let Ok(f) = &r {
                    out.result(&format!(
                        "Go {count} parked goroutines: {:.2} KiB RSS per goroutine",
                        f.rss_bytes_per_g / 1024.0
                    ));
                }
                (count, r)
            })
            .collect()
    });
    Gs {
        ns,
        thread_yield,
        go,
        go_parked,
        parked,
    }
}

/// Runs `--parked` in a fresh copy of this program and parses its one line.
fn parked_in_child(count: usize, stack: usize, slab: bool) -> Result<ParkedGs, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mode = if slab { "slab" } else { "guarded" };
    let out = Command::new(exe)
        .args(["--parked", &count.to_string(), mode, &stack.to_string()])
        .output()
        .map_err(|e| format!("cannot run this program again: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the --parked run failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_parked(&text).ok_or_else(|| format!("unexpected --parked output: {text}"))
}

/// `--parked N slab|guarded STACK`: park N Gs and print one line for the parent.
pub(crate) fn parked_main(args: &[String]) -> ExitCode {
    let parsed = match args {
        [n, mode, stack] => n
            .parse::<usize>()
            .ok()
            .zip(stack.parse::<usize>().ok())
            .zip(match mode.as_str() {
                "slab" => Some(true),
                "guarded" => Some(false),
                _ => None,
            }),
        _ => None,
    };
    let Some(((n, stack), slab)) = parsed else {
        eprintln!("class-bench: --parked wants N slab|guarded STACK_BYTES, got {args:?}");
        return ExitCode::from(2);
    };
    match parked_gs(n, stack, slab) {
        Ok(p) => {
            println!(
                "asked={} parked={} rss_bytes={} create_ns={} failure={}",
                p.asked,
                p.parked,
                p.rss_bytes,
                p.create.as_nanos(),
                p.failure.unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("class-bench --parked: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_parked(line: &str) -> Option<ParkedGs> {
    let line = line.trim();
    let field = |name: &str| -> Option<&str> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[start..];
        Some(if name == "failure" {
            rest
        } else {
            rest.split(' ').next()?
        })
    };
    let failure = field("failure")?;
    Some(ParkedGs {
        asked: field("asked")?.parse().ok()?,
        parked: field("parked")?.parse().ok()?,
        rss_bytes: field("rss_bytes")?.parse().ok()?,
        create: std::time::Duration::from_nanos(field("create_ns")?.parse().ok()?),
        failure: (!failure.is_empty()).then(|| failure.to_string()),
    })
}

/// "30,689 of 100,000 fit: vm.max_map_count 65,530, 2 mappings per guarded stack, 4,095
/// kept for malloc": why a parked-G run stopped short (the runtime refused the rest).
fn why_fewer_fit(p: &ParkedGs, slab: bool) -> String {
    let room = gmp::map_headroom();
    let per_stack = if slab {
        "1 mapping per chunk of slab stacks".to_string()
    } else {
        "2 mappings per guarded stack".to_string()
    };
    format!(
        "{} of {} fit: vm.max_map_count {}, {per_stack}, {} kept for malloc",
        grouped(p.parked),
        grouped(p.asked),
        grouped(room.max_map_count),
        grouped(room.kept)
    )
}

/// 30689 -> "30,689".
fn grouped(n: usize) -> String {
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

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.2}×"))
}

pub(crate) fn rows(report: &mut Report, gs: &Gs) {
    report.notes.push(
        "Gs at P=1: gmp runtimes built with procs(1), Go run with GOMAXPROCS=1 (benches/go), \
         each measured in turn within every run. spawn+join = start one G and join it, one at \
         a time; hand-off = one message between two Gs over unbuffered channels (a round trip \
         is two); yield = gmp::yield_now / runtime.Gosched taking turns between two Gs. The \
         OS-thread twins are the thread rows above and sched_yield between two threads pinned \
         to one CPU."
            .to_string(),
    );
    let room = gmp::map_headroom();
    report.notes.push(format!(
        "Parked Gs: each measured in a fresh process (`class-bench --parked`): VmRSS after all \
         Gs parked on one channel minus VmRSS before the runtime started, over the Gs that \
         parked. It counts each G's touched stack pages, its G record, closure and join \
         slot. Guarded stacks take two mappings each, and gmp keeps {} of this machine's \
         vm.max_map_count of {} free for malloc and threads, so fewer than {} fit; slab \
         stacks share one mapping per 1024.",
        grouped(room.kept),
        grouped(room.max_map_count),
        grouped(room.max_map_count.saturating_sub(room.kept) / 2)
    ));
    for op in Op::ALL {
        for engine in ENGINES {
            let v = gs.gmp(op, engine);
            report.rows.push(Row::new(
                &format!("g.{}.{}.ns", op.key(), engine.name()),
                format!("G {}, P=1, gmp {} (ns)", op.what(), engine.name()),
                v.map_or("failed".to_string(), fmt_ns),
                v,
                &op.seed(),
                "—",
            ));
        }
        let v = gs.go(op);
        report.rows.push(Row::new(
            &format!("g.{}.go.ns", op.key()),
            format!("G {}, P=1, Go on this machine (ns)", op.what()),
            match &gs.go {
                Err(_) => "skipped (no go)".to_string(),
                Ok(_) => v.map_or("failed".to_string(), fmt_ns),
            },
            v,
            &op.seed(),
            &op.reference(),
        ));
    }
    let v = gs.thread_yield.as_ref().ok().copied();
    report.rows.push(Row::new(
        "thread.yield.same_core.ns",
        "OS threads: sched_yield between two threads on one CPU (ns)",
        v.map_or("failed".to_string(), fmt_ns),
        v,
        &format!("{} (switch)", fig("seed.switch_thread").text()),
        "—",
    ));
    let initial_stack = format!("{} (initial stack)", fig("go.stack_initial").text());
    for ((label, key, _, _, slab), (_, r)) in PARKED.iter().zip(&gs.parked) {
        let v = r.as_ref().ok().map(|p| p.rss_per_g() / 1024.0);
        let this = match r {
            Ok(p) if p.parked < p.asked => {
                format!(
                    "{:.2} ({})",
                    p.rss_per_g() / 1024.0,
                    why_fewer_fit(p, *slab)
                )
            }
            Ok(p) => format!("{:.2}", p.rss_per_g() / 1024.0),
            Err(_) => "failed".to_string(),
        };
        // The reference machine's run of the same row, as the book quotes it.
        let reference = match *key {
            "slab_1m" => fig("ref.bench.parked_rss_slab_1m"),
            _ => fig("ref.lab.parked_rss_guarded"),
        };
        report.rows.push(Row::new(
            &format!("g.parked.{key}.rss_kib"),
            format!("RSS per parked G, {label} (KiB)"),
            this,
            v,
            &initial_stack,
            &reference.text(),
        ));
        if let Err(e) = r {
            report.notes.push(format!("parked Gs, {label}: {e}"));
        } else if let Ok(ParkedGs {
            failure: Some(f), ..
        }) = r
        {
            report.notes.push(format!("parked Gs, {label}: {f}"));
        }
    }
    match &gs.go_parked {
        Ok(all) => {
            // The book's Go figure is for 10^6 parked goroutines.
            let go = fig("go.parked_rss_1m");
            for (count, r) in all {
                let v = r.as_ref().ok().map(|f| f.rss_bytes_per_g / 1024.0);
                let reference = match count {
                    1_000_000 => format!("Go {}", go.text()),
                    _ => format!("Go {} (10^6 parked)", go.text()),
                };
                report.rows.push(Row::new(
                    &format!("g.parked.go_{count}.rss_kib"),
                    format!("RSS per parked goroutine, Go, {count} goroutines (KiB)"),
                    v.map_or("failed".to_string(), |v| format!("{v:.2}")),
                    v,
                    &initial_stack,
                    &reference,
                ));
            }
        }
        Err(why) => report.notes.push(format!("Go rows skipped: {why}")),
    }
}

pub(crate) fn ratios(report: &mut Report, gs: &Gs) {
    let target = format!("target ≤ {}×", fig("target.g_over_go").text());
    for op in Op::ALL {
        for engine in ENGINES {
            let r = gs.gmp(op, engine).zip(gs.go(op)).map(|(g, go)| g / go);
            report.ratios.push(Row::new(
                &format!("ratio.g.{}.{}_over_go", op.key(), engine.name()),
                format!("G {}, P=1: gmp {} / Go", op.what(), engine.name()),
                ratio_text(r),
                r,
                "—",
                &target,
            ));
        }
    }
    let target = format!("target ≤ {}", fig("target.parked_rss").text());
    if let Some((_, Ok(p))) = gs.parked.first() {
        let kib = p.rss_per_g() / 1024.0;
        report.ratios.push(Row::new(
            "g.parked.slab_1m.target",
            format!("RSS per parked G, {} slab Gs (KiB)", p.parked),
            format!("{kib:.2}"),
            Some(kib),
            "—",
            &target,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_lines_round_trip() {
        let p = parse_parked("asked=10 parked=7 rss_bytes=4096 create_ns=99 failure=out of maps")
            .unwrap();
        assert_eq!((p.asked, p.parked, p.rss_bytes), (10, 7, 4096));
        assert_eq!(p.failure.as_deref(), Some("out of maps"));
        let p = parse_parked("asked=1 parked=1 rss_bytes=0 create_ns=5 failure=").unwrap();
        assert_eq!(p.failure, None);
        assert!(parse_parked("garbage").is_none());
    }

    #[test]
    fn a_short_run_says_how_many_fit_and_why() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(30_689), "30,689");
        assert_eq!(grouped(1_000_000), "1,000,000");
        let p =
            parse_parked("asked=100000 parked=30689 rss_bytes=1 create_ns=1 failure=x").unwrap();
        let room = gmp::map_headroom();
        let why = why_fewer_fit(&p, false);
        assert!(
            why.starts_with("30,689 of 100,000 fit: vm.max_map_count "),
            "{why}"
        );
        assert!(why.contains(&grouped(room.max_map_count)), "{why}");
        assert!(
            why.ends_with(&format!(
                "2 mappings per guarded stack, {} kept for malloc",
                grouped(room.kept)
            )),
            "{why}"
        );
        assert!(why_fewer_fit(&p, true).contains("1 mapping per chunk of slab stacks"));
    }
}
