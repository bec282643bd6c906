//! `locked-count [gmp|go] [N]`: the instructions and the locked instructions one link of the
//! spawn chain runs at one P (chapter 8, "The price of a locked instruction"), counted with
//! valgrind's callgrind at N and 2N links (default N = 100,000), and where the locked ones
//! are. `gmp` runs this build's `class-bench --peer gmp chain 1 N 1`; `go` builds Go's twin
//! (`benches/go`, `gobench chain N`) and runs it with `GOMAXPROCS=1` and
//! `GODEBUG=asyncpreemptoff=1` (Go's preemption signals can trip callgrind 3.19's signal
//! bookkeeping, an assertion in `vgCallgrind_post_signal`; the chain's Gs never run long
//! enough to be preempted anyway). Needs valgrind and
//! objdump; `go` needs Go on PATH.

use std::path::PathBuf;
use std::process::ExitCode;

use gmp_benches::go::{GO_SKIP_LINE, GoBench, go_on_path};
use gmp_benches::locked::{LockedCount, count};
use gmp_benches::target_dir;

const USAGE: &str = "usage: locked-count [gmp|go] [N]   (N links and 2N, default 100000)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locked-count: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (peer, n) = match args.as_slice() {
        [] => ("gmp".to_string(), 100_000),
        [peer] => (peer.clone(), 100_000),
        [peer, n] => (
            peer.clone(),
            n.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("N must be a whole number above 0, got `{n}`\n{USAGE}"))?,
        ),
        _ => return Err(USAGE.to_string()),
    };
    let sizes = (n, 2 * n);
    let counted = match peer.as_str() {
        "gmp" => {
            let class_bench = sibling("class-bench")?;
            count(
                &class_bench,
                |n| {
                    ["--peer", "gmp", "chain", "1", &n.to_string(), "1"]
                        .map(String::from)
                        .to_vec()
                },
                &[],
                sizes,
            )
        }
        "go" => {
            let go = go_on_path().ok_or_else(|| GO_SKIP_LINE.to_string())?;
            let out_dir = target_dir().join("locked-count");
            let bench = GoBench::build(&go, &out_dir).map_err(|e| e.to_string())?;
            count(
                bench.exe(),
                |n| vec!["chain".to_string(), n.to_string()],
                &[("GOMAXPROCS", "1"), ("GODEBUG", "asyncpreemptoff=1")],
                sizes,
            )
        }
        other => return Err(format!("no peer `{other}`: gmp or go\n{USAGE}")),
    }
    .map_err(|e| e.to_string())?;
    print(&peer, sizes, &counted);
    Ok(())
}

fn print(peer: &str, sizes: (u64, u64), counted: &LockedCount) {
    println!(
        "{peer}, one link of the spawn chain at one P (callgrind, {} and {} links):",
        sizes.0, sizes.1
    );
    println!(
        "  {:.0} instructions, {:.1} of them locked",
        counted.instructions_per_op, counted.locked_per_op
    );
    for site in &counted.sites {
        println!(
            "  {:5.2}  {:<32} {}",
            site.per_op, site.instruction, site.function
        );
    }
}

/// A program built beside this one (cargo puts every binary of a package in one dir).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("where am I? {e}"))?;
    let path = me.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built: `cargo build --release -p gmp-benches --bin {name}` first",
            path.display()
        ))
    }
}
