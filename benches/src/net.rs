//! Chapter 10's servers on gmp, for the class bench's net section: a TCP echo server and an
//! HTTP/1.1 "hello" server, one G per connection on `gmp::net`, each connection served by
//! the code of the runtime's examples `echo` and `http_hello` (`runtime/examples/conn/`),
//! and `wrk` as the HTTP load. Each server runs in a process of its own (`class-bench
//! --net-server`), bounded in time; the load runs in the class bench's process. Loopback
//! only.
//!
//! Not here: the echo load and the thread-per-connection server (`echo.rs`), Go's twins
//! (`benches/go/servers`, built by `go::build_servers`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use gmp::net::TcpListener;

use crate::BenchError;
use crate::echo::require_loopback;

// The runtime's example servers, connection by connection: what the book shows is what the
// bench measures.
#[path = "../../runtime/examples/conn/echo.rs"]
mod echo_conn;
#[path = "../../runtime/examples/conn/http.rs"]
mod http_conn;

/// Which server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// Echo every byte back until the peer closes.
    Echo,
    /// Answer every HTTP/1.1 request "Hello, world!\n", keeping the connection alive.
    Http,
}

impl Server {
    /// The name `--net-server` takes.
    pub fn name(self) -> &'static str {
        match self {
            Server::Echo => "echo",
            Server::Http => "http",
        }
    }

    /// The server named `name`.
    pub fn from_name(name: &str) -> Option<Server> {
        [Server::Echo, Server::Http]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// Serves `server` on `addr` (loopback) with `procs` Ps until `limit` has passed, then
/// exits the process. Prints `listening` on stdout once it accepts.
pub fn serve(
    server: Server,
    addr: SocketAddr,
    procs: usize,
    limit: Duration,
) -> Result<(), BenchError> {
    require_loopback(addr)?;
    let rt = gmp::Runtime::builder()
        .procs(procs)
        .build()
        .map_err(|e| BenchError::new("starting gmp", e))?;
    rt.block_on(move || {
        let listener =
            TcpListener::bind(addr).map_err(|e| BenchError::new(&format!("bind {addr}"), e))?;
        // The bound, as a G: a thread for it would count among the server's threads.
        gmp::go(move || {
            gmp::time::sleep(limit);
            std::process::exit(0);
        });
        println!("listening");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    gmp::go(move || match server {
                        Server::Echo => echo_conn::serve(conn),
                        Server::Http => http_conn::serve(conn),
                    });
                }
                Err(e) => {
                    eprintln!("net-server: accept: {e}");
                    gmp::time::sleep(Duration::from_millis(10));
                }
            }
        }
    })
}

/// What `wrk` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct WrkFigure {
    /// `Requests/sec:`.
    pub requests_per_sec: f64,
    /// The 99th percentile latency, in microseconds (`--latency`'s `99%` line).
    pub p99_us: f64,
}

/// The `wrk` on PATH, if any.
pub fn wrk_on_path() -> Option<std::path::PathBuf> {
    crate::on_path("wrk")
}

/// The line the bench prints when `wrk` is missing.
pub const WRK_SKIP_LINE: &str =
    "skipped: wrk is not on PATH (`apt-get install -y wrk` installs it)";

/// Runs `wrk -t2 -c<conns> -d<secs>s --latency http://addr/` and reads its figures.
pub fn wrk(addr: SocketAddr, conns: usize, secs: u64) -> Result<WrkFigure, BenchError> {
    require_loopback(addr)?;
    let what = format!("wrk against http://{addr}/");
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            &format!("http://{addr}/"),
        ])
        .output()
        .map_err(|e| BenchError::new(&what, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::new(&what, format!("wrk failed: {text}")));
    }
    parse_wrk(&text).ok_or_else(|| BenchError::new(&what, format!("unexpected output: {text}")))
}

/// `Requests/sec:` and the `99%` latency of wrk's output.
pub fn parse_wrk(text: &str) -> Option<WrkFigure> {
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))?
        .trim();
    let p99_us = duration_us(p99)?;
    Some(WrkFigure {
        requests_per_sec,
        p99_us,
    })
}

/// wrk's `812.00us`, `3.45ms`, `1.20s` in microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 2s test @ http://127.0.0.1:8080/\n  Latency Distribution\n     \
                    50%  812.00us\n     99%    3.45ms\n  1000 requests in 2.00s\n\
                    Requests/sec:  61189.00\nTransfer/sec:      4.61MB\n";
        let f = parse_wrk(text).unwrap();
        assert_eq!(f.requests_per_sec, 61189.0);
        assert!((f.p99_us - 3450.0).abs() < 1e-6);
        assert_eq!(duration_us("1.5s"), Some(1.5e6));
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn servers_have_names() {
        for s in [Server::Echo, Server::Http] {
            assert_eq!(Server::from_name(s.name()), Some(s));
        }
        assert_eq!(Server::from_name("ftp"), None);
    }
}
