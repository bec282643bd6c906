//! `bench` on a copy of the workspace where the learner has finished parts 03 and 06 (the
//! solutions pasted into the exercises, recorded as done the way `watch` records them): the
//! class bench shows rows marked as the learner's for both, right below the solution's.
//!
//! It builds the class bench in release twice (on the solutions, and with mine-03,mine-06)
//! into `target/bench-selftest`, a target dir of its own that stays between runs, so only the
//! first run is slow; `--only handoff,g` keeps the measuring to a few seconds.
//!
//! Ignored by a plain `cargo test`: two release builds take minutes on a cold target dir,
//! and the README's test command must stay quick for a learner. `.ci/run` runs it with
//! `cargo test -p workbook --test bench_mine -- --ignored`.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use workbook::state::{self, Status};

#[test]
#[ignore = "two release builds of the class bench (minutes when cold); .ci/run runs it with --ignored"]
fn finished_parts_03_and_06_get_rows_marked_as_theirs() {
    let copy = common::copy_repo();
    let root = copy.path().to_path_buf();
    for key in ["03-parker", "06-g"] {
        let solution = root.join(format!("solutions/{key}/src/lib.rs"));
        let exercise = root.join(format!("exercises/{key}/src/lib.rs"));
        fs::copy(&solution, &exercise).unwrap();
    }
    state::update(&root, |s| {
        s.record("03-parker", Status::Done { tests: 1 });
        s.record("06-g", Status::Done { tests: 1 });
    })
    .unwrap();

    let target = common::repo_root().join("target/bench-selftest");
    let started = Instant::now();
    let run_root = root.clone();
    let run_target = target.clone();
    let output = testkit::watchdog(
        "cargo workbook bench --quick --only handoff,g on parts 03 and 06 (two release builds)",
        Duration::from_secs(1500),
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_workbook"))
                .args(["bench", "--quick", "--only", "handoff,g"])
                .env(workbook::parts::ROOT_ENV, &run_root)
                .env("CARGO_TARGET_DIR", &run_target)
                .current_dir(&run_root)
                .output()
                .expect("the workbook binary runs")
        },
    );
    let (stdout, stderr) = common::text(&output);
    eprintln!("bench took {:.0} s", started.elapsed().as_secs_f64());
    assert!(
        output.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("03 parker  its tests pass") && stdout.contains("06 g  its tests pass"),
        "bench did not pick up the parts the state file has as done:\n{stdout}"
    );

    let json = fs::read_to_string(target.join("class-bench/report.json")).unwrap();
    let md = fs::read_to_string(target.join("class-bench/report.md")).unwrap();
    // Each learner's row sits right below its solution twin and carries the ratio.
    let lines: Vec<&str> = md.lines().collect();
    for (solution, yours) in [
        (
            "| hand-off, parker, same-core (µs) |",
            "| hand-off, parker, same-core (µs) — your part 03 |",
        ),
        (
            "| G hand-off over an unbuffered channel, P=1, gmp corosensei (ns) |",
            "| G hand-off over an unbuffered channel, P=1, gmp corosensei (ns) — your part 06 |",
        ),
    ] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(solution))
            .unwrap_or_else(|| panic!("no solution row {solution:?} in the report:\n{md}"));
        let next = lines.get(at + 1).copied().unwrap_or_default();
        assert!(
            next.starts_with(yours) && next.contains("× the solution's "),
            "the row below {solution:?} should be the learner's with a ratio, got {next:?}\n{md}"
        );
    }
    // Part 03 is a plain library: its rows are timed in turn with the solution's Parker.
    assert!(
        md.contains("— your part 03 | ") && md.contains(" in the same run)"),
        "the Parker rows should carry a same-run ratio:\n{md}"
    );
    assert!(
        json.contains("\"key\":\"handoff.parker.same_core.us.mine\"")
            && json.contains("\"mine\":[3]")
            && json.contains("\"mine\":[6]"),
        "the JSON report does not mark the learner's rows:\n{json}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("| process spawn+wait") || l.starts_with("| switch round trip")),
        "--only handoff,g measured other sections too:\n{md}"
    );
    assert!(
        md.contains("Rows that run none of your parts") && md.contains("Condvar"),
        "the report does not say which rows cannot be the learner's:\n{md}"
    );
}
