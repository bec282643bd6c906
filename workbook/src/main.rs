//! `cargo workbook <command>` (alias in `.cargo/config.toml`): parses the arguments, finds
//! the workbook's root and parts, and hands over to the command's module in the library.
//! Errors are printed as `error: <message>` with exit status 1.

use std::process::ExitCode;

use workbook::cli::{self, Command};
use workbook::state::State;
use workbook::{Result, bench, book, hint, parts, reset, serve, status, verify, watch};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let command = cli::parse(args)?;
    if command == Command::Help {
        // Help works even outside the workbook: the list of parts is a bonus.
        let list = parts::root()
            .and_then(|root| parts::discover(&root))
            .ok()
            .map(|p| parts::list(&p));
        print!("{}", cli::usage(list.as_deref()));
        return Ok(());
    }
    let root = parts::root()?;
    let all = parts::discover(&root)?;
    match command {
        Command::Help => unreachable!("handled above"),
        Command::Book { open } => book::run(&root, open),
        Command::Serve { port } => serve::run(&root, port),
        Command::Status { check } => status::run(&root, &all, check),
        Command::Hint { part, action } => {
            let part = parts::find(&all, &part)?;
            let mut progress = State::load(&root)?;
            let text = hint::hint(&root, part, action, &mut progress)?;
            progress.save(&root)?;
            print!("{text}");
            Ok(())
        }
        Command::Watch { part } => {
            let part = part.map(|p| parts::find(&all, &p)).transpose()?;
            watch::run(&root, &all, part)
        }
        Command::Reset { part, yes } => reset::run(&root, parts::find(&all, &part)?, yes),
        Command::Verify { only } => {
            let only = only.map(|p| parts::find(&all, &p)).transpose()?;
            verify::run(&root, &all, only)
        }
        Command::Bench { quick, mine, only } => {
            bench::run(&root, &all, &bench::Options { quick, mine, only })
        }
    }
}
