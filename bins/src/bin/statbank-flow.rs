//! `statbank-flow`: see [`bins::app::flow`] for the flags and exit statuses.

fn main() -> std::process::ExitCode {
    bins::app::flow::main(std::env::args_os())
}
