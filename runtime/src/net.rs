//! TCP for Gs: [`TcpListener`] and [`TcpStream`], with std's signatures. Every socket is
//! nonblocking and registered with the runtime's netpoller (part 10): an operation that
//! would block parks the calling G, not its M, so 10,000 connections wait on a handful of
//! threads. Go: package `net` over `internal/poll.FD` and `runtime/netpoll.go`.
//!
//! ```
//! use std::io::{Read, Write};
//! gmp::run(|| {
//!     let listener = gmp::net::TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let server = gmp::go(move || {
//!         let (mut conn, _) = listener.accept().unwrap();
//!         let mut buf = [0; 5];
//!         conn.read_exact(&mut buf).unwrap();
//!         conn.write_all(&buf).unwrap();
//!     });
//!     let mut client = gmp::net::TcpStream::connect(addr).unwrap();
//!     client.write_all(b"hello").unwrap();
//!     let mut back = [0; 5];
//!     client.read_exact(&mut back).unwrap();
//!     assert_eq!(&back, b"hello");
//!     server.join().unwrap();
//! });
//! ```
//!
//! Errors are std's `io::Error`s: a peer that closed gives `Ok(0)` on read and
//! `BrokenPipe`/`ConnectionReset` on write, never a panic; a timeout is
//! `ErrorKind::TimedOut`; running out of file descriptors names `ulimit -n` and the limit.
//! Waiting needs a G of the runtime that made the socket: elsewhere an operation that would
//! block is an error saying so (data already there is read anywhere).
//!
//! Not here: the netpoller's wiring into the scheduler (`sched/netpoll.rs`).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::g;
use crate::parts::netpoll::{Dir, fd_limit_error, mio};
use crate::sched::Shared;
use crate::sched::netpoll::{Entry, IoWait};

/// The listen backlog of [`TcpListener::bind`]: connections the kernel queues before
/// `accept` (capped by `net.core.somaxconn`). Go asks for `somaxconn` too; mio's bind 1024.
pub const BACKLOG: i32 = 4096;

/// No timeout, in a timeout's `AtomicU64` of nanoseconds.
const NO_TIMEOUT: u64 = 0;

/// The runtime of the calling G, for `what` ("TcpListener::bind").
fn runtime(what: &str) -> io::Result<Arc<Shared>> {
    match g::current_g() {
        Some(g) => Ok(g.rt.clone()),
        None => Err(io::Error::other(format!(
            "gmp::net::{what} called outside a G: gmp's sockets park the calling G when they \
             would block, so use them in code started by gmp::run or gmp::go (std::net is \
             the API for plain threads)"
        ))),
    }
}

/// A registered socket: the socket, its entry in the runtime's netpoller, the runtime.
struct Io<S: mio::event::Source + AsRawFd> {
    rt: Arc<Shared>,
    entry: Arc<Entry>,
    /// `None` only while `Drop` closes it.
    sock: Option<S>,
}

impl<S: mio::event::Source + AsRawFd> Io<S> {
    fn new(rt: Arc<Shared>, mut sock: S, what: String) -> io::Result<Io<S>> {
        let fd = sock.as_raw_fd();
        let entry = rt.register_io(&mut sock, fd, what)?;
        Ok(Io {
            rt,
            entry,
            sock: Some(sock),
        })
    }

    fn sock(&self) -> &S {
        self.sock
            .as_ref()
            .expect("the socket is taken only by Drop")
    }

    /// Runs `op` until it does not say `WouldBlock`, parking the calling G on `dir` in
    /// between, until `timeout` (from now) if one is set. Go: `fd.pd.waitRead` loops.
    fn run<T>(
        &self,
        what: &str,
        dir: Dir,
        timeout: Option<Duration>,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> io::Result<T> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match op(self.sock()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
            match g::current_g() {
                Some(g) if Arc::ptr_eq(&g.rt, &self.rt) => {}
                Some(_) => {
                    return Err(io::Error::other(format!(
                        "gmp::net::{what}: this socket belongs to another gmp runtime; wait \
                         on it from a G of the runtime that made it"
                    )));
                }
                None => {
                    return Err(io::Error::other(format!(
                        "gmp::net::{what} would block outside a G: only a G can wait for a \
                         gmp socket (use it in code started by gmp::run or gmp::go)"
                    )));
                }
            }
            if crate::sched::syscall::in_call() {
                // The G has no P inside a blocking call: it cannot park on the poller there.
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "gmp::net::{what} would block inside gmp::blocking: a G there has \
                         no P and cannot wait for the socket; do socket I/O before or after \
                         the blocking call"
                    ),
                ));
            }
            match self.rt.wait_io(&self.entry, dir, deadline) {
                Ok(()) => {}
                Err(IoWait::TimedOut) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "gmp::net::{what}: timed out after {:?} (set_{}_timeout)",
                            timeout.unwrap_or_default(),
                            if dir == Dir::Read { "read" } else { "write" }
                        ),
                    ));
                }
                Err(IoWait::Closed) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        format!("gmp::net::{what}: the socket was closed while waiting"),
                    ));
                }
                Err(IoWait::Busy) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        format!(
                            "gmp::net::{what}: another G already waits to {} this socket; \
                             one G at a time may wait in each direction (give each G its \
                             own socket, or guard it with a gmp::sync::Mutex)",
                            if dir == Dir::Read {
                                "read from"
                            } else {
                                "write to"
                            }
                        ),
                    ));
                }
            }
        }
    }
}

impl<S: mio::event::Source + AsRawFd> Drop for Io<S> {
    fn drop(&mut self) {
        if let Some(mut sock) = self.sock.take() {
            // pd.close -> wake the parked Gs -> deregister -> free the slot; then the fd.
            self.rt.close_io(&self.entry, &mut sock);
            drop(sock);
        }
    }
}

/// A TCP socket listening for connections. Go: `net.TCPListener`.
pub struct TcpListener {
    io: Io<mio::net::TcpListener>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.local_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

impl TcpListener {
    /// Listens on the first of `addr`'s addresses that binds, with `SO_REUSEADDR` and a
    /// backlog of [`BACKLOG`]. Must be called on a G.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let rt = runtime("TcpListener::bind")?;
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match listen(addr) {
                Ok(sock) => {
                    // The bound address: port 0 becomes the port the kernel chose.
                    let bound = sock.local_addr().unwrap_or(addr);
                    let what = format!("TcpListener {bound}");
                    return Ok(TcpListener {
                        io: Io::new(rt, sock, what)?,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "gmp::net::TcpListener::bind: the address resolved to no address",
            )
        }))
    }

    /// Waits for a connection (parking the G) and returns it with the peer's address.
    /// Running out of descriptors is an error naming `ulimit -n`; the listener stays usable.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (sock, peer) = self
            .io
            .run("TcpListener::accept", Dir::Read, None, |l| l.accept())
            .map_err(|e| fd_limit_error(e, "gmp::net::TcpListener::accept"))?;
        let what = format!(
            "TcpStream {} <- {peer}",
            sock.local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string())
        );
        let stream = TcpStream::from_mio(self.io.rt.clone(), sock, what)?;
        Ok((stream, peer))
    }

    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

/// A nonblocking listening socket with `SO_REUSEADDR` and our backlog.
fn listen(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| fd_limit_error(e, "gmp::net::TcpListener::bind (socket)"))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}

/// A TCP connection. `Read` and `Write` are implemented for `TcpStream` and `&TcpStream`,
/// as in std: one G may read while another writes. Go: `net.TCPConn`.
pub struct TcpStream {
    io: Io<mio::net::TcpStream>,
    /// Nanoseconds; [`NO_TIMEOUT`] for none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("addr", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("fd", &self.io.sock().as_raw_fd())
            .finish()
    }
}

fn timeout_of(nanos: &AtomicU64) -> Option<Duration> {
    match nanos.load(Relaxed) {
        NO_TIMEOUT => None,
        n => Some(Duration::from_nanos(n)),
    }
}

fn store_timeout(nanos: &AtomicU64, what: &str, t: Option<Duration>) -> io::Result<()> {
    let n = match t {
        None => NO_TIMEOUT,
        Some(d) if d.is_zero() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "gmp::net::TcpStream::{what}: a zero Duration is not a timeout (as in \
                     std); pass None for no timeout"
                ),
            ));
        }
        Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
    };
    nanos.store(n, Relaxed);
    Ok(())
}

impl TcpStream {
    fn from_mio(rt: Arc<Shared>, sock: mio::net::TcpStream, what: String) -> io::Result<Self> {
        Ok(TcpStream {
            io: Io::new(rt, sock, what)?,
            read_timeout: AtomicU64::new(NO_TIMEOUT),
            write_timeout: AtomicU64::new(NO_TIMEOUT),
        })
    }

    /// Connects to the first of `addr`'s addresses that accepts, parking the G until the
    /// handshake ends. Must be called on a G.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let rt = runtime("TcpStream::connect")?;
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_one(&rt, addr) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "gmp::net::TcpStream::connect: the address resolved to no address",
            )
        }))
    }

    fn connect_one(rt: &Arc<Shared>, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = mio::net::TcpStream::connect(addr)
            .map_err(|e| fd_limit_error(e, "gmp::net::TcpStream::connect"))?;
        let stream = TcpStream::from_mio(rt.clone(), sock, format!("TcpStream -> {addr}"))?;
        // mio's connect: writable means the handshake ended; then an error, or a peer.
        stream.io.run("TcpStream::connect", Dir::Write, None, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        })?;
        Ok(stream)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.sock().local_addr()
    }

    /// Shuts down the read half, the write half, or both (the peer reads end of stream).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.sock().shutdown(how)
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.sock().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.sock().nodelay()
    }

    /// A read that waits longer than `t` fails with `ErrorKind::TimedOut`; `None`: waits
    /// as long as it takes. On the runtime's timers, not `SO_RCVTIMEO`. A zero Duration
    /// is an `InvalidInput` error, as in std.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.read_timeout, "set_read_timeout", t)
    }

    /// Like [`set_read_timeout`](TcpStream::set_read_timeout), for writes.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.write_timeout, "set_write_timeout", t)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(timeout_of(&self.read_timeout))
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(timeout_of(&self.write_timeout))
    }

    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        let t = timeout_of(&self.read_timeout);
        self.io
            .run("TcpStream::read", Dir::Read, t, |mut s| s.read(buf))
    }

    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        let t = timeout_of(&self.write_timeout);
        self.io
            .run("TcpStream::write", Dir::Write, t, |mut s| s.write(buf))
    }

    fn write_vectored_bufs(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let t = timeout_of(&self.write_timeout);
        self.io.run("TcpStream::write", Dir::Write, t, |mut s| {
            s.write_vectored(bufs)
        })
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.sock().as_raw_fd()
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_bufs(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_vectored_bufs(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
