//! What the target table looks like: its columns and types from the catalog.

use postgres::GenericClient;
use postgres_types::Type;
use sync_state::TableId;

use crate::Error;

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The Postgres types the apply can write, with their modifiers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PgKind {
    /// `text`, `varchar(n)`, `char(n)`: at most `max_chars` characters.
    Text {
        max_chars: Option<usize>,
    },
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric` or `numeric(p,s)`.
    Numeric {
        precision_scale: Option<(i32, i32)>,
    },
    Date,
    Int4Range,
}

impl PgKind {
    /// The kind of a type, or `None` when unsupported.
    pub(crate) fn of(ty: &Type, typmod: i32) -> Option<PgKind> {
        Some(match *ty {
            Type::TEXT => PgKind::Text { max_chars: None },
            Type::VARCHAR | Type::BPCHAR => PgKind::Text {
                max_chars: (typmod >= 4).then(|| (typmod - 4) as usize),
            },
            Type::INT2 => PgKind::Int2,
            Type::INT4 => PgKind::Int4,
            Type::INT8 => PgKind::Int8,
            Type::FLOAT4 => PgKind::Float4,
            Type::FLOAT8 => PgKind::Float8,
            Type::NUMERIC => PgKind::Numeric {
                precision_scale: (typmod >= 4).then(|| {
                    let t = typmod - 4;
                    let precision = (t >> 16) & 0xffff;
                    // Postgres 15 stores the scale as an 11-bit signed number.
                    let scale = ((t & 0x7ff) ^ 1024) - 1024;
                    (precision, scale)
                }),
            },
            Type::DATE => PgKind::Date,
            Type::INT4_RANGE => PgKind::Int4Range,
            _ => return None,
        })
    }
}

/// One column of the target table.
#[derive(Debug, Clone)]
pub(crate) struct TargetColumn {
    /// The column name.
    pub name: String,
    /// The type as `format_type` prints it (`character varying(10)`).
    pub type_name: String,
    /// The type (built-in types only are supported).
    pub ty: Option<Type>,
    /// The type modifier.
    pub typmod: i32,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Has a default or is an identity column, so it may be left out.
    pub has_default: bool,
    /// A generated column (cannot be written).
    pub generated: bool,
}

impl TargetColumn {
    /// A target column as `CREATE TABLE` would make it (for dry runs).
    pub(crate) fn inferred(name: &str, ty: &str) -> TargetColumn {
        use postgres_types::Type;
        let (t, typmod) = match ty {
            "smallint" => (Type::INT2, -1),
            "integer" => (Type::INT4, -1),
            "bigint" => (Type::INT8, -1),
            "double precision" => (Type::FLOAT8, -1),
            "date" => (Type::DATE, -1),
            "int4range" => (Type::INT4_RANGE, -1),
            v if v.starts_with("varchar(") => (
                Type::VARCHAR,
                v.trim_start_matches("varchar(")
                    .trim_end_matches(')')
                    .parse::<i32>()
                    .map(|n| n + 4)
                    .unwrap_or(-1),
            ),
            _ => (Type::TEXT, -1),
        };
        TargetColumn {
            name: name.to_owned(),
            type_name: ty.to_owned(),
            ty: Some(t),
            typmod,
            not_null: false,
            has_default: false,
            generated: false,
        }
    }
}

/// The oid of `schema.table` when it is an ordinary or partitioned table
/// of its own: a partition of another table (a period of a partitioned
/// fact table) is never taken for a fact table.
pub(crate) fn table_oid(
    client: &mut impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Option<u32>, postgres::Error> {
    let row = client.query_opt(
        "SELECT c.oid FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
           AND NOT c.relispartition",
        &[&schema, &table],
    )?;
    row.map(|r| r.try_get::<_, u32>(0)).transpose()
}

/// The live columns of a table, in order.
pub(crate) fn table_columns(
    client: &mut impl GenericClient,
    table: &TableId,
    oid: u32,
) -> Result<Vec<TargetColumn>, Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    a.atttypid, a.atttypmod, a.attnotnull, \
                    a.atthasdef OR a.attidentity <> '', a.attgenerated <> '' \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .map_err(Error::db(table, "reading the target's columns"))?;
    rows.iter()
        .map(|r| {
            let typid: u32 = r.try_get(2)?;
            Ok(TargetColumn {
                name: r.try_get(0)?,
                type_name: r.try_get(1)?,
                ty: Type::from_oid(typid),
                typmod: r.try_get(3)?,
                not_null: r.try_get(4)?,
                has_default: r.try_get(5)?,
                generated: r.try_get(6)?,
            })
        })
        .collect::<Result<_, postgres::Error>>()
        .map_err(Error::db(table, "reading the target's columns"))
}
