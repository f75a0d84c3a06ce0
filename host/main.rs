//! The `host` command line: parse, dispatch to `cli`, print errors as one line and exit non-zero.

use clap::Parser;

fn main() {
    let args = host::cli::Cli::parse();
    if let Err(e) = host::cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
