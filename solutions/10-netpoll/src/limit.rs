//! "Too many open files", said so a reader can act on it: [`fd_limit_error`] names
//! `ulimit -n` and the limit, read with `getrlimit` by [`nofile_limit`].

use std::io;

/// This process's limit on open file descriptors: `(soft, hard)`, `None` for unlimited.
/// The soft one is what `ulimit -n` prints and what `EMFILE` means was reached.
pub fn nofile_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` through the pointer, which points at a
    // live, writable `libc::rlimit` of exactly that layout.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(lim.rlim_cur), finite(lim.rlim_max)))
}

fn show(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// `err` from `what` (e.g. "accept", "creating the poller"), explained when it is a limit on
/// file descriptors: `EMFILE` (this process is at `ulimit -n`), `ENFILE` (the whole system's
/// table is full) and `ENOSPC` from registering (epoll's `max_user_watches`).
///
/// Each of the three messages names `what`, `ulimit -n` and its current soft value (from
/// [`nofile_limit`], "unlimited" if none); the `ENFILE` one also names the system-wide
/// limit `fs.file-max`, the `ENOSPC` one `max_user_watches`. The error keeps its kind. Any
/// other error, and one with no OS code, comes back unchanged.
pub fn fd_limit_error(err: io::Error, what: &str) -> io::Error {
    let Some(code) = err.raw_os_error() else {
        return err;
    };
    let (soft, hard) = nofile_limit().unwrap_or((None, None));
    let (soft, hard) = (show(soft), show(hard));
    let message = match code {
        libc::EMFILE => format!(
            "{what}: too many open files (EMFILE): this process has reached its limit of \
             {soft} open file descriptors (`ulimit -n` is {soft}, the hard limit {hard}). Every \
             connection holds one: raise the limit before starting (`ulimit -n {hard}` in the \
             shell that starts it), or serve fewer connections at once"
        ),
        libc::ENFILE => format!(
            "{what}: too many open files in the system (ENFILE): the kernel's table of open \
             files is full (see /proc/sys/fs/file-max and /proc/sys/fs/file-nr); this \
             process's own limit, `ulimit -n`, is {soft}. Close connections, or raise \
             fs.file-max"
        ),
        libc::ENOSPC => format!(
            "{what}: epoll refused another socket (ENOSPC): this user watches as many as \
             /proc/sys/fs/epoll/max_user_watches allows; raise fs.epoll.max_user_watches \
             (`ulimit -n` is {soft})"
        ),
        _ => return err,
    };
    io::Error::new(err.kind(), message)
}
