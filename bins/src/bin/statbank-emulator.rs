//! `statbank-emulator`: see [`bins::app::emulator`] for the flags and exit statuses.

fn main() -> std::process::ExitCode {
    bins::app::emulator::main(std::env::args_os())
}
