//! Named choices: the library's enums that a command line, a sweep spec or a result file
//! names by a word (`q4_1`, `int8`, `activation-like`).
//!
//! In: a word. Out: the choice it names, or one line listing the words there are. The
//! library knows nothing of its command line: `FromStr`/`Display` come from here, and the
//! binary's cli.rs turns `Choice::ALL` into clap's possible values.

use crate::error::{Error, Result};

/// An enum whose every value has one name.
pub trait Choice: Copy + PartialEq + 'static {
    /// What a value is, for errors ("weight format").
    const WHAT: &'static str;
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
    /// One line for `--help` (empty: the name says it all).
    fn about(self) -> &'static str {
        ""
    }
}

/// The choice named `s`.
pub fn parse<T: Choice>(s: &str) -> Result<T> {
    T::ALL
        .iter()
        .copied()
        .find(|c| c.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|c| c.name()).collect();
            Error::Config(format!("unknown {} '{s}': {}", T::WHAT, names.join(", ")))
        })
}

/// `FromStr` and `Display` of a `Choice`, by its names.
#[macro_export]
macro_rules! choice_str {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                $crate::choice::parse(s)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }
    };
}
