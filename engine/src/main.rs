//! The `fhirlake` command line. Thin: argument parsing and output live in `cli/`, the work in the
//! `fhirlake` library and its sibling crates.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
