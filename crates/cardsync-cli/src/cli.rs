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

impl OutputFormat {
    /// `--output`'s value: `text` or `json`; a file name given there (`--output results.csv`,
    /// meaning `--out`) is answered with where the file goes.
    pub(crate) fn parse(value: &str) -> Result<OutputFormat, String> {
        match value.to_ascii_lowercase().as_str() {
            "text" => Ok(OutputFormat::Text),
            "json" => Ok(OutputFormat::Json),
            _ if value.contains('.') || value.contains('/') => Err(format!(
                "--output is the format of what is printed (text or json); the results file \
                 is --out {value}"
            )),
            _ => Err("expected text or json".to_owned()),
        }
    }
}
