//! Which implementation of each part the benches measure: the solution by default, the
//! learner's exercise when its `mine-NN` feature is on (as the runtime's own `parts.rs`).
//! Nothing else in this crate names a part crate, so a swap is one line here.
//!
//! Also here: [`ROWS`], which parts each class-bench row runs, and why a row that runs none
//! of them cannot be the learner's.

#[cfg(feature = "mine-01")]
pub(crate) use procinfo_mine as procinfo;
#[cfg(not(feature = "mine-01"))]
pub(crate) use procinfo_ref as procinfo;

#[cfg(feature = "mine-02")]
pub(crate) use osthread_mine as osthread;
#[cfg(not(feature = "mine-02"))]
pub(crate) use osthread_ref as osthread;

#[cfg(feature = "mine-03")]
pub(crate) use parker_mine as parker;
#[cfg(not(feature = "mine-03"))]
pub(crate) use parker_ref as parker;

/// The solution's Parker in every build, timed beside the learner's in a `mine-03` build.
pub(crate) use parker_ref as parker_solution;

#[cfg(feature = "mine-04")]
pub(crate) use context_mine as context;
#[cfg(not(feature = "mine-04"))]
pub(crate) use context_ref as context;

/// The parts this build takes from `exercises/` (the learner's code), in chapter order.
pub const MINE: &[u8] = &[
    #[cfg(feature = "mine-01")]
    1,
    #[cfg(feature = "mine-02")]
    2,
    #[cfg(feature = "mine-03")]
    3,
    #[cfg(feature = "mine-04")]
    4,
    #[cfg(feature = "mine-05")]
    5,
    #[cfg(feature = "mine-06")]
    6,
    #[cfg(feature = "mine-07")]
    7,
    #[cfg(feature = "mine-08")]
    8,
    #[cfg(feature = "mine-09")]
    9,
    #[cfg(feature = "mine-10")]
    10,
    #[cfg(feature = "mine-11")]
    11,
];

/// The parts that have a `mine-NN` feature here, so the class bench can run on them.
pub const SWAPPABLE: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// A group of class-bench rows measured together; `--only` picks groups by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// Chapter 1: start /bin/true and wait.
    Process,
    /// Chapter 2: thread spawn+join, std and part 02.
    Spawn,
    /// Chapter 3: hand-offs between two threads.
    Handoff,
    /// Chapter 2: many sleeping threads.
    Sleepers,
    /// Chapter 4: user-space switch round trips and their instructions.
    Switch,
    /// Chapter 6: spawn+join, hand-off and yield of gmp Gs (and the OS-thread yield).
    G,
    /// Chapter 6: Go's twins of the G rows (when `go` is on PATH).
    Go,
    /// Chapter 6: memory of parked Gs (gmp and Go).
    Parked,
    /// Chapters 7–8: gmp's five programs (spawn+join, hand-off, yield, nested fib, spawn
    /// chain) at P=1 and P=2, each in a child process.
    Programs,
    /// Chapters 7–8: the same five on Go, tokio and may.
    Peers,
    /// Chapter 9: 100 blocking calls, threads and wall time, unbounded and bounded.
    Blocking,
    /// Chapter 10: TCP echo (gmp, Go, a thread per connection) and HTTP under wrk.
    Net,
    /// Chapter 11: 100k Gs sleeping, wall time and RSS, beside Go.
    Timers,
}

impl Section {
    /// Every section, in the order the class bench runs them.
    pub const ALL: [Section; 13] = [
        Section::Process,
        Section::Spawn,
        Section::Handoff,
        Section::Sleepers,
        Section::Switch,
        Section::G,
        Section::Go,
        Section::Parked,
        Section::Programs,
        Section::Peers,
        Section::Blocking,
        Section::Net,
        Section::Timers,
    ];

    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Section::Process => "process",
            Section::Spawn => "spawn",
            Section::Handoff => "handoff",
            Section::Sleepers => "sleepers",
            Section::Switch => "switch",
            Section::G => "g",
            Section::Go => "go",
            Section::Parked => "parked",
            Section::Programs => "programs",
            Section::Peers => "peers",
            Section::Blocking => "blocking",
            Section::Net => "net",
            Section::Timers => "timers",
        }
    }

    /// The section named `name`, if any.
    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether any row of this section runs one of `parts`.
    pub fn uses_any(self, parts: &[u8]) -> bool {
        ROWS.iter()
            .any(|r| r.section == self && r.parts.iter().any(|p| parts.contains(p)))
    }
}

/// Which parts one family of class-bench rows runs in its measured path.
#[derive(Clone, Copy, Debug)]
pub struct RowParts {
    /// Rows whose key starts with this; `*` stands for one dot-separated word.
    pub prefix: &'static str,
    /// The section that measures them.
    pub section: Section,
    /// The parts whose code runs while they are measured (a learner's build swaps these).
    pub parts: &'static [u8],
    /// For rows with no part: why they cannot be the learner's.
    pub why_not: &'static str,
}

const fn row(
    prefix: &'static str,
    section: Section,
    parts: &'static [u8],
    why_not: &'static str,
) -> RowParts {
    RowParts {
        prefix,
        section,
        parts,
        why_not,
    }
}

/// Every class-bench row family, most specific prefix first. A unit test checks that
/// every row the class bench writes matches one.
pub const ROWS: &[RowParts] = &[
    row(
        "process.",
        Section::Process,
        &[],
        "process spawn+wait times the kernel's fork, exec and wait of /bin/true: no part runs",
    ),
    row(
        "thread.spawn_join.std.",
        Section::Spawn,
        &[],
        "std::thread spawn+join is std's code, the twin your part 02 is compared with",
    ),
    row("thread.spawn_join.osthread.", Section::Spawn, &[2], ""),
    row("handoff.parker.", Section::Handoff, &[3], ""),
    row(
        "handoff.",
        Section::Handoff,
        &[],
        "the condvar and mpsc hand-offs are std's Mutex+Condvar and channels (part 02 only \
         pins their threads, outside the timed loop)",
    ),
    row(
        "sleepers.*.create_per_thread.",
        Section::Sleepers,
        &[],
        "sleeping threads are started by std::thread::Builder; only their memory is read by \
         part 01",
    ),
    row("sleepers.", Section::Sleepers, &[1], ""),
    row("switch.asm.", Section::Switch, &[4], ""),
    row("switch.fiber.", Section::Switch, &[4], ""),
    row(
        "switch.rmw.",
        Section::Switch,
        &[],
        "a locked read-modify-write is the CPU's price: no part runs",
    ),
    row(
        "switch.corosensei.",
        Section::Switch,
        &[],
        "the corosensei switch is the crate your part 04 is measured against",
    ),
    row("g.spawn_join.corosensei.", Section::G, &[5, 6, 7, 8], ""),
    row("g.spawn_join.asm.", Section::G, &[4, 5, 6, 7, 8], ""),
    row("g.handoff.corosensei.", Section::G, &[6, 7, 8], ""),
    row("g.handoff.asm.", Section::G, &[4, 6, 7, 8], ""),
    row("g.yield.corosensei.", Section::G, &[6, 7, 8], ""),
    row("g.yield.asm.", Section::G, &[4, 6, 7, 8], ""),
    row(
        "g.sleep.go.",
        Section::Timers,
        &[],
        "Go's sleeping goroutines are Go's runtime and timers",
    ),
    // Stacks, park/ready, the rings, the find order and the timer heap.
    row("g.sleep.", Section::Timers, &[5, 6, 7, 8, 11], ""),
    row(
        "blocking.go.",
        Section::Blocking,
        &[],
        "Go's blocking calls are Go's runtime (benches/go/blocking)",
    ),
    // Stacks, park/ready, the rings, the find order and the P hand-off around each call.
    row("blocking.", Section::Blocking, &[5, 6, 7, 8, 9], ""),
    row(
        "g.parked.go_",
        Section::Parked,
        &[],
        "Go's parked goroutines are Go's runtime",
    ),
    row("g.parked.", Section::Parked, &[1, 5, 6, 7, 8], ""),
    row(
        "g.",
        Section::Go,
        &[],
        "the Go rows run Go's runtime (benches/go), the yardstick for gmp's",
    ),
    // The default builder: corosensei's switch, part 05's stacks, part 06's park/ready,
    // part 07's rings and part 08's find order.
    row("peer.*.gmp.", Section::Programs, &[5, 6, 7, 8], ""),
    row(
        "peer.",
        Section::Peers,
        &[],
        "Go, tokio and may run their own runtimes: the yardsticks gmp's programs are set beside",
    ),
    // gmp's servers: stacks, park/ready, the rings, the find order, the netpoller, and the
    // timers its idle poller sleeps until.
    row("net.*.gmp.", Section::Net, &[5, 6, 7, 8, 10, 11], ""),
    row(
        "net.",
        Section::Net,
        &[],
        "Go's servers and the thread-per-connection server run Go's runtime and std::net",
    ),
    row(
        "thread.yield.",
        Section::G,
        &[],
        "sched_yield between two OS threads is the kernel's switch, the twin of the G yield",
    ),
];

/// The row family of `key`, if the table has one.
pub fn row_parts(key: &str) -> Option<&'static RowParts> {
    ROWS.iter().find(|r| matches(r.prefix, key))
}

/// Whether `key` starts with `pattern`, where a `*` word matches any one word.
fn matches(pattern: &str, key: &str) -> bool {
    let (mut words, mut want) = (key.split('.'), pattern.split('.').peekable());
    while let Some(w) = want.next() {
        // The last piece of a pattern that ends in a dot is empty: anything may follow.
        if w.is_empty() && want.peek().is_none() {
            return true;
        }
        match words.next() {
            Some(k) if w == "*" || k == w => {}
            // A last piece without a dot after it matches the start of a word ("go_").
            Some(k) if want.peek().is_none() && k.starts_with(w) => return true,
            _ => return false,
        }
    }
    true
}

/// `"03"`, `"03 and 06"`, `"01, 05 and 06"`.
pub fn list(parts: &[u8]) -> String {
    let names: Vec<String> = parts.iter().map(|p| format!("{p:02}")).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
