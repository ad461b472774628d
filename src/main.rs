//! The `galera-lb` binary: everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    galera_lb::cli::main()
}
