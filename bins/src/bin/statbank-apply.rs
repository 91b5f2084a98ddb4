//! `statbank-apply`: see [`bins::app::apply`] for the flags and exit statuses.

fn main() -> std::process::ExitCode {
    bins::app::apply::main(std::env::args_os())
}
