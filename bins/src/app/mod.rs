//! The command-line programs, as library functions so that tests (the crash
//! harness) can run exactly the binaries' code in a child process. Each
//! `main` parses its arguments, sets up logging, runs, prints the error chain
//! on failure and returns the exit status.

pub mod apply;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod flow;
pub mod inspect;
pub mod sync;
