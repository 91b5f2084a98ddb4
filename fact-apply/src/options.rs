//! How a run is applied, and one table's share of it.

use std::collections::BTreeSet;

use sync_state::{SchemaChange, TableId, TableResult, Tid};

/// What to do when a table's partitions no longer fit its fact table (a
/// schema change upstream, or values a column's type cannot hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnSchemaChange {
    /// Fail the table untouched (`reason: schema_changed` or
    /// `type_changed`) and keep the run pending, so a later apply picks it
    /// up once the table was migrated by hand (default).
    #[default]
    Fail,
    /// Rebuild the fact table from all of its partitions in one
    /// transaction (new columns, surviving types and indexes kept), or
    /// widen the column types that are too narrow, and swap it in.
    Rebuild,
}

/// Whether the apply maintains the `meta` schema (docs/metadata.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Metadata {
    /// Facts only (default).
    #[default]
    Off,
    /// Also write every applied table's titles, variables, value labels and
    /// periods into this schema, in the table's transaction, and keep the
    /// `<schema>_labeled` views.
    Maintain {
        /// The schema (`meta`).
        schema: String,
    },
}

impl Metadata {
    /// The `meta` schema, when maintained.
    pub fn schema(&self) -> Option<&str> {
        match self {
            Metadata::Off => None,
            Metadata::Maintain { schema } => Some(schema),
        }
    }
}

/// How to apply a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Report per table and period what would be deleted and inserted, in a
    /// read-only transaction, changing nothing (not even the manifest).
    pub dry_run: bool,
    /// Create a missing `fact.*` table from its partitions (inferred types,
    /// indexes) and load every partition of it, instead of skipping it.
    pub create_missing: bool,
    /// With `create_missing`: create the table LIST-partitioned on `tid`,
    /// one partition per period, so that later applies swap whole
    /// partitions instead of deleting rows.
    pub partitioned: bool,
    /// Fail a table whose changed periods lack partition files before deleting
    /// anything, and fail (roll back) a table whose inserted rows per period
    /// differ from its partitions. Default on. Off, the original's lenient
    /// behaviour: periods without a file are left as they are in the table
    /// (reported in `missing_tids`) and count differences are only logged.
    pub strict: bool,
    /// What to do when the partitions no longer fit the fact table.
    pub on_schema_change: OnSchemaChange,
    /// Also maintain `fact_history.<table>`: every version of every row with
    /// its validity interval on the source's clock.
    pub history: bool,
    /// The schema of the fact tables (default `fact`).
    pub schema: String,
    /// Whether to maintain the `meta` schema and the labeled views.
    pub metadata: Metadata,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            create_missing: false,
            partitioned: false,
            strict: true,
            on_schema_change: OnSchemaChange::Fail,
            history: false,
            schema: "fact".into(),
            metadata: Metadata::Off,
        }
    }
}

/// One table's share of a run: what to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWork {
    /// The table.
    pub table: TableId,
    /// Periods whose partitions changed (or are new).
    pub changed: Vec<Tid>,
    /// Periods removed at the source.
    pub deleted: Vec<Tid>,
    /// The sync found the table's variables changed.
    pub schema_change: Option<SchemaChange>,
    /// The catalog `updated` of the sync (the end of validity of removed
    /// periods, for history).
    pub catalog_updated: Option<String>,
    /// Periods a later run reports deleted: when an earlier run is applied
    /// late, a changed period of it without a partition is one of these,
    /// and is applied as deleted rather than failing as missing.
    pub removed_later: BTreeSet<Tid>,
    /// A later run swapped the table's whole set for a new schema: changed
    /// periods without a partition are gone with it (applied as deleted).
    pub reshaped_later: bool,
    /// `tid` values of the fact table that no period of the mirror maps to
    /// (as Postgres prints them, `2030-01-01`): deleted too. What a
    /// reconcile's repair removes (`extra_in_db`).
    pub extra_values: Vec<String>,
}

impl TableWork {
    /// Changed and deleted periods of `table`, nothing else known.
    pub fn new(table: TableId, changed: Vec<Tid>, deleted: Vec<Tid>) -> TableWork {
        TableWork {
            table,
            changed,
            deleted,
            schema_change: None,
            catalog_updated: None,
            removed_later: BTreeSet::new(),
            reshaped_later: false,
            extra_values: Vec::new(),
        }
    }

    /// The work a sync result asks for.
    pub fn of(table: &TableId, r: &TableResult) -> TableWork {
        TableWork {
            table: table.clone(),
            changed: r.changed_tids.clone(),
            deleted: r.deleted_tids.clone().unwrap_or_default(),
            schema_change: r.schema_change.clone(),
            catalog_updated: r.catalog_updated.clone(),
            removed_later: BTreeSet::new(),
            reshaped_later: false,
            extra_values: Vec::new(),
        }
    }
}
