//! `statbank-sync`: see [`bins::app::sync`] for the flags and exit statuses.

fn main() -> std::process::ExitCode {
    bins::app::sync::main(std::env::args_os())
}
