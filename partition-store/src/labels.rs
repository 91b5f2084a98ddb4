//! The labels of a table's codes as one Parquet file beside its tableinfo
//! (`metadata/labels/<TABLE_ID>.parquet`): one row per language, variable
//! and value, so that any engine joins them to the table's partitions
//! without a JSON parser. Written with the partitions' writer and content
//! digest: a file whose labels did not change is not rewritten.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use sync_state::tableinfo::{Lang, TableInfo};
use sync_state::TableId;

use crate::file_writer::PartitionFileWriter;
use crate::store::read_footer;
use crate::{Error, PartitionMeta, PartitionStore};

/// The labels file's columns, in order: `table_id`, `variable_id` (as the
/// tableinfo writes it, `Tid` for the time variable), `position` (1, 2, …
/// in StatBank's order), `code` (as the partitions hold it), `lang` (`da`,
/// `en`) and `label`.
pub const LABEL_COLUMNS: [&str; 6] = [
    "table_id",
    "variable_id",
    "position",
    "code",
    "lang",
    "label",
];

/// The Arrow schema of a labels file ([`LABEL_COLUMNS`]; `position` an
/// `Int32`, the others UTF-8, none null).
pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(
        LABEL_COLUMNS
            .iter()
            .map(|c| {
                let ty = if *c == "position" {
                    DataType::Int32
                } else {
                    DataType::Utf8
                };
                Field::new(*c, ty, false)
            })
            .collect::<Vec<_>>(),
    ))
}

/// The labels of `table` from its tableinfo in each language, as one batch.
pub fn labels_batch(table: &TableId, infos: &[(Lang, &TableInfo)]) -> Result<RecordBatch, Error> {
    let mut cols: [Vec<&str>; 5] = Default::default();
    let mut positions: Vec<i32> = Vec::new();
    for (lang, info) in infos {
        for v in &info.variables {
            for (i, value) in v.values.iter().enumerate() {
                cols[0].push(table.as_str());
                cols[1].push(&v.id);
                positions.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
                cols[2].push(&value.id);
                cols[3].push(lang.as_str());
                cols[4].push(&value.text);
            }
        }
    }
    let [t, v, c, l, x] = cols.map(|c| Arc::new(StringArray::from(c)) as ArrayRef);
    let arrays = vec![
        t,
        v,
        Arc::new(Int32Array::from(positions)) as ArrayRef,
        c,
        l,
        x,
    ];
    RecordBatch::try_new(labels_schema(), arrays).map_err(|e| Error::Schema {
        table: table.clone(),
        message: format!("labels: {e}"),
    })
}

impl PartitionStore {
    /// `metadata/labels/<TABLE_ID>.parquet` of `table`.
    pub fn labels_key(&self, table: &TableId) -> String {
        self.data_dir().labels_file_key(table)
    }

    /// Publishes the labels of `table` from its tableinfo in each language
    /// (temp file, then rename or one upload); `Ok(false)` when the file
    /// already held exactly these labels, which is then left as it is.
    pub fn publish_labels(
        &self,
        table: &TableId,
        infos: &[(Lang, &TableInfo)],
    ) -> Result<bool, Error> {
        let batch = labels_batch(table, infos)?;
        let key = self.labels_key(table);
        let scratch = self.storage().scratch_dir(&self.data_dir().labels_key())?;
        let mut w =
            PartitionFileWriter::create(&scratch, &batch.schema(), &PartitionMeta::default())?;
        w.write(&batch)?;
        let staged = w.finish()?;
        let current = read_footer(self.storage(), &key)?.and_then(|f| f.digest);
        if current.as_deref() == Some(staged.digest.as_str()) {
            return Ok(false);
        }
        self.storage().put_file(&key, &staged.temp)?;
        Ok(true)
    }

    /// Removes the labels file of `table` (a table gone from the mirror);
    /// whether there was one.
    pub fn remove_labels(&self, table: &TableId) -> Result<bool, Error> {
        Ok(self.storage().delete(&self.labels_key(table))?)
    }
}
