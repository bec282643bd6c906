//! The class bench's chapter 10 section: TCP echo (1,000 connections × 100 round trips ×
//! 64 B, the client in the class bench's own process, each server in its own) on gmp, Go and
//! a thread per connection; and HTTP "hello" under `wrk` on gmp and Go's `net/http`. Every
//! server runs at P=2 (Go: GOMAXPROCS=2) for at most a bounded time and is killed after its
//! run; loopback only.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use gmp_benches::echo::{LoadPlan, LoadReport, load, serve_threads};
use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, GoBench, go_on_path};
use gmp_benches::net::{Server, WRK_SKIP_LINE, WrkFigure, serve, wrk, wrk_on_path};
use gmp_benches::report::{Report, Row};

use crate::{Out, median_run, run_of};

/// Every server's P count (Go's GOMAXPROCS).
const PROCS: usize = 2;
/// Echo load: connections (a full run adds the second count; the seeds' "10k connections"
/// row), bytes per message; round trips per connection in a full run.
const CONNS: [usize; 2] = [1_000, 10_000];
const SIZE: usize = 64;
const ROUNDS: u32 = 100;
/// `--quick`: fewer round trips per connection.
const ROUNDS_QUICK: u32 = 20;
/// wrk's connections, and its seconds (full, quick).
const WRK_CONNS: usize = 100;
const WRK_SECS: (u64, u64) = (5, 2);
/// Runs of each echo server per connection count in a full run, the servers alternated and
/// each one's median run kept. One run each is not enough on a 2-core machine where the load
/// generator shares the cores: the order between gmp and Go flipped from run to run (single
/// ratios from 0.77× to 1.29× on the same build), while the medians of alternated runs agree.
const ECHO_REPEATS: usize = 3;
/// A server process ends by itself after this, whatever happens to the bench.
const SERVER_LIMIT_SECS: u64 = 120;

type Figure<T> = Result<T, String>;

/// The servers of the echo rows.
const ECHO_SERVERS: [(&str, &str); 3] = [
    ("gmp", "gmp (gmp::net, a G per connection)"),
    ("go", "Go (net, a goroutine per connection)"),
    ("threads", "thread per connection (std::net)"),
];

pub(crate) struct Net {
    rounds: u32,
    /// `(server, connections, figure)`.
    echo: Vec<(&'static str, usize, Figure<LoadReport>)>,
    http: Vec<(&'static str, Figure<WrkFigure>)>,
}

impl Net {
    pub(crate) fn skipped() -> Net {
        Net {
            rounds: ROUNDS,
            echo: CONNS
                .iter()
                .flat_map(|&c| {
                    ECHO_SERVERS
                        .iter()
                        .map(move |(k, _)| (*k, c, Err("skipped".to_string())))
                })
                .collect(),
            http: ["gmp", "go"]
                .into_iter()
                .map(|k| (k, Err("skipped".to_string())))
                .collect(),
        }
    }
}

/// `--net-server echo|http|threads ADDR`: one server at P=2, for at most 120 s.
pub(crate) fn server_main(args: &[String]) -> ExitCode {
    let (Some(kind), Some(addr)) = (args.first(), args.get(1).and_then(|a| a.parse().ok())) else {
        eprintln!("class-bench: --net-server wants echo|http|threads ADDR, got {args:?}");
        return ExitCode::from(2);
    };
    let limit = Duration::from_secs(SERVER_LIMIT_SECS);
    let result = if kind == "threads" {
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            std::process::exit(0);
        });
        TcpListener::bind(addr)
            .map_err(|e| gmp_benches::BenchError(format!("bind {addr}: {e}")))
            .and_then(|l| {
                println!("listening");
                serve_threads(l, u64::MAX).map(drop)
            })
    } else {
        match Server::from_name(kind) {
            Some(server) => serve(server, addr, PROCS, limit),
            None => {
                eprintln!("class-bench: --net-server: unknown server `{kind}`");
                return ExitCode::from(2);
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("class-bench --net-server {kind}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A loopback address with a port free a moment ago.
fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// A server process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits (at most 20 s) until `addr` accepts connections. The
/// server's stderr goes to `log`, quoted when it fails to listen.
fn start(mut command: Command, addr: SocketAddr, log: &Path) -> Result<Running, String> {
    let err = std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let mut running = Running(child);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        let exited = running.0.try_wait().ok().flatten();
        if exited.is_some() || start.elapsed() > Duration::from_secs(20) {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "the server did not listen on {addr} ({}): {}",
                exited.map_or("not within 20 s".to_string(), |s| format!("it exited, {s}")),
                said.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}

fn ours(kind: &str, addr: SocketAddr) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut c = Command::new(exe);
    c.args(["--net-server", kind, &addr.to_string()]);
    Ok(c)
}

fn go_server(
    servers: &Figure<std::path::PathBuf>,
    kind: &str,
    addr: SocketAddr,
) -> Result<Command, String> {
    let exe = servers.as_ref().map_err(Clone::clone)?;
    let mut c = Command::new(exe);
    c.args([kind, &addr.to_string(), &SERVER_LIMIT_SECS.to_string()])
        .env("GOMAXPROCS", PROCS.to_string());
    Ok(c)
}

pub(crate) fn measure(out: &Out, quick: bool, dir: &Path) -> Net {
    let rounds = if quick { ROUNDS_QUICK } else { ROUNDS };
    out.line("");
    out.line(&format!(
        "TCP echo and HTTP (chapter 10): servers at P={PROCS}, each in its own process"
    ));
    out.predict(&format!(
        "{} connections each do {rounds} round trips of {SIZE} B (then {} in a full run): \
         which serves more round trips per second, and with how many OS threads: gmp, Go, or \
         a thread per connection?",
        CONNS[0], CONNS[1]
    ));
    let go_servers: Figure<std::path::PathBuf> = match go_on_path() {
        None => Err(GO_SKIP_LINE.to_string()),
        Some(go) => GoBench::build_servers(&go, &dir.join("go")).map_err(|e| e.to_string()),
    };
    let mut echo = Vec::new();
    let counts = if quick { &CONNS[..1] } else { &CONNS[..] };
    let repeats = if quick { 1 } else { ECHO_REPEATS };
    for &conns in counts {
        let mut runs: Vec<Vec<Figure<LoadReport>>> =
            ECHO_SERVERS.iter().map(|_| Vec::new()).collect();
        for round in 1..=repeats {
            for (i, (kind, label)) in ECHO_SERVERS.iter().enumerate() {
                let r = echo_run(kind, conns, rounds, &go_servers, dir);
                let of = run_of(round, repeats);
                match &r {
                    Ok(r) => out.result(&format!(
                        "echo {conns} conns, {label}{of}: {:.0} round trips/s, p99 {:.0} µs, {} \
                         threads, {} KiB RSS",
                        r.per_second(),
                        r.p99_us,
                        r.server_threads.map_or("?".to_string(), |t| t.to_string()),
                        r.server_rss_kib.map_or("?".to_string(), |t| t.to_string()),
                    )),
                    Err(e) => out.result(&format!("echo {conns} conns, {label}{of}: {e}")),
                }
                runs[i].push(r);
            }
        }
        for ((kind, _), server_runs) in ECHO_SERVERS.iter().zip(runs) {
            echo.push((
                *kind,
                conns,
                median_run(server_runs, LoadReport::per_second),
            ));
        }
    }
    let secs = if quick { WRK_SECS.1 } else { WRK_SECS.0 };
    let mut http = Vec::new();
    for kind in ["gmp", "go"] {
        let run = || -> Result<WrkFigure, String> {
            if wrk_on_path().is_none() {
                return Err(WRK_SKIP_LINE.to_string());
            }
            let addr = free_addr()?;
            let command = if kind == "go" {
                go_server(&go_servers, "http", addr)?
            } else {
                ours("http", addr)?
            };
            let server = start(command, addr, &dir.join(format!("server-http-{kind}.log")))?;
            let f = wrk(addr, WRK_CONNS, secs).map_err(|e| e.to_string());
            drop(server);
            f
        };
        let r = run();
        match &r {
            Ok(f) => out.result(&format!(
                "HTTP hello under wrk ({WRK_CONNS} connections, {secs} s), {kind}: {:.0} requests/s, p99 {:.0} µs",
                f.requests_per_sec, f.p99_us
            )),
            Err(e) => out.result(&format!("HTTP hello, {kind}: {e}")),
        }
        http.push((kind, r));
    }
    Net { rounds, echo, http }
}

/// One echo server of `kind` in its own process, loaded with `conns` connections.
fn echo_run(
    kind: &str,
    conns: usize,
    rounds: u32,
    go_servers: &Figure<std::path::PathBuf>,
    dir: &Path,
) -> Figure<LoadReport> {
    let addr = free_addr()?;
    let command = match kind {
        "go" => go_server(go_servers, "echo", addr)?,
        "gmp" => ours("echo", addr)?,
        _ => ours("threads", addr)?,
    };
    let log = dir.join(format!("server-echo-{kind}-{conns}.log"));
    let server = start(command, addr, &log)?;
    let plan = LoadPlan {
        addr,
        conns,
        rounds,
        size: SIZE,
        limit: Duration::from_secs(90),
        server_pid: Some(server.0.id()),
    };
    let report = load(&plan).map_err(|e| e.to_string())?;
    drop(server);
    if report.finished() {
        Ok(report)
    } else {
        Err(format!(
            "only {} of {} round trips within the time limit",
            report.done, report.wanted
        ))
    }
}

fn text<T>(r: &Figure<T>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) if e == GO_SKIP_LINE => "skipped (no go)".to_string(),
        Err(e) if e == WRK_SKIP_LINE => "skipped (no wrk)".to_string(),
        Err(e) if e == "skipped" => "skipped".to_string(),
        Err(_) => "failed".to_string(),
    }
}

pub(crate) fn rows(report: &mut Report, n: &Net) {
    report.notes.push(format!(
        "Echo: {} and {} connections × {} round trips × {SIZE} B, one message in flight per \
         connection, from a mio client in the class bench's own process; each server in its \
         own process at P={PROCS} (Go: GOMAXPROCS={PROCS}); threads and RSS are the server's \
         /proc status with every connection open. A full run runs the three servers \
         {ECHO_REPEATS} times in turn and shows each one's median run (a single run's order \
         between gmp and Go is noise on 2 cores shared with the client). HTTP: `wrk -t2 \
         -c{WRK_CONNS} --latency` against gmp's hello server (gmp::net, httparse, \
         keep-alive) and Go's net/http.",
        CONNS[0], CONNS[1], n.rounds
    ));
    for (kind, conns, r) in &n.echo {
        let conns = *conns;
        // 1k rows keep their first keys; 10k rows are `net.echo10k.*`.
        let echo = if conns == CONNS[0] { "echo" } else { "echo10k" };
        let (go_wall, go_threads) = if conns == CONNS[0] {
            (
                fig("go.echo_1k_wall").text(),
                fig("go.echo_1k_threads").text(),
            )
        } else {
            (
                fig("go.echo_10k_wall").text(),
                fig("go.echo_10k_threads").text(),
            )
        };
        let value = r.as_ref().ok();
        report.rows.push(Row::new(
            &format!("net.{echo}.{kind}.round_trips_per_s"),
            format!(
                "echo {conns} conns × {} × {SIZE} B, {kind}: round trips per second",
                n.rounds
            ),
            text(r, |r| format!("{:.0}", r.per_second())),
            value.map(|r| r.per_second()),
            "—",
            &format!("Go {go_wall} for {conns} × 100"),
        ));
        report.rows.push(Row::new(
            &format!("net.{echo}.{kind}.p99_us"),
            format!("echo {conns} conns, {kind}: p99 round trip (µs)"),
            text(r, |r| format!("{:.0}", r.p99_us)),
            value.map(|r| r.p99_us),
            "—",
            "—",
        ));
        let threads = value.and_then(|r| r.server_threads);
        report.rows.push(Row::new(
            &format!("net.{echo}.{kind}.threads"),
            format!("echo {conns} conns, {kind}: server OS threads, all connections open"),
            text(r, |r| {
                r.server_threads.map_or("?".to_string(), |t| t.to_string())
            }),
            threads.map(|t| t as f64),
            "—",
            &format!("Go {go_threads}"),
        ));
        let rss = value.and_then(|r| r.server_rss_kib);
        report.rows.push(Row::new(
            &format!("net.{echo}.{kind}.rss_kib"),
            format!("echo {conns} conns, {kind}: server RSS, all connections open (KiB)"),
            text(r, |r| {
                r.server_rss_kib.map_or("?".to_string(), |t| t.to_string())
            }),
            rss.map(|t| t as f64),
            "—",
            "—",
        ));
    }
    for (kind, r) in &n.http {
        let value = r.as_ref().ok();
        report.rows.push(Row::new(
            &format!("net.http.{kind}.requests_per_s"),
            format!("HTTP hello, wrk {WRK_CONNS} connections, {kind}: requests per second"),
            text(r, |f| format!("{:.0}", f.requests_per_sec)),
            value.map(|f| f.requests_per_sec),
            "—",
            "—",
        ));
        report.rows.push(Row::new(
            &format!("net.http.{kind}.p99_us"),
            format!("HTTP hello, {kind}: p99 latency (µs)"),
            text(r, |f| format!("{:.0}", f.p99_us)),
            value.map(|f| f.p99_us),
            "—",
            "—",
        ));
    }
    let echo_of = |k: &str, c: usize| {
        n.echo
            .iter()
            .find(|(kind, conns, _)| *kind == k && *conns == c)
            .and_then(|(_, _, r)| r.as_ref().ok())
            .map(|r| r.per_second())
    };
    let http_of = |k: &str| {
        n.http
            .iter()
            .find(|(kind, _)| *kind == k)
            .and_then(|(_, r)| r.as_ref().ok())
            .map(|f| f.requests_per_sec)
    };
    for (key, what, r) in [
        (
            "ratio.net.echo_over_go",
            "echo 1k conns, round trips per second: gmp / Go",
            echo_of("gmp", CONNS[0])
                .zip(echo_of("go", CONNS[0]))
                .map(|(a, b)| a / b),
        ),
        (
            "ratio.net.echo10k_over_go",
            "echo 10k conns, round trips per second: gmp / Go",
            echo_of("gmp", CONNS[1])
                .zip(echo_of("go", CONNS[1]))
                .map(|(a, b)| a / b),
        ),
        (
            "ratio.net.http_over_go",
            "HTTP requests per second: gmp / Go",
            http_of("gmp").zip(http_of("go")).map(|(a, b)| a / b),
        ),
    ] {
        report.ratios.push(Row::new(
            key,
            what,
            r.map_or("—".to_string(), |r| format!("{r:.2}×")),
            r,
            "—",
            &format!("target ≥ {}×", fig("target.echo_over_go").text()),
        ));
    }
}
