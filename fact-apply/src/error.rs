use sync_state::{RunId, TableId, Tid};

/// Everything that can go wrong while applying a run.
///
/// [`apply_run`](crate::apply_run) returns an error only when the run as a
/// whole cannot proceed (the manifest cannot be read or written); a failing
/// table is rolled back and reported in its
/// [`ApplyTableResult`](sync_state::ApplyTableResult) with the error chain of
/// one of these variants, and the other tables go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The run manifest could not be read.
    #[error("cannot read run manifest of run {run}")]
    Manifest {
        /// The run.
        run: RunId,
        /// The underlying error (names the file).
        #[source]
        source: Box<sync_state::Error>,
    },
    /// The `db_apply` report could not be written into the manifest.
    #[error("cannot write db_apply into the run manifest of run {run}")]
    SaveManifest {
        /// The run.
        run: RunId,
        /// The underlying error (names the file).
        #[source]
        source: Box<sync_state::Error>,
    },
    /// The reconcile report could not be written.
    #[error("cannot write reconcile report {id}")]
    SaveReconcile {
        /// The reconcile.
        id: RunId,
        /// The underlying error (names the file).
        #[source]
        source: Box<sync_state::Error>,
    },
    /// The tables of the mirror could not be listed.
    #[error("cannot list the tables of the mirror")]
    ListTables {
        /// The underlying error.
        #[source]
        source: Box<partition_store::Error>,
    },
    /// A database statement failed.
    #[error("table {table}: {step} failed")]
    Db {
        /// The table being applied.
        table: TableId,
        /// What was being done (`delete of changed periods`, ...).
        step: &'static str,
        /// The database error.
        #[source]
        source: postgres::Error,
    },
    /// A statement on the `meta` schema itself failed.
    #[error("meta schema {schema}: {step} failed")]
    MetaSchema {
        /// The schema (`meta`).
        schema: String,
        /// What was being done.
        step: &'static str,
        /// The database error.
        #[source]
        source: postgres::Error,
    },
    /// A table's metadata could not be written (its facts are not blocked).
    #[error("table {table}: metadata ({lang}) not applied: {reason}")]
    Metadata {
        /// The table.
        table: TableId,
        /// The language of the tableinfo (`da`).
        lang: &'static str,
        /// Why.
        reason: String,
    },
    /// The rows that reached the target do not match the partition.
    #[error("table {table}, period {tid}: row-count check failed: the target holds {actual} rows of the period after the insert, expected {expected} (partition rows minus rows without indhold)")]
    RowCount {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// Rows expected.
        expected: u64,
        /// Rows of the period in the target after the insert.
        actual: u64,
    },
    /// The insert stored another number of rows than was copied.
    #[error("table {table}: row-count check failed: the insert stored {inserted} rows but {sent} were copied")]
    InsertCount {
        /// The table.
        table: TableId,
        /// Rows copied into the temp table.
        sent: u64,
        /// Rows the insert reported.
        inserted: u64,
    },
    /// The delete removed another number of rows than were counted just before.
    #[error("table {table}: row-count check failed: the delete removed {deleted} rows but {counted} rows of the periods were counted just before")]
    DeleteCount {
        /// The table.
        table: TableId,
        /// Rows counted before the delete.
        counted: u64,
        /// Rows the delete reported.
        deleted: u64,
    },
    /// COPY reported another row count than was sent.
    #[error("table {table}: copy stored {copied} rows but {sent} were sent")]
    CopyCount {
        /// The table.
        table: TableId,
        /// Rows sent.
        sent: u64,
        /// Rows the server reported.
        copied: u64,
    },
    /// The reconcile's read of a fact table failed (the connection, or a
    /// malformed COPY stream).
    #[error("table {table}: reading the fact table failed")]
    CopyOut {
        /// The table.
        table: TableId,
        /// What went wrong (the connection, or a malformed COPY stream).
        #[source]
        source: std::io::Error,
    },
    /// The reconcile's row-level diff could not spill its hashes to a
    /// temporary file.
    #[error(
        "table {table}, period {tid}: cannot spill the row-level diff's hashes to a temporary file"
    )]
    Spill {
        /// The table.
        table: TableId,
        /// The period being compared.
        tid: Tid,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to apply for a table (no period with a partition, none deleted).
    #[error("table {table}: no periods to apply")]
    NoPeriods {
        /// The table.
        table: TableId,
    },
    /// A name that cannot be used as a schema.
    #[error("invalid schema name {schema:?}: {reason}")]
    InvalidSchema {
        /// The name.
        schema: String,
        /// Which limit it breaks.
        reason: String,
    },
    // How the partitions and the target table do not fit together; found
    // while the conversion is built, before anything is written.
    /// A partition column has no column of that name in the target table.
    #[error("schema mismatch in table {table}: partition column {column} (as {target_column}) of period {tid} has no column in {target}")]
    MissingTargetColumn {
        /// The table.
        table: TableId,
        /// The partition column as in the file (`OMRÅDE`).
        column: String,
        /// The name it maps to (`omrade`).
        target_column: String,
        /// The period whose partition has it.
        tid: Tid,
        /// The qualified target table.
        target: String,
    },
    /// A `NOT NULL` target column without default that no partition column fills.
    #[error("schema mismatch in table {table}: column {column} of {target} is not null but the partitions have no such column")]
    MissingSourceColumn {
        /// The table.
        table: TableId,
        /// The target column.
        column: String,
        /// The qualified target table.
        target: String,
    },
    /// A partition lacks a column that other partitions (and the conversion) have.
    #[error("schema mismatch in table {table}: partition of period {tid} has no column {column}")]
    PartitionColumnMissing {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The normalised column name.
        column: String,
    },
    /// Two partition columns map to the same Postgres name.
    #[error("schema mismatch in table {table}: partition columns {first} and {second} both map to column {column}")]
    DuplicateColumn {
        /// The table.
        table: TableId,
        /// First header.
        first: String,
        /// Second header.
        second: String,
        /// The shared normalised name.
        column: String,
    },
    /// The partitions have no `TID` column.
    #[error("schema mismatch in table {table}: partition of period {tid} has no TID column")]
    NoTidColumn {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
    },
    /// A target column type this crate cannot write.
    #[error("table {table}: column {column} has type {pg_type}, which the apply does not support")]
    UnsupportedType {
        /// The table.
        table: TableId,
        /// The target column.
        column: String,
        /// Its type as `format_type` prints it.
        pg_type: String,
    },
    /// A partition column whose Arrow type cannot be converted to the target type.
    #[error("table {table}: partition column {column} of period {tid} is {arrow_type}, which cannot be loaded into {pg_type}")]
    IncompatibleColumn {
        /// The table.
        table: TableId,
        /// The partition column.
        column: String,
        /// The period.
        tid: Tid,
        /// The Arrow type in the file.
        arrow_type: String,
        /// The target type.
        pg_type: String,
    },
    /// Two periods that normalise to the same `tid` value.
    #[error("table {table}: periods {first} and {second} both map to {value} in column tid")]
    PeriodCollision {
        /// The table.
        table: TableId,
        /// First period.
        first: Tid,
        /// Second period.
        second: Tid,
        /// The shared value.
        value: String,
    },
    /// A partition column that cannot be a fact table column (too long,
    /// reserved, or the same column as another).
    #[error("table {table}: unusable columns")]
    Columns {
        /// The table.
        table: TableId,
        /// Which column and which limit.
        #[source]
        source: Box<sync_state::Error>,
    },
    /// Both names a period's partition may get belong to other relations.
    #[error("table {table}: period {tid}: relation {name} and every other name its partition or staging table may get belong to other relations")]
    NameTaken {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The name wanted.
        name: String,
    },
    // A partition that cannot be read or holds what it should not.
    /// Checking for a partition file failed (permissions, i/o).
    #[error("table {table}: cannot check partition file {path} of period {tid}")]
    Check {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The expected file (a path, or an object's URL).
        path: String,
        /// The storage error.
        #[source]
        source: Box<partition_store::Error>,
    },
    /// A partition could not be listed, opened or read.
    #[error("table {table}: cannot read partition of period {tid} at {path}")]
    Read {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The partition file (a path, or an object's URL).
        path: String,
        /// The storage error.
        #[source]
        source: Box<partition_store::Error>,
    },
    /// Listing the partitions of a table failed.
    #[error("table {table}: cannot list partitions")]
    List {
        /// The table.
        table: TableId,
        /// The storage error.
        #[source]
        source: Box<partition_store::Error>,
    },
    /// A row whose `TID` is not the period of the partition it is stored in.
    #[error("table {table}: partition of period {tid} holds a row of period {found:?}")]
    ForeignRow {
        /// The table.
        table: TableId,
        /// The partition's period.
        tid: Tid,
        /// The row's `TID` (shortened).
        found: String,
    },
    /// Reading a partition gave another number of rows than its footer says.
    #[error("table {table}, period {tid}: read {read} rows from the partition but its footer says {footer}")]
    PartitionRows {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// Rows in the footer.
        footer: u64,
        /// Rows read.
        read: u64,
    },
    /// A value that does not fit its target column.
    #[error(
        "table {table}, period {tid}, column {column}: value {value:?} cannot be stored as {reason}"
    )]
    Value {
        /// The table.
        table: TableId,
        /// The period.
        tid: Tid,
        /// The target column.
        column: String,
        /// The value (shortened).
        value: String,
        /// The target type and why the value does not fit it
        /// (`integer: not an integer`).
        reason: String,
    },
}

impl Error {
    pub(crate) fn db<'t>(
        table: &'t TableId,
        step: &'static str,
    ) -> impl FnOnce(postgres::Error) -> Error + 't {
        move |source| Error::Db {
            table: table.clone(),
            step,
            source,
        }
    }

    /// Maps a database error of the `meta` schema's own statements.
    pub(crate) fn meta_schema<'s>(
        schema: &'s str,
        step: &'static str,
    ) -> impl FnOnce(postgres::Error) -> Error + 's {
        move |source| Error::MetaSchema {
            schema: schema.to_owned(),
            step,
            source,
        }
    }
}

pub use sync_state::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_stays_small_for_callers_that_wrap_it() {
        // Callers (the binaries' error) box it; keep it from growing
        // without bound all the same.
        assert!(
            std::mem::size_of::<Error>() < 128,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn chains_skip_repeated_sources() {
        let inner = partition_store::Error::Io {
            path: "/x".into(),
            source: std::io::Error::other("disk full"),
        };
        let e = Error::Check {
            table: TableId::new("T").expect("id"),
            tid: Tid::new("2024K1").expect("tid"),
            path: "/x/2024K1.parquet".into(),
            source: Box::new(inner),
        };
        assert_eq!(
            error_chain(&e),
            "table T: cannot check partition file /x/2024K1.parquet of period 2024K1: i/o error on /x: disk full"
        );
    }
}
