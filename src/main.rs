//! The `blockcast` command: a thin face over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockcast: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
