//! The one error type of perfwatt. Every fallible library call returns `Result<T>`;
//! the CLI prints the error as one line and exits non-zero.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input with a position in it (VCD, CSV, SAIF...).
    #[error("{file}:{line}: {msg} (byte offset {offset})")]
    Parse {
        file: String,
        line: u64,
        offset: u64,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Trace(String),
    #[error("{0}")]
    Sim(String),
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Config(String),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attach a path to io errors: `file.read(..).at(&path)?`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
