//! TCP echo on loopback, for chapter 10's rows: a bounded load generator ([`load`], run in a
//! process of its own as the `echo-load` bin) and a thread-per-connection echo server
//! ([`serve_threads`], the `echo-threads` bin). Go's twin of the server is
//! `benches/go/servers` (`servers echo ADDR`); gmp's comes with `gmp::net`.
//!
//! The load: `conns` connections, opened first, then each does `rounds` round trips of a
//! `size`-byte message (write it, read the echo back, check it) with one message in flight
//! per connection, all connections at once, driven by one thread on `mio` so the client is
//! not itself a thousand threads. It reports round trips per second, latency percentiles
//! and, given the server's pid, the server's threads and RSS while every connection is
//! open. It stops by itself at its time limit and says so. Loopback only: any other address
//! is refused before a packet is sent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::BenchError;

/// What one run of the load generator does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The echo server; must be a loopback address.
    pub addr: SocketAddr,
    /// Connections, all open at once.
    pub conns: usize,
    /// Round trips per connection.
    pub rounds: u32,
    /// Bytes per message.
    pub size: usize,
    /// The run stops here, finished or not (connecting included).
    pub limit: Duration,
    /// The server's pid: its threads and RSS are read from /proc once all rounds are done,
    /// before the connections close.
    pub server_pid: Option<u32>,
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Round trips done, of `wanted`.
    pub done: u64,
    /// `conns × rounds`.
    pub wanted: u64,
    /// Opening every connection.
    pub connect: Duration,
    /// From the first message to the last echo (or the time limit).
    pub wall: Duration,
    /// Median, 99th percentile and largest round-trip time, in microseconds.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// See `p50_us`.
    pub max_us: f64,
    /// The server's OS threads with every connection open (`Threads:` of /proc/PID/status).
    pub server_threads: Option<u64>,
    /// The server's resident memory then, in KiB (`VmRSS:`).
    pub server_rss_kib: Option<u64>,
}

impl LoadReport {
    /// Did every round trip finish within the limit?
    pub fn finished(&self) -> bool {
        self.done == self.wanted
    }

    /// Round trips per second.
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One line of JSON, for scripts and a later class-bench row.
    pub fn json(&self, plan: &LoadPlan) -> String {
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        format!(
            "{{\"kind\":\"echo\",\"conns\":{},\"rounds\":{},\"size\":{},\"done\":{},\"wanted\":{},\
             \"connect_s\":{:.3},\"wall_s\":{:.3},\"round_trips_per_s\":{:.0},\"p50_us\":{:.0},\
             \"p99_us\":{:.0},\"max_us\":{:.0},\"server_threads\":{},\"server_rss_kib\":{}}}",
            plan.conns,
            plan.rounds,
            plan.size,
            self.done,
            self.wanted,
            self.connect.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.per_second(),
            self.p50_us,
            self.p99_us,
            self.max_us,
            opt(self.server_threads),
            opt(self.server_rss_kib)
        )
    }
}

/// Refuses any address but loopback: the benches never send traffic off the machine.
pub fn require_loopback(addr: SocketAddr) -> Result<(), BenchError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{addr} is not a loopback address: the echo benches only talk to 127.0.0.0/8 or \
             ::1 (use e.g. 127.0.0.1:7000)"
        )))
    }
}

/// An error of `what`, with "too many open files" explained (one descriptor a connection).
fn io_err(what: &str, e: io::Error) -> BenchError {
    BenchError(netpoll_ref::fd_limit_error(e, what).to_string())
}

/// A failed connect, said so the reader knows what to do.
fn connect_error(addr: SocketAddr, i: usize, e: io::Error) -> BenchError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        BenchError(format!(
            "echo load: nothing listens on {addr}: start the server first (echo-threads \
             {addr}, or benches/go's `servers echo {addr}`)"
        ))
    } else {
        io_err(&format!("echo load: connection {} to {addr}", i + 1), e)
    }
}

/// One connection of the load.
struct Conn {
    stream: MioStream,
    /// The message of this round; the echo must equal it.
    out: Vec<u8>,
    sent: usize,
    back: Vec<u8>,
    got: usize,
    rounds: u32,
    started: Instant,
}

impl Conn {
    fn next_message(&mut self, i: usize) {
        let fill = (i as u32).wrapping_mul(31).wrapping_add(self.rounds) as u8;
        self.out.iter_mut().for_each(|b| *b = fill);
        (self.sent, self.got) = (0, 0);
        self.started = Instant::now();
    }
}

/// Runs the load of `plan` against its server and reports; an error names what failed.
pub fn load(plan: &LoadPlan) -> Result<LoadReport, BenchError> {
    require_loopback(plan.addr)?;
    if plan.conns == 0 || plan.rounds == 0 || plan.size == 0 {
        return Err(BenchError(
            "echo load: connections, rounds and size must each be at least 1".into(),
        ));
    }
    let begin = Instant::now();
    let deadline = begin + plan.limit;
    let mut poll = Poll::new().map_err(|e| io_err("echo load: creating the poller", e))?;
    let mut conns = Vec::with_capacity(plan.conns);
    for i in 0..plan.conns {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BenchError(format!(
                "echo load: only {i} of {} connections opened within the limit of {:?}",
                plan.conns, plan.limit
            )));
        }
        let s = TcpStream::connect_timeout(&plan.addr, left.min(Duration::from_secs(5)))
            .map_err(|e| connect_error(plan.addr, i, e))?;
        s.set_nodelay(true).map_err(|e| io_err("set_nodelay", e))?;
        s.set_nonblocking(true)
            .map_err(|e| io_err("set_nonblocking", e))?;
        let mut stream = MioStream::from_std(s);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| io_err("echo load: registering a connection", e))?;
        conns.push(Conn {
            stream,
            out: vec![0; plan.size],
            sent: 0,
            back: vec![0; plan.size],
            got: 0,
            rounds: 0,
            started: begin,
        });
    }
    let connect = begin.elapsed();

    let wanted = plan.conns as u64 * u64::from(plan.rounds);
    let mut rtts: Vec<u32> = Vec::with_capacity(wanted.min(10_000_000) as usize);
    let start = Instant::now();
    let mut open = plan.conns;
    for (i, c) in conns.iter_mut().enumerate() {
        c.next_message(i);
        if drive(c, i, plan.rounds, &mut rtts)? {
            open -= 1;
        }
    }
    let mut events = Events::with_capacity(1024);
    while open > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("echo load: poll", e)),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.rounds < plan.rounds && drive(c, i, plan.rounds, &mut rtts)? {
                open -= 1;
            }
        }
    }
    let wall = start.elapsed();
    // Sampled with every connection still open: the thread server has one thread each.
    let (server_threads, server_rss_kib) = match plan.server_pid {
        Some(pid) => server_status(pid),
        None => (None, None),
    };
    drop(conns);
    let pct = |rtts: &[u32], p: f64| -> f64 {
        if rtts.is_empty() {
            return 0.0;
        }
        let at = ((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1;
        f64::from(rtts[at])
    };
    rtts.sort_unstable();
    Ok(LoadReport {
        done: rtts.len() as u64,
        wanted,
        connect,
        wall,
        p50_us: pct(&rtts, 0.50),
        p99_us: pct(&rtts, 0.99),
        max_us: rtts.last().map_or(0.0, |&v| f64::from(v)),
        server_threads,
        server_rss_kib,
    })
}

/// Moves connection `i` on until it would block; `true` once its last round trip is done.
/// Edge-triggered readiness: each direction is driven until `WouldBlock`.
fn drive(c: &mut Conn, i: usize, rounds: u32, rtts: &mut Vec<u32>) -> Result<bool, BenchError> {
    loop {
        if c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io_err(
                        &format!("echo load: write on connection {}", i + 1),
                        e,
                    ));
                }
            }
            continue;
        }
        let size = c.back.len();
        match c.stream.read(&mut c.back[c.got..size]) {
            Ok(0) => {
                return Err(BenchError(format!(
                    "echo load: the server closed connection {} after {} round trips",
                    i + 1,
                    c.rounds
                )));
            }
            Ok(n) => c.got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io_err(
                    &format!("echo load: read on connection {}", i + 1),
                    e,
                ));
            }
        }
        if c.got == size {
            if c.back != c.out {
                return Err(BenchError(format!(
                    "echo load: connection {} got back other bytes than it sent in round {}",
                    i + 1,
                    c.rounds + 1
                )));
            }
            rtts.push(u32::try_from(c.started.elapsed().as_micros()).unwrap_or(u32::MAX));
            c.rounds += 1;
            if c.rounds == rounds {
                return Ok(true);
            }
            c.next_message(i);
        }
    }
}

/// `Threads:` and `VmRSS:` (KiB) of process `pid`, from /proc.
pub fn server_status(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("Threads:"), field("VmRSS:"))
}

/// The stack of each connection's thread in [`serve_threads`]: small, as a server with
/// thousands of them would choose (the echo loop needs little).
pub const SERVER_THREAD_STACK: usize = 64 * 1024;

/// Raises the accept queue of `listener` to `backlog` (the kernel caps it at
/// `net.core.somaxconn`). std listens with 128; Go asks for somaxconn. With 128, a client
/// that opens a thousand connections faster than the thread server spawns threads overflows
/// the queue, and each dropped SYN costs a one-second retransmit.
pub fn set_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on the descriptor `listener` owns and keeps open for this call; on a
    // socket that already listens, Linux only updates its backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Thread-per-connection echo: accepts up to `max_conns` connections on `listener`, one OS
/// thread each, which echoes until its peer closes. Returns once `max_conns` were accepted
/// (the bin runs it with no practical bound and a timer that ends the process).
pub fn serve_threads(listener: TcpListener, max_conns: u64) -> Result<u64, BenchError> {
    let addr = listener.local_addr().map_err(|e| io_err("local_addr", e))?;
    require_loopback(addr)?;
    set_backlog(&listener, libc::SOMAXCONN).map_err(|e| io_err("echo-threads: listen", e))?;
    let mut accepted = 0;
    while accepted < max_conns {
        let (stream, _) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("echo-threads: accept", e)),
        };
        accepted += 1;
        thread::Builder::new()
            .name("echo".into())
            .stack_size(SERVER_THREAD_STACK)
            .spawn(move || echo_one(stream))
            .map_err(|e| {
                io_err(
                    &format!("echo-threads: a thread for connection {accepted}"),
                    e,
                )
            })?;
    }
    Ok(accepted)
}

/// The `echo-threads` server as a whole program: binds `addr` (loopback only), ends the
/// process by itself after `limit`, and serves a thread per connection until then. The
/// `echo-threads` bin and the class bench's `--echo-threads` mode both run this.
pub fn run_threads_server(addr: SocketAddr, limit: Duration) -> Result<(), BenchError> {
    require_loopback(addr)?;
    let listener =
        TcpListener::bind(addr).map_err(|e| io_err(&format!("echo-threads: bind {addr}"), e))?;
    // The bound: the process ends by itself, whatever its connections are doing.
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!("echo-threads: {} s are up, exiting", limit.as_secs());
        std::process::exit(0);
    });
    eprintln!(
        "echo-threads: serving on {addr}, one thread per connection, for at most {} s",
        limit.as_secs()
    );
    serve_threads(listener, u64::MAX).map(drop)
}

/// Echoes one connection until its peer closes or an error.
fn echo_one(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_small_load_against_the_thread_server_finishes_and_counts_every_round_trip() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || serve_threads(listener, 8));
        let plan = LoadPlan {
            addr,
            conns: 8,
            rounds: 20,
            size: 64,
            limit: Duration::from_secs(20),
            server_pid: Some(std::process::id()),
        };
        let report = testkit::watchdog(
            "8 connections × 20 echo round trips",
            Duration::from_secs(30),
            move || load(&plan),
        )
        .expect("the load must run");
        assert_eq!(
            (report.done, report.wanted),
            (160, 160),
            "every round trip must be counted once: {report:?}"
        );
        assert!(
            report.p50_us <= report.p99_us && report.p99_us <= report.max_us,
            "percentiles out of order: {report:?}"
        );
        assert!(
            report.server_threads.is_some_and(|t| t >= 8),
            "the server's 8 connection threads: {report:?}"
        );
        assert_eq!(server.join().expect("server thread").expect("server"), 8);
    }

    #[test]
    fn a_server_that_never_answers_is_left_at_the_time_limit() {
        // Connections complete in the listener's queue; nobody reads or answers them.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let plan = LoadPlan {
            addr: listener.local_addr().expect("addr"),
            conns: 4,
            rounds: 3,
            size: 64,
            limit: Duration::from_secs(1),
            server_pid: None,
        };
        let report = testkit::watchdog(
            "a load against a silent server",
            Duration::from_secs(20),
            move || load(&plan),
        )
        .expect("a silent server is no error, only a load that does not finish");
        assert!(
            !report.finished(),
            "no echo came, yet the load says it finished: {report:?}"
        );
        assert_eq!((report.done, report.wanted), (0, 12), "{report:?}");
        drop(listener);
    }

    #[test]
    fn nothing_listening_is_named() {
        // A port that was just free: bind, read it, close.
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let plan = LoadPlan {
            addr,
            conns: 1,
            rounds: 1,
            size: 64,
            limit: Duration::from_secs(5),
            server_pid: None,
        };
        let e = load(&plan).expect_err("nobody listens there");
        assert!(
            e.0.contains("nothing listens") && e.0.contains("start the server"),
            "{e}"
        );
    }

    #[test]
    fn other_addresses_than_loopback_are_refused() {
        let e = require_loopback("192.0.2.1:7".parse().expect("addr")).expect_err("not loopback");
        assert!(e.0.contains("loopback"), "{e}");
        let plan = LoadPlan {
            addr: "192.0.2.1:7".parse().expect("addr"),
            conns: 1,
            rounds: 1,
            size: 64,
            limit: Duration::from_secs(1),
            server_pid: None,
        };
        assert!(load(&plan).expect_err("must refuse").0.contains("loopback"));
    }
}
