//! A learner's plain `cargo test -p ex-NN-slug`, on a temporary copy of the workbook:
//! `status` shows its result (done / failing with the first step / a killed test as
//! unfinished), and a lost wake-up pasted into part 03 or part 06 is a red test within
//! seconds, naming the invariant and the book section.
//!
//! Each run compiles the exercise and the runtime on it in the copy. They build into
//! `target/verify-selftest`, shared with `verify_solution.rs` and kept between runs, so the
//! registry crates are compiled once; the exercise and `gmp` are rebuilt per paste.
//!
//! The mutants are derived from the solutions: one line of the solution is replaced, and the
//! test fails loudly if that line is gone, so the mutant cannot drift from the solution.
//!
//! Why "red within 15 s of the binary starting" is asserted here although tests make no
//! timing claims: it is not a performance figure but the correctness bound of the progress
//! watchdog (5 s without progress fails a test; the tests of parts 03 and 06 run side by side,
//! so their stalls overlap).
//! A broken watchdog would take its total limit (20 to 120 s), three times the bound or more,
//! so the bound has a wide margin on a slow machine and still catches that bug.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{text, workbook};

/// The two tests take turns: a mutant's binary is timed while nothing else here compiles.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Generous for two cold builds of the runtime in a debug profile on a loaded 2-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(1200);

/// A one-line change to a solution that loses a wake-up.
struct Mutant {
    part: &'static str,
    /// The solution's line, which must occur exactly once.
    right: &'static str,
    wrong: &'static str,
    /// What the red test's output must name: the invariant and the book section.
    says: &'static [&'static str],
}

/// Part 03: `unpark` wakes on the wrong state, so a PARKED owner is never woken.
const PARKER_WAKES_ON_THE_WRONG_STATE: Mutant = Mutant {
    part: "03-parker",
    right: "if self.state.swap(NOTIFIED, Release) == PARKED {",
    wrong: "if self.state.swap(NOTIFIED, Release) == EMPTY {",
    says: &[
        "lost wake-up: an unpark came and park never returned",
        "unpark found the Parker PARKED and nobody woke it",
        "ch03-parker.html#step-2",
    ],
};

/// Part 06: a `ready` that finds the G parking is dropped, so g0 never requeues it.
const READY_WHILE_PARKING_DROPPED: Mutant = Mutant {
    part: "06-g",
    right: "PARKING => Ok(((w & !STATUS_MASK) | READIED_WHILE_PARKING, Ready::Pending)),",
    wrong: "PARKING => Ok((w, Ready::Pending)),",
    says: &[
        "lost wake-up: G 1 readied while parking and never requeued",
        "ch06-g.html#step-3",
    ],
};

fn target_dir() -> PathBuf {
    common::repo_root().join("target/verify-selftest")
}

/// Writes `text` as the learner's `src/lib.rs` of exercise `part`.
fn paste(root: &Path, part: &str, text: &str) {
    fs::write(root.join("exercises").join(part).join("src/lib.rs"), text).unwrap();
}

fn solution(part: &str) -> String {
    fs::read_to_string(
        common::repo_root()
            .join("solutions")
            .join(part)
            .join("src/lib.rs"),
    )
    .unwrap()
}

fn mutant_text(m: &Mutant) -> String {
    let solution = solution(m.part);
    assert_eq!(
        solution.matches(m.right).count(),
        1,
        "solutions/{}/src/lib.rs changed: update this mutant's `right` line",
        m.part
    );
    solution.replace(m.right, m.wrong)
}

fn package(part: &str) -> String {
    format!("ex-{part}")
}

/// `cargo <args>` in the copy, output captured, under a watchdog.
fn cargo(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    let what = format!("cargo {} in a copy of the workbook", args.join(" "));
    testkit::watchdog(&what, BUILD_LIMIT, move || {
        cmd.output().expect("cargo runs")
    })
}

/// Builds exercise `part`'s test file binary in the copy and returns its path.
fn build_test_binary(root: &Path, part: &str) -> PathBuf {
    let out = cargo(
        root,
        &[
            "test",
            "-p",
            &package(part),
            "--no-run",
            "--message-format=json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "the build failed:\n{stderr}");
    let executable = stdout
        .lines()
        .filter(|l| l.contains("\"kind\":[\"test\"]"))
        .find_map(|l| {
            let rest = l.split("\"executable\":\"").nth(1)?;
            Some(PathBuf::from(rest.split('"').next()?))
        });
    executable.unwrap_or_else(|| panic!("no test binary in cargo's messages:\n{stdout}"))
}

/// The status table's row of exercise `part`.
fn status_row(root: &Path, part: &str) -> String {
    let (stdout, stderr) = text(&workbook(root, &["status"]));
    stdout
        .lines()
        .find(|l| l.contains(&package(part)))
        .unwrap_or_else(|| panic!("no row for {part} in:\n{stdout}{stderr}"))
        .to_string()
}

/// Runs the mutant's test binary directly, timed from its start, and checks it is red in
/// time with the invariant and the section in its output.
fn assert_red_in_time(root: &Path, m: &Mutant) {
    paste(root, m.part, &mutant_text(m));
    let binary = build_test_binary(root, m.part);
    let started = Instant::now();
    let out = testkit::watchdog(
        "a mutant's test binary (its own watchdogs must end it)",
        Duration::from_secs(300),
        move || {
            Command::new(&binary)
                .env("RUST_BACKTRACE", "0")
                .stdin(Stdio::null())
                .output()
                .expect("the test binary runs")
        },
    );
    let elapsed = started.elapsed();
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}{stderr}");
    assert!(
        !out.status.success(),
        "the {} mutant passed its tests: they do not catch a lost wake-up\n{all}",
        m.part
    );
    for needle in m.says {
        assert!(
            all.contains(needle),
            "the {} mutant's failure does not say {needle:?}:\n{all}",
            m.part
        );
    }
    assert!(
        elapsed < Duration::from_secs(15),
        "the {} mutant took {elapsed:?} to turn red; a stall must fail within 5 s \
         (the correctness bound of the progress watchdog):\n{all}",
        m.part
    );
    eprintln!("{} mutant: red after {elapsed:.1?}", m.part);
}

/// Kills the test binary of `part` in the middle of `test` (a crash skips the same drops):
/// `status` must show the test failing as unfinished, not keep its earlier pass.
fn assert_a_killed_test_is_not_done(root: &Path, part: &str, test: &str) {
    let binary = build_test_binary(root, part);
    let record = root.join(".workbook/tests").join(part).join(test);
    let mut child = Command::new(&binary)
        .args([test, "--exact"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test binary starts");
    // The racing hand-off runs for tens of milliseconds at least (20,000 real parks): poll the
    // record finely and kill the binary as soon as it says running.
    testkit::watchdog(
        "the record of a started test",
        Duration::from_secs(60),
        move || {
            while !fs::read_to_string(&record).is_ok_and(|r| r.starts_with("running ")) {
                std::thread::sleep(Duration::from_micros(200));
            }
        },
    );
    child.kill().expect("the test binary can be killed");
    let status = child.wait().expect("the killed test binary is reaped");
    assert!(
        !status.success(),
        "`{test}` finished before it could be killed: pick a longer test"
    );
    let row = status_row(root, part);
    assert!(
        row.contains("failing: 1 of ")
            && row.contains(&format!("(first: {test} (did not finish"))
            && row.contains("crashed or was killed"),
        "after a killed run, status should show `{test}` failing as unfinished: {row}"
    );
}

#[test]
fn status_follows_a_plain_cargo_test_of_part_03_and_its_lost_wake_up_is_red_fast() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let copy = common::copy_repo();
    let root = copy.path();
    let part = "03-parker";
    let skeleton = fs::read_to_string(root.join("exercises/03-parker/src/lib.rs")).unwrap();

    paste(root, part, &solution(part));
    let out = cargo(root, &["test", "-p", &package(part)]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "the solution pasted into the exercise fails:\n{stdout}{stderr}"
    );
    let row = status_row(root, part);
    assert!(
        row.contains("done (13 tests pass)"),
        "after a passing plain `cargo test`, status should say done: {row}"
    );

    assert_a_killed_test_is_not_done(root, part, "step2_wake_during_park_twenty_thousand_times");

    assert_red_in_time(root, &PARKER_WAKES_ON_THE_WRONG_STATE);
    let row = status_row(root, part);
    assert!(
        row.contains("failing:") && row.contains("(first: step2_"),
        "after the mutant's run, status should name its first failing step 2 test: {row}"
    );

    paste(root, part, &skeleton);
    let out = cargo(root, &["test", "-p", &package(part)]);
    assert!(!out.status.success(), "the skeleton passed");
    let row = status_row(root, part);
    assert!(
        row.contains("failing:")
            && row.contains("(first: step1_futex_wait_returns_at_once_if_the_word_changed)"),
        "with the skeleton, status should name the first step's first test: {row}"
    );
}

#[test]
fn a_lost_wake_up_in_part_06_is_red_fast_naming_the_invariant() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let copy = common::copy_repo();
    assert_red_in_time(copy.path(), &READY_WHILE_PARKING_DROPPED);
    let row = status_row(copy.path(), "06-g");
    assert!(
        row.contains("failing:") && row.contains("(first: step3_"),
        "status should show the mutant's run of part 06 as failing in step 3: {row}"
    );
}
