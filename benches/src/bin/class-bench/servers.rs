//! The class bench's chapter 10 section: servers under load, gmp beside Go and a thread per
//! connection. Each server runs in a process of its own (gmp's `runtime/examples/echo` and
//! `http_hello`, Go's `benches/go/servers`, and this program again as `--echo-threads`); the
//! load runs in this process: the bounded echo load of `gmp_benches::echo::load` (1k and
//! 10k connections × 100 round trips × 64 B, one message in flight per connection), and
//! `wrk` against the two HTTP hello servers. Loopback only; every server is started with a
//! time limit after which it exits by itself, and is killed as soon as its run is over.
//!
//! Not here: the load generator and the thread-per-connection server (`benches/src/echo.rs`).

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use gmp_benches::echo::{LoadPlan, LoadReport, load, run_threads_server};
use gmp_benches::figures::fig;
use gmp_benches::go::{GO_SKIP_LINE, build_servers, go_on_path};
use gmp_benches::parts::MINE;
use gmp_benches::report::{Report, Row};

use crate::Out;

/// Round trips per connection and bytes per message (the ANCHORS rows).
const ROUNDS: u32 = 100;
const SIZE: usize = 64;
/// Connection counts of the echo runs; `--quick` runs the first only.
const CONNS: [usize; 2] = [1_000, 10_000];
/// An echo run stops here, finished or not; a server exits by itself after this much more.
const LOAD_LIMIT: Duration = Duration::from_secs(60);
const SERVER_LIMIT_SECS: u64 = 120;
/// How long a server may take to start listening.
const LISTEN_WITHIN: Duration = Duration::from_secs(15);
/// `wrk`'s run: threads, connections, seconds.
const WRK_THREADS: u32 = 2;
const WRK_CONNS: u32 = 100;
const WRK_SECS: u32 = 5;
/// The line when `wrk` is missing.
const WRK_SKIP_LINE: &str = "wrk is not installed, so no HTTP rows (Debian: `apt-get install wrk`)";

/// The three kinds of server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gmp,
    Go,
    Threads,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Gmp => "gmp",
            Kind::Go => "go",
            Kind::Threads => "threads",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Gmp => "gmp (gmp::net, a G per connection)",
            Kind::Go => "Go (net, a goroutine per connection)",
            Kind::Threads => "a thread per connection (std::net)",
        }
    }
}

/// One echo run: `conns` connections against one server.
struct EchoRun {
    conns: usize,
    kind: Kind,
    result: Result<LoadReport, String>,
}

/// What `wrk` measured against one HTTP server.
#[derive(Clone, Debug, PartialEq)]
struct Wrk {
    requests_per_s: f64,
    p99_us: f64,
    /// The server's most OS threads during the run.
    threads: Option<u64>,
    rss_kib: Option<u64>,
}

struct HttpRun {
    kind: Kind,
    result: Result<Wrk, String>,
}

pub(crate) struct Net {
    echo: Vec<EchoRun>,
    http: Vec<HttpRun>,
}

impl Net {
    pub(crate) fn skipped() -> Net {
        Net {
            echo: Vec::new(),
            http: Vec::new(),
        }
    }
}

/// The programs each server kind runs, or why a kind cannot run.
struct Programs {
    gmp: Result<(PathBuf, PathBuf), String>,
    go: Result<PathBuf, String>,
    this: Result<PathBuf, String>,
}

pub(crate) fn measure(out: &Out, dir: &Path, quick: bool) -> Net {
    out.line("");
    out.line("Servers under load (chapter 10): gmp beside Go and a thread per connection");
    let programs = Programs {
        gmp: build_gmp_examples(),
        go: match go_on_path() {
            None => Err(GO_SKIP_LINE.to_string()),
            Some(go) => build_servers(&go, &dir.join("go")).map_err(|e| e.to_string()),
        },
        this: std::env::current_exe().map_err(|e| format!("cannot find this program: {e}")),
    };
    for (what, r) in [
        ("gmp examples", programs.gmp.as_ref().err()),
        ("Go servers", programs.go.as_ref().err()),
    ] {
        if let Some(e) = r {
            out.result(&format!("{what}: {e}"));
        }
    }
    out.predict(
        "1,000 (then 10,000) connections each make 100 round trips of 64 B: which server \
         answers the most round trips per second, and how many OS threads does each need?",
    );
    let mut echo = Vec::new();
    let conns: &[usize] = if quick { &CONNS[..1] } else { &CONNS };
    for &n in conns {
        for kind in [Kind::Gmp, Kind::Go, Kind::Threads] {
            let result = echo_run(&programs, dir, kind, n);
            match &result {
                Ok(r) => out.result(&format!(
                    "echo {n} conns, {}: {} round trips, p99 {}, {} server threads, RSS {}",
                    kind.label(),
                    rate(r.per_second()),
                    latency(r.p99_us),
                    opt(r.server_threads),
                    opt(r.server_rss_kib.map(|k| k / 1024)) + " MiB",
                )),
                Err(e) => out.result(&format!("echo {n} conns, {}: {e}", kind.label())),
            }
            echo.push(EchoRun {
                conns: n,
                kind,
                result,
            });
        }
    }
    out.predict(&format!(
        "`wrk` with {WRK_CONNS} keep-alive connections asks for \"Hello\" for {WRK_SECS} s: \
         requests per second, gmp's http_hello beside Go's net/http?"
    ));
    let mut http = Vec::new();
    for kind in [Kind::Gmp, Kind::Go] {
        let result = http_run(&programs, dir, kind);
        match &result {
            Ok(w) => out.result(&format!(
                "http {}: {} requests, p99 {}, {} server threads",
                kind.label(),
                rate(w.requests_per_s),
                latency(w.p99_us),
                opt(w.threads)
            )),
            Err(e) => out.result(&format!("http {}: {e}", kind.label())),
        }
        http.push(HttpRun { kind, result });
    }
    Net { echo, http }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("?".to_string(), |v| v.to_string())
}

/// A rate for a table cell: `83.1k/s`, `950/s`.
fn rate(per_s: f64) -> String {
    if per_s >= 10_000.0 {
        format!("{:.1}k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

/// A latency for a table cell: `812 µs`, `41.2 ms`.
fn latency(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// Builds gmp's `echo` and `http_hello` examples (release, this program's target dir, the
/// learner's parts when this build has them) and returns their paths.
fn build_gmp_examples() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // <target>/<profile>/class-bench
    let profile_dir = exe.parent().ok_or("this program has no directory")?;
    let target = profile_dir
        .parent()
        .ok_or("this program's directory has no parent")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the benches crate has no parent directory")?;
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "gmp", "--example", "echo"])
        .args(["--example", "http_hello", "--target-dir"])
        .arg(target);
    if release {
        cargo.arg("--release");
    }
    for part in MINE {
        cargo.arg("--features").arg(format!("gmp/mine-{part:02}"));
    }
    let output = cargo
        .output()
        .map_err(|e| format!("cannot run cargo to build gmp's examples: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building gmp's echo and http_hello examples failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let examples = profile_dir.join("examples");
    Ok((examples.join("echo"), examples.join("http_hello")))
}

/// A server in a child process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Server {
    /// Starts `command` (its last argument is added: the time limit) on a free loopback
    /// port given as `addr_arg(addr)`, and waits until it accepts connections.
    fn start(
        name: &str,
        program: &Path,
        args: impl FnOnce(SocketAddr) -> Vec<String>,
        dir: &Path,
    ) -> Result<Server, String> {
        let addr = free_port().map_err(|e| format!("finding a free loopback port: {e}"))?;
        let stderr = dir.join(format!("{name}.stderr"));
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = File::create(&stderr).map_err(|e| format!("{}: {e}", stderr.display()))?;
        let child = Command::new(program)
            .args(args(addr))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut server = Server {
            child,
            addr,
            stderr,
        };
        let deadline = Instant::now() + LISTEN_WITHIN;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before it listened on {addr}: {}",
                    server.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not listen on {addr} within {LISTEN_WITHIN:?}: {}",
                    server.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of what the server wrote to stderr, for an error message.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: String = text
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.trim().is_empty() {
            "(it wrote nothing to stderr)".to_string()
        } else {
            tail.trim().to_string()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

fn start_server(programs: &Programs, dir: &Path, kind: Kind, http: bool) -> Result<Server, String> {
    let limit = SERVER_LIMIT_SECS.to_string();
    let dir = dir.join("servers");
    match (kind, http) {
        (Kind::Gmp, _) => {
            let (echo, hello) = programs.gmp.as_ref().map_err(Clone::clone)?;
            let program = if http { hello } else { echo };
            Server::start(kind.key(), program, |a| vec![a.to_string(), limit], &dir)
        }
        (Kind::Go, _) => {
            let program = programs.go.as_ref().map_err(Clone::clone)?;
            let what = if http { "http" } else { "echo" };
            Server::start(
                kind.key(),
                program,
                |a| vec![what.to_string(), a.to_string(), limit],
                &dir,
            )
        }
        (Kind::Threads, false) => {
            let program = programs.this.as_ref().map_err(Clone::clone)?;
            Server::start(
                kind.key(),
                program,
                |a| vec![THREADS_FLAG.to_string(), a.to_string(), limit],
                &dir,
            )
        }
        (Kind::Threads, true) => Err("no thread-per-connection HTTP server".to_string()),
    }
}

fn echo_run(
    programs: &Programs,
    dir: &Path,
    kind: Kind,
    conns: usize,
) -> Result<LoadReport, String> {
    let server = start_server(programs, dir, kind, false)?;
    let plan = LoadPlan {
        addr: server.addr,
        conns,
        rounds: ROUNDS,
        size: SIZE,
        limit: LOAD_LIMIT,
        server_pid: Some(server.pid()),
    };
    let report = load(&plan).map_err(|e| format!("{e} (server log: {})", server.log()))?;
    if !report.finished() {
        return Err(format!(
            "stopped by the {LOAD_LIMIT:?} limit with {} of {} round trips done",
            report.done, report.wanted
        ));
    }
    Ok(report)
}

fn http_run(programs: &Programs, dir: &Path, kind: Kind) -> Result<Wrk, String> {
    match Command::new("wrk").arg("--version").output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WRK_SKIP_LINE.to_string()),
        _ => {}
    }
    let server = start_server(programs, dir, kind, true)?;
    let pid = server.pid();
    // The server's threads, sampled while wrk runs: the most seen.
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, most) = (done.clone(), most.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(t) = proc_status(pid, "Threads:") {
                    most.fetch_max(t, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let output = Command::new("wrk")
        .args(["-t", &WRK_THREADS.to_string(), "-c", &WRK_CONNS.to_string()])
        .args(["-d", &format!("{WRK_SECS}s"), "--latency"])
        .arg(format!("http://{}/", server.addr))
        .output();
    let rss_kib = proc_status(pid, "VmRSS:");
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let output = output.map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {text}", output.status));
    }
    let mut wrk = parse_wrk(&text).ok_or_else(|| format!("unexpected wrk output: {text}"))?;
    if let Some(errors) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        return Err(format!("wrk saw errors: {}", errors.trim()));
    }
    wrk.threads = Some(most.load(Ordering::Relaxed)).filter(|&t| t > 0);
    wrk.rss_kib = rss_kib;
    Ok(wrk)
}

/// A number field of /proc/PID/status (`Threads:`, `VmRSS:` in KiB).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads `Requests/sec:` and the 99% line of `--latency` from wrk's report.
fn parse_wrk(text: &str) -> Option<Wrk> {
    let requests_per_s = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    Some(Wrk {
        requests_per_s,
        p99_us: wrk_duration_us(p99)?,
        threads: None,
        rss_kib: None,
    })
}

/// `812.00us`, `1.23ms`, `2.01s` in microseconds.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

/// The flag that makes this program the thread-per-connection echo server.
pub(crate) const THREADS_FLAG: &str = "--echo-threads";

/// `--echo-threads ADDR SECONDS`: the thread-per-connection echo server, as the
/// `echo-threads` bin runs it (so one `cargo run` of the class bench builds all it needs).
pub(crate) fn threads_main(args: &[String]) -> ExitCode {
    let parsed = match args {
        [addr, secs] => addr
            .parse::<SocketAddr>()
            .ok()
            .zip(secs.parse::<u64>().ok()),
        _ => None,
    };
    let Some((addr, secs)) = parsed else {
        eprintln!(
            "class-bench: {THREADS_FLAG} wants ADDR SECONDS (127.0.0.1:7000 60), got {args:?}"
        );
        return ExitCode::from(2);
    };
    match run_threads_server(addr, Duration::from_secs(secs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn rows(report: &mut Report, net: &Net) {
    if net.echo.is_empty() && net.http.is_empty() {
        return;
    }
    report.notes.push(format!(
        "Servers: each in its own process, the load in the class bench's (loopback only). Echo: \
         every connection opened first, then {ROUNDS} round trips of {SIZE} B each, one in \
         flight per connection, driven by one thread on mio; p99 is of the round-trip times; \
         threads and RSS are the server's (/proc) with every connection open. HTTP: `wrk -t \
         {WRK_THREADS} -c {WRK_CONNS} -d {WRK_SECS}s --latency` against gmp's \
         runtime/examples/http_hello (P from the default: the CPUs) and Go's net/http hello \
         (GOMAXPROCS default); threads are the most seen during the run. The load shares the \
         CPUs with the server, as on any one-machine test."
    ));
    for run in &net.echo {
        let k = if run.conns == 1_000 { "1k" } else { "10k" };
        let (this, value) = match &run.result {
            Ok(r) => (
                format!(
                    "{} · p99 {} · {} threads · {} MiB",
                    rate(r.per_second()),
                    latency(r.p99_us),
                    opt(r.server_threads),
                    opt(r.server_rss_kib.map(|k| k / 1024))
                ),
                Some(r.per_second()),
            ),
            Err(e) if e == GO_SKIP_LINE => ("skipped (no go)".to_string(), None),
            Err(_) => ("failed".to_string(), None),
        };
        let (wall, threads) = if run.conns == 1_000 {
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
        report.rows.push(Row::new(
            &format!("net.{}.echo_{k}", run.kind.key()),
            format!(
                "TCP echo, {k} conns × {ROUNDS} × {SIZE} B, {} (round trips/s)",
                run.kind.label()
            ),
            this,
            value,
            if run.kind == Kind::Threads {
                "a thread per connection"
            } else {
                "—"
            },
            &format!("Go: {wall} in all, {threads} threads"),
        ));
    }
    for run in &net.http {
        let (this, value) = match &run.result {
            Ok(w) => (
                format!(
                    "{} · p99 {} · {} threads",
                    rate(w.requests_per_s),
                    latency(w.p99_us),
                    opt(w.threads)
                ),
                Some(w.requests_per_s),
            ),
            Err(e) if e == GO_SKIP_LINE => ("skipped (no go)".to_string(), None),
            Err(e) if e == WRK_SKIP_LINE => ("skipped (no wrk)".to_string(), None),
            Err(_) => ("failed".to_string(), None),
        };
        report.rows.push(Row::new(
            &format!("net.{}.http", run.kind.key()),
            format!("HTTP hello under wrk, {} (requests/s)", run.kind.label()),
            this,
            value,
            "—",
            "—",
        ));
    }
    let echo_rate = |kind: Kind, conns: usize| {
        net.echo
            .iter()
            .find(|r| r.kind == kind && r.conns == conns)
            .and_then(|r| r.result.as_ref().ok())
            .map(LoadReport::per_second)
    };
    for conns in CONNS {
        let k = if conns == 1_000 { "1k" } else { "10k" };
        let r = echo_rate(Kind::Gmp, conns)
            .zip(echo_rate(Kind::Go, conns))
            .map(|(g, go)| g / go);
        if net.echo.iter().any(|r| r.conns == conns) {
            report.ratios.push(Row::new(
                &format!("ratio.net.echo_{k}_over_go"),
                format!("TCP echo {k} conns, round trips/s: gmp / Go"),
                r.map_or("—".to_string(), |r| format!("{r:.2}×")),
                r,
                "—",
                &format!("target ≥ {}×", fig("target.echo_over_go").text()),
            ));
        }
    }
    let http_rate = |kind: Kind| {
        net.http
            .iter()
            .find(|r| r.kind == kind)
            .and_then(|r| r.result.as_ref().ok())
            .map(|w| w.requests_per_s)
    };
    if !net.http.is_empty() {
        let r = http_rate(Kind::Gmp)
            .zip(http_rate(Kind::Go))
            .map(|(g, go)| g / go);
        report.ratios.push(Row::new(
            "ratio.net.http_over_go",
            "HTTP hello under wrk, requests/s: gmp / Go",
            r.map_or("—".to_string(), |r| format!("{r:.2}×")),
            r,
            "—",
            &format!("target ≥ {}×", fig("target.http_over_go").text()),
        ));
    }
    for run in &net.echo {
        if let Err(e) = &run.result
            && e != GO_SKIP_LINE
        {
            report.notes.push(format!(
                "echo {} conns, {}: {e}",
                run.conns,
                run.kind.label()
            ));
        }
    }
    for run in &net.http {
        if let Err(e) = &run.result
            && e != GO_SKIP_LINE
        {
            report
                .notes
                .push(format!("http, {}: {e}", run.kind.label()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 5s test @ http://127.0.0.1:7001/
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  412.33us   9.81ms   80.12%
    Req/Sec    48.91k     3.12k   55.02k    70.00%
  Latency Distribution
     50%  0.97ms
     75%    1.20ms
     90%    1.51ms
     99%    2.34ms
  486512 requests in 5.00s, 41.76MB read
Requests/sec:  97302.40
Transfer/sec:      8.35MB
";

    #[test]
    fn wrk_reports_are_read() {
        let w = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(w.requests_per_s, 97_302.40);
        assert!((w.p99_us - 2_340.0).abs() < 1e-6);
        assert!(parse_wrk("Requests/sec: x").is_none());
        assert_eq!(wrk_duration_us("812.00us"), Some(812.0));
        assert_eq!(wrk_duration_us("2.00s"), Some(2e6));
        assert_eq!(wrk_duration_us("12"), None);
    }
}
