//! The class bench's chapter 11 section: 100k Gs that each sleep 100 ms, beside Go's
//! goroutines doing the same (`gobench sleep`), both at P=2: the wall time from the first
//! spawn to the last join, and the RSS per sleeping G. The gmp run happens in a fresh copy
//! of this program (`--sleeping`), so earlier measurements' pages do not blur its RSS. The
//! OS-thread twin is the sleeping-threads section (chapter 2): a thread per sleeper.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, GoBench, GoFigure, GoKind, go_on_path};
use gmp_benches::gs::{SleepingGs, sleeping_gs};
use gmp_benches::report::{Report, Row};

use crate::{Out, median_run, run_of};

/// Sleepers per run, and how long each sleeps (the ANCHORS row; Go's twin sleeps as long).
const SLEEPERS: usize = 100_000;
const NAP: Duration = Duration::from_millis(100);
/// Both runtimes get the same P count, whatever the machine has.
const PROCS: usize = 2;
/// Runs of each side in a full run, alternated; each side's median run (by wall time) is
/// its row. Single runs of this row moved by a third from one to the next on a busy VM.
const SLEEP_REPEATS: usize = 3;

/// A figure, or why there is none.
type Figure<T> = Result<T, String>;

pub(crate) struct Timers {
    gmp: Figure<SleepingGs>,
    go: Figure<GoFigure>,
}

impl Timers {
    pub(crate) fn skipped() -> Timers {
        Timers {
            gmp: Err("skipped".to_string()),
            go: Err("skipped".to_string()),
        }
    }
}

pub(crate) fn measure(out: &Out, quick: bool, dir: &Path) -> Timers {
    out.line("");
    out.line("100k Gs sleeping 100 ms (chapter 11), beside Go, both at P=2");
    out.predict(
        "100,000 Gs each sleep 100 ms: how long from the first spawn to the last join, how \
         many KiB of RSS per sleeping G, and how do both compare with Go?",
    );
    let go_bench = match go_on_path() {
        None => Err(GO_SKIP_LINE.to_string()),
        Some(go) => GoBench::build(&go, &dir.join("go")).map_err(|e| e.to_string()),
    };
    if let Err(why) = &go_bench {
        out.result(why);
    }
    let repeats = if quick { 1 } else { SLEEP_REPEATS };
    let (mut gmp_runs, mut go_runs) = (Vec::new(), Vec::new());
    for round in 1..=repeats {
        let of = run_of(round, repeats);
        let gmp = sleeping_in_child(SLEEPERS);
        match &gmp {
            Ok(s) => out.result(&format!(
                "gmp {} sleeping Gs{of}: {:.0} ms wall, {:.2} KiB RSS per G{}",
                s.n,
                s.wall.as_secs_f64() * 1e3,
                s.rss_per_g() / 1024.0,
                if s.early > 0 {
                    format!(", {} woke EARLY (a broken timer)", s.early)
                } else {
                    String::new()
                }
            )),
            Err(e) => out.result(&format!("gmp sleeping Gs{of}: failed: {e}")),
        }
        gmp_runs.push(gmp);
        let Ok(bench) = &go_bench else { continue };
        let go = bench
            .run(GoKind::Sleep, SLEEPERS as u64, PROCS)
            .map_err(|e| e.to_string());
        match &go {
            Ok(f) => out.result(&format!(
                "Go {SLEEPERS} sleeping goroutines{of}: {:.0} ms wall, {:.2} KiB RSS per \
                 goroutine",
                f.ns_per_op / 1e6,
                f.rss_bytes_per_g / 1024.0
            )),
            Err(e) => out.result(&format!("Go sleeping goroutines{of}: failed: {e}")),
        }
        go_runs.push(go);
    }
    Timers {
        gmp: median_run(gmp_runs, |s| s.wall.as_secs_f64()),
        // Why there is no Go figure stays the row's text (`rows` knows the skip line).
        go: go_bench.and_then(|_| median_run(go_runs, |f| f.ns_per_op)),
    }
}

/// Runs `--sleeping` in a fresh copy of this program and parses its one line.
fn sleeping_in_child(n: usize) -> Result<SleepingGs, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let out = Command::new(exe)
        .args(["--sleeping", &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run this program again: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the --sleeping run failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_sleeping(&text).ok_or_else(|| format!("unexpected --sleeping output: {text}"))
}

/// `--sleeping N`: N Gs sleep 100 ms at P=2; prints one line for the parent.
pub(crate) fn sleeping_main(args: &[String]) -> ExitCode {
    let Some(n) = args
        .first()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0 && args.len() == 1)
    else {
        eprintln!("class-bench: --sleeping wants N (a count above 0), got {args:?}");
        return ExitCode::from(2);
    };
    match sleeping_gs(n, NAP, PROCS) {
        Ok(s) => {
            println!(
                "n={} wall_ns={} rss_bytes={} early={}",
                s.n,
                s.wall.as_nanos(),
                s.rss_bytes,
                s.early
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("class-bench --sleeping: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_sleeping(line: &str) -> Option<SleepingGs> {
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some(SleepingGs {
        n: usize::try_from(field("n")?).ok()?,
        wall: Duration::from_nanos(field("wall_ns")?),
        rss_bytes: field("rss_bytes")?,
        early: usize::try_from(field("early")?).ok()?,
    })
}

pub(crate) fn rows(report: &mut Report, t: &Timers) {
    report.notes.push(format!(
        "Sleeping Gs: {SLEEPERS} Gs (goroutines) each sleep 100 ms at P={PROCS}: gmp in a fresh \
         process (`class-bench --sleeping`), Go with `gobench sleep` and GOMAXPROCS={PROCS}. \
         Wall time runs from the first spawn to the last join (the sleep overlaps for all, so \
         most of it is starting and ending the Gs); RSS is VmRSS once every G has started \
         minus VmRSS before the runtime started, over the Gs. A full run runs each side \
         {SLEEP_REPEATS} times in turn and shows its median run by wall time. A thread per \
         sleeper is the sleeping-threads section above."
    ));
    let seed = fig("seed.goroutines_100k_stack").text();
    let gmp_ms = t.gmp.as_ref().ok().map(|s| s.wall.as_secs_f64() * 1e3);
    let gmp_kib = t.gmp.as_ref().ok().map(|s| s.rss_per_g() / 1024.0);
    let go_ms = t.go.as_ref().ok().map(|f| f.ns_per_op / 1e6);
    let go_kib = t.go.as_ref().ok().map(|f| f.rss_bytes_per_g / 1024.0);
    let text = |v: Option<f64>, go: bool, digits: usize| match (v, go, &t.go) {
        (Some(v), _, _) => format!("{v:.digits$}"),
        (None, true, Err(e)) if e == GO_SKIP_LINE => "skipped (no go)".to_string(),
        _ => "failed".to_string(),
    };
    let wall_ref = fig("go.sleeping_100k_wall").text();
    let rss_ref = fig("go.sleeping_rss_per_g").text();
    report.rows.push(Row::new(
        "g.sleep.gmp.wall_ms",
        format!("{SLEEPERS} Gs sleeping 100 ms, P={PROCS}: gmp wall time (ms)"),
        text(gmp_ms, false, 0),
        gmp_ms,
        "—",
        &format!("Go {wall_ref}"),
    ));
    report.rows.push(Row::new(
        "g.sleep.go.wall_ms",
        format!("{SLEEPERS} goroutines sleeping 100 ms, P={PROCS}: Go on this machine (ms)"),
        text(go_ms, true, 0),
        go_ms,
        "—",
        &format!("Go {wall_ref}"),
    ));
    report.rows.push(Row::new(
        "g.sleep.gmp.rss_kib",
        format!("RSS per sleeping G, {SLEEPERS} Gs, gmp (KiB)"),
        text(gmp_kib, false, 2),
        gmp_kib,
        &format!("{seed} for all stacks"),
        &format!("Go {rss_ref}"),
    ));
    report.rows.push(Row::new(
        "g.sleep.go.rss_kib",
        format!("RSS per sleeping goroutine, {SLEEPERS}, Go on this machine (KiB)"),
        text(go_kib, true, 2),
        go_kib,
        &format!("{seed} for all stacks"),
        &format!("Go {rss_ref}"),
    ));
    if let Ok(s) = &t.gmp
        && s.early > 0
    {
        report.notes.push(format!(
            "sleeping Gs: {} of {} woke before their 100 ms: a timer fired early",
            s.early, s.n
        ));
    }
    for (what, gmp, go, target) in [
        ("wall time", gmp_ms, go_ms, fig("target.sleep_wall").text()),
        ("RSS per G", gmp_kib, go_kib, fig("target.sleep_rss").text()),
    ] {
        let r = gmp.zip(go).map(|(g, go)| g / go);
        report.ratios.push(Row::new(
            &format!(
                "ratio.sleep.{}_over_go",
                if what == "wall time" { "wall" } else { "rss" }
            ),
            format!("{SLEEPERS} sleeping Gs, {what}: gmp / Go"),
            r.map_or("—".to_string(), |r| format!("{r:.2}×")),
            r,
            "—",
            &format!("target ≤ {target}×"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_lines_round_trip() {
        let s = parse_sleeping("n=10 wall_ns=250000000 rss_bytes=20480 early=0\n").unwrap();
        assert_eq!((s.n, s.rss_bytes, s.early), (10, 20_480, 0));
        assert_eq!(s.wall, Duration::from_millis(250));
        assert_eq!(s.rss_per_g(), 2048.0);
        assert!(parse_sleeping("n=10 wall_ns=x rss_bytes=1 early=0").is_none());
        assert!(parse_sleeping("garbage").is_none());
    }
}
