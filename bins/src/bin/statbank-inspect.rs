//! `statbank-inspect`: see [`bins::app::inspect`] for the flags and exit statuses.

fn main() -> std::process::ExitCode {
    bins::app::inspect::main(std::env::args_os())
}
