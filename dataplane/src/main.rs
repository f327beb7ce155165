//! The `dataplane` binary: parses the command line and runs it (see [`dataplane::cli`]).
//!
//! Errors are printed as one line on standard error, outermost context first
//! (`error: invalid configuration (node.yaml): shard.ring_capacity_frames = 1000: ...`), and
//! the exit code is 1; clap's own usage errors exit with 2.

use std::process::ExitCode;

use clap::Parser as _;
use dataplane::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
