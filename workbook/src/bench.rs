//! `cargo workbook bench [--quick]`: the class bench report, then the criterion benches.
//!
//! Both live in crate `gmp-benches`; this command only runs them, with the terminal
//! inherited so the instructor sees the table as it is measured:
//!
//! 1. `cargo run --release -p gmp-benches --bin class-bench -- [--quick]` prints the table
//!    and writes `target/class-bench/report.{md,html,svg}`;
//! 2. `cargo bench -p gmp-benches [-- --quick]` writes criterion's HTML reports under
//!    `target/criterion/`.
//!
//! A failing step stops the command with its exit status. Afterwards it prints where the
//! reports are (under `$CARGO_TARGET_DIR` when that is set).

use std::path::{Path, PathBuf};

use crate::testrun::Cargo;
use crate::{Error, Result};

/// The target dir the bench builds write to.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

fn step(cargo: &Cargo, args: &[&str]) -> Result<()> {
    let shown = format!("cargo {}", args.join(" "));
    println!("\n==> {shown}");
    let status = cargo
        .command()
        .args(args)
        .status()
        .map_err(|e| Error::new(format!("could not start `{shown}`: {e}")))?;
    if !status.success() {
        return Err(Error::new(format!(
            "`{shown}` failed ({status}); its output above says why"
        )));
    }
    Ok(())
}

/// The `bench` command.
pub fn run(root: &Path, quick: bool) -> Result<()> {
    let cargo = Cargo::new(root);
    let mut class = vec![
        "run",
        "--release",
        "-p",
        "gmp-benches",
        "--bin",
        "class-bench",
    ];
    let mut criterion = vec!["bench", "-p", "gmp-benches"];
    if quick {
        class.extend(["--", "--quick"]);
        criterion.extend(["--", "--quick"]);
    }
    step(&cargo, &class)?;
    step(&cargo, &criterion)?;
    let target = target_dir(root);
    println!("\nreports:");
    for (what, path) in [
        (
            "class bench (Markdown)",
            target.join("class-bench/report.md"),
        ),
        ("class bench (HTML)", target.join("class-bench/report.html")),
        ("class bench (SVG)", target.join("class-bench/report.svg")),
        ("criterion", target.join("criterion/report/index.html")),
    ] {
        let note = if path.is_file() { "" } else { " (not written)" };
        println!("  {what:<24} {}{note}", path.display());
    }
    Ok(())
}
