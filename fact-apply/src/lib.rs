//! Applies exactly the changed periods (`Tid` partitions) of a sync run into
//! existing Postgres `fact.*` tables, one transaction per table, and records
//! what was done as `db_apply` in the run manifest.
//!
//! ```no_run
//! use fact_apply::{apply_run, ApplyOptions};
//! use sync_state::{latest_run, DataDir};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = DataDir::local("data/dst");
//! let run = latest_run(&data)?.ok_or("no run yet")?;
//! let mut client = fact_apply::postgres::Client::connect(
//!     "postgres://postgres@127.0.0.1:5432/test",
//!     fact_apply::postgres::NoTls,
//! )?;
//! let report = apply_run(&mut client, &data, &run, &ApplyOptions::default())?;
//! println!("{}: {} of {} tables applied", report.status, report.summary.tables_applied,
//!          report.summary.tables_total);
//! # Ok(())
//! # }
//! ```
//!
//! # What one table's apply does
//!
//! 1. Skip it (`missing_fact_table`) when `<schema>.<table id lower-cased>`
//!    does not exist, unless [`ApplyOptions::create_missing`].
//! 2. Strict (default): fail it untouched (`missing_partition_files`,
//!    `missing_tids`) when a changed period has no partition file.
//! 3. In one transaction: lock the target against other writers
//!    (`SHARE ROW EXCLUSIVE`, readers go on); read its columns and types
//!    from the catalog and build a conversion from the partition columns
//!    — a partition column the target lacks, a `NOT NULL` column without
//!    source or default, or a type that cannot hold the column fails here,
//!    before any write; create a temp table `ON COMMIT DROP`; stream the
//!    changed partitions batch by batch through the conversion into it with a binary
//!    `COPY` (rows whose `indhold` is missing are dropped and counted; a value
//!    that does not fit fails the table naming column, period and value);
//!    `DELETE … WHERE tid = ANY($1)` with the periods bound as an array of the
//!    tid column's own type (`date[]`, `int4range[]`, `text[]`), so its index
//!    is used, pruned periods (`deleted_tids`) included; `INSERT … SELECT`
//!    from the temp table; commit. Any error rolls the whole table back.
//! 4. Row counts (strict: a mismatch fails and rolls back the table): the
//!    rows of each period are counted (grouped, same typed array) just before
//!    the delete — these are the per-period `deleted` figures and must add up
//!    to what the delete removed — and again after the insert, where each
//!    period must hold exactly its partition's rows minus the dropped ones
//!    (and the insert must have stored every copied row). This catches
//!    triggers, rules or policies that drop, keep or move rows.
//!
//! A dry run does all of the reading, planning and converting in a read-only
//! transaction and counts the rows the delete would remove, but writes
//! nothing — not even `db_apply` into the manifest, which keeps the record of
//! what was really applied. With `create_missing`, a missing table is created
//! with the original loader's inferred types (`smallint`/`integer`/`bigint`
//! only for codes that are all canonical integers — `000` stays text — ,
//! `varchar(n)`, `date`/`int4range`/`text` for `tid`, `double precision` for
//! `indhold`), loaded from every partition of the table on disk, and indexed
//! (btree on every column but `indhold`, GiST for `int4range`), all in the
//! same transaction.
//!
//! # Conversions (decided by the target column's type)
//!
//! | target type | from a code | from `INDHOLD` |
//! |---|---|---|
//! | `text`, `varchar(n)`, `char(n)` | as is; longer than `n` is an error, never truncated | shortest decimal text |
//! | `smallint`, `integer`, `bigint` | strict integer (range-checked); `alder` also takes `95-`/`95OV` as 95 | whole numbers only |
//! | `double precision`, `real` | decimal number | as is (`real`: range-checked) |
//! | `numeric(p,s)` | exact decimal; a value that would be rounded is an error | exact decimal of the shortest representation |
//! | `date` | [`tid_to_date`]: `2024`, `2024K3`, `2024M03`, `2024M03D05`, `2024H2` | — |
//! | `int4range` | [`code_to_range`]: `1840:1849`, `16-19`, `95-`, `95OV`, `-19`, `7` | — |
//!
//! Column names go through [`column_name`] (`OMRÅDE` → `omrade`).
//!
//! # Blocking
//!
//! Everything here is synchronous and blocks on the database. The
//! synchronous `postgres` client runs its own runtime: never call into this
//! crate from a tokio worker thread (it panics or stalls the runtime); use a
//! plain thread or `tokio::task::spawn_blocking`.
//!
//! # Crate features
//!
//! None: the crate needs only the `postgres` client (no TLS: connect
//! through a local socket, a tunnel or a proxy that terminates TLS).
#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod catalog;
mod conversion;
mod convert;
mod copy_out;
mod create;
mod delta;
mod error;
mod history;
mod infer;
mod meta;
mod meta_history;
mod narrow;
mod options;
mod rebuild;
mod reconcile;
mod run;
mod swap;
mod table;
mod tally;
mod tx;

pub use convert::{code_to_range, column_name, tid_to_date, IntRange};
pub use error::{error_chain, Error};
pub use meta::{prepare_metadata, Backfill};
pub use options::{ApplyOptions, Metadata, OnSchemaChange, TableWork};
pub use reconcile::{reconcile, reconcile_table, ReconcileOptions};
pub use run::apply_run;
pub use table::apply_table;

/// The `postgres` crate this library is built on (for `Client`, `NoTls`,
/// `Config`), so callers use the same version.
pub use postgres;
/// The `tokio-postgres` crate under `postgres`, for the `Config` of
/// [`ReconcileOptions::read_connection`].
pub use tokio_postgres;
