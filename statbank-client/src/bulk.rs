//! Streaming parser for BULK bodies: `;`-separated, CRLF or LF, optional BOM,
//! header of upper-cased variable ids plus `INDHOLD`, codes kept as strings,
//! decimal comma (or point for `lang=en`), `..` as a missing value.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

use crate::{Error, Lang};

/// The value column of every BULK header.
pub const VALUE_COLUMN: &str = "INDHOLD";
/// Default rows per emitted batch.
pub const DEFAULT_BATCH_ROWS: usize = 64 * 1024;
/// Longest column name accepted in a header.
pub const MAX_COLUMN_NAME: usize = 128;
/// Most columns accepted in a header.
pub const MAX_COLUMNS: usize = 64;
/// Longest field accepted (a cell or code), in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;

/// A push parser: feed it body chunks as they arrive with
/// [`BulkParser::push`], collect Arrow [`RecordBatch`]es, and call
/// [`BulkParser::finish`] at the end of the body. Memory is bounded by one
/// batch plus one line, whatever the body size.
///
/// ```
/// use statbank_client::{BulkParser, Lang};
/// let mut p = BulkParser::new("FOLK1A", Lang::Da);
/// let mut batches = Vec::new();
/// p.push(b"OMR\xc3\x85DE;TID;INDHOLD\r\n000;2024K1;5961249\r\n084;20", &mut batches).unwrap();
/// p.push(b"24K1;37,7\r\n", &mut batches).unwrap();
/// let summary = p.finish(&mut batches).unwrap();
/// assert_eq!(summary.rows, 2);
/// assert_eq!(batches[0].schema().field(0).name(), "OMRÅDE");
/// ```
pub struct BulkParser {
    table: String,
    decimal: u8,
    reader: Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    header: Option<Header>,
    batch_rows: usize,
    rows_in_batch: usize,
    rows: u64,
    bytes: u64,
    line: u64,
    bom_checked: bool,
    bom_buf: Vec<u8>,
    last_byte: Option<u8>,
    max_rows: Option<u64>,
}

struct Header {
    schema: SchemaRef,
    value_idx: usize,
    dims: Vec<StringBuilder>,
    values: Float64Builder,
}

/// What a finished parse saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSummary {
    /// Data rows parsed.
    pub rows: u64,
    /// Body bytes parsed.
    pub bytes: u64,
    /// The header's schema.
    pub schema: SchemaRef,
}

impl BulkParser {
    /// A parser for `table`'s body in language `lang`.
    pub fn new(table: &str, lang: Lang) -> BulkParser {
        BulkParser {
            table: table.to_string(),
            decimal: lang.decimal_separator(),
            reader: ReaderBuilder::new().delimiter(b';').build(),
            out: vec![0; 1024],
            ends: vec![0; 16],
            out_len: 0,
            ends_len: 0,
            header: None,
            batch_rows: DEFAULT_BATCH_ROWS,
            rows_in_batch: 0,
            rows: 0,
            bytes: 0,
            line: 0,
            bom_checked: false,
            bom_buf: Vec::new(),
            last_byte: None,
            max_rows: None,
        }
    }

    /// Rows per emitted batch (default 65,536).
    pub fn with_batch_rows(mut self, rows: usize) -> BulkParser {
        self.batch_rows = rows.max(1);
        self
    }

    /// Fail once more than `rows` data rows arrive.
    pub fn with_max_rows(mut self, rows: u64) -> BulkParser {
        self.max_rows = Some(rows);
        self
    }

    /// The schema, once the header was read.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.header.as_ref().map(|h| h.schema.clone())
    }

    /// Data rows parsed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Bulk {
            table: self.table.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    /// Parses a chunk; complete batches are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.bytes += chunk.len() as u64;
        self.last_byte = chunk.last().copied();
        if !self.bom_checked {
            // The BOM may be split across chunks: collect up to 3 bytes.
            self.bom_buf.extend_from_slice(chunk);
            if self.bom_buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.bom_buf) {
                return Ok(());
            }
            self.bom_checked = true;
            let buf = std::mem::take(&mut self.bom_buf);
            let start = if buf.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            return self.parse(&buf[start..], out);
        }
        self.parse(chunk, out)
    }

    fn parse(&mut self, mut input: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        loop {
            let (res, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            // csv-core keeps the record's position across calls: `ends` are
            // offsets from the start of the record's output.
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => return Ok(()),
                ReadRecordResult::OutputFull => {
                    if self.out.len() >= MAX_FIELD_BYTES * MAX_COLUMNS {
                        self.line += 1;
                        return Err(self.err("line too long"));
                    }
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() > MAX_COLUMNS {
                        self.line += 1;
                        return Err(self.err(format!("more than {MAX_COLUMNS} fields")));
                    }
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => {
                    self.line += 1;
                    self.record(out)?;
                    self.out_len = 0;
                    self.ends_len = 0;
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn record(&mut self, out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        let text = std::str::from_utf8(&self.out[..self.out_len])
            .map_err(|e| self.err(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let ends = &self.ends[..self.ends_len];
        // The record is valid UTF-8 as a whole, but a separator may have
        // split a character (bytes `C2 ; 80`): each field must be valid.
        if let Some(&bad) = ends.iter().find(|&&e| !text.is_char_boundary(e)) {
            return Err(self.err(format!(
                "invalid UTF-8 at byte {bad} (a field ends inside a character)"
            )));
        }
        let Some(header) = self.header.as_mut() else {
            let h = Self::header(&self.table, self.line, text, ends)?;
            self.header = Some(h);
            return Ok(());
        };
        let ncols = header.dims.len() + 1;
        if ends.len() != ncols {
            let (got, line) = (ends.len(), self.line);
            return Err(Error::Bulk {
                table: self.table.clone(),
                line,
                message: format!("expected {ncols} fields, found {got}"),
            });
        }
        let mut start = 0;
        let mut dim = 0;
        for (i, &end) in ends.iter().enumerate() {
            let field = &text[start..end];
            if i == header.value_idx {
                match parse_value(field, self.decimal) {
                    Ok(v) => header.values.append_option(v),
                    Err(()) => {
                        let line = self.line;
                        return Err(Error::Bulk {
                            table: self.table.clone(),
                            line,
                            message: format!("bad number {:?} in {VALUE_COLUMN}", shorten(field)),
                        });
                    }
                }
            } else {
                if field.len() > MAX_FIELD_BYTES {
                    let line = self.line;
                    return Err(Error::Bulk {
                        table: self.table.clone(),
                        line,
                        message: format!("field longer than {MAX_FIELD_BYTES} bytes"),
                    });
                }
                header.dims[dim].append_value(field);
                dim += 1;
            }
            start = end;
        }
        self.rows += 1;
        self.rows_in_batch += 1;
        if let Some(max) = self.max_rows {
            if self.rows > max {
                return Err(self.err(format!("more than {max} rows (limit max_rows)")));
            }
        }
        if self.rows_in_batch >= self.batch_rows {
            out.push(self.flush_batch()?);
        }
        Ok(())
    }

    fn header(table: &str, line: u64, text: &str, ends: &[usize]) -> Result<Header, Error> {
        let bad = |message: String| Error::Bulk {
            table: table.to_string(),
            line,
            message,
        };
        let mut names = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in ends {
            names.push(&text[start..end]);
            start = end;
        }
        if names.len() < 2 {
            return Err(bad(format!(
                "header has {} columns, expected variables and {VALUE_COLUMN}",
                names.len()
            )));
        }
        if names.last() != Some(&VALUE_COLUMN) {
            return Err(bad(format!("header does not end with {VALUE_COLUMN}")));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if n.is_empty() || n.len() > MAX_COLUMN_NAME || n.chars().any(char::is_control) {
                return Err(bad(format!("bad column name {:?}", shorten(n))));
            }
            if !seen.insert(*n) {
                return Err(bad(format!("duplicate column {:?}", shorten(n))));
            }
        }
        let value_idx = names.len() - 1;
        let fields: Vec<Field> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if i == value_idx {
                    Field::new(*n, DataType::Float64, true)
                } else {
                    Field::new(*n, DataType::Utf8, false)
                }
            })
            .collect();
        Ok(Header {
            schema: Arc::new(Schema::new(fields)),
            value_idx,
            dims: (0..value_idx).map(|_| StringBuilder::new()).collect(),
            values: Float64Builder::new(),
        })
    }

    fn flush_batch(&mut self) -> Result<RecordBatch, Error> {
        self.rows_in_batch = 0;
        let (table, line) = (self.table.clone(), self.line);
        let Some(h) = self.header.as_mut() else {
            return Err(Error::Bulk {
                table,
                line,
                message: "no header".into(),
            });
        };
        let n = h.dims.len();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(n + 1);
        let mut dims = h.dims.iter_mut();
        for i in 0..=n {
            if i == h.value_idx {
                cols.push(Arc::new(h.values.finish()));
            } else if let Some(d) = dims.next() {
                cols.push(Arc::new(d.finish()));
            }
        }
        RecordBatch::try_new(h.schema.clone(), cols).map_err(|e| Error::Bulk {
            table,
            line,
            message: e.to_string(),
        })
    }

    /// Ends the body: emits the last batch and checks that the body was
    /// complete (a header, and a line terminator after the last line).
    pub fn finish(mut self, out: &mut Vec<RecordBatch>) -> Result<BulkSummary, Error> {
        if !self.bom_checked && !self.bom_buf.is_empty() {
            self.bom_checked = true;
            let buf = std::mem::take(&mut self.bom_buf);
            let start = if buf.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            self.parse(&buf[start..], out)?;
        }
        if !matches!(self.last_byte, Some(b'\n')) {
            return Err(Error::Truncated {
                table: self.table.clone(),
                bytes: self.bytes,
                rows: self.rows,
            });
        }
        // Flush csv-core's state (there is no partial record after a newline).
        self.parse(&[], out)?;
        let Some(schema) = self.schema() else {
            return Err(self.err("empty response: no header"));
        };
        if self.rows_in_batch > 0 {
            out.push(self.flush_batch()?);
        }
        Ok(BulkSummary {
            rows: self.rows,
            bytes: self.bytes,
            schema,
        })
    }
}

fn shorten(s: &str) -> String {
    sync_state::shorten(s, 40)
}

/// Parses an `INDHOLD` cell: `..` (or empty) is missing; otherwise an
/// optional sign, digits and at most one decimal separator `decimal`.
fn parse_value(field: &str, decimal: u8) -> Result<Option<f64>, ()> {
    let b = field.as_bytes();
    if b == b".." || b.is_empty() {
        return Ok(None);
    }
    let mut buf = [0u8; 64];
    if b.len() > buf.len() {
        return Err(());
    }
    let mut seen_sep = false;
    let mut digits = 0;
    for (i, &c) in b.iter().enumerate() {
        buf[i] = match c {
            b'0'..=b'9' => {
                digits += 1;
                c
            }
            b'-' | b'+' if i == 0 => c,
            c if c == decimal && !seen_sep => {
                seen_sep = true;
                b'.'
            }
            _ => return Err(()),
        };
    }
    if digits == 0 {
        return Err(());
    }
    let s = std::str::from_utf8(&buf[..b.len()]).map_err(|_| ())?;
    s.parse::<f64>().map(Some).map_err(|_| ())
}

/// Writes rows as a BULK body (header, `;`, CRLF, decimal separator of
/// `lang`, `..` for missing). The inverse of [`BulkParser`], used by tests and
/// tools.
pub fn write_bulk(columns: &[&str], rows: &[(Vec<String>, Option<f64>)], lang: Lang) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(columns.join(";").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (dims, v) in rows {
        for d in dims {
            out.extend_from_slice(d.as_bytes());
            out.push(b';');
        }
        match v {
            Some(v) => {
                let s = format!("{v}");
                let s = if lang == Lang::Da {
                    s.replace('.', ",")
                } else {
                    s
                };
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(b".."),
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {

    /// Found by fuzzing: `C2 ; 80` is valid UTF-8 once the separator is
    /// removed, but each field alone is not. Must be an error, not a panic.
    #[test]
    fn separator_inside_a_character_is_an_error() {
        for body in [&b"\xC2;\x80\n"[..], &b"A;INDHOLD\n\xC2;\x801\n"[..]] {
            let mut p = BulkParser::new("T", Lang::Da);
            let mut out = Vec::new();
            let r = p
                .push(body, &mut out)
                .and_then(|()| p.finish(&mut out).map(|_| ()));
            let err = r.expect_err("invalid field");
            assert!(err.to_string().contains("invalid UTF-8"), "{err}");
            assert!(err.to_string().contains("line"), "{err}");
        }
    }
    use super::*;
    use arrow_array::{Array, Float64Array, StringArray};
    use proptest::prelude::*;

    fn parse_all(
        table: &str,
        body: &[u8],
        lang: Lang,
        chunk: usize,
    ) -> Result<Vec<RecordBatch>, Error> {
        let mut p = BulkParser::new(table, lang).with_batch_rows(3);
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            p.push(c, &mut out)?;
        }
        p.finish(&mut out)?;
        Ok(out)
    }

    fn rows_of(batches: &[RecordBatch]) -> Vec<(Vec<String>, Option<f64>)> {
        let mut rows = Vec::new();
        for b in batches {
            let n = b.num_columns();
            for r in 0..b.num_rows() {
                let dims = (0..n - 1)
                    .map(|c| {
                        b.column(c)
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .expect("string")
                            .value(r)
                            .to_string()
                    })
                    .collect();
                let v = b
                    .column(n - 1)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("f64");
                rows.push((dims, (!v.is_null(r)).then(|| v.value(r))));
            }
        }
        rows
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Cuts a recorded head (first N characters of a real body) back to its
    /// last complete line.
    fn complete_lines(mut b: Vec<u8>) -> Vec<u8> {
        while b.last().is_some_and(|c| *c != b'\n') {
            b.pop();
        }
        b
    }

    #[test]
    fn real_folk1a_head_parses() {
        let body = complete_lines(fixture("bulk_FOLK1A_da_head.csv"));
        let batches = parse_all("FOLK1A", &body, Lang::Da, 7).expect("parses");
        let names: Vec<String> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["OMRÅDE", "KØN", "ALDER", "CIVILSTAND", "TID", "INDHOLD"]
        );
        let rows = rows_of(&batches);
        assert_eq!(
            rows[0].0,
            ["Hele landet", "Mænd", "Alder i alt", "I alt", "2020K1"]
        );
        assert_eq!(rows[0].1, Some(2896918.0));
        assert_eq!(rows[2].1, Some(5822763.0));
    }

    #[test]
    fn real_metrox1_head_parses_with_decimal_comma_and_lf() {
        let body = complete_lines(fixture("bulk_METROX1_da_head.csv"));
        let rows = rows_of(&parse_all("METROX1", &body, Lang::Da, 5).expect("parses"));
        assert_eq!(
            rows[0],
            (vec!["Sæsonkorrigeret".into(), "2020U01".into()], Some(37.7))
        );
        assert_eq!(rows[1].1, Some(105.0));
        assert_eq!(rows.len(), 6);
    }

    #[test]
    fn codes_stay_strings_bom_and_missing_values() {
        let body = b"\xEF\xBB\xBFOMR\xC3\x85DE;TID;INDHOLD\r\n000;2024K1;..\r\n084;2024K1;-1,5\r\n";
        for chunk in [1, 2, 3, 100] {
            let rows = rows_of(&parse_all("T", body, Lang::Da, chunk).expect("parses"));
            assert_eq!(rows[0], (vec!["000".into(), "2024K1".into()], None));
            assert_eq!(rows[1], (vec!["084".into(), "2024K1".into()], Some(-1.5)));
        }
        let en = b"A;INDHOLD\r\nx;1.25\r\n";
        assert_eq!(
            rows_of(&parse_all("T", en, Lang::En, 4).expect("en"))[0].1,
            Some(1.25)
        );
    }

    #[test]
    fn malformed_lines_name_table_and_line() {
        let cases: [(&[u8], &str); 5] = [
            (b"A;INDHOLD\r\nx;1\r\ny;2;3\r\n", "line 3"),
            (b"A;INDHOLD\r\nx;1\r\ny;1.5\r\n", "line 3"),
            (b"A;INDHOLD\r\nx;abc\r\n", "line 2"),
            (b"A;INDHOLD\r\n\xFF;1\r\n", "line 2"),
            (b"A;B\r\nx;1\r\n", "line 1"),
        ];
        for (body, line) in cases {
            let err = parse_all("FOLK1A", body, Lang::Da, 3).expect_err("malformed");
            let msg = err.to_string();
            assert!(msg.contains("FOLK1A") && msg.contains(line), "{msg}");
        }
    }

    #[test]
    fn truncated_body_is_an_error() {
        let err = parse_all("FOLK1A", b"A;INDHOLD\r\nx;1\r\ny;2", Lang::Da, 4).expect_err("cut");
        assert!(matches!(err, Error::Truncated { rows: 1, .. }), "{err}");
        let err = parse_all("FOLK1A", b"", Lang::Da, 4).expect_err("empty");
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // a header alone is a valid empty result
        assert!(parse_all("FOLK1A", b"A;INDHOLD\r\n", Lang::Da, 4)
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn long_fields_grow_the_buffers() {
        let long = "x".repeat(3000);
        let body = format!("A;B;INDHOLD\r\n{long};{long};1\r\ny;z;2\r\n");
        for chunk in [1, 7, 1000, 10_000] {
            let rows = rows_of(&parse_all("T", body.as_bytes(), Lang::Da, chunk).expect("parses"));
            assert_eq!(rows[0], (vec![long.clone(), long.clone()], Some(1.0)));
            assert_eq!(rows[1], (vec!["y".into(), "z".into()], Some(2.0)));
        }
    }

    #[test]
    fn row_limit() {
        let mut p = BulkParser::new("T", Lang::Da).with_max_rows(1);
        let mut out = Vec::new();
        assert!(p.push(b"A;INDHOLD\r\nx;1\r\ny;2\r\n", &mut out).is_err());
    }

    fn arb_code() -> impl Strategy<Value = String> {
        "[0-9A-Za-zæøåÆØÅ /:_.-]{1,12}".prop_filter("no bare quote", |s| !s.starts_with('"'))
    }

    proptest! {
        #[test]
        fn any_rows_survive_write_then_parse(
            rows in proptest::collection::vec((proptest::collection::vec(arb_code(), 3), proptest::option::of(-1e9f64..1e9)), 0..60),
            chunk in 1usize..64,
            en: bool,
        ) {
            let lang = if en { Lang::En } else { Lang::Da };
            let body = write_bulk(&["OMRÅDE", "KØN", "TID", "INDHOLD"], &rows, lang);
            let parsed = rows_of(&parse_all("T", &body, lang, chunk).expect("round trip"));
            prop_assert_eq!(parsed, rows);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50) {
            let _ = parse_all("T", &body, Lang::Da, chunk);
        }

        #[test]
        fn arbitrary_lines_never_panic(body in "(A;INDHOLD\r\n)?[0-9a-z;.,\"\r\n-]{0,200}", chunk in 1usize..50) {
            let _ = parse_all("T", body.as_bytes(), Lang::Da, chunk);
        }
    }
}
