//! The class bench: the costs chapters 1–6 talk about, measured on the machine in front of
//! the class, beside the seed articles' figures and the reference machine's, as the book
//! quotes them: every one is read from `book/figures.toml` ([`gmp_benches::figures`]).
//! From chapter 7 on, five programs at P=1 and P=2 on gmp beside Go, tokio and may
//! (`programs.rs`; `--peer` runs one of them in a child process).
//!
//! ```text
//! cargo run --release -p gmp-benches --bin class-bench -- [--quick] [--json] [--pause] [--only SECTIONS]
//! cargo run --release -p gmp-benches --bin class-bench -- --switch-count asm 100000
//! ```
//!
//! `--quick` is the short run (1,000 sleeping threads instead of 10,000, fewer rounds): on a
//! quiet 2-core machine the run itself takes about half a minute, most of it parking a
//! million Gs. `--pause` waits for Enter after each "Predict:" question (only when stdin is
//! a terminal). `--json` prints the report as JSON on stdout and the progress on stderr.
//! `--only handoff,g` runs only those sections (see [`Section`]). The report is also
//! written to `<target>/class-bench/report.{md,html,svg,json}`; its facts include the wall
//! time of each section.
//!
//! **The learner's rows.** Every row family says which parts run while it is measured
//! ([`gmp_benches::parts::ROWS`]; a row that runs none says why). `cargo workbook bench`
//! builds this program a second time with `--features mine-NN` for each part the learner
//! finished, runs that build with `--mine-out FILE` (only the sections that run those
//! parts, only their rows written), then runs the solution's build with `--mine-rows FILE`,
//! which puts each learner's row right below its solution twin, marked "your part NN" with
//! the ratio yours / solution, in every format (the HTML highlights them, the JSON has
//! `"mine": [NN]`, the SVG draws their bars in gold). See `mine.rs`.
//!
//! `--switch-count ENGINE N` runs N switch round trips of one engine (`asm`, `fiber`,
//! `corosensei`)
//! and exits, printing nothing: the class bench runs itself that way under valgrind's
//! callgrind to count instructions per round trip (so the one `cargo run` builds all it
//! needs; no second binary).
//!
//! Every timing is the median of several runs; the variants of one measurement take turns
//! within each run, so drift hits them all alike. Compare ratios, not absolute figures
//! across machines.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gmp_benches::figures::{Figure, fig};
use gmp_benches::report::{
    BLUE, Bar, Chart, GREEN, ORANGE, PURPLE, Report, Row, fmt_ns, fmt_us, machine_facts,
};
use gmp_benches::{
    C_DEFAULT_STACK, Engine, InstructionCount, Mechanism, NO_VALGRIND, Placement, Plan,
    SleeperStack, callgrind_round_trip, handoff, handoff_solution_parker, median,
    osthread_spawn_join, process_spawn_wait, sleeping_threads, std_spawn_join, switch_round_trip,
    target_dir, valgrind_on_path,
};

mod blocking;
mod gs;
mod mine;
mod net;
mod programs;
mod timers;

use gmp_benches::parts::{self, MINE, Section};
use gmp_benches::peers;
use mine::Mine;

const USAGE: &str = "usage: class-bench [--quick] [--json] [--pause] [--only SECTIONS]
                   [--mine-out FILE | --mine-rows FILE]
       class-bench --switch-count asm|fiber|corosensei N
       class-bench --parked N slab|guarded STACK_BYTES
       class-bench --sleeping N
       class-bench --blocking unbounded|BOUND
       class-bench --net-server echo|http|threads ADDR
       class-bench --peer gmp|tokio|may PROGRAM PROCS N REPEAT
  --quick  a short run (about half a minute on 2 cores): 1,000 sleeping threads, fewer rounds
  --json   print the report as JSON on stdout (progress goes to stderr)
  --pause  wait for Enter after each prediction question (when stdin is a terminal)
  --only SECTIONS
           run only these (comma list): process, spawn, handoff, sleepers, switch, g,
           go, parked, programs, peers, blocking, net, timers
  --mine-out FILE
           (a build with mine-NN features) measure only the rows that run the learner's
           parts and write them to FILE
  --mine-rows FILE
           show the rows of FILE beside the solution's, marked as the learner's
  --switch-count ENGINE N
           run N user-space switch round trips and exit (what callgrind counts)
  --parked N MODE STACK_BYTES
           park N gmp Gs, print their memory and exit (run fresh for each measurement)
  --sleeping N
           N gmp Gs each sleep 100 ms at P=2; print wall time and memory and exit
  --blocking unbounded|BOUND
           100 gmp Gs each make a 100 ms blocking call at P=2 (through a Bound of BOUND);
           print the OS threads added and the wall time and exit
  --net-server KIND ADDR
           serve TCP echo or HTTP hello on gmp at P=2, or echo with a thread per
           connection, on loopback ADDR for at most 120 s (the net section runs each so)
  --peer PEER PROGRAM PROCS N REPEAT
           run one program (spawn-join, pingpong, yield, fib, chain) on gmp, tokio or may
           with PROCS Ps and print its time (the programs section runs each this way)";

/// The colour of the learner's bars.
const YOURS: &str = "#d4a017";

/// `ref.threads_10k_vmsize` is the growth of 10,000 threads: per thread, divide by this.
const VMSIZE_THREADS: f64 = 10_000.0;

struct Options {
    quick: bool,
    json: bool,
    pause: bool,
    /// `--only`: run just these sections.
    only: Option<Vec<Section>>,
    /// `--mine-out FILE`: measure only the rows on the learner's parts, write them there.
    mine_out: Option<PathBuf>,
    /// `--mine-rows FILE`: the learner's rows to show beside the solution's.
    mine_rows: Option<PathBuf>,
}

impl Options {
    /// Whether this run measures section `s`.
    fn runs(&self, s: Section) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&s))
            && (self.mine_out.is_none() || s.uses_any(MINE))
    }
}

/// The options, `None` for `--help`, or what is wrong with them.
fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        pause: false,
        only: None,
        mine_out: None,
        mine_rows: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--pause" => opts.pause = true,
            "--only" => {
                let list = value("--only")?;
                let mut only = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    only.push(Section::from_name(name).ok_or_else(|| {
                        format!(
                            "--only: no section {name:?}; the sections are {}",
                            Section::ALL.map(Section::name).join(", ")
                        )
                    })?);
                }
                opts.only = Some(only);
            }
            "--mine-out" => opts.mine_out = Some(value("--mine-out")?.into()),
            "--mine-rows" => opts.mine_rows = Some(value("--mine-rows")?.into()),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(opts))
}

/// Runs one section unless it is off, turning a panic (a learner's `todo!()`, a broken
/// invariant) into a failure line so the other sections still run.
fn guarded<T>(
    (failures, times): (&mut Vec<String>, &mut Vec<String>),
    what: &str,
    on: bool,
    skipped: impl FnOnce() -> T,
    f: impl FnOnce() -> T,
) -> T {
    if !on {
        return skipped();
    }
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    times.push(format!("{what} {:.1} s", start.elapsed().as_secs_f64()));
    match result {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            failures.push(format!("{what}: panicked: {msg}"));
            skipped()
        }
    }
}

fn skipped<T>() -> Result<T, String> {
    Err("skipped".to_string())
}

/// `--mine-out`: writes the learner's rows; the solution's build merges them.
fn write_mine(
    out: &Out,
    path: &Path,
    report: &Report,
    failures: Vec<String>,
    same_run: SameRun,
) -> ExitCode {
    let mut mine = Mine::from_report(report, failures);
    mine.same_run = same_run;
    for r in &mine.rows {
        out.result(&format!("yours: {} = {}", r.key, r.this));
    }
    for f in &mine.failures {
        out.result(&format!("yours: {f}"));
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, mine.render()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("class-bench: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Prints progress to stdout, or to stderr when stdout carries JSON.
struct Out {
    to_stderr: bool,
    pause: bool,
}

impl Out {
    fn line(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// A predict-then-run question; waits for Enter under `--pause`.
    fn predict(&self, question: &str) {
        self.line("");
        self.line(&format!("Predict: {question}"));
        if self.pause && io::stdin().is_terminal() {
            let _ = io::stdout().flush();
            eprint!("  (press Enter to measure) ");
            let mut answer = String::new();
            let _ = io::stdin().lock().read_line(&mut answer);
        }
    }

    fn result(&self, text: &str) {
        self.line(&format!("  -> {text}"));
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--switch-count") {
        return switch_count(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--parked") {
        return gs::parked_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--sleeping") {
        return timers::sleeping_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--blocking") {
        return blocking::blocking_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--net-server") {
        return net::server_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(peers::CHILD_FLAG) {
        return peers::child_main(&args[1..]);
    }
    let opts = match parse_options(&args) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("class-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.mine_out.is_some() && MINE.is_empty() {
        eprintln!(
            "class-bench: --mine-out measures the learner's parts, but this build has none: \
             build it with `--features mine-NN` (cargo workbook bench does)"
        );
        return ExitCode::from(2);
    }
    let out = Out {
        to_stderr: opts.json,
        pause: opts.pause,
    };
    let plan = if opts.quick { Plan::QUICK } else { Plan::FULL };
    let mode = if opts.quick { "quick" } else { "full" };
    let wall = Instant::now();

    if opts.mine_out.is_some() {
        out.line(&format!(
            "Class bench ({mode}) on your parts {}: only the rows that run them.",
            parts::list(MINE)
        ));
    } else {
        out.line(&format!(
            "Class bench ({mode}): this machine's costs beside the seed articles' and the \
             reference machine's, as the book quotes them (book/figures.toml)."
        ));
    }
    out.line(&format!(
        "Each timing is the median of {} runs; all figures come from this one run.",
        plan.runs
    ));
    if cfg!(debug_assertions) {
        out.line(
            "WARNING: built without --release; the figures are not meaningful. Run \
             `cargo run --release -p gmp-benches --bin class-bench`.",
        );
    }
    let mine = match &opts.mine_rows {
        None => Mine::default(),
        Some(path) => Mine::read(path).unwrap_or_else(|e| Mine {
            failures: vec![format!("its rows could not be read: {e}")],
            ..Mine::default()
        }),
    };

    let mut report = Report {
        mode: mode.to_string(),
        ..Report::default()
    };
    let mut failures = Vec::new();
    // Wall time per section, for the report's facts (what a shorter --quick should trim).
    let mut times = Vec::new();
    let section = |s: Section| {
        let on = opts.runs(s);
        if !on {
            out.line(&format!("({} skipped)", s.name()));
        }
        on
    };
    let (process, spawn, handoffs, sleepers, switches) = (
        section(Section::Process),
        section(Section::Spawn),
        section(Section::Handoff),
        section(Section::Sleepers),
        section(Section::Switch),
    );
    let gs_sections = gs::Select {
        g: section(Section::G),
        go: section(Section::Go),
        parked: section(Section::Parked),
    };
    let process = guarded(
        (&mut failures, &mut times),
        "process spawn",
        process,
        skipped,
        || measure_process(&out, plan),
    );
    let spawn = guarded(
        (&mut failures, &mut times),
        "thread spawn",
        spawn,
        Spawn::skipped,
        || measure_spawn(&out, plan),
    );
    let (handoffs, same_run) = guarded(
        (&mut failures, &mut times),
        "hand-off",
        handoffs,
        handoffs_skipped,
        || measure_handoffs(&out, plan),
    );
    let sleepers = guarded(
        (&mut failures, &mut times),
        "sleeping threads",
        sleepers,
        Vec::new,
        || measure_sleepers(&out, plan),
    );
    let switches = guarded(
        (&mut failures, &mut times),
        "switch",
        switches,
        Switches::skipped,
        || measure_switches(&out, plan),
    );
    let dir = target_dir().join("class-bench");
    let gs = guarded(
        (&mut failures, &mut times),
        "Gs",
        gs_sections.any(),
        gs::Gs::skipped,
        || gs::measure(&out, plan, &dir, gs_sections),
    );
    let program_sections = programs::Select {
        gmp: section(Section::Programs),
        peers: section(Section::Peers),
    };
    let programs = guarded(
        (&mut failures, &mut times),
        "programs",
        program_sections.gmp || program_sections.peers,
        || programs::Programs::skipped(plan),
        || programs::measure(&out, plan, &dir, program_sections),
    );
    let blocking = guarded(
        (&mut failures, &mut times),
        "blocking calls",
        section(Section::Blocking),
        blocking::Blocking::skipped,
        || blocking::measure(&out, &dir),
    );
    let net = guarded(
        (&mut failures, &mut times),
        "net",
        section(Section::Net),
        net::Net::skipped,
        || net::measure(&out, opts.quick, &dir),
    );
    let timers = guarded(
        (&mut failures, &mut times),
        "sleeping Gs",
        section(Section::Timers),
        timers::Timers::skipped,
        || timers::measure(&out, opts.quick, &dir),
    );

    out.line("");
    out.line(&format!("Time per section: {}", times.join(", ")));
    rows_process_and_spawn(&mut report, &process, &spawn);
    rows_handoffs(&mut report, &handoffs, &mine);
    rows_sleepers(&mut report, &sleepers, plan);
    rows_switches(&mut report, &switches);
    ratios(&mut report, &process, &spawn, &handoffs, &sleepers);
    ratios_switches(&mut report, &handoffs, &switches, &mine);
    gs::rows(&mut report, &gs);
    gs::ratios(&mut report, &gs);
    programs::rows(&mut report, &programs);
    programs::ratios(&mut report, &programs);
    blocking::rows(&mut report, &blocking);
    net::rows(&mut report, &net);
    timers::rows(&mut report, &timers);
    // Rows of sections that did not run are not figures: leave them out.
    report
        .rows
        .retain(|r| parts::row_parts(&r.key).is_none_or(|p| opts.runs(p.section)));
    if opts.only.is_some() {
        report.ratios.retain(|r| r.value.is_some());
    }

    if let Some(path) = &opts.mine_out {
        return write_mine(&out, path, &report, failures, same_run);
    }
    // Sections left out by --only leave "…: skipped" notes behind: not news.
    report.notes.retain(|n| !n.ends_with(": skipped"));
    mine.merge_into(&mut report);
    report.notes.extend(mine::not_yours_note(&report));
    for f in &failures {
        report.notes.push(f.clone());
    }

    report.facts = machine_facts();
    report.facts.push((
        "run".to_string(),
        format!(
            "{mode}: medians of {} runs; {} process spawns, {} thread spawns, {} hand-off round \
             trips, {} switch round trips per run; {} sleeping threads × {} runs per stack \
             size; callgrind at {} and {} switch round trips; programs: medians of {} runs, {} \
             ops each, fib({}), a chain of {}, {} s limit per run; {:.1} s wall",
            plan.runs,
            plan.process_spawns,
            plan.thread_spawns,
            plan.round_trips,
            plan.switch_rounds,
            plan.sleepers,
            plan.sleeper_runs,
            plan.callgrind_rounds.0,
            plan.callgrind_rounds.1,
            plan.peer_runs,
            plan.peer_ops,
            plan.fib_n,
            plan.chain_len,
            plan.peer_limit.as_secs(),
            wall.elapsed().as_secs_f64()
        ),
    ));
    report
        .facts
        .push(("time per section".to_string(), times.join(", ")));
    if cfg!(debug_assertions) {
        report.facts.push((
            "build".to_string(),
            "debug (figures not meaningful)".to_string(),
        ));
    }

    if opts.json {
        print!("{}", report.json());
    } else {
        out.line("");
        out.line(&report.text());
    }
    match report.write_to(&dir) {
        Ok(paths) => {
            out.line("Written:");
            for p in paths {
                out.line(&format!("  {}", p.display()));
            }
            out.line(&format!(
                "Criterion's HTML (after `cargo bench -p gmp-benches`): {}",
                target_dir().join("criterion/report/index.html").display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "class-bench: cannot write the report into {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `--switch-count ENGINE N`: N round trips of one engine, nothing printed on success (the
/// program callgrind counts, see `gmp_benches::callgrind_round_trip`).
fn switch_count(args: &[String]) -> ExitCode {
    let (engine, rounds) = match args {
        [engine, n] => (Engine::from_name(engine), n.parse::<u64>().ok()),
        _ => (None, None),
    };
    let (Some(engine), Some(rounds)) = (engine, rounds) else {
        eprintln!("class-bench: --switch-count wants an engine and a count, got {args:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    match switch_round_trip(engine, rounds) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("class-bench --switch-count: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measuring.

/// Median µs per operation of `runs` runs of `f(iters)`, or the first error.
fn per_op_us(times: &[Duration], iters: u64) -> f64 {
    let v: Vec<f64> = times
        .iter()
        .map(|t| t.as_secs_f64() * 1e6 / iters.max(1) as f64)
        .collect();
    median(&v)
}

fn measure_process(out: &Out, plan: Plan) -> Result<f64, String> {
    out.predict("how many µs does it take to start /bin/true and wait for it to exit?");
    let mut times = Vec::new();
    for _ in 0..plan.runs {
        times.push(process_spawn_wait(plan.process_spawns).map_err(|e| e.to_string())?);
    }
    let us = per_op_us(&times, plan.process_spawns);
    out.result(&format!(
        "{} µs per spawn+wait of /bin/true (median of {} runs × {})",
        fmt_us(us),
        plan.runs,
        plan.process_spawns
    ));
    Ok(us)
}

struct Spawn {
    std: Result<f64, String>,
    osthread: Result<f64, String>,
}

impl Spawn {
    fn skipped() -> Spawn {
        Spawn {
            std: skipped(),
            osthread: skipped(),
        }
    }
}

fn measure_spawn(out: &Out, plan: Plan) -> Spawn {
    out.predict(
        "how many µs to start one OS thread and join it? And with osthread::MBuilder, which \
         also waits until the new thread reports its tid?",
    );
    let (mut std_t, mut os_t) = (Ok(Vec::new()), Ok(Vec::new()));
    for _ in 0..plan.runs {
        push(&mut std_t, std_spawn_join(plan.thread_spawns));
        push(&mut os_t, osthread_spawn_join(plan.thread_spawns));
    }
    let spawn = Spawn {
        std: std_t.map(|t| per_op_us(&t, plan.thread_spawns)),
        osthread: os_t.map(|t| per_op_us(&t, plan.thread_spawns)),
    };
    for (name, r) in [
        ("std::thread spawn+join", &spawn.std),
        (
            "osthread::MBuilder spawn+join (with tid handshake)",
            &spawn.osthread,
        ),
    ] {
        match r {
            Ok(us) => out.result(&format!("{} µs per {name}", fmt_us(*us))),
            Err(e) => out.result(&format!("{name} failed: {e}")),
        }
    }
    spawn
}

fn push<T, E: ToString>(acc: &mut Result<Vec<T>, String>, r: Result<T, E>) {
    if let Ok(v) = acc {
        match r {
            Ok(x) => v.push(x),
            Err(e) => *acc = Err(e.to_string()),
        }
    }
}

/// Medians of one hand-off variant.
#[derive(Clone, Copy)]
struct HandoffStats {
    us: f64,
    voluntary: f64,
    involuntary: f64,
    cpus: [usize; 2],
}

type Handoffs = HashMap<(Mechanism, Placement), Result<HandoffStats, String>>;

/// Solution figures timed in the learner's run, in turn with theirs: (row key, value).
type SameRun = Vec<(String, f64)>;

fn handoffs_skipped() -> (Handoffs, SameRun) {
    let all = Placement::ALL
        .iter()
        .flat_map(|p| Mechanism::ALL.map(|m| ((m, *p), skipped())))
        .collect();
    (all, SameRun::new())
}

/// The hand-offs; in a build on the learner's part 03, also the solution's Parker, timed in
/// turn with theirs (µs per hand-off by placement).
fn measure_handoffs(out: &Out, plan: Plan) -> (Handoffs, SameRun) {
    let with_solution = MINE.contains(&3);
    let mut all = Handoffs::new();
    let mut same_run = SameRun::new();
    for placement in Placement::ALL {
        match placement {
            Placement::CrossCore => out.predict(
                "how many µs does one hand-off cost between two threads on two cores? How many \
                 context switches does one hand-off take?",
            ),
            Placement::SameCore => out.predict(
                "and when both threads are pinned to the same core: faster or slower than across \
                 two cores, and by how much?",
            ),
        }
        let cpus = match placement.cpus() {
            Ok(cpus) => cpus,
            Err(why) => {
                out.result(&why);
                for m in Mechanism::ALL {
                    all.insert((m, placement), Err(why.clone()));
                }
                continue;
            }
        };
        let mut runs: HashMap<Mechanism, Result<Vec<gmp_benches::Handoff>, String>> =
            Mechanism::ALL
                .iter()
                .map(|m| (*m, Ok(Vec::new())))
                .collect();
        let mut solution = Ok(Vec::new());
        for _ in 0..plan.runs {
            for m in Mechanism::ALL {
                let acc = runs.get_mut(&m).expect("every mechanism has an entry");
                push(acc, handoff(m, cpus, plan.round_trips));
            }
            if with_solution {
                push(
                    &mut solution,
                    handoff_solution_parker(cpus, plan.round_trips).map(|h| h.ns_per_handoff()),
                );
            }
        }
        if let (true, Ok(ns)) = (with_solution, solution) {
            let us = median(&ns) / 1e3;
            out.result(&format!(
                "the solution's parker, in turn with yours: {} µs per hand-off",
                fmt_us(us)
            ));
            same_run.push((format!("handoff.parker.{}.us", placement.name()), us));
        }
        for m in Mechanism::ALL {
            let stats = runs.remove(&m).expect("entry").map(|hs| HandoffStats {
                us: median(
                    &hs.iter()
                        .map(|h| h.ns_per_handoff() / 1e3)
                        .collect::<Vec<_>>(),
                ),
                voluntary: median(
                    &hs.iter()
                        .map(|h| h.voluntary_per_handoff())
                        .collect::<Vec<_>>(),
                ),
                involuntary: median(
                    &hs.iter()
                        .map(|h| h.involuntary_per_handoff())
                        .collect::<Vec<_>>(),
                ),
                cpus,
            });
            match &stats {
                Ok(s) => out.result(&format!(
                    "{:<8} {:>7} µs per hand-off, {:.2} voluntary + {:.2} involuntary switches \
                     per hand-off (CPUs {} and {})",
                    m.name(),
                    fmt_us(s.us),
                    s.voluntary,
                    s.involuntary,
                    s.cpus[0],
                    s.cpus[1]
                )),
                Err(e) => out.result(&format!("{} failed: {e}", m.name())),
            }
            all.insert((m, placement), stats);
        }
    }
    (all, same_run)
}

/// Medians of one sleeping-threads variant.
struct SleeperStats {
    requested: usize,
    started: usize,
    stack_bytes: usize,
    stack_source: &'static str,
    rss_kib: f64,
    vm_kib: f64,
    create_us: f64,
    failure: Option<String>,
}

fn measure_sleepers(out: &Out, plan: Plan) -> Vec<(SleeperStack, Result<SleeperStats, String>)> {
    let mut all = Vec::new();
    for stack in [
        SleeperStack::StdDefault,
        SleeperStack::Bytes(C_DEFAULT_STACK),
    ] {
        let (bytes, _) = stack.resolve();
        let mib = bytes as f64 / (1 << 20) as f64;
        match stack {
            SleeperStack::StdDefault => out.predict(&format!(
                "{} threads, each asleep with a {} MiB stack: how much RAM (RSS) does one cost, \
                 and how much virtual memory? How many µs to create one?",
                plan.sleepers,
                trim(mib)
            )),
            SleeperStack::Bytes(_) => out.predict(&format!(
                "the same with {} MiB stacks, the C default the seed quotes: what changes, RSS or \
                 virtual size?",
                trim(mib)
            )),
        }
        let mut runs = Vec::new();
        let mut error = None;
        for _ in 0..plan.sleeper_runs {
            match sleeping_threads(plan.sleepers, stack) {
                Ok(s) if s.started == 0 => {
                    error = Some(format!(
                        "no thread started: {}",
                        s.failure.unwrap_or_default()
                    ));
                    break;
                }
                Ok(s) => runs.push(s),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let stats = match (runs.first(), error) {
            (_, Some(e)) => Err(e),
            (None, None) => Err("no run".to_string()),
            (Some(first), None) => Ok(SleeperStats {
                requested: first.requested,
                started: runs.iter().map(|s| s.started).min().unwrap_or(0),
                stack_bytes: first.stack_bytes,
                stack_source: first.stack_source,
                rss_kib: median(
                    &runs
                        .iter()
                        .map(|s| s.rss_per_thread_kib())
                        .collect::<Vec<_>>(),
                ),
                vm_kib: median(
                    &runs
                        .iter()
                        .map(|s| s.vm_per_thread_kib())
                        .collect::<Vec<_>>(),
                ),
                create_us: median(
                    &runs
                        .iter()
                        .map(|s| s.create_per_thread().as_secs_f64() * 1e6)
                        .collect::<Vec<_>>(),
                ),
                failure: runs.iter().find_map(|s| s.failure.clone()),
            }),
        };
        match &stats {
            Ok(s) => {
                if let Some(f) = &s.failure {
                    out.result(&format!(
                        "only {} of {} threads started: {f}",
                        s.started, s.requested
                    ));
                }
                out.result(&format!(
                    "{:.1} KiB RSS and {:.2} MiB virtual per sleeping thread; {} µs to create \
                     each ({} threads, {} MiB stack, {})",
                    s.rss_kib,
                    s.vm_kib / 1024.0,
                    fmt_us(s.create_us),
                    s.started,
                    trim(s.stack_bytes as f64 / (1 << 20) as f64),
                    s.stack_source
                ));
            }
            Err(e) => out.result(&format!("failed: {e}")),
        }
        all.push((stack, stats));
    }
    all
}

/// Medians of the switch round trips per engine, and callgrind's instruction counts.
struct Switches {
    ns: HashMap<Engine, Result<f64, String>>,
    instructions: HashMap<Engine, Result<InstructionCount, String>>,
    /// One locked read-modify-write and one plain add, ns each (`locked_rmw`).
    rmw: Result<(f64, f64), String>,
}

impl Switches {
    fn skipped() -> Switches {
        Switches {
            ns: Engine::ALL.iter().map(|e| (*e, skipped())).collect(),
            instructions: Engine::ALL.iter().map(|e| (*e, skipped())).collect(),
            rmw: skipped(),
        }
    }
}

/// ns per uncontended locked read-modify-write (`fetch_add` on an atomic no other thread
/// touches) and per plain add, each over `rounds` in a row: what every atomic count, lock
/// and compare-exchange on a runtime's path costs even when nobody else is there
/// (chapter 8, "Where a spawn's time goes").
fn locked_rmw(rounds: u64) -> (f64, f64) {
    use std::hint::black_box;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let per = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / rounds.max(1) as f64;
    let counter = AtomicU64::new(0);
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(&counter).fetch_add(1, Relaxed);
    }
    let locked = per(start);
    let mut plain = 0u64;
    let start = Instant::now();
    for _ in 0..rounds {
        plain = black_box(plain) + 1;
    }
    let plain_ns = per(start);
    assert_eq!(
        (counter.into_inner(), plain),
        (rounds, rounds),
        "every add counted"
    );
    (locked, plain_ns)
}

fn measure_switches(out: &Out, plan: Plan) -> Switches {
    out.line("");
    out.line("User-space switch (chapter 4)");
    out.predict(
        "one round trip into another stack and back (resume + suspend), all in user space: \
         how many ns with part 04's asm switch, with its step-3 fiber (resume + suspend), and \
         with corosensei? How many instructions? \
         How many round trips fit in one same-core hand-off between two threads (above)?",
    );
    let mut runs: HashMap<Engine, Result<Vec<f64>, String>> =
        Engine::ALL.iter().map(|e| (*e, Ok(Vec::new()))).collect();
    for _ in 0..plan.runs {
        for e in Engine::ALL {
            let acc = runs.get_mut(&e).expect("every engine has an entry");
            push(
                acc,
                switch_round_trip(e, plan.switch_rounds)
                    .map(|t| t.as_secs_f64() * 1e9 / plan.switch_rounds.max(1) as f64),
            );
        }
    }
    let ns: HashMap<Engine, Result<f64, String>> = runs
        .into_iter()
        .map(|(e, r)| (e, r.map(|v| median(&v))))
        .collect();
    for e in Engine::ALL {
        match &ns[&e] {
            Ok(v) => out.result(&format!(
                "{:<11} {:>6} ns per round trip (median of {} runs × {})",
                e.name(),
                fmt_ns(*v),
                plan.runs,
                plan.switch_rounds
            )),
            Err(why) => out.result(&format!("{} failed: {why}", e.name())),
        }
    }

    let rmw_runs: Vec<(f64, f64)> = (0..plan.runs)
        .map(|_| locked_rmw(plan.switch_rounds))
        .collect();
    let rmw = (
        median(&rmw_runs.iter().map(|r| r.0).collect::<Vec<_>>()),
        median(&rmw_runs.iter().map(|r| r.1).collect::<Vec<_>>()),
    );
    out.result(&format!(
        "one locked read-modify-write (fetch_add, no other thread): {} ns; a plain add: {} ns",
        fmt_ns(rmw.0),
        fmt_ns(rmw.1)
    ));

    let instructions = match (valgrind_on_path(), std::env::current_exe()) {
        (None, _) => {
            out.result(&format!("instruction counts skipped: {NO_VALGRIND}"));
            Engine::ALL
                .iter()
                .map(|e| (*e, Err(format!("skipped: {NO_VALGRIND}"))))
                .collect()
        }
        (Some(_), Err(e)) => {
            let why = format!("cannot find this program's path to run it under callgrind: {e}");
            out.result(&why);
            Engine::ALL.iter().map(|e| (*e, Err(why.clone()))).collect()
        }
        (Some(_), Ok(exe)) => {
            let mut all = HashMap::new();
            for e in Engine::ALL {
                let r = callgrind_round_trip(&exe, &["--switch-count"], e, plan.callgrind_rounds)
                    .map_err(|e| e.to_string());
                match &r {
                    Ok(c) => out.result(&format!(
                        "{:<11} {:>6.1} instructions per round trip (callgrind: {} − {} \
                         instructions over {} − {} round trips)",
                        e.name(),
                        c.per_round_trip(),
                        c.totals.1,
                        c.totals.0,
                        c.rounds.1,
                        c.rounds.0
                    )),
                    Err(why) => out.result(&format!("{} instructions: {why}", e.name())),
                }
                all.insert(e, r);
            }
            all
        }
    };
    Switches {
        ns,
        instructions,
        rmw: Ok(rmw),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ---------------------------------------------------------------------------------------
// The table.

fn cell(r: &Result<f64, String>, fmt: impl Fn(f64) -> String) -> (String, Option<f64>) {
    match r {
        Ok(v) => (fmt(*v), Some(*v)),
        Err(_) => ("failed".to_string(), None),
    }
}

fn rows_process_and_spawn(report: &mut Report, process: &Result<f64, String>, spawn: &Spawn) {
    let (this, value) = cell(process, fmt_us);
    report.rows.push(Row::new(
        "process.spawn_wait.us",
        "process spawn+wait, /bin/true (µs)",
        this,
        value,
        "—",
        &fig("ref.process_spawn").text(),
    ));
    let create = format!("{} (create)", fig("seed.thread_create").text());
    let (this, value) = cell(&spawn.std, fmt_us);
    report.rows.push(Row::new(
        "thread.spawn_join.std.us",
        "thread spawn+join, std::thread (µs)",
        this,
        value,
        &create,
        &fig("ref.thread_spawn_join").text(),
    ));
    let (this, value) = cell(&spawn.osthread, fmt_us);
    report.rows.push(Row::new(
        "thread.spawn_join.osthread.us",
        "thread spawn+join, osthread (incl. tid handshake) (µs)",
        this,
        value,
        &create,
        "—",
    ));
    for (name, r) in [
        ("process", process),
        ("std", &spawn.std),
        ("osthread", &spawn.osthread),
    ] {
        if let Err(e) = r {
            report.notes.push(format!("{name} spawn failed: {e}"));
        }
    }
}

/// The reference machine's hand-off as the book quotes it: chapter 3's lab for the futex
/// Parker, ANCHORS.md's Condvar, mpsc and C mutex/condvar figures for the others.
fn handoff_reference(m: Mechanism, placement: Placement) -> Figure {
    match (m, placement) {
        (Mechanism::Parker, Placement::CrossCore) => fig("ref.parker_handoff_cross_core"),
        (Mechanism::Parker, Placement::SameCore) => fig("ref.parker_handoff_one_core"),
        (_, Placement::CrossCore) => fig("ref.handoff_cross_core"),
        (_, Placement::SameCore) => fig("ref.handoff_one_core"),
    }
}

fn rows_handoffs(report: &mut Report, handoffs: &Handoffs, mine: &Mine) {
    let mut bars = Vec::new();
    let seed = format!("{} (switch)", fig("seed.switch_thread").text());
    for placement in Placement::ALL {
        for m in Mechanism::ALL {
            let r = &handoffs[&(m, placement)];
            let reference = handoff_reference(m, placement);
            let (this, value) = match r {
                Ok(s) => (fmt_us(s.us), Some(s.us)),
                Err(e) if e.contains("skipped") => ("skipped".to_string(), None),
                Err(_) => ("failed".to_string(), None),
            };
            report.rows.push(Row::new(
                &format!("handoff.{}.{}.us", m.name(), placement.name()),
                format!("hand-off, {}, {} (µs)", m.name(), placement.describe()),
                this,
                value,
                &seed,
                &reference.text(),
            ));
            let label = format!("{}, {}", m.name(), placement.describe());
            let color = match placement {
                Placement::CrossCore => BLUE,
                Placement::SameCore => ORANGE,
            };
            if let Ok(s) = r {
                bars.push(Bar {
                    label: label.clone(),
                    value: s.us,
                    reference: Some(reference.mid_in("µs")),
                    color,
                });
            }
            bars.extend(mine.bar(
                &format!("handoff.{}.{}.us", m.name(), placement.name()),
                &label,
                YOURS,
            ));
        }
    }
    report.charts.push(Chart {
        title: "One hand-off between two threads, µs (shorter is faster)".to_string(),
        bars,
        legend: vec![format!(
            "blue: two threads on two cores; orange: both on one core; {}dashed: reference \
             machine (the book's figures; a range at its midpoint)",
            if mine.rows.is_empty() {
                ""
            } else {
                "gold: your part; "
            }
        )],
    });
    for m in Mechanism::ALL {
        let get = |p| handoffs[&(m, p)].as_ref().ok().copied();
        let show = |s: Option<HandoffStats>| {
            s.map_or("—".to_string(), |s| {
                format!("{:.2}+{:.2}", s.voluntary, s.involuntary)
            })
        };
        let (cross, same) = (get(Placement::CrossCore), get(Placement::SameCore));
        report.rows.push(Row::new(
            &format!("handoff.{}.switches_per_handoff", m.name()),
            format!(
                "switches per hand-off, {}: vol.+invol. (cross / same core)",
                m.name()
            ),
            format!("{} / {}", show(cross), show(same)),
            cross.or(same).map(|s| s.voluntary),
            "~1 (getrusage)",
            "—",
        ));
    }
    let mut seen = Vec::new();
    for r in handoffs.values() {
        if let Err(e) = r
            && !seen.contains(e)
        {
            seen.push(e.clone());
        }
    }
    seen.sort();
    report
        .notes
        .extend(seen.into_iter().map(|e| format!("hand-off: {e}")));
    report.notes.push(
        "Hand-off: one message to a thread asleep waiting for it (a round trip is two). \
         parker = part 03's futex Parker; condvar = std Mutex + Condvar around a turn counter, \
         the seed's C mutex/condvar ping-pong; mpsc = two std::sync::mpsc channels. Switches \
         are getrusage(RUSAGE_THREAD) of both threads. The reference figures are the book's: \
         the Parker rows' from chapter 3's lab, the others' measured with Condvar, mpsc and C \
         mutex/condvar (ANCHORS.md)."
            .to_string(),
    );
    report.notes.push(
        "On one core the woken thread often preempts its waker before the waker blocks: that \
         switch counts as involuntary, so compare voluntary + involuntary with the textbook's \
         one switch per hand-off. The condvar's extra switches on one core come from signalling \
         while holding the mutex (the C shape): the woken thread preempts the signaller, finds \
         the mutex still held and sleeps again; notifying after unlocking avoids it."
            .to_string(),
    );
}

fn rows_sleepers(
    report: &mut Report,
    sleepers: &[(SleeperStack, Result<SleeperStats, String>)],
    plan: Plan,
) {
    for (stack, r) in sleepers {
        let (bytes, source) = stack.resolve();
        let mib = trim(bytes as f64 / (1 << 20) as f64);
        // The reference machine's sleepers had 8 MiB stacks: the RSS compares with either
        // row, the virtual size only with the 8 MiB one.
        let rss = fig("ref.thread_sleeping_rss");
        let (label, key, rss_ref, virt_ref) = match stack {
            SleeperStack::StdDefault => (
                format!("{mib} MiB stack ({source})"),
                "std_default",
                format!("{} (8 MiB stacks)", rss.text()),
                "—".to_string(),
            ),
            SleeperStack::Bytes(_) => {
                let vm = fig("ref.threads_10k_vmsize");
                (
                    format!("{mib} MiB stack (C default)"),
                    "8mib",
                    rss.text(),
                    format!(
                        "{:.2} MiB ({} / 10,000)",
                        vm.mid_in("MiB") / VMSIZE_THREADS,
                        vm.text()
                    ),
                )
            }
        };
        let n = match r {
            Ok(s) => s.started,
            Err(_) => plan.sleepers,
        };
        let get = |f: fn(&SleeperStats) -> f64| match r {
            Ok(s) => Ok(f(s)),
            Err(e) => Err(e.clone()),
        };
        let (this, value) = cell(&get(|s| s.rss_kib), |v| format!("{v:.1}"));
        report.rows.push(Row::new(
            &format!("sleepers.{key}.rss_per_thread.kib"),
            format!("RSS per sleeping thread, {label} (KiB)"),
            this,
            value,
            "— (touched pages only)",
            &rss_ref,
        ));
        let (this, value) = cell(&get(|s| s.vm_kib / 1024.0), |v| format!("{v:.2}"));
        report.rows.push(Row::new(
            &format!("sleepers.{key}.virtual_per_thread.mib"),
            format!("virtual per sleeping thread, {label} (MiB)"),
            this,
            value,
            &format!("{} (stack)", fig("seed.stack_thread").text()),
            &virt_ref,
        ));
        let (this, value) = cell(&get(|s| s.create_us), fmt_us);
        report.rows.push(Row::new(
            &format!("sleepers.{key}.create_per_thread.us"),
            format!("create one of {n} sleepers, {label} (µs)"),
            this,
            value,
            &fig("seed.thread_create").text(),
            &fig("ref.thread_create_10k").text(),
        ));
        match r {
            Ok(s) => {
                if let Some(f) = &s.failure {
                    report.notes.push(format!(
                        "{label}: only {} of {} threads started; per-thread figures are over \
                         those that did. {f}",
                        s.started, s.requested
                    ));
                }
            }
            Err(e) => report.notes.push(format!("sleeping threads, {label}: {e}")),
        }
    }
    report.notes.push(format!(
        "RSS counts user-space pages only: each thread also holds kernel memory (a {} \
         kernel stack, its task_struct) that VmRSS does not show. Rust's std spawns threads \
         with a {} stack unless RUST_MIN_STACK is set, and osthread::MBuilder's default is the \
         same; C (glibc) takes `ulimit -s`, usually {}. The sleeping threads are started with \
         std::thread::Builder.",
        fig("linux.kernel_stack").text(),
        fig("param.rust_thread_stack").text(),
        fig("linux.thread_stack_default").text()
    ));
}

/// The reference machine's switch round trip of `e`, as chapter 4 quotes it.
fn switch_reference(e: Engine) -> Figure {
    match e {
        Engine::Asm => fig("ref.switch_mine_roundtrip"),
        Engine::Fiber => fig("ref.fiber_roundtrip"),
        Engine::Corosensei => fig("peer.corosensei_roundtrip"),
    }
}

fn rows_switches(report: &mut Report, switches: &Switches) {
    let status = |e: &String| {
        if e.contains("skipped") {
            "skipped"
        } else {
            "failed"
        }
    };
    for e in Engine::ALL {
        let (this, value) = match &switches.ns[&e] {
            Ok(v) => (fmt_ns(*v), Some(*v)),
            Err(why) => (status(why).to_string(), None),
        };
        report.rows.push(Row::new(
            &format!("switch.{}.round_trip.ns", e.name()),
            format!("switch round trip (resume+suspend), {} (ns)", e.describe()),
            this,
            value,
            &format!("{} (goroutine switch)", fig("seed.switch_goroutine").text()),
            &switch_reference(e).text(),
        ));
    }
    for e in Engine::ALL {
        let (this, value) = match &switches.instructions[&e] {
            Ok(c) => (
                format!("{:.1}", c.per_round_trip()),
                Some(c.per_round_trip()),
            ),
            Err(why) => (status(why).to_string(), None),
        };
        let reference = match e {
            Engine::Asm => fig("ref.switch_mine_instructions").text(),
            Engine::Fiber => format!("{} (lab)", fig("ref.fiber_instructions_lab").text()),
            Engine::Corosensei => fig("ref.corosensei_instructions").text(),
        };
        report.rows.push(Row::new(
            &format!("switch.{}.instructions_per_round_trip", e.name()),
            format!(
                "instructions per switch round trip, {} (callgrind)",
                e.describe()
            ),
            this,
            value,
            "— (\"saves a few registers\")",
            &reference,
        ));
    }
    let (locked, plain) = match &switches.rmw {
        Ok((l, p)) => ((fmt_ns(*l), Some(*l)), (fmt_ns(*p), Some(*p))),
        Err(why) => (
            (status(why).to_string(), None),
            (status(why).to_string(), None),
        ),
    };
    report.rows.push(Row::new(
        "switch.rmw.locked.ns",
        "one locked read-modify-write, no other thread near (fetch_add) (ns)".to_string(),
        locked.0,
        locked.1,
        "—",
        &fig("ref.locked_rmw").text(),
    ));
    report.rows.push(Row::new(
        "switch.rmw.plain.ns",
        "one plain add, for scale (ns)".to_string(),
        plain.0,
        plain.1,
        "—",
        "—",
    ));
    // Each failure once, with the engines it hit (without valgrind both say the same).
    let mut failures: Vec<(&String, Vec<&str>)> = Vec::new();
    for e in Engine::ALL {
        let errors = [
            switches.ns[&e].as_ref().err(),
            switches.instructions[&e].as_ref().err(),
        ];
        for why in errors.into_iter().flatten() {
            match failures.iter_mut().find(|(w, _)| *w == why) {
                Some((_, engines)) => engines.push(e.name()),
                None => failures.push((why, vec![e.name()])),
            }
        }
    }
    for (why, engines) in failures {
        report
            .notes
            .push(format!("switch ({}): {why}", engines.join(", ")));
    }
    report.notes.push(format!(
        "Switch round trip: this thread switches into a context on its own {} KiB stack, which \
         switches straight back (two stack switches, ANCHORS.md's \"resume+suspend\"). asm = \
         part 04's context::switch on a Vec-backed stack; asm fiber = part 04 step 3's \
         context::resume into a fiber that calls context::suspend in a loop, on a Vec-backed \
         stack; corosensei = Coroutine::resume + \
         Yielder::suspend of an identity coroutine on its mmap'd DefaultStack, as in its own \
         coroutine_switch bench. Instructions: valgrind's callgrind totals (Ir) of \
         `class-bench --switch-count ENGINE N` at two N, difference over difference, so process \
         start and setup cancel; the loop around the switch is counted, as it is timed.",
        gmp_benches::SWITCH_STACK >> 10
    ));
}

fn ratios(
    report: &mut Report,
    process: &Result<f64, String>,
    spawn: &Spawn,
    handoffs: &Handoffs,
    sleepers: &[(SleeperStack, Result<SleeperStats, String>)],
) {
    let x = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.1}×"));
    let us = |m, p| handoffs[&(m, p)].as_ref().ok().map(|s| s.us);
    for m in Mechanism::ALL {
        let r = x(us(m, Placement::CrossCore), us(m, Placement::SameCore));
        let (cross, same) = (
            handoff_reference(m, Placement::CrossCore),
            handoff_reference(m, Placement::SameCore),
        );
        report.ratios.push(Row::new(
            &format!("ratio.{}.cross_over_same", m.name()),
            format!("hand-off cross-core / same-core, {}", m.name()),
            show(r),
            r,
            "—",
            &about(
                cross.mid_in("µs") / same.mid_in("µs"),
                &format!("{} / {}", cross.text(), same.text()),
            ),
        ));
    }
    for m in [Mechanism::Condvar, Mechanism::Mpsc] {
        let cross = x(
            us(m, Placement::CrossCore),
            us(Mechanism::Parker, Placement::CrossCore),
        );
        let same = x(
            us(m, Placement::SameCore),
            us(Mechanism::Parker, Placement::SameCore),
        );
        report.ratios.push(Row::new(
            &format!("ratio.{}.over_parker", m.name()),
            format!("hand-off {} / parker (cross / same core)", m.name()),
            format!("{} / {}", show(cross), show(same)),
            cross.or(same),
            "—",
            "—",
        ));
    }
    let r = x(spawn.osthread.clone().ok(), spawn.std.clone().ok());
    report.ratios.push(Row::new(
        "ratio.osthread_over_std_spawn",
        "spawn+join osthread / std (the tid handshake)",
        show(r),
        r,
        "—",
        "—",
    ));
    let r = x(process.clone().ok(), spawn.std.clone().ok());
    let (process_ref, thread_ref) = (fig("ref.process_spawn"), fig("ref.thread_spawn_join"));
    report.ratios.push(Row::new(
        "ratio.process_over_thread_spawn",
        "process spawn+wait / thread spawn+join (std)",
        show(r),
        r,
        "—",
        &about(
            process_ref.mid_in("µs") / thread_ref.mid_in("µs"),
            &format!("{} / {}", process_ref.text(), thread_ref.text()),
        ),
    ));
    let (vm, rss) = (
        fig("ref.threads_10k_vmsize"),
        fig("ref.thread_sleeping_rss"),
    );
    let sleeper_ref = about(
        vm.mid_in("KiB") / VMSIZE_THREADS / rss.mid_in("KiB"),
        &format!("{} / 10,000 over {}", vm.text(), rss.text()),
    );
    for (stack, s) in sleepers {
        if let Ok(s) = s {
            let r = x(Some(s.vm_kib), Some(s.rss_kib));
            let mib = trim(stack.resolve().0 as f64 / (1 << 20) as f64);
            let reference = match stack {
                SleeperStack::Bytes(C_DEFAULT_STACK) => sleeper_ref.as_str(),
                _ => "—",
            };
            report.ratios.push(Row::new(
                &format!("ratio.sleepers.{mib}mib.virtual_over_rss"),
                format!("virtual / RSS per sleeping thread, {mib} MiB stack"),
                r.map_or("—".to_string(), |r| format!("{r:.0}×")),
                r,
                "—",
                reference,
            ));
        }
    }
}

/// A reference ratio and what it divides: "≈7.6× (24–26 µs / 3.3 µs)"; a range counts at
/// its midpoint.
fn about(ratio: f64, of: &str) -> String {
    if ratio >= 10.0 {
        format!("≈{ratio:.0}× ({of})")
    } else {
        format!("≈{ratio:.1}× ({of})")
    }
}

fn ratios_switches(report: &mut Report, handoffs: &Handoffs, switches: &Switches, mine: &Mine) {
    let ns = |e: Engine| switches.ns[&e].as_ref().ok().copied().filter(|v| *v > 0.0);
    let instr = |e: Engine| {
        switches.instructions[&e]
            .as_ref()
            .ok()
            .map(InstructionCount::per_round_trip)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let over = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let show = |r: Option<f64>| {
        r.map_or("—".to_string(), |r| {
            if r >= 100.0 {
                format!("{r:.0}×")
            } else {
                format!("{r:.2}×")
            }
        })
    };
    let (asm, fiber, coro) = (ns(Engine::Asm), ns(Engine::Fiber), ns(Engine::Corosensei));
    // Chapter 4's reference runs: each switch beside corosensei in the same run.
    let target = format!("target ≤ {}×", fig("target.switch_over_corosensei").text());
    let same_run = |mine: Figure, coro: Figure| {
        format!(
            "{}; {target}",
            about(
                mine.mid_in("ns") / coro.mid_in("ns"),
                &format!("{} / {}", mine.text(), coro.text())
            )
        )
    };
    let r = over(asm, coro);
    report.ratios.push(Row::new(
        "ratio.switch.asm_over_corosensei",
        "switch round trip asm / corosensei (time)",
        show(r),
        r,
        "—",
        &same_run(
            fig("ref.switch_mine_roundtrip"),
            fig("ref.corosensei_callgrind_run"),
        ),
    ));
    let time_ratio = r;
    let r = over(fiber, coro);
    report.ratios.push(Row::new(
        "ratio.switch.fiber_over_corosensei",
        "switch round trip asm fiber / corosensei (time)",
        show(r),
        r,
        "—",
        &same_run(fig("ref.fiber_roundtrip"), fig("ref.corosensei_same_run")),
    ));
    let fiber_time_ratio = r;
    let r = over(instr(Engine::Asm), instr(Engine::Corosensei));
    let fiber_instr_ratio = over(instr(Engine::Fiber), instr(Engine::Corosensei));
    if let (Some(t), Some(i)) = (time_ratio, r)
        && t > 2.0
        && i < 1.5
    {
        let fiber_figures = match (fiber_time_ratio, fiber_instr_ratio) {
            (Some(ft), Some(fi)) => format!("{ft:.1}× the time for {fi:.2}× the instructions"),
            (Some(ft), None) => format!("{ft:.1}× the time (no instruction count)"),
            _ => "not measured in this run".to_string(),
        };
        report.notes.push(format!(
            "asm / corosensei: {t:.1}× the time for {i:.2}× the instructions, so the time is not \
             in the instructions. Likely cause: part 04's symmetric switch is a called function \
             that `ret`s onto the other stack, to a return address the CPU's return-address \
             predictor never guesses (it predicts the caller's), so both switches of a round trip \
             mispredict. Part 04 step 3's fiber is the fix: `resume` enters the fiber with \
             `call` and `suspend` leaves it with the matching `ret`, inlined into the fiber, as \
             corosensei does, so each `ret` goes where the predictor expects. asm fiber / \
             corosensei: {fiber_figures}."
        ));
    }
    report.ratios.push(Row::new(
        "ratio.switch.asm_over_corosensei.instructions",
        "switch round trip asm / corosensei (instructions, callgrind)",
        show(r),
        r,
        "—",
        "—",
    ));
    report.ratios.push(Row::new(
        "ratio.switch.fiber_over_corosensei.instructions",
        "switch round trip asm fiber / corosensei (instructions, callgrind)",
        show(fiber_instr_ratio),
        fiber_instr_ratio,
        "—",
        "—",
    ));
    let parker_same_ns = handoffs[&(Mechanism::Parker, Placement::SameCore)]
        .as_ref()
        .ok()
        .map(|s| s.us * 1e3);
    let r = over(parker_same_ns, asm);
    // The seed's ratio is a range: its slowest thread switch over its fastest goroutine
    // switch, and the other way round.
    let (thread, g) = (fig("seed.switch_thread"), fig("seed.switch_goroutine"));
    let ((thread_lo, thread_hi), (g_lo, g_hi)) = (thread.range_in("ns"), g.range_in("ns"));
    let seed = format!(
        "{:.0}–{:.0}× ({} vs {})",
        thread_lo / g_hi,
        thread_hi / g_lo,
        thread.text(),
        g.text()
    );
    let (kernel_ref, asm_ref) = (
        fig("ref.parker_handoff_one_core"),
        fig("ref.switch_mine_roundtrip"),
    );
    report.ratios.push(Row::new(
        "ratio.handoff_parker_same_core_over_switch_asm",
        "kernel hand-off (parker, same core) / asm round trip",
        show(r),
        r,
        &seed,
        &about(
            kernel_ref.mid_in("ns") / asm_ref.mid_in("ns"),
            &format!("{} / {}", kernel_ref.text(), asm_ref.text()),
        ),
    ));
    let against_fiber = over(parker_same_ns, fiber).map_or(String::new(), |f| {
        format!(
            " Against part 04 step 3's asm fiber it is {} here.",
            show(Some(f))
        )
    });
    report.notes.push(format!(
        "The kernel/user ratio stays on the symmetric asm switch (part 04 steps 1–2), the \
         slower of part 04's two, so it is conservative twice over: one hand-off is one switch \
         between threads (the futex wake and sleep, the scheduler, the kernel's register save \
         and restore), a round trip is two switches between stacks.{against_fiber}"
    ));

    let mut bars = Vec::new();
    for (e, color) in [
        (Engine::Asm, GREEN),
        (Engine::Fiber, ORANGE),
        (Engine::Corosensei, PURPLE),
    ] {
        if let Some(v) = ns(e) {
            bars.push(Bar {
                label: e.describe().to_string(),
                value: v,
                reference: Some(switch_reference(e).mid_in("ns")),
                color,
            });
        }
        bars.extend(mine.bar(
            &format!("switch.{}.round_trip.ns", e.name()),
            e.describe(),
            YOURS,
        ));
    }
    let mut legend = vec![
        "One round trip = two stack switches; dashed: reference machine (the book's figures; a \
         range at its midpoint)"
            .to_string(),
        "asm switch: each switch `ret`s onto the other stack; asm fiber (step 3): call and ret \
         balanced, as in corosensei"
            .to_string(),
    ];
    if let (Some(kernel), Some(asm)) = (parker_same_ns, asm) {
        let fiber = fiber.map_or(String::new(), |f| {
            format!(", {:.0}× the asm fiber's", kernel / f)
        });
        legend.push(format!(
            "A same-core hand-off between two threads (parker) took {} µs here: {:.0}× the asm \
             switch round trip{fiber}",
            fmt_us(kernel / 1e3),
            kernel / asm
        ));
    }
    report.charts.push(Chart {
        title: "One switch round trip in user space, ns (shorter is faster)".to_string(),
        bars,
        legend,
    });
}

/// " (run 2 of 3)" for the rows that run more than once, nothing for a single run.
pub(crate) fn run_of(round: usize, repeats: usize) -> String {
    if repeats > 1 {
        format!(" (run {round} of {repeats})")
    } else {
        String::new()
    }
}

/// The run whose `key` is the median of `runs`: the rows whose single runs vary most (echo,
/// sleepers) run a few times in turn in a full run and show their median run. A failed run
/// fails the row: a failure is news, not noise to average away.
pub(crate) fn median_run<T>(
    runs: Vec<Result<T, String>>,
    key: impl Fn(&T) -> f64,
) -> Result<T, String> {
    let n = runs.len();
    let mut ok = Vec::with_capacity(n);
    for (i, r) in runs.into_iter().enumerate() {
        match r {
            Ok(r) => ok.push(r),
            Err(e) if n > 1 => return Err(format!("run {} of {n}: {e}", i + 1)),
            Err(e) => return Err(e),
        }
    }
    if ok.is_empty() {
        return Err("no run".to_string());
    }
    ok.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = ok.len() / 2;
    Ok(ok.swap_remove(mid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_row_names_its_run_and_a_single_one_does_not() {
        assert_eq!(run_of(2, 3), " (run 2 of 3)");
        assert_eq!(run_of(1, 1), "");
    }

    #[test]
    fn the_median_run_is_the_middle_one_by_its_key_and_a_failed_run_fails_the_row() {
        let runs = |v: &[f64]| v.iter().map(|&x| Ok((x, x * 10.0))).collect::<Vec<_>>();
        assert_eq!(median_run(runs(&[3.0, 1.0, 2.0]), |r| r.0), Ok((2.0, 20.0)));
        assert_eq!(median_run(runs(&[5.0]), |r| r.0), Ok((5.0, 50.0)));
        let mut with_failure = runs(&[1.0, 2.0]);
        with_failure.push(Err("the server did not start".to_string()));
        assert_eq!(
            median_run(with_failure, |r| r.0),
            Err("run 3 of 3: the server did not start".to_string())
        );
        assert!(median_run(Vec::<Result<f64, String>>::new(), |r| *r).is_err());
    }

    /// Every row key the class bench writes, with nothing measured.
    fn all_keys() -> Vec<String> {
        let mut report = Report::default();
        let mine = Mine::default();
        rows_process_and_spawn(&mut report, &skipped(), &Spawn::skipped());
        rows_handoffs(&mut report, &handoffs_skipped().0, &mine);
        let sleepers = [
            SleeperStack::StdDefault,
            SleeperStack::Bytes(C_DEFAULT_STACK),
        ]
        .map(|s| (s, skipped()));
        rows_sleepers(&mut report, &sleepers, Plan::TINY);
        rows_switches(&mut report, &Switches::skipped());
        gs::rows(&mut report, &gs::Gs::skipped());
        programs::rows(&mut report, &programs::Programs::skipped(Plan::TINY));
        blocking::rows(&mut report, &blocking::Blocking::skipped());
        net::rows(&mut report, &net::Net::skipped());
        timers::rows(&mut report, &timers::Timers::skipped());
        let mut keys: Vec<String> = report.rows.into_iter().map(|r| r.key).collect();
        // Rows written only when measured.
        keys.extend(gs::parked_keys());
        keys.push("g.parked.go_1000.rss_kib".to_string());
        keys
    }

    #[test]
    fn every_row_says_which_parts_it_runs_or_why_none() {
        let keys = all_keys();
        assert!(keys.len() > 25, "too few rows: {keys:?}");
        for key in &keys {
            let p = parts::row_parts(key)
                .unwrap_or_else(|| panic!("row {key} is missing from gmp_benches::parts::ROWS"));
            assert_eq!(
                p.parts.is_empty(),
                !p.why_not.is_empty(),
                "row {key}: a row with no part says why, a row with parts does not"
            );
            assert!(
                p.parts.iter().all(|n| parts::SWAPPABLE.contains(n)),
                "row {key}: {:?}",
                p.parts
            );
        }
    }

    #[test]
    fn seed_and_reference_cells_are_the_books_figures() {
        // Rows and ratios with nothing measured still quote every figure, so a value that is
        // no number or a unit that does not convert fails here, naming its key.
        let mut report = Report::default();
        rows_process_and_spawn(&mut report, &skipped(), &Spawn::skipped());
        let handoffs = handoffs_skipped().0;
        rows_handoffs(&mut report, &handoffs, &Mine::default());
        ratios(&mut report, &skipped(), &Spawn::skipped(), &handoffs, &[]);
        ratios_switches(
            &mut report,
            &handoffs,
            &Switches::skipped(),
            &Mine::default(),
        );
        gs::ratios(&mut report, &gs::Gs::skipped());
        let cell = |key: &str| {
            let all = report.rows.iter().chain(&report.ratios);
            let row = all.clone().find(|r| r.key == key);
            row.map(|r| (r.seed.clone(), r.reference.clone()))
                .unwrap_or_else(|| panic!("no row {key}"))
        };
        assert_eq!(
            cell("thread.spawn_join.std.us"),
            (
                format!("{} (create)", fig("seed.thread_create").text()),
                fig("ref.thread_spawn_join").text()
            ),
            "the seed's and the reference machine's spawn, as figures.toml has them"
        );
        assert_eq!(
            cell("handoff.condvar.cross_core.us").1,
            fig("ref.handoff_cross_core").text()
        );
        assert_eq!(
            cell("handoff.parker.same_core.us").1,
            fig("ref.parker_handoff_one_core").text()
        );
        // A ratio of a range uses its midpoint (24–26 µs counts as 25).
        let (_, reference) = cell("ratio.condvar.cross_over_same");
        let (cross, same) = (fig("ref.handoff_cross_core"), fig("ref.handoff_one_core"));
        let (lo, hi) = cross.range_in("µs");
        let expected = (lo + hi) / 2.0 / same.mid_in("µs");
        assert_eq!(
            reference,
            format!("≈{expected:.1}× ({} / {})", cross.text(), same.text())
        );
        // Every chart's dashed mark is a number in the chart's unit.
        for p in Placement::ALL {
            for m in Mechanism::ALL {
                assert!(handoff_reference(m, p).mid_in("µs") > 0.0, "{m:?} {p:?}");
            }
        }
        for e in Engine::ALL {
            assert!(switch_reference(e).mid_in("ns") > 0.0, "{e:?}");
        }
    }

    #[test]
    fn rows_map_to_the_parts_they_time() {
        let of = |key: &str| parts::row_parts(key).map(|p| (p.section, p.parts));
        assert_eq!(
            of("handoff.parker.same_core.us"),
            Some((Section::Handoff, &[3][..]))
        );
        assert_eq!(
            of("handoff.condvar.cross_core.us"),
            Some((Section::Handoff, &[][..]))
        );
        assert_eq!(
            of("sleepers.8mib.rss_per_thread.kib"),
            Some((Section::Sleepers, &[1][..]))
        );
        assert_eq!(
            of("sleepers.8mib.create_per_thread.us"),
            Some((Section::Sleepers, &[][..]))
        );
        assert_eq!(
            of("g.handoff.asm.ns"),
            Some((Section::G, &[4, 6, 7, 8][..]))
        );
        assert_eq!(of("g.handoff.go.ns"), Some((Section::Go, &[][..])));
        assert_eq!(
            of("g.parked.go_1000.rss_kib"),
            Some((Section::Parked, &[][..]))
        );
        assert_eq!(
            of("g.parked.slab_1m.rss_kib"),
            Some((Section::Parked, &[1, 5, 6, 7, 8][..]))
        );
        assert_eq!(of("thread.yield.same_core.ns"), Some((Section::G, &[][..])));
        assert_eq!(
            of("g.sleep.gmp.wall_ms"),
            Some((Section::Timers, &[5, 6, 7, 8, 11][..]))
        );
        assert_eq!(of("g.sleep.go.rss_kib"), Some((Section::Timers, &[][..])));
        assert_eq!(
            of("peer.fib.gmp.p2.ms"),
            Some((Section::Programs, &[5, 6, 7, 8][..]))
        );
        assert_eq!(of("peer.fib.may.p1.ms"), Some((Section::Peers, &[][..])));
        assert_eq!(of("peer.chain.go.p2.ns"), Some((Section::Peers, &[][..])));
        assert_eq!(of("nothing.like.this"), None);
    }

    #[test]
    fn options_name_a_wrong_section() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = parse_options(&args(&["--only", "handoff,nope"]))
            .err()
            .unwrap();
        assert!(
            e.contains("\"nope\"") && e.contains("handoff, sleepers"),
            "{e}"
        );
        let o = parse_options(&args(&["--quick", "--only", "g,handoff"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.only, Some(vec![Section::G, Section::Handoff]));
        assert!(o.runs(Section::G) && !o.runs(Section::Process));
    }
}
