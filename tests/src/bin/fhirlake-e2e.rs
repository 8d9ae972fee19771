//! The `fhirlake` binary as the end-to-end tests run it: the same entry point as engine/src/main.rs,
//! built by this package so that `cargo test -p fhirlake-tests` always drives a fresh build.

fn main() -> std::process::ExitCode {
    fhirlake::cli::main()
}
