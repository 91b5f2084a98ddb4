//! Shared helpers of the end-to-end tests: a real Postgres for DB tests and
//! an emulator-backed sync set-up.
pub mod apply_fx;
pub mod azure;
pub mod e2e;
pub mod pg;
pub mod s3;
mod server;
pub mod sync;
