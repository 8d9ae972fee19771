//! The `fhirlake` command line. Thin: argument parsing and output live in the library's `cli`
//! module, the work in the rest of the `fhirlake` library and its sibling crates.

fn main() -> std::process::ExitCode {
    fhirlake::cli::main()
}
