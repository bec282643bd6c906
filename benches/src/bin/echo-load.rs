//! `echo-load ADDR [--conns N] [--rounds R] [--size B] [--limit-secs S] [--server-pid PID]`:
//! a bounded TCP echo load on loopback, in a process of its own (see `gmp_benches::echo`).
//! Prints a summary and one line of JSON; exits 0 when every round trip finished, 2 when
//! the time limit stopped it, 1 on an error.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use gmp_benches::echo::{LoadPlan, load};

const USAGE: &str = "usage: echo-load ADDR [--conns N] [--rounds R] [--size BYTES] \
                     [--limit-secs S] [--server-pid PID]   (ADDR on loopback, e.g. 127.0.0.1:7000; \
                     defaults: 1000 connections, 100 rounds, 64 bytes, 120 s)";

fn parse() -> Result<LoadPlan, String> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or_else(|| USAGE.to_string())?;
    let addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an address like 127.0.0.1:7000\n{USAGE}"))?;
    let mut plan = LoadPlan {
        addr,
        conns: 1000,
        rounds: 100,
        size: 64,
        limit: Duration::from_secs(120),
        server_pid: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} wants a whole number, got `{v}`\n{USAGE}"))
        };
        match flag.as_str() {
            "--conns" => plan.conns = number(&value)? as usize,
            "--rounds" => {
                plan.rounds = u32::try_from(number(&value)?).map_err(|e| e.to_string())?
            }
            "--size" => plan.size = number(&value)? as usize,
            "--limit-secs" => plan.limit = Duration::from_secs(number(&value)?),
            "--server-pid" => {
                let pid = u32::try_from(number(&value)?).map_err(|e| e.to_string())?;
                // Checked now, not after a two-minute run that then prints "-".
                if !std::path::Path::new(&format!("/proc/{pid}/status")).exists() {
                    return Err(format!(
                        "--server-pid {pid}: no process {pid} is running (no /proc/{pid}); \
                         pass the echo server's pid (e.g. `pgrep -n echo`), or leave the \
                         flag out"
                    ));
                }
                plan.server_pid = Some(pid);
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(plan)
}

fn main() -> ExitCode {
    let plan = match parse() {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("echo-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match load(&plan) {
        Ok(r) => r,
        Err(e) => {
            // The message starts with "echo load:" already.
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match (
        plan.server_pid,
        report.server_threads,
        report.server_rss_kib,
    ) {
        (None, ..) => "server threads and RSS not sampled (no --server-pid)".to_string(),
        (Some(pid), Some(threads), Some(rss)) => {
            format!("server (pid {pid}) threads {threads}, RSS {rss} KiB")
        }
        (Some(pid), ..) => format!(
            "server threads and RSS unknown: process {pid} was gone (or its /proc/{pid}/status \
             unreadable) when sampled"
        ),
    };
    let summary = format!(
        "echo {} conns x {} rounds x {} B to {}: {} of {} round trips in {:.3} s ({:.0}/s), \
         p50 {:.0} us, p99 {:.0} us, max {:.0} us; connect {:.3} s; {server}",
        plan.conns,
        plan.rounds,
        plan.size,
        plan.addr,
        report.done,
        report.wanted,
        report.wall.as_secs_f64(),
        report.per_second(),
        report.p50_us,
        report.p99_us,
        report.max_us,
        report.connect.as_secs_f64(),
    );
    // A closed pipe (`| head -1`) is no reason to panic: the run itself is done.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{summary}\n{}", report.json(&plan));
    if report.finished() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "echo-load: stopped by the time limit ({:?}) with {} of {} round trips done",
            plan.limit, report.done, report.wanted
        );
        ExitCode::from(2)
    }
}
