//! `Tid`-partitioned Parquet storage for statbank-sync: one file per table and
//! period at `statbank_tables/<TABLE_ID>/<urlquoted_tid>.parquet` of a data
//! folder (a local folder or an object-store prefix), each published whole
//! (temp file, fsync, rename; or a completed upload), with a content digest
//! in each file's footer so unchanged periods are never rewritten. The one
//! publish path ([`PartitionStore::commit_set`], vintages, recovery) is
//! described in the `publish` module.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Float64Array, RecordBatch, StringArray};
//! use partition_store::{
//!     partition_schema, PartitionMeta, PartitionStore, PublishOptions, RequestWriter, WriteLimits,
//! };
//! use sync_state::{DataDir, TableId, Tid};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = PartitionStore::new(&DataDir::local(dir.path()));
//! let table = TableId::new("SCENE01A").unwrap();
//! let schema = partition_schema(&["OMRÅDE", "TID", "INDHOLD"]);
//! let batch = RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(StringArray::from(vec!["000", "000"])),
//!     Arc::new(StringArray::from(vec!["2019/2020", "2020/2021"])),
//!     Arc::new(Float64Array::from(vec![Some(1.5), None])),
//! ]).unwrap();
//! let requested = [Tid::new("2019/2020").unwrap(), Tid::new("2020/2021").unwrap()];
//! let set = store.current_set(&table);
//! let mut w = RequestWriter::new(&set, schema, &requested, WriteLimits::default(),
//!                                PartitionMeta::default()).unwrap();
//! w.write(&batch).unwrap();
//! let staged = w.finish().unwrap();          // nothing visible yet
//! let comparison = staged.compare();               // digests vs. stored footers
//! let outcome = staged.publish(&comparison, &PublishOptions::default()).unwrap();
//! assert_eq!(outcome.changed.len(), 2);
//! assert!(dir.path().join("statbank_tables/SCENE01A/2020%2F2021.parquet").exists());
//! assert_eq!(store.list_tids(&table).unwrap().len(), 2);
//! ```
//!
//! # Crate features
//!
//! None of its own: object stores come with `sync-state`'s `s3`, `gcs` and
//! `azure` features.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

mod digest;
mod error;
mod file_writer;
pub mod iceberg;
mod labels;
mod publish;
mod request;
mod source;
mod store;
mod vintage;

pub use error::Error;
pub use iceberg::{IcebergOptions, IcebergOutcome};
pub use labels::{labels_batch, labels_schema, LABEL_COLUMNS};
pub use publish::{PublishOptions, Recovered, SwapOutcome, TableSet};
pub use request::{PublishOutcome, RequestWriter, StagedPeriod, StagedRequest, WriteLimits};
pub use store::{PartitionFooter, PartitionInfo, PartitionReader, PartitionStore, READ_BATCH_ROWS};
pub use vintage::{
    compact_stamp, expand_stamp, export_parquet, AsOfReader, AsOfSource, Vintage, UNKNOWN_FROM,
};

pub use sync_state::{TIME_COLUMN, VALUE_COLUMN};
/// Parquet footer key holding the content digest.
pub const DIGEST_KEY: &str = "statbank_sync.content_digest";
/// Parquet footer key holding the row count written.
pub const ROWS_KEY: &str = "statbank_sync.rows";
/// Parquet footer key holding the table's variable ids (its schema
/// signature) as a JSON array.
pub const VARIABLES_KEY: &str = "statbank_sync.variables";
/// Parquet footer key holding the catalog `updated` of the cycle that
/// published the content (the start of its validity, source clock).
pub const VALID_FROM_KEY: &str = "statbank_sync.valid_from";

/// What goes into every partition's footer besides the content digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMeta {
    /// The table's variable ids in tableinfo order (its schema signature).
    pub variables: Option<Vec<String>>,
    /// The catalog `updated` of the cycle publishing it (the source's
    /// clock). When it was published locally is the `started_at` of the run
    /// manifest that lists the period in `changed_tids`: kept out of the
    /// file, so that the same content always has the same bytes.
    pub valid_from: Option<String>,
}

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
