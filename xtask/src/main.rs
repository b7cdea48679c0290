//! `cargo xtask`: cardsync's project chores.
//!
//! - `cargo xtask codegen [--check]` regenerates the tables in `crates/*/src/generated/` from the
//!   data files beside them (`--check` only reports stale files).
//! - `cargo xtask tidy` checks the architecture invariants of `docs/ARCHITECTURE.md`.
//! - `cargo xtask bench [--rows N] [--baseline BIN]` times `cardsync validate` and `cardsync sync` against plain
//!   Python scripts (`xtask/bench/`), side by side.
//! - `cargo xtask bench shared [--rows N] [--latency D] [--rounds R] [--baseline BIN]` times 1, 2 and 4
//!   `cardsync worker`s on one job in the shared PostgreSQL journal, side by side.

mod bench;
mod codegen;
mod shared;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => codegen::generate(codegen::Mode::Write),
        ["codegen", "--check"] => codegen::generate(codegen::Mode::Check),
        ["tidy"] => tidy::run(),
        ["bench", "shared", rest @ ..] => shared::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <codegen [--check] | tidy | bench [--rows N] [--baseline BIN] | bench shared [--rows N] [--latency D] [--rounds R] [--baseline BIN]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
