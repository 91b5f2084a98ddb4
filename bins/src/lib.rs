//! The small library behind the statbank-sync binaries: it composes the
//! layers (client, partition store, state, fact apply) into a sync cycle,
//! and holds what the binaries share (lock, logging, progress, redaction).
//!
//! ```no_run
//! use bins::{run_sync_cycle, SyncOptions};
//! use statbank_client::StatbankClient;
//!
//! # async fn demo() -> Result<(), bins::Error> {
//! let client = StatbankClient::new("http://127.0.0.1:8080/v1")?;
//! let mut opts = SyncOptions::new("data/dst")?;
//! opts.gate.force = true;
//! let manifest = run_sync_cycle(&client, &opts).await?;
//! println!("{}: {} tables changed", manifest.status, manifest.summary.tables_with_changed_tids);
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! - `cli` (default): the programs (`statbank-sync`, `statbank-apply`,
//!   `statbank-flow`, `statbank-inspect`) and what only they need (clap,
//!   indicatif, tracing-subscriber, anyhow). An application embedding the
//!   engine depends on `bins` with `default-features = false` and compiles
//!   none of it (see the `whole_cycle` example).
//! - `s3`, `gcs`, `azure` (default): object-store data folders.
//! - `emulator`: the `statbank-emulator` program.
//! - `bench`: the benchmark programs (`bench-sync`, `bench-apply`, …).
#![warn(missing_docs)]
#![warn(unreachable_pub)]

/// Each program's `main(argv)`, so the tests run exactly the binaries'
/// code in a child process. Not an API: use the engine's functions.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod app;
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
mod cycle;
mod error;
mod fetch;
pub mod flow;
pub mod inspect;
pub mod metrics;
pub mod redact;

pub use cycle::{
    run_sync_cycle, Clock, IcebergMetadata, Languages, ProgressSink, StopSignal, SyncOptions,
    VanishedTables, Vintages, ICEBERG_METADATA_SPAN,
};
pub use error::Error;
