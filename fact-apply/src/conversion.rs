//! The per-column conversion (partition column → target column, decided
//! by the target's type) and the row stream that applies it.

use arrow_array::{
    Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray,
};
use arrow_schema::{DataType, Schema};
use partition_store::PartitionStore;
use postgres_types::Type;
use sync_state::{TableId, Tid};

use crate::catalog::{PgKind, TargetColumn};
use crate::convert::{
    code_to_range, column_name, encode_numeric, open_ended_age, parse_int, pg_days, shorten,
    tid_to_date, Cell,
};
use crate::Error;

/// What a partition column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// Codes (Utf8).
    Text,
    /// Numbers (`INDHOLD`, Float64).
    Number,
}

impl SourceKind {
    pub(crate) fn of(dt: &DataType) -> Option<SourceKind> {
        match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(SourceKind::Text),
            DataType::Float64 | DataType::Float32 | DataType::Int64 | DataType::Int32 => {
                Some(SourceKind::Number)
            }
            _ => None,
        }
    }
}

/// How one value is converted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Conv {
    /// Text as it is, at most `max_chars` characters (never truncated).
    Text { max_chars: Option<usize> },
    /// Text to an integer of `bits`; `open_ended` accepts `95-` / `95OV` as 95 (`alder`).
    TextToInt { bits: u8, open_ended: bool },
    /// Text to a float.
    TextToFloat { single: bool },
    /// Text to numeric.
    TextToNumeric { precision_scale: Option<(i32, i32)> },
    /// A period code to the first day of the period.
    TextToDate,
    /// An interval or band to an `int4range`.
    TextToRange,
    /// A number to `double precision` / `real`.
    NumToFloat { single: bool },
    /// A whole number to an integer of `bits`.
    NumToInt { bits: u8 },
    /// A number to numeric (exact decimal of its shortest representation).
    NumToNumeric { precision_scale: Option<(i32, i32)> },
    /// A number as text.
    NumToText { max_chars: Option<usize> },
}

impl Conv {
    fn choose(source: SourceKind, kind: &PgKind, column: &str) -> Option<Conv> {
        use PgKind as K;
        Some(match (source, kind) {
            (SourceKind::Text, K::Text { max_chars }) => Conv::Text {
                max_chars: *max_chars,
            },
            (SourceKind::Text, K::Int2 | K::Int4 | K::Int8) => Conv::TextToInt {
                bits: int_bits(kind),
                open_ended: column == "alder",
            },
            (SourceKind::Text, K::Float4) => Conv::TextToFloat { single: true },
            (SourceKind::Text, K::Float8) => Conv::TextToFloat { single: false },
            (SourceKind::Text, K::Numeric { precision_scale }) => Conv::TextToNumeric {
                precision_scale: *precision_scale,
            },
            (SourceKind::Text, K::Date) => Conv::TextToDate,
            (SourceKind::Text, K::Int4Range) => Conv::TextToRange,
            (SourceKind::Number, K::Float4) => Conv::NumToFloat { single: true },
            (SourceKind::Number, K::Float8) => Conv::NumToFloat { single: false },
            (SourceKind::Number, K::Int2 | K::Int4 | K::Int8) => Conv::NumToInt {
                bits: int_bits(kind),
            },
            (SourceKind::Number, K::Numeric { precision_scale }) => Conv::NumToNumeric {
                precision_scale: *precision_scale,
            },
            (SourceKind::Number, K::Text { max_chars }) => Conv::NumToText {
                max_chars: *max_chars,
            },
            (SourceKind::Number, K::Date | K::Int4Range) => return None,
        })
    }

    /// The conversion of a code column's codes (text) into `tc`'s type, as
    /// the apply converts them; `None` for a type the apply cannot fill
    /// (the `meta` schema's value labels).
    pub(crate) fn for_codes(tc: &TargetColumn, name: &str) -> Option<Conv> {
        let kind = tc.ty.as_ref().and_then(|t| PgKind::of(t, tc.typmod))?;
        Conv::choose(SourceKind::Text, &kind, name)
    }

    /// Whether results are worth remembering for the next row (dimension
    /// codes repeat a lot).
    fn memoised(&self) -> bool {
        matches!(
            self,
            Conv::TextToInt { .. }
                | Conv::TextToFloat { .. }
                | Conv::TextToNumeric { .. }
                | Conv::TextToDate
                | Conv::TextToRange
        )
    }

    /// Converts one text value.
    pub(crate) fn text<'a>(&self, s: &'a str) -> Result<Cell<'a>, String> {
        match self {
            Conv::Text { max_chars } => {
                if let Some(max) = max_chars {
                    if s.len() > *max {
                        let n = s.chars().count();
                        if n > *max {
                            return Err(format!("{n} characters, the column allows {max}"));
                        }
                    }
                }
                Ok(Cell::Text(s))
            }
            Conv::TextToInt { bits, open_ended } => {
                let v = match parse_int(s) {
                    Ok(v) => v,
                    Err(reason) => match open_ended.then(|| open_ended_age(s)).flatten() {
                        Some(v) => v,
                        None => return Err(reason.into()),
                    },
                };
                int_cell(v, *bits)
            }
            Conv::TextToFloat { single } => {
                let is_decimal = !s.is_empty()
                    && s.bytes().all(|c| {
                        c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'e' | b'E' | b'+')
                    });
                let v: f64 =
                    if is_decimal { s.parse().ok() } else { None }.ok_or("not a number")?;
                float_cell(v, *single)
            }
            Conv::TextToNumeric { precision_scale } => {
                Ok(Cell::Numeric(encode_numeric(s, *precision_scale)?))
            }
            Conv::TextToDate => Ok(Cell::Date(pg_days(tid_to_date(s)?))),
            Conv::TextToRange => Ok(Cell::Range(code_to_range(s)?)),
            Conv::NumToFloat { .. }
            | Conv::NumToInt { .. }
            | Conv::NumToNumeric { .. }
            | Conv::NumToText { .. } => Err("text where a number was planned".into()),
        }
    }

    /// Converts one number.
    pub(crate) fn number(&self, v: f64) -> Result<Cell<'static>, String> {
        match self {
            Conv::NumToFloat { single } => float_cell(v, *single),
            Conv::NumToInt { bits } => {
                if v.fract() != 0.0 || !v.is_finite() {
                    return Err("not a whole number".into());
                }
                if v.abs() >= 9.223_372_036_854_775e18 {
                    return Err("out of range for the integer type".into());
                }
                int_cell(v as i64, *bits)
            }
            Conv::NumToNumeric { precision_scale } => {
                if !v.is_finite() {
                    return Err("not a finite number".into());
                }
                Ok(Cell::Numeric(encode_numeric(
                    &v.to_string(),
                    *precision_scale,
                )?))
            }
            Conv::NumToText { max_chars } => {
                let s = v.to_string();
                match max_chars {
                    Some(max) if s.len() > *max => {
                        Err(format!("{} characters, the column allows {max}", s.len()))
                    }
                    _ => Ok(Cell::Owned(s)),
                }
            }
            _ => Err("a number where text was planned".into()),
        }
    }
}

fn int_bits(kind: &PgKind) -> u8 {
    match kind {
        PgKind::Int2 => 16,
        PgKind::Int4 => 32,
        _ => 64,
    }
}

fn int_cell(v: i64, bits: u8) -> Result<Cell<'static>, String> {
    let out_of_range = || format!("out of range for a {bits}-bit integer");
    Ok(match bits {
        16 => Cell::I16(i16::try_from(v).map_err(|_| out_of_range())?),
        32 => Cell::I32(i32::try_from(v).map_err(|_| out_of_range())?),
        _ => Cell::I64(v),
    })
}

fn float_cell(v: f64, single: bool) -> Result<Cell<'static>, String> {
    if !v.is_finite() {
        return Err("not a finite number".into());
    }
    if single {
        let f = v as f32;
        if !f.is_finite() {
            return Err("out of range for real".into());
        }
        Ok(Cell::F32(f))
    } else {
        Ok(Cell::F64(v))
    }
}

/// One column of the conversion: a partition column and the target column it fills.
#[derive(Debug, Clone)]
pub(crate) struct ConversionColumn {
    /// The header in the partition (`OMRÅDE`).
    pub header: String,
    /// The target column (`omrade`).
    pub name: String,
    /// The target type as printed by `format_type`.
    pub pg_type: String,
    /// The target type.
    pub ty: Type,
    /// What the partition holds.
    pub source: SourceKind,
    /// The conversion.
    pub conv: Conv,
    /// Target is `NOT NULL`.
    pub not_null: bool,
}

impl ConversionColumn {
    /// How the partition column `field` fills the target column `tc`
    /// (named `name`); fails when the target's type cannot hold it.
    fn of(
        table: &TableId,
        tid: &Tid,
        field: &arrow_schema::Field,
        tc: &TargetColumn,
        name: String,
    ) -> Result<ConversionColumn, Error> {
        let unsupported = |pg_type: String| Error::UnsupportedType {
            table: table.clone(),
            column: name.clone(),
            pg_type,
        };
        if tc.generated {
            return Err(unsupported(format!("{} (generated column)", tc.type_name)));
        }
        let (Some(ty), Some(kind)) = (
            tc.ty.clone(),
            tc.ty.as_ref().and_then(|t| PgKind::of(t, tc.typmod)),
        ) else {
            return Err(unsupported(tc.type_name.clone()));
        };
        let incompatible = || Error::IncompatibleColumn {
            table: table.clone(),
            column: field.name().clone(),
            tid: tid.clone(),
            arrow_type: field.data_type().to_string(),
            pg_type: tc.type_name.clone(),
        };
        let source = SourceKind::of(field.data_type()).ok_or_else(incompatible)?;
        let conv = Conv::choose(source, &kind, &name).ok_or_else(incompatible)?;
        Ok(ConversionColumn {
            header: field.name().clone(),
            name,
            pg_type: tc.type_name.clone(),
            ty,
            source,
            conv,
            not_null: tc.not_null,
        })
    }
}

/// Every `NOT NULL` target column without a default or identity must be
/// filled by a partition column.
fn check_required_columns(
    table: &TableId,
    target: &str,
    target_columns: &[TargetColumn],
    columns: &[ConversionColumn],
) -> Result<(), Error> {
    for tc in target_columns {
        if tc.not_null
            && !tc.has_default
            && !tc.generated
            && !columns.iter().any(|c| c.name == tc.name)
        {
            return Err(Error::MissingSourceColumn {
                table: table.clone(),
                column: tc.name.clone(),
                target: target.to_owned(),
            });
        }
    }
    Ok(())
}

/// The conversion of one table.
#[derive(Debug, Clone)]
pub(crate) struct Conversion {
    /// `"fact"."folk1a"`.
    pub target: String,
    /// Columns in partition order; these are copied and inserted.
    pub columns: Vec<ConversionColumn>,
    /// Index of the `tid` column in `columns`.
    pub tid: usize,
    /// Index of the `indhold` column, whose missing values drop the row.
    pub indhold: Option<usize>,
}

impl Conversion {
    /// Builds the conversion from a partition schema and the target's columns;
    /// fails before anything is written when it cannot.
    pub(crate) fn build(
        table: &TableId,
        target: &str,
        target_columns: &[TargetColumn],
        tid: &Tid,
        schema: &Schema,
    ) -> Result<Conversion, Error> {
        let mut columns: Vec<ConversionColumn> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = column_name(field.name());
            if let Some(prev) = columns.iter().find(|c| c.name == name) {
                return Err(Error::DuplicateColumn {
                    table: table.clone(),
                    first: prev.header.clone(),
                    second: field.name().clone(),
                    column: name,
                });
            }
            let Some(tc) = target_columns.iter().find(|c| c.name == name) else {
                return Err(Error::MissingTargetColumn {
                    table: table.clone(),
                    column: field.name().clone(),
                    target_column: name,
                    tid: tid.clone(),
                    target: target.to_owned(),
                });
            };
            columns.push(ConversionColumn::of(table, tid, field, tc, name)?);
        }
        check_required_columns(table, target, target_columns, &columns)?;
        let tid_ix = columns
            .iter()
            .position(|c| c.name == "tid" && c.source == SourceKind::Text)
            .ok_or_else(|| Error::NoTidColumn {
                table: table.clone(),
                tid: tid.clone(),
            })?;
        let indhold = columns.iter().position(|c| c.name == "indhold");
        Ok(Conversion {
            target: target.to_owned(),
            columns,
            tid: tid_ix,
            indhold,
        })
    }

    /// The position of every column of the conversion in a partition's schema; fails when
    /// the partition's columns differ from the conversion's.
    pub(crate) fn map_schema(
        &self,
        table: &TableId,
        tid: &Tid,
        schema: &Schema,
    ) -> Result<Vec<usize>, Error> {
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| column_name(f.name()))
            .collect();
        for (field, name) in schema.fields().iter().zip(&names) {
            if !self.columns.iter().any(|c| &c.name == name) {
                return Err(Error::MissingTargetColumn {
                    table: table.clone(),
                    column: field.name().clone(),
                    target_column: name.clone(),
                    tid: tid.clone(),
                    target: self.target.clone(),
                });
            }
        }
        self.columns
            .iter()
            .map(|c| {
                let ix = names.iter().position(|n| n == &c.name).ok_or_else(|| {
                    Error::PartitionColumnMissing {
                        table: table.clone(),
                        tid: tid.clone(),
                        column: c.name.clone(),
                    }
                })?;
                let field = &schema.fields()[ix];
                if SourceKind::of(field.data_type()) != Some(c.source) {
                    return Err(Error::IncompatibleColumn {
                        table: table.clone(),
                        column: field.name().clone(),
                        tid: tid.clone(),
                        arrow_type: field.data_type().to_string(),
                        pg_type: c.pg_type.clone(),
                    });
                }
                Ok(ix)
            })
            .collect()
    }

    /// The `tid` value of a period code, as the tid column stores it.
    pub(crate) fn tid_cell<'t>(&self, table: &TableId, tid: &'t Tid) -> Result<Cell<'t>, Error> {
        let col = &self.columns[self.tid];
        col.conv.text(tid.as_str()).map_err(|reason| Error::Value {
            table: table.clone(),
            tid: tid.clone(),
            column: col.name.clone(),
            value: shorten(tid.as_str()),
            reason: format!("{}: {reason}", col.pg_type),
        })
    }

    /// The target types of the conversion's columns, for the binary COPY.
    pub(crate) fn types(&self) -> Vec<Type> {
        self.columns.iter().map(|c| c.ty.clone()).collect()
    }
}

/// Rows of one period as they went through the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeriodStats {
    /// Rows in the partition.
    pub rows: u64,
    /// Rows dropped because `indhold` was missing.
    pub dropped: u64,
    /// Rows handed to the sink.
    pub sent: u64,
}

/// A column of a batch, typed.
enum Src<'b> {
    Utf8(&'b StringArray),
    Large(&'b LargeStringArray),
    View(&'b StringViewArray),
    F64(&'b Float64Array),
    F32(&'b Float32Array),
    I64(&'b Int64Array),
    I32(&'b Int32Array),
}

enum SrcValue<'b> {
    Null,
    Text(&'b str),
    Number(f64),
}

impl<'b> Src<'b> {
    fn new(a: &'b ArrayRef) -> Option<Src<'b>> {
        let any = a.as_any();
        Some(match a.data_type() {
            DataType::Utf8 => Src::Utf8(any.downcast_ref()?),
            DataType::LargeUtf8 => Src::Large(any.downcast_ref()?),
            DataType::Utf8View => Src::View(any.downcast_ref()?),
            DataType::Float64 => Src::F64(any.downcast_ref()?),
            DataType::Float32 => Src::F32(any.downcast_ref()?),
            DataType::Int64 => Src::I64(any.downcast_ref()?),
            DataType::Int32 => Src::I32(any.downcast_ref()?),
            _ => return None,
        })
    }

    fn is_valid(&self, i: usize) -> bool {
        match self {
            Src::Utf8(a) => a.is_valid(i),
            Src::Large(a) => a.is_valid(i),
            Src::View(a) => a.is_valid(i),
            Src::F64(a) => a.is_valid(i),
            Src::F32(a) => a.is_valid(i),
            Src::I64(a) => a.is_valid(i),
            Src::I32(a) => a.is_valid(i),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> SrcValue<'b> {
        if !self.is_valid(i) {
            return SrcValue::Null;
        }
        match self {
            Src::Utf8(a) => SrcValue::Text(a.value(i)),
            Src::Large(a) => SrcValue::Text(a.value(i)),
            Src::View(a) => SrcValue::Text(a.value(i)),
            Src::F64(a) => SrcValue::Number(a.value(i)),
            Src::F32(a) => SrcValue::Number(f64::from(a.value(i))),
            Src::I64(a) => SrcValue::Number(a.value(i) as f64),
            Src::I32(a) => SrcValue::Number(f64::from(a.value(i))),
        }
    }
}

/// Streams the rows of one partition through the conversion into `sink`, batch by
/// batch (never the whole partition in memory).
pub(crate) fn stream_partition<F>(
    store: &PartitionStore,
    table: &TableId,
    tid: &Tid,
    conv: &Conversion,
    sink: &mut F,
) -> Result<PeriodStats, Error>
where
    F: FnMut(&[Cell<'_>]) -> Result<(), postgres::Error>,
{
    let batch_rows = partition_store::READ_BATCH_ROWS;
    stream_partition_in_batches(store, table, tid, conv, batch_rows, sink)
}

/// [`stream_partition`] reading batches of up to `batch_rows` rows.
pub(crate) fn stream_partition_in_batches<F>(
    store: &PartitionStore,
    table: &TableId,
    tid: &Tid,
    conv: &Conversion,
    batch_rows: usize,
    sink: &mut F,
) -> Result<PeriodStats, Error>
where
    F: FnMut(&[Cell<'_>]) -> Result<(), postgres::Error>,
{
    let part_err = |source| Error::Read {
        table: table.clone(),
        tid: tid.clone(),
        path: store.display_partition(table, tid),
        source: Box::new(source),
    };
    let reader = store
        .read_partition_in_batches(table, tid, batch_rows)
        .map_err(part_err)?;
    let footer_rows = reader.num_rows();
    let mapping = conv.map_schema(table, tid, &reader.schema())?;
    let mut rows = RowConverter::new(conv, table, tid)?;
    let mut stats = PeriodStats::default();
    for batch in reader {
        let batch: RecordBatch = batch.map_err(part_err)?;
        let srcs = rows.sources(&mapping, &batch)?;
        let n = batch.num_rows();
        stats.rows += n as u64;
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(conv.columns.len());
        for row in 0..n {
            if let Some(ix) = conv.indhold {
                if !srcs[ix].is_valid(row) {
                    stats.dropped += 1;
                    continue;
                }
            }
            cells.clear();
            for (k, src) in srcs.iter().enumerate() {
                cells.push(rows.cell(k, src.get(row))?);
            }
            sink(&cells).map_err(Error::db(table, "copy into the temp table"))?;
            stats.sent += 1;
        }
    }
    if stats.rows != footer_rows {
        return Err(Error::PartitionRows {
            table: table.clone(),
            tid: tid.clone(),
            footer: footer_rows,
            read: stats.rows,
        });
    }
    Ok(stats)
}

/// Converts one partition's values cell by cell, the last text of each
/// memoised column remembered (codes repeat row after row).
struct RowConverter<'a> {
    conv: &'a Conversion,
    table: &'a TableId,
    tid: &'a Tid,
    tid_cell: Cell<'a>,
    memo: Vec<Option<(String, Cell<'static>)>>,
}

impl<'a> RowConverter<'a> {
    fn new(conv: &'a Conversion, table: &'a TableId, tid: &'a Tid) -> Result<Self, Error> {
        Ok(RowConverter {
            conv,
            table,
            tid,
            tid_cell: conv.tid_cell(table, tid)?,
            memo: vec![None; conv.columns.len()],
        })
    }

    /// The batch's column of each conversion column (`mapping`: their
    /// positions in the partition).
    fn sources<'b>(
        &self,
        mapping: &[usize],
        batch: &'b RecordBatch,
    ) -> Result<Vec<Src<'b>>, Error> {
        mapping
            .iter()
            .zip(&self.conv.columns)
            .map(|(&ix, col)| {
                batch
                    .columns()
                    .get(ix)
                    .filter(|a| SourceKind::of(a.data_type()) == Some(col.source))
                    .and_then(Src::new)
                    .ok_or_else(|| Error::IncompatibleColumn {
                        table: self.table.clone(),
                        column: col.header.clone(),
                        tid: self.tid.clone(),
                        arrow_type: batch
                            .columns()
                            .get(ix)
                            .map(|a| a.data_type().to_string())
                            .unwrap_or_else(|| "missing".into()),
                        pg_type: col.pg_type.clone(),
                    })
            })
            .collect()
    }

    /// The value of column `k` as its target column stores it.
    fn cell<'b>(&mut self, k: usize, value: SrcValue<'b>) -> Result<Cell<'b>, Error>
    where
        'a: 'b,
    {
        let col = &self.conv.columns[k];
        let bad = |value: String, reason: String| Error::Value {
            table: self.table.clone(),
            tid: self.tid.clone(),
            column: col.name.clone(),
            value: shorten(&value),
            reason: format!("{}: {reason}", col.pg_type),
        };
        Ok(match value {
            SrcValue::Null if col.not_null => {
                return Err(bad("NULL".into(), "the column is not null".into()));
            }
            SrcValue::Null => Cell::Null,
            SrcValue::Text(s) if k == self.conv.tid => {
                if s != self.tid.as_str() {
                    return Err(Error::ForeignRow {
                        table: self.table.clone(),
                        tid: self.tid.clone(),
                        found: shorten(s),
                    });
                }
                self.tid_cell.clone()
            }
            SrcValue::Text(s) if col.conv.memoised() => match &self.memo[k] {
                Some((prev, cell)) if prev == s => cell.clone(),
                _ => {
                    let cell = col
                        .conv
                        .text(s)
                        .map_err(|r| bad(s.to_owned(), r))?
                        .into_owned();
                    self.memo[k] = Some((s.to_owned(), cell.clone()));
                    cell
                }
            },
            SrcValue::Text(s) => col.conv.text(s).map_err(|r| bad(s.to_owned(), r))?,
            SrcValue::Number(v) => col.conv.number(v).map_err(|r| bad(v.to_string(), r))?,
        })
    }
}
