//! Content digest of a partition, independent of how its rows were batched.

use arrow_array::{Array, Float64Array, Int32Array, RecordBatch, StringArray};
use xxhash_rust::xxh3::Xxh3;

/// Hashes a partition's rows column by column. Each column has its own
/// streaming hasher fed with a canonical encoding of its values (length-
/// prefixed bytes for strings; a null flag and the IEEE bits for numbers), so
/// the digest depends only on the schema and the sequence of rows, never on
/// batch boundaries.
pub(crate) struct ContentHasher {
    names: Vec<String>,
    columns: Vec<Xxh3>,
    rows: u64,
    scratch: Vec<u8>,
}

impl ContentHasher {
    pub(crate) fn new(names: Vec<String>) -> ContentHasher {
        let columns = names.iter().map(|_| Xxh3::new()).collect();
        ContentHasher {
            names,
            columns,
            rows: 0,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (i, col) in batch.columns().iter().enumerate() {
            let Some(hasher) = self.columns.get_mut(i) else {
                continue;
            };
            self.scratch.clear();
            if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                if s.null_count() == 0 {
                    // The common case, straight from the buffers: the same
                    // bytes as below.
                    let offs = s.value_offsets();
                    let data = s.value_data();
                    let first = usize::try_from(offs[0]).unwrap_or(0);
                    let last = usize::try_from(offs[s.len()]).unwrap_or(0);
                    self.scratch
                        .reserve(s.len() * 5 + last.saturating_sub(first));
                    for w in offs.windows(2) {
                        let (a, b) = (
                            usize::try_from(w[0]).unwrap_or(0),
                            usize::try_from(w[1]).unwrap_or(0),
                        );
                        let len = (b - a) as u32;
                        let l = len.to_le_bytes();
                        self.scratch.extend_from_slice(&[1, l[0], l[1], l[2], l[3]]);
                        self.scratch.extend_from_slice(&data[a..b]);
                    }
                } else {
                    for v in s.iter() {
                        match v {
                            Some(v) => {
                                self.scratch.push(1);
                                self.scratch
                                    .extend_from_slice(&(v.len() as u32).to_le_bytes());
                                self.scratch.extend_from_slice(v.as_bytes());
                            }
                            None => self.scratch.push(0),
                        }
                    }
                }
            } else if let Some(n) = col.as_any().downcast_ref::<Int32Array>() {
                for v in n.iter() {
                    match v {
                        Some(v) => {
                            self.scratch.push(1);
                            self.scratch.extend_from_slice(&v.to_le_bytes());
                        }
                        None => self.scratch.push(0),
                    }
                }
            } else if let Some(f) = col.as_any().downcast_ref::<Float64Array>() {
                for v in f.iter() {
                    match v {
                        Some(v) => {
                            self.scratch.push(1);
                            self.scratch.extend_from_slice(&v.to_bits().to_le_bytes());
                        }
                        None => self.scratch.push(0),
                    }
                }
            } else {
                // Not a partition column type: hash its debug form (slow path).
                self.scratch
                    .extend_from_slice(format!("{:?}", col.to_data()).as_bytes());
            }
            hasher.update(&self.scratch);
        }
    }

    /// The digest as 32 hex characters.
    pub(crate) fn finish(&self) -> String {
        let mut h = Xxh3::new();
        h.update(b"statbank-sync partition v1\0");
        for (name, col) in self.names.iter().zip(&self.columns) {
            h.update(&(name.len() as u32).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&col.digest128().to_le_bytes());
        }
        h.update(&self.rows.to_le_bytes());
        format!("{:032x}", h.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(dims: &[&str], vals: &[Option<f64>]) -> RecordBatch {
        let schema = crate::partition_schema(&["A", "INDHOLD"]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(dims.to_vec())),
                Arc::new(Float64Array::from(vals.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn digest_ignores_batch_boundaries_but_not_content() {
        let whole = batch(&["a", "bb", "c"], &[Some(1.0), None, Some(3.5)]);
        let mut h1 = ContentHasher::new(vec!["A".into(), "INDHOLD".into()]);
        h1.update(&whole);
        let mut h2 = ContentHasher::new(vec!["A".into(), "INDHOLD".into()]);
        h2.update(&whole.slice(0, 1));
        h2.update(&whole.slice(1, 2));
        assert_eq!(h1.finish(), h2.finish());
        let mut h3 = ContentHasher::new(vec!["A".into(), "INDHOLD".into()]);
        h3.update(&batch(
            &["a", "bb", "c"],
            &[Some(1.0), Some(0.0), Some(3.5)],
        ));
        assert_ne!(h1.finish(), h3.finish());
        let mut h4 = ContentHasher::new(vec!["A".into(), "INDHOLD".into()]);
        h4.update(&batch(&["ab", "b", "c"], &[Some(1.0), None, Some(3.5)]));
        assert_ne!(h1.finish(), h4.finish());
    }
}
