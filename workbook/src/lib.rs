//! The workbook's command line, `cargo workbook <command>` (`cargo workbook help`).
//!
//! What lives here: one module per command ([`book`], [`serve`], [`status`], [`hint`],
//! [`watch`], [`reset`], [`verify`] with [`labs`], its check of the book's lab programs,
//! [`bench`]), and what they share: [`parts`] finds the exercises and chapters on disk,
//! [`state`] keeps the learner's progress in a plain-text file, [`testrun`] runs one
//! exercise's `cargo test` and reads what failed, [`poll`] notices changed files, [`cli`]
//! turns the arguments into a [`cli::Command`], [`figures`] renders `book/figures.toml` into
//! the pages (for [`book`]) and checks them (for [`verify`]). `main.rs` only dispatches.
//!
//! Everything takes the workbook's root folder as a path (found by [`parts::root`]), so the
//! tests run the same code on a temporary copy of the repository.
//!
//! Not here: anything about the runtime itself (crate `gmp`) or the class bench report
//! (crate `gmp-benches`, which `cargo workbook bench` only runs).

pub mod bench;
pub mod book;
pub mod cli;
pub mod figures;
pub mod hint;
pub mod labs;
pub mod parts;
pub mod poll;
pub mod reset;
pub mod serve;
pub mod state;
pub mod status;
pub mod testrun;
pub mod verify;
pub mod watch;

use std::fmt;
use std::io;
use std::path::Path;

/// A failure of a workbook command: a message that names the problem and the fix.
///
/// `main` prints it as `error: <message>` and exits with status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// The message, without the `error: ` prefix.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

/// The result of a workbook operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns an I/O error into an [`Error`] that says what was being done to which path.
pub(crate) fn io_error(doing: &str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let context = format!("{doing} {}", path.display());
    move |e| Error(format!("{context}: {e}"))
}

/// `path` relative to `root` when it is inside it, for shorter messages.
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
