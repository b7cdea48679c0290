//! What every command sees of the global flags: the output format, quietness, and where
//! CardSync is.

use clap::ValueEnum;

/// The global options, as the commands see them.
#[derive(Clone, Debug)]
pub(crate) struct Global {
    pub(crate) output: OutputFormat,
    pub(crate) quiet: bool,
    pub(crate) remote: crate::remote::Remote,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// A table for people.
    Text,
    /// One JSON object per line, for programs.
    Json,
}
