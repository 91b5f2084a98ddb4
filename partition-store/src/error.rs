use std::path::PathBuf;

use sync_state::{TableId, Tid};

/// Everything that can go wrong in `partition-store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A storage operation (local folder or object store) failed.
    #[error(transparent)]
    Storage(#[from] sync_state::Error),
    /// Writing or reading Parquet failed.
    #[error("parquet error on {path}")]
    Parquet {
        /// The partition or temp file (a path, or an object's URL).
        path: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// An Arrow operation failed.
    #[error("arrow error on {path}")]
    Arrow {
        /// The file being written or read (a path, or an object's URL).
        path: String,
        /// The underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A partition that should exist does not.
    #[error("partition {tid} of table {table} not found at {path}")]
    MissingPartition {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// Where it was expected (a path, or an object's URL).
        path: String,
    },
    /// An export whose batches do not share one schema.
    #[error("cannot export {path}: the periods do not share one schema")]
    MixedExport {
        /// The file being written.
        path: String,
    },
    /// The table's Iceberg metadata cannot be written or read.
    #[error("iceberg metadata of table {table}: {message}")]
    Iceberg {
        /// The table.
        table: TableId,
        /// What is wrong.
        message: String,
    },
    /// A stored record of the publish path (an intent) that cannot be used.
    #[error("table {table}: {message}")]
    Intent {
        /// The table.
        table: TableId,
        /// What is wrong.
        message: String,
    },
    /// The batches given to a writer do not have the partition shape.
    #[error("table {table}: {message}")]
    Schema {
        /// The table.
        table: TableId,
        /// What is wrong.
        message: String,
    },
    /// A period code in the data cannot be stored.
    #[error("table {table}: bad period code in the data")]
    BadTid {
        /// The table.
        table: TableId,
        /// Why.
        #[source]
        source: sync_state::Error,
    },
    /// The response contained a period that was not requested.
    #[error("table {table}: response contains period {tid:?} which was not requested")]
    UnexpectedTid {
        /// The table.
        table: TableId,
        /// The period code.
        tid: String,
    },
    /// A period has more rows than the configured limit.
    #[error("table {table}: period {tid} has more than {limit} rows (limit rows_per_period)")]
    TooManyRows {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The limit.
        limit: u64,
    },
    /// A catalog `updated` value that is not an instant, given as the end
    /// of a vintage's validity.
    #[error("table {table}: updated {value:?} is not an instant (YYYY-MM-DDTHH:MM:SS on StatBank's clock): no vintage can be named after it")]
    BadStamp {
        /// The table.
        table: TableId,
        /// The value (shortened).
        value: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn parquet(path: impl Shown, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            path: path.shown(),
            source,
        }
    }
    pub(crate) fn arrow(path: impl Shown, source: arrow_schema::ArrowError) -> Error {
        Error::Arrow {
            path: path.shown(),
            source,
        }
    }
}

/// A file path or an object's URL, as shown in an error.
pub(crate) trait Shown {
    fn shown(self) -> String;
}

impl Shown for &std::path::Path {
    fn shown(self) -> String {
        self.display().to_string()
    }
}

impl Shown for &PathBuf {
    fn shown(self) -> String {
        self.display().to_string()
    }
}

impl Shown for &str {
    fn shown(self) -> String {
        self.to_string()
    }
}

impl Shown for &String {
    fn shown(self) -> String {
        self.clone()
    }
}
