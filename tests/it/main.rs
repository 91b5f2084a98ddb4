//! The end-to-end suites, in one test binary (one link of arrow, parquet,
//! object_store and postgres instead of one per suite). Each module is one
//! suite; `cargo test -p tests --test it <module>::` runs one of them. The
//! crash harness (`tests/tests/crash.rs`) and the command-line suite
//! (`tests/tests/cli.rs`) are binaries of their own: they run themselves as
//! child processes.

mod apply;
mod client_emulator;
mod disk_faults;
mod drift;
mod flow;
mod hostile;
mod iceberg;
mod inspect;
mod metadata;
mod object_stores;
mod partitioned;
mod pg_faults;
mod reconcile;
mod robustness;
mod sync_cycle;
mod tidy;
mod verification;
mod vintages;
