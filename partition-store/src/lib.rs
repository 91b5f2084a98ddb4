//! `Tid`-partitioned Parquet storage for statbank-sync: one file per table and
//! period at `<root>/<TABLE_ID>/<urlquoted_tid>.parquet`, written atomically
//! and durably (temp file in the same folder, fsync, rename, fsync of the
//! folder), with a content digest in each file's footer so unchanged periods
//! are never rewritten.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Float64Array, RecordBatch, StringArray};
//! use partition_store::{partition_schema, PartitionStore, RequestWriter, WriteLimits};
//! use sync_state::{TableId, Tid};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = PartitionStore::new(dir.path());
//! let table = TableId::new("SCENE01A").unwrap();
//! let schema = partition_schema(&["OMRÅDE", "TID", "INDHOLD"]);
//! let batch = RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(StringArray::from(vec!["000", "000"])),
//!     Arc::new(StringArray::from(vec!["2019/2020", "2020/2021"])),
//!     Arc::new(Float64Array::from(vec![Some(1.5), None])),
//! ]).unwrap();
//! let requested = [Tid::new("2019/2020").unwrap(), Tid::new("2020/2021").unwrap()];
//! let mut w = RequestWriter::new(&store, &table, schema, &requested, WriteLimits::default()).unwrap();
//! w.write(&batch).unwrap();
//! let staged = w.finish().unwrap();          // nothing visible yet
//! let plan = staged.compare();               // digests vs. stored footers
//! let outcome = staged.publish(&plan).unwrap();
//! assert_eq!(outcome.changed.len(), 2);
//! assert!(dir.path().join("SCENE01A/2020%2F2021.parquet").exists());
//! assert_eq!(store.list_tids(&table).unwrap().len(), 2);
//! ```
#![warn(missing_docs)]

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

mod digest;
mod error;
mod file_writer;
mod request;
mod store;

pub use error::Error;
pub use request::{PublishOutcome, RequestWriter, StagedPeriod, StagedRequest, WriteLimits};
pub use store::{PartitionFooter, PartitionInfo, PartitionReader, PartitionStore};

/// Name of the value column in BULK output and partitions.
pub const VALUE_COLUMN: &str = "INDHOLD";
/// Name of the time column in BULK output and partitions.
pub const TIME_COLUMN: &str = "TID";
/// Parquet footer key holding the content digest.
pub const DIGEST_KEY: &str = "statbank_sync.content_digest";
/// Parquet footer key holding the row count written.
pub const ROWS_KEY: &str = "statbank_sync.rows";
/// File extension of partitions.
pub const PARTITION_EXT: &str = "parquet";
/// Prefix of every temp file this crate creates; such files are never
/// partitions and are removed by [`PartitionStore::clean_temp_files`].
pub const TEMP_PREFIX: &str = ".tmp-";
/// The sync control folder under the tables root, never a table.
pub const SYNC_DIR_NAME: &str = "_sync";

/// The Arrow schema of a partition with the given BULK header: every column
/// a non-null UTF-8 string (codes kept as text), except `INDHOLD`, a nullable
/// Float64 (`..` is null).
pub fn partition_schema(columns: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                if *c == VALUE_COLUMN {
                    Field::new(*c, DataType::Float64, true)
                } else {
                    Field::new(*c, DataType::Utf8, false)
                }
            })
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests;
