//! `echo-threads ADDR [--limit-secs S]`: a thread-per-connection TCP echo server on
//! loopback (see `gmp_benches::echo::serve_threads`), the way chapter 10 starts. It ends by
//! itself after S seconds (default 600), connections or not.

use std::process::ExitCode;
use std::time::Duration;

use gmp_benches::echo::run_threads_server;

const USAGE: &str =
    "usage: echo-threads ADDR [--limit-secs S]   (ADDR on loopback, e.g. 127.0.0.1:7000)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, limit) = match args.as_slice() {
        [addr] => (addr.clone(), 600),
        [addr, flag, secs] if flag == "--limit-secs" => match secs.parse::<u64>() {
            Ok(s) => (addr.clone(), s),
            Err(_) => {
                eprintln!("echo-threads: --limit-secs wants a whole number, got `{secs}`\n{USAGE}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("echo-threads: {USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("echo-threads: `{addr}` is not an address like 127.0.0.1:7000\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match run_threads_server(addr, Duration::from_secs(limit)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
