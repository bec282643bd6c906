//! Exercise 02, `osthread` (skeleton: fill in every `todo!()`).
//!
//! Part 02, `osthread`: start an M, the kernel thread that runs Gs.
//!
//! What lives here: [`MBuilder`], which starts a named kernel thread with a chosen stack
//! size, optionally pinned to a set of CPUs, and returns only once the thread is running and
//! has reported its kernel thread id (tid); [`current_tid`], [`allowed_cpus`] and
//! [`pin_current_thread`].
//!
//! Go: `newm` -> `newosproc` (`clone` with `CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|
//! CLONE_THREAD…`). Here `std::thread::Builder` does the `clone` through pthreads; what this
//! part adds is what a runtime needs on top: a checked stack size, a name `ps -T` shows, the
//! tid, and CPU affinity (`sched_setaffinity`).
//!
//! Invariant: [`MBuilder::spawn`] returns `Ok` only when the thread runs, is named, is pinned
//! as asked and knows its tid; on any `Err` the body never ran.
//!
//! Not here: what an M runs (the runtime's scheduler loop), how an idle M sleeps (part 03).
//!
//! Book: chapter 2, "OS threads and their stacks" (`book/src/ch02-osthread.md`).
#![warn(missing_docs)]
// A skeleton's parameters are unused until you fill it in.
#![allow(unused_variables, dead_code, unused_imports)]

use std::fmt;
use std::io;
use std::mem;
use std::sync::mpsc;
use std::thread;

/// The smallest stack an M may ask for: glibc's `PTHREAD_STACK_MIN` on x86_64 and aarch64
/// is 16 KiB, and below it `pthread_create` fails with `EINVAL`.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// Linux keeps at most 15 bytes of a thread's name (`TASK_COMM_LEN` is 16 with the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// Why an M could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The stack size is below [`MIN_STACK_SIZE`].
    StackTooSmall {
        /// Bytes asked for.
        requested: usize,
    },
    /// The name is longer than [`MAX_NAME_LEN`] bytes or holds a NUL byte.
    BadName {
        /// The name asked for.
        name: String,
    },
    /// The CPU set names a CPU this process may not run on, or is empty.
    BadCpu {
        /// The CPU asked for (`None`: the set was empty).
        cpu: Option<usize>,
        /// The CPUs this process may use (`sched_getaffinity`).
        allowed: Vec<usize>,
    },
    /// The kernel refused: out of threads (`threads-max`, `ulimit -u`) or memory for the stack.
    Os(io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::StackTooSmall { requested } => write!(
                f,
                "stack size {requested} bytes is below the minimum of {MIN_STACK_SIZE} bytes \
                 (PTHREAD_STACK_MIN): ask for at least {} KiB",
                MIN_STACK_SIZE / 1024
            ),
            SpawnError::BadName { name } => write!(
                f,
                "thread name {name:?} is not usable: Linux keeps at most {MAX_NAME_LEN} bytes \
                 and no NUL byte; use a shorter name such as \"gmp-m0\""
            ),
            SpawnError::BadCpu { cpu: None, allowed } => {
                write!(f, "the CPU set is empty: name at least one of {allowed:?}")
            }
            SpawnError::BadCpu {
                cpu: Some(cpu),
                allowed,
            } => write!(
                f,
                "CPU {cpu} is not one this process may run on; allowed CPUs are {allowed:?} \
                 (see `taskset -p $$` or the container's cpuset)"
            ),
            SpawnError::Os(e) => write!(
                f,
                "the kernel could not start a thread: {e}; too many threads \
                 (/proc/sys/kernel/threads-max, `ulimit -u`) or no memory for its stack"
            ),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// Configuration of an M before it starts.
#[derive(Clone, Debug)]
pub struct MBuilder {
    name: String,
    stack_size: usize,
    cpus: Option<Vec<usize>>,
}

impl MBuilder {
    /// An M named `name` with a 2 MiB stack (Rust's default for spawned threads), unpinned.
    pub fn new(name: impl Into<String>) -> MBuilder {
        MBuilder {
            name: name.into(),
            stack_size: 2 << 20,
            cpus: None,
        }
    }

    /// Sets the stack size in bytes; checked against [`MIN_STACK_SIZE`] by `spawn`.
    pub fn stack_size(mut self, bytes: usize) -> MBuilder {
        self.stack_size = bytes;
        self
    }

    /// Pins the M to these CPUs; checked against [`allowed_cpus`] by `spawn`.
    pub fn cpus(mut self, cpus: &[usize]) -> MBuilder {
        self.cpus = Some(cpus.to_vec());
        self
    }

    /// Starts the M running `body` and waits until it reports its tid (and pinning).
    ///
    /// Any thread may call. On `Err`, `body` was dropped without running.
    pub fn spawn<F, T>(self, body: F) -> Result<MHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        todo!(
            "ch02 step 2: check the stack size and name, start the thread, wait for its tid \
             (book: ch02-osthread.html#step-2)"
        )
    }
}

/// A running M. Dropping it detaches the thread, as with `std::thread::JoinHandle`.
#[derive(Debug)]
pub struct MHandle<T> {
    tid: u32,
    name: String,
    inner: thread::JoinHandle<Option<T>>,
}

impl<T> MHandle<T> {
    /// The M's kernel thread id: what `gettid()` returned on it, and its entry in
    /// `/proc/self/task`.
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// The name `ps -T` and `/proc/self/task/<tid>/comm` show.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the M to finish; `Err` carries the panic payload if its body panicked.
    pub fn join(self) -> thread::Result<T> {
        self.inner
            .join()
            .map(|out| out.expect("an M returned from spawn only runs with its body"))
    }
}

/// The calling thread's kernel thread id (`gettid`). Any thread.
pub fn current_tid() -> u32 {
    todo!("ch02 step 1: return gettid() (book: ch02-osthread.html#step-1)")
}

/// The CPUs the calling thread may run on, ascending (`sched_getaffinity(0)`). Any thread.
///
/// A new thread inherits its creator's mask, so on the main thread of an unpinned process
/// this is the process's CPU set; on a pinned thread it is only the pinned CPUs.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    todo!("ch02 step 1: read the CPU set with sched_getaffinity (book: ch02-osthread.html#step-1)")
}

/// Pins the calling thread to `cpus` (`sched_setaffinity`). Calling thread only.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), SpawnError> {
    todo!("ch02 step 3: check the CPUs, then sched_setaffinity (book: ch02-osthread.html#step-3)")
}
