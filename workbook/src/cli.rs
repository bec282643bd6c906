//! The command line's grammar: [`parse`] turns `cargo workbook <args>` into a [`Command`],
//! and [`usage`] is the text of `cargo workbook help`.
//!
//! Plain matching on the arguments: the commands are few and each takes a flag or three,
//! so a parser crate would cost more compile time than it saves. Parts are kept as the
//! text the learner typed; `main` resolves them with [`crate::parts::find`], which knows
//! the valid ones.

use crate::{Error, Result};

/// What the learner asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`, `--help`, `-h`, or no arguments.
    Help,
    /// `book [--open]`.
    Book {
        /// Open the built book in a browser.
        open: bool,
    },
    /// `serve [--port N]`.
    Serve {
        /// The port on 127.0.0.1.
        port: u16,
    },
    /// `status [--check]`.
    Status {
        /// Rerun every exercise's tests first.
        check: bool,
    },
    /// `hint NN [--again | --reset]`.
    Hint {
        /// The exercise, as typed.
        part: String,
        /// Next, again, or reset.
        action: HintAction,
    },
    /// `watch [NN]`.
    Watch {
        /// The exercise, as typed; `None` for the first unfinished one.
        part: Option<String>,
    },
    /// `reset NN [--yes]`.
    Reset {
        /// The exercise, as typed.
        part: String,
        /// Do not ask first.
        yes: bool,
    },
    /// `verify [--only NN]`.
    Verify {
        /// Check only this exercise, as typed.
        only: Option<String>,
    },
    /// `bench [--quick] [--mine NN]... [--only SECTIONS]`.
    Bench {
        /// Fewer samples, and no criterion: about a minute instead of a quarter hour.
        quick: bool,
        /// Exercises to measure as the learner's besides those `status` has as done, as
        /// typed (`--mine 3 --mine 06,g`: each list split at commas).
        mine: Vec<String>,
        /// Only these class-bench sections (comma list, checked by the class bench).
        only: Option<String>,
    },
}

/// What `hint` does with the hint counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintAction {
    /// Show the next hint.
    Next,
    /// Show the last shown hint again.
    Again,
    /// Start over from the first hint.
    Reset,
}

/// The commands, in the order `help` lists them.
pub const COMMANDS: &[&str] = &[
    "book", "serve", "status", "watch", "hint", "reset", "bench", "verify", "help",
];

/// The default port of `serve`.
pub const DEFAULT_PORT: u16 = 3000;

/// The text of `cargo workbook help`; `exercises` is the list of parts, if known.
pub fn usage(exercises: Option<&str>) -> String {
    let mut text = String::from(
        "cargo workbook <command>: the workbook's command line

Reading the book
  book [--open]          build the book (offline) and print where index.html is;
                         --open also opens it in your browser
  serve [--port N]       serve the book on http://127.0.0.1:3000 (or port N),
                         rebuilding it whenever a file under book/src changes

Working through the exercises (NN is a number or name: 1, 01 or procinfo)
  status [--check]       per chapter: not started / failing (first failing test) / done;
                         --check reruns every exercise's tests first (slow)
  watch [NN]             rerun an exercise's tests on every save and say what to do next
                         (default: the first exercise not done); Ctrl-C ends it
  hint NN [--again|--reset]
                         the next hint for exercise NN (each one more specific);
                         --again shows the last one again, --reset starts over
  reset NN [--yes]       put exercise NN's skeleton back (asks first; your src/ is
                         copied to .workbook/backup/ before)

For instructors and authors
  bench [--quick] [--mine NN] [--only SECTIONS]
                         the class bench report (target/class-bench/), with rows on
                         your finished parts (and those --mine names) beside the
                         solution's; then the criterion benches (target/criterion/),
                         which --quick leaves out; --only handoff,g,... runs only
                         those sections
  verify [--only NN]     check the workbook: every skeleton red, every solution green,
                         chapters and exercises linked both ways, step anchors, hints,
                         every figure of the book a tag of book/figures.toml,
                         every lab program in the book compiles

  help                   this list
",
    );
    if let Some(list) = exercises {
        text.push_str(&format!("\nExercises: {list}\n"));
    }
    text
}

/// Parses the arguments after `cargo workbook`.
pub fn parse(args: &[String]) -> Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let mut args = Args {
        command: command.as_str(),
        rest: rest.iter().map(String::as_str).collect(),
    };
    let parsed = match command.as_str() {
        "help" | "--help" | "-h" => Command::Help,
        "book" => Command::Book {
            open: args.flag(&["--open"]),
        },
        "serve" => Command::Serve {
            port: match args.value("--port")? {
                None => DEFAULT_PORT,
                Some(p) => p.parse().map_err(|_| {
                    Error::new(format!(
                        "`--port {p}` is not a port: give a number from 1 to 65535, e.g. `--port 3001`"
                    ))
                })?,
            },
        },
        "status" => Command::Status {
            check: args.flag(&["--check"]),
        },
        "hint" => {
            let again = args.flag(&["--again"]);
            let reset = args.flag(&["--reset"]);
            let action = match (again, reset) {
                (true, true) => {
                    return Err(Error::new(
                        "`hint` takes --again or --reset, not both".to_string(),
                    ));
                }
                (true, false) => HintAction::Again,
                (false, true) => HintAction::Reset,
                (false, false) => HintAction::Next,
            };
            Command::Hint {
                part: args.required_part("cargo workbook hint 01")?,
                action,
            }
        }
        "watch" => Command::Watch {
            part: args.optional_part(),
        },
        "reset" => Command::Reset {
            yes: args.flag(&["--yes", "-y"]),
            part: args.required_part("cargo workbook reset 01")?,
        },
        "verify" => Command::Verify {
            only: args.value("--only")?.map(str::to_string),
        },
        "bench" => {
            let mut mine = Vec::new();
            while let Some(list) = args.value("--mine")? {
                mine.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_string),
                );
            }
            Command::Bench {
                quick: args.flag(&["--quick"]),
                mine,
                only: args.value("--only")?.map(str::to_string),
            }
        }
        other => {
            let guess = closest_command(other)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            return Err(Error::new(format!(
                "unknown command `{other}`: {guess}the commands are {} (`cargo workbook help` says what each does)",
                COMMANDS.join(", ")
            )));
        }
    };
    args.finish()?;
    Ok(parsed)
}

/// The command a typo most likely meant: within two edits (`stauts`, `verfy`), else none.
/// strsim is already compiled for mdBook, so the suggestion costs no build time.
fn closest_command(typed: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (strsim::damerau_levenshtein(typed, c), *c))
        .filter(|(edits, _)| *edits <= 2)
        .min()
        .map(|(_, c)| c)
}

/// The arguments after the command, consumed as they are understood.
struct Args<'a> {
    command: &'a str,
    rest: Vec<&'a str>,
}

impl<'a> Args<'a> {
    /// Whether any of `names` is present (and consumes it).
    fn flag(&mut self, names: &[&str]) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| !names.contains(a));
        self.rest.len() != before
    }

    /// The value of `--name V` or `--name=V`, if given.
    fn value(&mut self, name: &str) -> Result<Option<&'a str>> {
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a.starts_with(&prefix)) {
            let arg = self.rest.remove(i);
            return Ok(Some(&arg[prefix.len()..]));
        }
        let Some(i) = self.rest.iter().position(|a| *a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.rest.len() {
            return Err(Error::new(format!(
                "`{name}` needs a value: `cargo workbook {} {name} <value>`",
                self.command
            )));
        }
        let value = self.rest.remove(i + 1);
        self.rest.remove(i);
        Ok(Some(value))
    }

    /// The first argument that is not a flag, if any.
    fn optional_part(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with('-'))?;
        Some(self.rest.remove(i).to_string())
    }

    fn required_part(&mut self, example: &str) -> Result<String> {
        self.optional_part().ok_or_else(|| {
            Error::new(format!(
                "`{}` needs an exercise: e.g. `{example}` (a number or a name)",
                self.command
            ))
        })
    }

    /// Fails if anything was not understood.
    fn finish(self) -> Result<()> {
        match self.rest.first() {
            None => Ok(()),
            Some(extra) => Err(Error::new(format!(
                "`cargo workbook {}` does not take `{extra}` (`cargo workbook help` lists what each command takes)",
                self.command
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(p(&[]).unwrap(), Command::Help);
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["watch", "-h"]).unwrap(), Command::Help);
        assert_eq!(
            p(&["book", "--open"]).unwrap(),
            Command::Book { open: true }
        );
        assert_eq!(p(&["serve"]).unwrap(), Command::Serve { port: 3000 });
        assert_eq!(
            p(&["serve", "--port", "8080"]).unwrap(),
            Command::Serve { port: 8080 }
        );
        assert_eq!(
            p(&["serve", "--port=8081"]).unwrap(),
            Command::Serve { port: 8081 }
        );
        assert_eq!(
            p(&["status", "--check"]).unwrap(),
            Command::Status { check: true }
        );
        assert_eq!(
            p(&["hint", "01", "--again"]).unwrap(),
            Command::Hint {
                part: "01".into(),
                action: HintAction::Again
            }
        );
        assert_eq!(
            p(&["hint", "--reset", "procinfo"]).unwrap(),
            Command::Hint {
                part: "procinfo".into(),
                action: HintAction::Reset
            }
        );
        assert_eq!(p(&["watch"]).unwrap(), Command::Watch { part: None });
        assert_eq!(
            p(&["watch", "2"]).unwrap(),
            Command::Watch {
                part: Some("2".into())
            }
        );
        assert_eq!(
            p(&["reset", "3", "--yes"]).unwrap(),
            Command::Reset {
                part: "3".into(),
                yes: true
            }
        );
        assert_eq!(
            p(&["verify", "--only", "01"]).unwrap(),
            Command::Verify {
                only: Some("01".into())
            }
        );
        assert_eq!(
            p(&["bench", "--quick"]).unwrap(),
            Command::Bench {
                quick: true,
                mine: Vec::new(),
                only: None
            }
        );
        assert_eq!(
            p(&[
                "bench",
                "--mine",
                "3",
                "--quick",
                "--mine=06, g",
                "--only",
                "handoff,g"
            ])
            .unwrap(),
            Command::Bench {
                quick: true,
                // `--mine=` forms are read first; the order does not matter.
                mine: vec!["06".into(), "g".into(), "3".into()],
                only: Some("handoff,g".into())
            }
        );
    }

    #[test]
    fn errors_name_the_problem_and_the_fix() {
        let typo = p(&["stauts"]).unwrap_err();
        assert!(
            typo.message()
                .starts_with("unknown command `stauts`: did you mean `status`? the commands are"),
            "{typo}"
        );
        let unknown = p(&["frobnicate"]).unwrap_err();
        assert!(
            unknown.message().starts_with(
                "unknown command `frobnicate`: the commands are book, serve, status, watch"
            ),
            "{unknown}"
        );
        assert!(
            p(&["hint"])
                .unwrap_err()
                .message()
                .contains("cargo workbook hint 01")
        );
        assert!(
            p(&["serve", "--port", "x"])
                .unwrap_err()
                .message()
                .contains("not a port")
        );
        assert!(
            p(&["serve", "--port"])
                .unwrap_err()
                .message()
                .contains("needs a value")
        );
        assert!(
            p(&["status", "--chek"])
                .unwrap_err()
                .message()
                .contains("does not take `--chek`")
        );
        assert!(p(&["hint", "1", "--again", "--reset"]).is_err());
        assert!(p(&["book", "extra"]).is_err());
    }
}
