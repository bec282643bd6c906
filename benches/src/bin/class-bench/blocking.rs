//! The class bench's chapter 9 section: 100 Gs that each make a 100 ms blocking call
//! (`gmp::blocking` around `std::thread::sleep`) at P=2, unbounded and through a
//! `gmp::Bound` of 8 taken by a spawner that keeps its M (`lock_os_thread`): the OS threads
//! the run added (`/proc/self/task`) and the wall time. Each run happens in a fresh copy of
//! this program (`--blocking`), so the count holds only that runtime's threads.
//!
//! Go's twin (`benches/go/blocking`, when `go` is on PATH) makes the same calls as raw
//! `syscall.Nanosleep`s (a thread-holding system call without cgo; Go's `time.Sleep` would
//! hold no thread), through a channel of 8 as the senior article's semaphore.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, GoBench, go_on_path};
use gmp_benches::report::{Report, Row};

use crate::Out;

/// Calls per run, how long each blocks, the bound and the P count (chapter 9's figures).
const CALLS: usize = 100;
const CALL: Duration = Duration::from_millis(100);
const BOUND: usize = 8;
const PROCS: usize = 2;

/// One run: OS threads added and wall time, or why it failed.
type Run = Result<(usize, Duration), String>;

pub(crate) struct Blocking {
    unbounded: Run,
    bounded: Run,
    go_unbounded: Run,
    go_bounded: Run,
}

impl Blocking {
    pub(crate) fn skipped() -> Blocking {
        let skipped = || Err("skipped".to_string());
        Blocking {
            unbounded: skipped(),
            bounded: skipped(),
            go_unbounded: skipped(),
            go_bounded: skipped(),
        }
    }
}

pub(crate) fn measure(out: &Out, dir: &Path) -> Blocking {
    out.line("");
    out.line(
        "100 blocking calls of 100 ms at P=2 (chapter 9): unbounded, then through a Bound of 8",
    );
    out.predict(
        "100 Gs each block their thread for 100 ms in gmp::blocking: how many OS threads does \
         the runtime add, with no bound and with a Bound of 8, and how long does each take?",
    );
    let unbounded = in_child(None);
    let bounded = in_child(Some(BOUND));
    let (go_unbounded, go_bounded) = match go_on_path() {
        None => (Err(GO_SKIP_LINE.to_string()), Err(GO_SKIP_LINE.to_string())),
        Some(go) => match GoBench::build_blocking(&go, &dir.join("go")) {
            Ok(exe) => (go_run(&exe, "unbounded"), go_run(&exe, &BOUND.to_string())),
            Err(e) => (Err(e.to_string()), Err(e.to_string())),
        },
    };
    for (what, run) in [
        ("gmp unbounded", &unbounded),
        ("gmp Bound(8)", &bounded),
        ("Go unbounded", &go_unbounded),
        ("Go semaphore of 8", &go_bounded),
    ] {
        match run {
            Ok((threads, wall)) => out.result(&format!(
                "{what}: {threads} OS threads added, {:.0} ms wall",
                wall.as_secs_f64() * 1e3
            )),
            Err(e) => out.result(&format!("{what}: {e}")),
        }
    }
    Blocking {
        unbounded,
        bounded,
        go_unbounded,
        go_bounded,
    }
}

/// Runs the Go twin once (`unbounded` or a bound) with GOMAXPROCS=2.
fn go_run(exe: &Path, arg: &str) -> Run {
    let out = Command::new(exe)
        .arg(arg)
        .env("GOMAXPROCS", PROCS.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "Go's blocking program failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let field = |name: &str| -> Option<f64> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    match (field("threads_added"), field("wall_ms")) {
        (Some(t), Some(ms)) if t >= 0.0 => Ok((t as usize, Duration::from_secs_f64(ms / 1e3))),
        _ => Err(format!(
            "unexpected output of Go's blocking program: {text}"
        )),
    }
}

/// Runs `--blocking unbounded|N` in a fresh copy of this program and parses its line.
fn in_child(bound: Option<usize>) -> Run {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let arg = bound.map_or("unbounded".to_string(), |n| n.to_string());
    let out = Command::new(exe)
        .args(["--blocking", &arg])
        .output()
        .map_err(|e| format!("cannot run this program again: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the --blocking run failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("unexpected --blocking output: {text}"))
}

/// `--blocking unbounded|N`: the calls, one line for the parent.
pub(crate) fn blocking_main(args: &[String]) -> ExitCode {
    let bound = match args {
        [a] if a == "unbounded" => None,
        [n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                eprintln!("class-bench: --blocking wants `unbounded` or a bound above 0, got {n}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("class-bench: --blocking wants one argument, got {args:?}");
            return ExitCode::from(2);
        }
    };
    match run(bound) {
        Ok((threads, wall)) => {
            println!("threads={threads} wall_ns={}", wall.as_nanos());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("class-bench --blocking: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The calls themselves, in this process: OS threads added while they ran, and wall time.
fn run(bound: Option<usize>) -> Run {
    let threads = || {
        gmp::metrics()
            .map(|m| m.os_threads as usize)
            .map_err(|e| e.to_string())
    };
    let before = threads()?;
    let start = Instant::now();
    let rt = gmp::Runtime::builder()
        .procs(PROCS)
        .build()
        .map_err(|e| e.to_string())?;
    let during = rt.block_on(move || -> Result<usize, String> {
        // The spawner keeps its M to itself: no fresh G makes its call there (chapter 9,
        // "What S1 costs around a call").
        gmp::lock_os_thread();
        let bound = bound
            .map(gmp::Bound::new)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut gs = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let permit = match &bound {
                Some(b) => Some(b.acquire().map_err(|e| e.to_string())?),
                None => None,
            };
            gs.push(gmp::go(move || {
                let _permit = permit;
                gmp::blocking(|| std::thread::sleep(CALL))
            }));
        }
        for g in gs {
            g.join()
                .map_err(|p| p.to_string())?
                .map_err(|e| e.to_string())?;
        }
        // Ms do not exit before shutdown: this counts every thread the run started.
        gmp::metrics()
            .map(|m| m.os_threads as usize)
            .map_err(|e| e.to_string())
    })?;
    let wall = start.elapsed();
    drop(rt);
    Ok((during.saturating_sub(before), wall))
}

fn parse(line: &str) -> Option<(usize, Duration)> {
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((
        usize::try_from(field("threads")?).ok()?,
        Duration::from_nanos(field("wall_ns")?),
    ))
}

pub(crate) fn rows(report: &mut Report, b: &Blocking) {
    report.notes.push(format!(
        "Blocking calls: {CALLS} Gs each call gmp::blocking(|| std::thread::sleep(100 ms)) at \
         P={PROCS}, in a fresh process (`class-bench --blocking`); bounded, a spawner that \
         called lock_os_thread takes each permit of a gmp::Bound of {BOUND} before its go. \
         Threads are /proc/self/task added while the calls ran (the Ms and sysmon). Go \
         (benches/go/blocking, GOMAXPROCS={PROCS}) makes raw syscall.Nanosleep calls (Go's \
         time.Sleep would hold no thread), bounded by a channel of {BOUND}; its threads are \
         Threads: of /proc/self/status at the end minus at the start."
    ));
    let text = |r: &Run, f: fn(&(usize, Duration)) -> f64, digits: usize| match r {
        Ok(v) => (format!("{:.digits$}", f(v)), Some(f(v))),
        Err(e) if e == GO_SKIP_LINE => ("skipped (no go)".to_string(), None),
        Err(_) => ("failed".to_string(), None),
    };
    let threads = |v: &(usize, Duration)| v.0 as f64;
    let wall_s = |v: &(usize, Duration)| v.1.as_secs_f64();
    for (key, what, run, f, digits, reference) in [
        (
            "blocking.threads.unbounded",
            "OS threads added, unbounded",
            &b.unbounded,
            threads as fn(&(usize, Duration)) -> f64,
            0,
            fig("ref.blocking_threads_unbounded").text(),
        ),
        (
            "blocking.threads.bound8",
            "OS threads added, through a Bound of 8",
            &b.bounded,
            threads,
            0,
            fig("ref.blocking_threads_bound_locked").text(),
        ),
        (
            "blocking.wall_s.unbounded",
            "wall time, unbounded (s)",
            &b.unbounded,
            wall_s,
            2,
            fig("ref.blocking_wall_unbounded").text(),
        ),
        (
            "blocking.wall_s.bound8",
            "wall time, through a Bound of 8 (s)",
            &b.bounded,
            wall_s,
            2,
            fig("ref.blocking_wall_bound_locked").text(),
        ),
        (
            "blocking.go.threads.unbounded",
            "OS threads added, Go unbounded",
            &b.go_unbounded,
            threads,
            0,
            format!("Go {}", fig("go.blocking_threads_unbounded").text()),
        ),
        (
            "blocking.go.threads.bound8",
            "OS threads added, Go through a channel of 8",
            &b.go_bounded,
            threads,
            0,
            format!("Go {}", fig("go.blocking_threads_bound").text()),
        ),
        (
            "blocking.go.wall_s.unbounded",
            "wall time, Go unbounded (s)",
            &b.go_unbounded,
            wall_s,
            2,
            format!("Go {}", fig("go.blocking_wall_unbounded").text()),
        ),
        (
            "blocking.go.wall_s.bound8",
            "wall time, Go through a channel of 8 (s)",
            &b.go_bounded,
            wall_s,
            2,
            format!("Go {}", fig("go.blocking_wall_bound").text()),
        ),
    ] {
        let (shown, value) = text(run, f, digits);
        report.rows.push(Row::new(
            key,
            format!("{CALLS} blocking calls of 100 ms, P={PROCS}: {what}"),
            shown,
            value,
            "—",
            &reference,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_lines_round_trip() {
        let (threads, wall) = parse("threads=101 wall_ns=130000000\n").unwrap();
        assert_eq!((threads, wall), (101, Duration::from_millis(130)));
        assert!(parse("threads=x wall_ns=1").is_none());
        assert!(parse("garbage").is_none());
    }
}
