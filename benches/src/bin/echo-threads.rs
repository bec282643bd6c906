//! `echo-threads ADDR [--limit-secs S]`: a thread-per-connection TCP echo server on
//! loopback (see `gmp_benches::echo::serve_threads`), the way chapter 10 starts. It ends by
//! itself after S seconds (default 600), connections or not.

use std::net::TcpListener;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use gmp_benches::echo::{require_loopback, serve_threads};

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
    if let Err(e) = require_loopback(addr) {
        eprintln!("echo-threads: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-threads: bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bound: the process ends by itself, whatever its connections are doing.
    thread::spawn(move || {
        thread::sleep(Duration::from_secs(limit));
        eprintln!("echo-threads: {limit} s are up, exiting");
        std::process::exit(0);
    });
    eprintln!("echo-threads: serving on {addr}, one thread per connection, for at most {limit} s");
    match serve_threads(listener, u64::MAX) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-threads: {e}");
            ExitCode::FAILURE
        }
    }
}
