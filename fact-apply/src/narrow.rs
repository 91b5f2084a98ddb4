//! Narrowing a differing period of the reconcile to the rows that can
//! differ, by value.
//!
//! Besides its hash buckets, each side digests every period once more per
//! value of a narrowing column: the code column with the most values (by
//! the cached tableinfo). A row that only one side has changes the digest
//! of its own value, so the rows that differ all lie where that column
//! holds one of its differing values: `alder IN ('35')`. That is a
//! predicate the server evaluates with the table's indexes, so the
//! row-level diff of one edited row reads a small share of its period
//! instead of all of it again. One column, because each value digest costs
//! every one of the millions of rows a lookup on both sides (the types
//! take several). When a column has too many values to keep (the digests
//! are a fixed budget a table) it does not narrow; when nothing narrows
//! enough, the reconcile reads the differing buckets as before.

use std::collections::HashSet;
use std::ops::Range;

use rustc_hash::FxHashMap;

use crate::reconcile::Digest;

/// Value digests a table keeps at most, over its periods and columns, on
/// each side (about 64 bytes each).
const VALUES_PER_TABLE: usize = 65_536;

/// A column's values a period keeps at least (below that the budget is
/// not split further).
const MIN_VALUES: usize = 64;

/// Differing values of one column that still narrow (each is a literal in
/// the predicate).
pub(crate) const MAX_KEYS: usize = 64;

/// Rows (of both sides) a narrowed diff reads at most; above it the
/// buckets' passes are cheaper to bound.
pub(crate) const NARROW_ROWS: u64 = 65_536;

/// A row's field as sent in a binary COPY: its 4-byte length (`-1`:
/// NULL) and its bytes.
pub(crate) type Key = Vec<u8>;

/// The digests of one period's rows per value of each code column; a
/// column whose values exceed the period's share of the budget is
/// dropped (`None`) and does not narrow.
#[derive(Debug, Clone)]
pub(crate) struct ValueDigests {
    /// Per column: each key's hash → its digest and the key.
    cols: Vec<Option<FxHashMap<u64, (Digest, Key)>>>,
    max: usize,
}

impl ValueDigests {
    /// Empty digests for `cols` columns, in a table of `periods` periods.
    pub(crate) fn new(cols: usize, periods: usize) -> ValueDigests {
        let max = (VALUES_PER_TABLE / (cols.max(1) * periods.max(1))).max(MIN_VALUES);
        ValueDigests {
            cols: (0..cols).map(|_| Some(FxHashMap::default())).collect(),
            max,
        }
    }

    /// Adds a row of hash `h`, whose fields are `fields` (spans in
    /// `spans`), at the positions `cols`.
    pub(crate) fn add(&mut self, cols: &[usize], fields: &[u8], spans: &[Range<usize>], h: u128) {
        for (slot, &c) in self.cols.iter_mut().zip(cols) {
            let Some(map) = slot else { continue };
            let key = spans.get(c).and_then(|s| fields.get(s.clone()));
            let Some(key) = key else { continue };
            let k = xxhash_rust::xxh3::xxh3_64(key);
            if let Some((d, _)) = map.get_mut(&k) {
                d.add(h);
            } else if map.len() >= self.max {
                *slot = None;
            } else {
                let mut d = Digest::default();
                d.add(h);
                map.insert(k, (d, key.to_vec()));
            }
        }
    }
}

/// What narrows a differing period: per code column (its position in
/// the row), the values whose digests differ. A row that only one side
/// has holds one of them in every listed column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Narrowing {
    pub(crate) cols: Vec<(usize, HashSet<Key>)>,
}

impl Narrowing {
    /// The narrowing of a period from both sides' value digests, when one
    /// holds at most [`NARROW_ROWS`] rows of the two sides.
    pub(crate) fn of(
        cols: &[usize],
        mine: &ValueDigests,
        theirs: &ValueDigests,
    ) -> Option<Narrowing> {
        let mut out = Vec::new();
        let mut rows = u64::MAX;
        for ((&c, m), t) in cols.iter().zip(&mine.cols).zip(&theirs.cols) {
            let (Some(m), Some(t)) = (m, t) else { continue };
            let mut keys = HashSet::new();
            let mut held = 0u64;
            let digest = |side: &FxHashMap<u64, (Digest, Key)>, k: &u64| {
                side.get(k).map(|(d, _)| *d).unwrap_or_default()
            };
            for (k, (_, key)) in m.iter().chain(t.iter()) {
                let (a, b) = (digest(m, k), digest(t, k));
                if a != b && keys.insert(key.clone()) {
                    held += a.rows + b.rows;
                }
            }
            if keys.is_empty() || keys.len() > MAX_KEYS {
                continue;
            }
            rows = rows.min(held);
            out.push((c, keys));
        }
        (!out.is_empty() && rows <= NARROW_ROWS).then_some(Narrowing { cols: out })
    }

    /// Whether the row with these fields is one the narrowing holds.
    pub(crate) fn holds(&self, fields: &[u8], spans: &[Range<usize>]) -> bool {
        self.cols.iter().all(|(c, keys)| {
            spans
                .get(*c)
                .and_then(|s| fields.get(s.clone()))
                .is_some_and(|k| keys.contains(k))
        })
    }
}

/// The span of each field (length prefix included) of a row's binary
/// COPY fields, into `out`.
pub(crate) fn field_spans(fields: &[u8], out: &mut Vec<Range<usize>>) {
    out.clear();
    let mut at = 0usize;
    while let Some(head) = fields.get(at..at + 4) {
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let end = at + 4 + usize::try_from(len).unwrap_or(0);
        out.push(at..end.min(fields.len()));
        at = end;
    }
}

/// A key's value (`None`: NULL).
pub(crate) fn key_value(key: &[u8]) -> Option<&[u8]> {
    match key.get(..4) {
        Some(head) if i32::from_be_bytes([head[0], head[1], head[2], head[3]]) >= 0 => key.get(4..),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            match v {
                Some(b) => {
                    out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(0).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    fn digests(rows: &[Vec<u8>], cols: &[usize]) -> ValueDigests {
        let mut d = ValueDigests::new(cols.len(), 1);
        let mut spans = Vec::new();
        for r in rows {
            field_spans(r, &mut spans);
            d.add(cols, r, &spans, crate::reconcile::row_hash(r));
        }
        d
    }

    #[test]
    fn spans_cover_each_field_and_null() {
        let r = row(&[Some(b"101"), None, Some(b"")]);
        let mut spans = Vec::new();
        field_spans(&r, &mut spans);
        assert_eq!(spans, vec![0..7, 7..11, 11..15]);
        assert_eq!(key_value(&r[spans[0].clone()]), Some(&b"101"[..]));
        assert_eq!(key_value(&r[spans[1].clone()]), None);
        assert_eq!(key_value(&r[spans[2].clone()]), Some(&b""[..]));
    }

    #[test]
    fn an_edited_value_narrows_to_its_codes() {
        // Columns: omrade, kon, indhold; narrowing on the first two.
        let mut mirror = Vec::new();
        for o in [b"101", b"147", b"151"] {
            for k in [b"1", b"2"] {
                mirror.push(row(&[Some(o), Some(k), Some(b"7")]));
            }
        }
        let mut db = mirror.clone();
        db[3] = row(&[Some(b"147"), Some(b"2"), Some(b"8")]);
        let cols = [0, 1];
        let n = Narrowing::of(&cols, &digests(&mirror, &cols), &digests(&db, &cols));
        let n = n.expect("one edited row narrows");
        let mut spans = Vec::new();
        let held: Vec<bool> = db
            .iter()
            .map(|r| {
                field_spans(r, &mut spans);
                n.holds(r, &spans)
            })
            .collect();
        assert_eq!(held, vec![false, false, false, true, false, false]);
        field_spans(&mirror[3], &mut spans);
        assert!(n.holds(&mirror[3], &spans), "the mirror's original row too");
    }

    #[test]
    fn equal_sides_do_not_narrow_and_a_column_over_budget_is_dropped() {
        let rows: Vec<Vec<u8>> = (0..200u32)
            .map(|i| row(&[Some(&i.to_be_bytes()), Some(b"x")]))
            .collect();
        let cols = [0, 1];
        let d = digests(&rows, &cols);
        assert!(Narrowing::of(&cols, &d, &d).is_none());
        let mut small = ValueDigests::new(2, VALUES_PER_TABLE);
        let mut spans = Vec::new();
        for r in &rows {
            field_spans(r, &mut spans);
            small.add(&cols, r, &spans, crate::reconcile::row_hash(r));
        }
        assert!(
            small.cols[0].is_none(),
            "200 values exceed a share of {MIN_VALUES}"
        );
        assert!(small.cols[1].is_some());
    }
}
