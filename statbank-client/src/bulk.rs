//! Streaming parser for BULK bodies: `;`-separated, CRLF or LF, optional BOM,
//! header of upper-cased variable ids plus `INDHOLD`, codes kept as strings,
//! decimal comma (or point for `lang=en`), `..` as a missing value.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

use crate::{Error, Lang};

use sync_state::TIME_COLUMN;
pub use sync_state::VALUE_COLUMN;

/// Default rows per emitted batch.
pub const DEFAULT_BATCH_ROWS: usize = 64 * 1024;
/// Default bytes of field text per emitted batch: a batch ends at
/// [`DEFAULT_BATCH_ROWS`] rows or once its fields hold this many bytes,
/// whichever comes first, so wide rows do not make batches large.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;
/// Most distinct periods remembered to tell an interleaved body: beyond
/// it, the body is treated as interleaved.
const MAX_CLOSED_PERIODS: usize = 1 << 20;
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
    batch_bytes: usize,
    bytes_in_batch: usize,
    rows: u64,
    bytes: u64,
    line: u64,
    bom_checked: bool,
    bom_buf: Vec<u8>,
    last_byte: Option<u8>,
    max_rows: Option<u64>,
    /// The start of a line whose end has not arrived yet (fast path).
    pending: Vec<u8>,
    /// Parse every line with csv-core (the general reader) instead of the
    /// fast path for plain lines.
    general: bool,
    /// Field bounds of the current line (fast path).
    bounds: Vec<(usize, usize)>,
    /// csv-core is inside a record that continues on the next line (a
    /// quoted field with a line break): lines go to it until it ends.
    general_open: bool,
    /// Check each code for bytes no code may hold (control characters, a
    /// byte order mark): on for lines outside the one-pass scan, and for a
    /// scanned block whose pre-check found such a byte.
    check_codes: bool,
}

struct Header {
    schema: SchemaRef,
    value_idx: usize,
    dims: Vec<StringBuilder>,
    values: Float64Builder,
    /// The `TID` column among `dims`: a batch ends where its value changes,
    /// so that no batch spans two periods (until the body interleaves).
    tid_dim: Option<usize>,
    /// The `TID` of the rows in the open batch.
    last_tid: Vec<u8>,
    /// Periods whose rows ended (another period's rows followed).
    closed: std::collections::HashSet<Vec<u8>>,
    /// A closed period's rows came back: batches no longer end where the
    /// period changes (rows alternating between periods would otherwise
    /// make a batch of every row).
    interleaved: bool,
}

impl Header {
    /// Whether the row whose fields are `text[bounds]` starts another
    /// period than the open batch's, so the batch must end before it.
    /// Once a period's rows come back after another period's
    /// ([`BulkParser::interleaved`]), never.
    fn period_changes(&mut self, text: &str, bounds: &[(usize, usize)]) -> bool {
        let Some(t) = self.tid_dim.filter(|_| !self.interleaved) else {
            return false;
        };
        let ix = if t >= self.value_idx { t + 1 } else { t };
        let (a, b) = bounds[ix];
        let tid = &text.as_bytes()[a..b];
        if tid == self.last_tid.as_slice() {
            return false;
        }
        let resumed = self.closed.contains(tid);
        let last = std::mem::replace(&mut self.last_tid, tid.to_vec());
        if !last.is_empty() {
            self.closed.insert(last);
        }
        if resumed || self.closed.len() > MAX_CLOSED_PERIODS {
            self.interleaved = true;
            self.closed = Default::default();
            return false;
        }
        true
    }
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
            batch_bytes: DEFAULT_BATCH_BYTES,
            bytes_in_batch: 0,
            rows: 0,
            bytes: 0,
            line: 0,
            bom_checked: false,
            bom_buf: Vec::new(),
            last_byte: None,
            max_rows: None,
            pending: Vec::new(),
            general: false,
            bounds: Vec::with_capacity(16),
            general_open: false,
            check_codes: true,
        }
    }

    /// Parses every line with the general CSV reader (quotes, lone CR),
    /// never the fast path: the reference the fast path is tested against.
    pub fn with_general_reader(mut self) -> BulkParser {
        self.general = true;
        self
    }

    /// Rows per emitted batch (default 65,536).
    pub fn with_batch_rows(mut self, rows: usize) -> BulkParser {
        self.batch_rows = rows.max(1);
        self
    }

    /// Bytes of field text per emitted batch (default 2 MiB).
    pub fn with_batch_bytes(mut self, bytes: usize) -> BulkParser {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Whether the body came back with periods interleaved (a period's
    /// rows resumed after another period's): from then on batches hold
    /// rows of several periods.
    pub fn interleaved(&self) -> bool {
        self.header.as_ref().is_some_and(|h| h.interleaved)
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
            return self.feed(&buf[start..], out);
        }
        self.feed(chunk, out)
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        if self.general {
            self.parse(input, out)
        } else {
            self.fast(input, out)
        }
    }

    /// The fast path: complete lines are split on `\n` and `;` in place
    /// (no copy into a record buffer, no CSV state machine); a line with a
    /// quote, an inner CR or no field at all goes through csv-core, which
    /// then sees exactly what the general reader would. The start of an
    /// unfinished line waits in `pending`.
    fn fast(&mut self, mut input: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        if !self.pending.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', input) else {
                if self.pending.len() + input.len() > MAX_FIELD_BYTES * MAX_COLUMNS {
                    self.line += 1;
                    return Err(self.err("line too long"));
                }
                self.pending.extend_from_slice(input);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(&input[..=nl]);
            let r = self.lines(&line, out);
            line.clear();
            self.pending = line;
            r?;
            input = &input[nl + 1..];
        }
        let complete = match memchr::memrchr(b'\n', input) {
            Some(i) => i + 1,
            None => 0,
        };
        self.lines(&input[..complete], out)?;
        let rest = &input[complete..];
        if rest.len() > MAX_FIELD_BYTES * MAX_COLUMNS {
            self.line += 1;
            return Err(self.err("line too long"));
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// Complete lines (each ending in `\n`). A block that is valid UTF-8
    /// and has no quote is split in one scan for `;`, `\n` and `\r`;
    /// anything else goes line by line.
    fn lines(&mut self, block: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        if block.is_empty() {
            return Ok(());
        }
        match std::str::from_utf8(block) {
            Ok(text) if memchr::memchr(b'"', block).is_none() => {
                self.check_codes = may_hold_bad_code_bytes(block);
                let r = self.scan(text, out);
                self.check_codes = true;
                r
            }
            _ => {
                let mut start = 0;
                while start < block.len() {
                    let end = memchr::memchr(b'\n', &block[start..])
                        .map_or(block.len(), |i| start + i + 1);
                    self.line_fast(&block[start..end], out)?;
                    start = end;
                }
                Ok(())
            }
        }
    }

    /// The fast path proper: one pass over a block of complete, quote-free
    /// lines; fields are slices of `text`, appended straight to the column
    /// builders.
    fn scan(&mut self, text: &str, out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        let block = text.as_bytes();
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        let (mut line_start, mut field_start) = (0usize, 0usize);
        let mut dirty = false; // a CR inside the line
        let mut result = Ok(());
        // A plain byte loop: fields are a few bytes long, so a delimiter
        // every few bytes; memchr's search restarts cost more than they save.
        for (i, &byte) in block.iter().enumerate() {
            match byte {
                b';' => {
                    bounds.push((field_start, i));
                    field_start = i + 1;
                }
                b'\r' if block.get(i + 1) != Some(&b'\n') => dirty = true,
                b'\n' => {
                    let end = if i > line_start && block[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    let raw = &block[line_start..=i];
                    result = if dirty || end == line_start || self.general_open {
                        self.line_general(raw, out)
                    } else if bounds.len() >= MAX_COLUMNS {
                        self.line += 1;
                        Err(self.err(format!("more than {MAX_COLUMNS} fields")))
                    } else {
                        bounds.push((field_start, end));
                        self.line += 1;
                        self.fields(text, &bounds, out)
                    };
                    if result.is_err() {
                        break;
                    }
                    bounds.clear();
                    dirty = false;
                    line_start = i + 1;
                    field_start = i + 1;
                }
                _ => {}
            }
        }
        self.bounds = bounds;
        result
    }

    /// One line with its `\n`, outside the one-pass scan.
    fn line_fast(&mut self, raw: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        let mut line = &raw[..raw.len() - 1];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if self.general_open || line.is_empty() || memchr::memchr2(b'"', b'\r', line).is_some() {
            return self.line_general(raw, out);
        }
        self.line += 1;
        let text = std::str::from_utf8(line)
            .map_err(|e| self.err(format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        let mut s = 0;
        for i in memchr::memchr_iter(b';', line) {
            bounds.push((s, i));
            s = i + 1;
        }
        bounds.push((s, line.len()));
        let r = if bounds.len() > MAX_COLUMNS {
            Err(self.err(format!("more than {MAX_COLUMNS} fields")))
        } else {
            self.fields(text, &bounds, out)
        };
        self.bounds = bounds;
        r
    }

    /// A split line: the header, or a data row.
    fn fields(
        &mut self,
        text: &str,
        bounds: &[(usize, usize)],
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), Error> {
        if self.header.is_some() {
            return self.row(text, bounds, out);
        }
        let mut joined = String::new();
        let mut ends = Vec::with_capacity(bounds.len());
        for (a, b) in bounds {
            joined.push_str(&text[*a..*b]);
            ends.push(joined.len());
        }
        self.header = Some(Self::header(&self.table, self.line, &joined, &ends)?);
        Ok(())
    }

    /// A line the fast path does not take: csv-core, exactly as the
    /// general reader would see it. A record that goes on past the line (a
    /// quoted line break) keeps the following lines on this path until it
    /// ends.
    fn line_general(&mut self, raw: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), Error> {
        self.parse(raw, out)?;
        self.general_open = self.out_len > 0 || self.ends_len > 0;
        Ok(())
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
        if self.header.is_none() {
            let h = Self::header(&self.table, self.line, text, ends)?;
            self.header = Some(h);
            return Ok(());
        }
        let mut bounds = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in ends {
            bounds.push((start, end));
            start = end;
        }
        // `text` borrows `self.out`: move it out for the call.
        let buf = std::mem::take(&mut self.out);
        let r = match std::str::from_utf8(&buf[..self.out_len]) {
            Ok(text) => self.row(text, &bounds, out),
            Err(e) => Err(self.err(format!("invalid UTF-8 at byte {}", e.valid_up_to()))),
        };
        self.out = buf;
        r
    }

    /// One data row: its fields are `text[a..b]` for each bound.
    fn row(
        &mut self,
        text: &str,
        bounds: &[(usize, usize)],
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), Error> {
        let Some(header) = self.header.as_mut() else {
            return Err(self.err("no header"));
        };
        let ncols = header.dims.len() + 1;
        if bounds.len() != ncols {
            let n = bounds.len();
            return Err(self.err(format!("expected {ncols} fields, found {n}")));
        }
        // A batch never spans two periods, unless the body interleaves.
        if header.period_changes(text, bounds) && self.rows_in_batch > 0 {
            out.push(self.flush_batch()?);
        }
        let Some(header) = self.header.as_mut() else {
            return Err(self.err("no header"));
        };
        let mut dim = 0;
        let mut problem = None;
        for (i, &(a, b)) in bounds.iter().enumerate() {
            let field = &text[a..b];
            if i == header.value_idx {
                match parse_value(field, self.decimal) {
                    Ok(v) => header.values.append_option(v),
                    Err(()) => {
                        problem =
                            Some(format!("bad number {:?} in {VALUE_COLUMN}", shorten(field)));
                        break;
                    }
                }
            } else {
                if field.len() > MAX_FIELD_BYTES {
                    problem = Some(format!("field longer than {MAX_FIELD_BYTES} bytes"));
                    break;
                }
                if self.check_codes {
                    if let Some(what) = bad_code(field) {
                        let column = header.schema.field(i).name();
                        problem = Some(format!(
                            "column {column}: code {:?} holds {what}",
                            shorten(field)
                        ));
                        break;
                    }
                }
                header.dims[dim].append_value(field);
                dim += 1;
            }
        }
        if let Some(p) = problem {
            return Err(self.err(p));
        }
        self.rows += 1;
        self.rows_in_batch += 1;
        if let (Some(&(a, _)), Some(&(_, b))) = (bounds.first(), bounds.last()) {
            self.bytes_in_batch += b.saturating_sub(a);
        }
        if let Some(max) = self.max_rows {
            if self.rows > max {
                return Err(self.err(format!("more than {max} rows (limit max_rows)")));
            }
        }
        if self.rows_in_batch >= self.batch_rows || self.bytes_in_batch >= self.batch_bytes {
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
            tid_dim: names[..value_idx].iter().position(|n| *n == TIME_COLUMN),
            last_tid: Vec::new(),
            closed: Default::default(),
            interleaved: false,
        })
    }

    fn flush_batch(&mut self) -> Result<RecordBatch, Error> {
        // The next batch's builders are sized like this one (at least 1024
        // rows, at most a full batch): a period of a few rows must not
        // reserve a full batch's buffers, which a finished array keeps.
        let next_rows = self.rows_in_batch.max(1024).min(self.batch_rows);
        self.rows_in_batch = 0;
        self.bytes_in_batch = 0;
        let (table, line) = (self.table.clone(), self.line);
        let Some(h) = self.header.as_mut() else {
            return Err(Error::Bulk {
                table,
                line,
                message: "no header".into(),
            });
        };
        let n = h.dims.len();
        let rows = next_rows;
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(n + 1);
        let mut dims = h.dims.iter_mut();
        for i in 0..=n {
            if i == h.value_idx {
                let mut full =
                    std::mem::replace(&mut h.values, Float64Builder::with_capacity(rows));
                cols.push(Arc::new(full.finish()));
            } else if let Some(d) = dims.next() {
                // The next batch's builder is sized up front (a finished
                // builder starts empty and would regrow by copying).
                let bytes = d.values_slice().len().max(rows);
                let mut full = std::mem::replace(d, StringBuilder::with_capacity(rows, bytes));
                cols.push(Arc::new(full.finish()));
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
            self.feed(&buf[start..], out)?;
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

/// The byte order mark, U+FEFF, in UTF-8.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether a block of lines may hold a code no code may hold: a control
/// byte other than the line ends, DEL, or a byte order mark. One pass the
/// compiler vectorises; only a block that trips it is checked code by code.
fn may_hold_bad_code_bytes(block: &[u8]) -> bool {
    let control = block.chunks(64).any(|c| {
        c.iter().fold(false, |acc, &b| {
            acc | ((b < 0x20 && b != b'\n' && b != b'\r') | (b == 0x7f))
        })
    });
    control || memchr::memmem::find(block, BOM).is_some()
}

/// What makes `code` unusable, if anything: codes end up in file names,
/// SQL values and joins, where a NUL byte or a hidden byte order mark
/// would fail later without naming the line, or make two codes look alike.
fn bad_code(code: &str) -> Option<&'static str> {
    if code.contains('\0') {
        Some("a NUL byte")
    } else if code.contains('\u{feff}') {
        Some("a byte order mark (U+FEFF)")
    } else if code.chars().any(char::is_control) {
        Some("a control character")
    } else {
        None
    }
}

/// Exact powers of ten (every one up to 10^22 is an `f64`).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The common case of [`parse_value`]: `[-]digits[<sep>digits]` with at
/// most 15 digits. The mantissa and the power of ten are both exact `f64`s,
/// so one division rounds correctly: the same bits as `str::parse`.
fn fast_value(b: &[u8], decimal: u8) -> Option<f64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut m: u64 = 0;
    let mut n = 0;
    let mut frac: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(c - b'0');
                n += 1;
            }
            c if c == decimal && frac.is_none() => frac = Some(digits.len() - i - 1),
            _ => return None,
        }
    }
    if n == 0 || n > 15 {
        return None;
    }
    let v = m as f64 / POW10[frac.unwrap_or(0)];
    Some(if neg { -v } else { v })
}

/// Parses an `INDHOLD` cell: `..` (or empty) is missing; otherwise an
/// optional sign, digits and at most one decimal separator `decimal`.
fn parse_value(field: &str, decimal: u8) -> Result<Option<f64>, ()> {
    let b = field.as_bytes();
    if b == b".." || b.is_empty() {
        return Ok(None);
    }
    if let Some(v) = fast_value(b, decimal) {
        return Ok(Some(v));
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

    /// Parsed rows: the codes and the value.
    type Rows = Vec<(Vec<String>, Option<f64>)>;

    fn rows_of(batches: &[RecordBatch]) -> Rows {
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
    fn codes_with_nul_bytes_control_characters_or_a_late_bom_are_refused() {
        let cases: [(&[u8], &str, &str); 5] = [
            (
                b"OMR\xc3\x85DE;TID;INDHOLD\r\n000;2024K1;1\r\n0\x001;2024K1;2\r\n",
                "line 3",
                "NUL",
            ),
            (
                b"OMR\xc3\x85DE;TID;INDHOLD\r\n000;2024K1;1\r\n\xEF\xBB\xBF084;2024K1;2\r\n",
                "line 3",
                "byte order mark",
            ),
            (
                b"A;TID;INDHOLD\r\nx\x1b[2J;2024;1\r\n",
                "line 2",
                "control character",
            ),
            (
                b"A;TID;INDHOLD\r\nx;2024\x07;1\r\n",
                "line 2",
                "control character",
            ),
            // Through the general reader (a quoted field) too.
            (b"A;TID;INDHOLD\r\n\"x\x00\";2024;1\r\n", "line 2", "NUL"),
        ];
        for (body, line, what) in cases {
            for chunk in [1, 3, 64] {
                let err = parse_all("FOLK1A", body, Lang::Da, chunk).expect_err("refused");
                let msg = err.to_string();
                assert!(
                    msg.contains("FOLK1A") && msg.contains(line) && msg.contains(what),
                    "{msg}"
                );
                assert!(msg.contains("column "), "{msg}");
            }
        }
        // A BOM at the very start is the body's, not a code's.
        let ok = parse_all(
            "FOLK1A",
            b"\xEF\xBB\xBFA;TID;INDHOLD\r\nx;2024;1\r\n",
            Lang::Da,
            2,
        );
        assert_eq!(ok.expect("parses").len(), 1);
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

    /// Rows, or the error's kind (the line it names), of `body` parsed by
    /// the fast path or by the general reader.
    fn outcome(body: &[u8], chunk: usize, general: bool) -> Result<Rows, String> {
        let mut p = BulkParser::new("T", Lang::Da).with_batch_rows(4);
        if general {
            p = p.with_general_reader();
        }
        let mut batches = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            p.push(c, &mut batches).map_err(|e| e.to_string())?;
        }
        p.finish(&mut batches).map_err(|e| e.to_string())?;
        Ok(rows_of(&batches))
    }

    #[test]
    fn fast_values_are_the_bits_of_str_parse() {
        for s in [
            "0",
            "-0",
            "1",
            "37,7",
            "105,0",
            "-12,25",
            "0,1",
            "5,",
            ",5",
            "999999999999999",
            "123456789012,345",
            "1,0000000000001",
            "+3",
        ] {
            let std = s.replace(',', ".").parse::<f64>().expect("std parses");
            let ours = parse_value(s, b',').expect("parses").expect("a value");
            assert_eq!(ours.to_bits(), std.to_bits(), "{s}");
        }
    }

    #[test]
    fn batches_never_span_two_periods() {
        let body = b"A;TID;INDHOLD\r\nx;1;1\r\ny;1;2\r\nx;2;3\r\nx;3;4\r\ny;3;5\r\n";
        let batches = parse_all("T", body, Lang::Da, 5).expect("parses");
        let tids: Vec<Vec<String>> = batches
            .iter()
            .map(|b| {
                let t = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("s");
                (0..t.len()).map(|i| t.value(i).to_string()).collect()
            })
            .collect();
        assert_eq!(tids, vec![vec!["1", "1"], vec!["2"], vec!["3", "3"]]);
    }

    #[test]
    fn an_interleaved_body_gives_full_batches_and_wide_rows_small_ones() {
        let mut body = b"A;TID;INDHOLD\r\n".to_vec();
        for i in 0..10_000 {
            body.extend_from_slice(format!("{i};{};1\r\n", i % 2).as_bytes());
        }
        let mut p = BulkParser::new("T", Lang::Da).with_batch_rows(4096);
        let mut out = Vec::new();
        p.push(&body, &mut out).expect("parses");
        assert!(p.interleaved());
        p.finish(&mut out).expect("parses");
        // Two one-row batches before the period came back, then full ones.
        assert!(out.len() <= 2 + 10_000 / 4096 + 1, "{} batches", out.len());
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 10_000);
        // Rows of 4,000-byte codes: batches end by bytes, not by rows.
        let wide = "w".repeat(4000);
        let mut body = b"A;TID;INDHOLD\r\n".to_vec();
        for _ in 0..2000 {
            body.extend_from_slice(format!("{wide};1;1\r\n").as_bytes());
        }
        let mut p = BulkParser::new("T", Lang::Da).with_batch_bytes(1 << 20);
        let mut out = Vec::new();
        p.push(&body, &mut out).expect("parses");
        p.finish(&mut out).expect("parses");
        assert!(out.iter().all(|b| b.num_rows() <= (1 << 20) / 4000 + 1));
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 2000);
    }

    proptest! {
        /// The fast path gives what the general CSV reader gives: the same
        /// rows, or an error for the same input.
        #[test]
        fn the_fast_path_equals_the_general_reader(
            lines in proptest::collection::vec("[0-9a-zæø;.,\"\r-]{0,24}", 0..12),
            header in proptest::bool::ANY,
            crlf in proptest::bool::ANY,
            chunk in 1usize..40,
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut body = String::new();
            if header {
                body.push_str("A;B;INDHOLD");
                body.push_str(nl);
            }
            for l in &lines {
                body.push_str(l);
                body.push_str(nl);
            }
            let fast = outcome(body.as_bytes(), chunk, false);
            let general = outcome(body.as_bytes(), chunk, true);
            match (&fast, &general) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "fast {:?} vs general {:?} on {:?}", fast, general, body),
            }
        }

        #[test]
        fn fast_numbers_equal_str_parse(m in 0u64..1_000_000_000_000_000, k in 0usize..16, neg: bool) {
            let digits = m.to_string();
            let s = if k == 0 || k >= digits.len() {
                digits.clone()
            } else {
                format!("{},{}", &digits[..digits.len() - k], &digits[digits.len() - k..])
            };
            let s = if neg { format!("-{s}") } else { s };
            let std = s.replace(',', ".").parse::<f64>().expect("std");
            let ours = parse_value(&s, b',').expect("ours").expect("value");
            prop_assert_eq!(ours.to_bits(), std.to_bits());
        }

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
