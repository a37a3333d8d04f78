//! Decoding rows whose shape is known only at run time.
//!
//! Diesel decodes rows by static type: `sql_query` results go through `QueryableByName`,
//! which reads columns by *name*, and the core's SQL does not name every column (e.g.
//! `SELECT holder, expires_at - …`, whose second column each database names its own
//! way). So the adapter wraps the raw query in [`DynamicRows`], a query whose SQL type is
//! [`Dynamic`], and decodes each row *by position* in [`DynamicRow`]: every field is
//! read according to the type the database reports for it (an integer type as
//! [`Value::Int`], a character type as [`Value::Text`]). [`conform`] then checks the
//! row against the column types the core asked for. This works for every statement of
//! every dialect, and for any shape of result, rather than for a fixed list of shapes.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::row::{Field, Row as DieselRow};
use diesel::sql_types::{BigInt, Text};
use dlock_core::adapter::{ColumnType, QueryError, QueryErrorKind, Row, Value};

/// The SQL type of a row decoded by [`DynamicRow`]: any number of columns, each `BIGINT`
/// or `TEXT` (or a narrower integer or character type), all nullable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dynamic;

impl diesel::sql_types::SqlType for Dynamic {
    type IsNull = diesel::sql_types::is_nullable::IsNullable;
}

// Needed for diesel's `CompatibleType`, which relates a query's SQL type to the type
// its rows are loaded into.
impl diesel::sql_types::SingleValue for Dynamic {}

/// One of the core's statements: the wrapped raw query, unchanged, whose rows are loaded
/// as [`DynamicRow`]s and whose prepared statement is cached.
pub(crate) struct DynamicRows<Q>(pub(crate) Q);

impl<Q> QueryId for DynamicRows<Q> {
    type QueryId = ();
    // The SQL is the core's, only known at run time.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for DynamicRows<Q> {
    type SqlType = Dynamic;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for DynamicRows<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    /// Diesel never caches the prepared statement of a raw `sql_query`, since raw SQL
    /// could be anything, so every statement would be prepared anew: one more round trip
    /// each, and on MySQL a prepare and a close as well. The core's statements are a fixed
    /// handful per lock table, with bound values, so each connection's statement cache
    /// (keyed by the SQL text) stays small and every statement after the first is one
    /// round trip.
    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

/// One row, every field decoded by the type the database reports for it.
pub(crate) struct DynamicRow(Vec<Value>);

fn build_row<'a, DB: DecodeField>(row: &impl DieselRow<'a, DB>) -> deserialize::Result<DynamicRow> {
    (0..row.field_count())
        .map(|index| {
            let field = row.get(index).ok_or(diesel::result::UnexpectedEndOfRow)?;
            match field.value() {
                None => Ok(Value::Null),
                Some(value) => DB::decode_field(value),
            }
        })
        .collect::<deserialize::Result<_>>()
        .map(DynamicRow)
}

// Per backend rather than for every `DB: DecodeField`: diesel's blanket
// `FromSqlRow` impl for `Queryable` types would overlap a generic one.
macro_rules! dynamic_rows {
    ($(#[$attr:meta])* $backend:ty) => {
        $(#[$attr])*
        impl FromSqlRow<Dynamic, $backend> for DynamicRow {
            fn build_from_row<'a>(row: &impl DieselRow<'a, $backend>) -> deserialize::Result<Self> {
                build_row(row)
            }
        }

        // The column types are not known before the rows arrive: none are asked for,
        // as for diesel's own `sql_query`.
        $(#[$attr])*
        impl diesel::expression::QueryMetadata<Dynamic> for $backend {
            fn row_metadata(
                _: &mut Self::MetadataLookup,
                row: &mut Vec<Option<Self::TypeMetadata>>,
            ) {
                row.push(None);
            }
        }
    };
}

dynamic_rows!(
    #[cfg(feature = "postgres")]
    diesel::pg::Pg
);
dynamic_rows!(
    #[cfg(feature = "mysql")]
    diesel::mysql::Mysql
);
dynamic_rows!(
    #[cfg(feature = "sqlite")]
    diesel::sqlite::Sqlite
);

/// Decodes one non-null field by the type the database reports for it.
pub(crate) trait DecodeField: Backend {
    fn decode_field(value: Self::RawValue<'_>) -> deserialize::Result<Value>;
}

fn int<DB: Backend, ST>(value: DB::RawValue<'_>) -> deserialize::Result<Value>
where
    i64: FromSql<ST, DB>,
{
    <i64 as FromSql<ST, DB>>::from_sql(value).map(Value::Int)
}

fn text<DB: Backend>(value: DB::RawValue<'_>) -> deserialize::Result<Value>
where
    String: FromSql<Text, DB>,
{
    <String as FromSql<Text, DB>>::from_sql(value).map(Value::Text)
}

#[cfg(feature = "postgres")]
impl DecodeField for diesel::pg::Pg {
    fn decode_field(value: diesel::pg::PgValue<'_>) -> deserialize::Result<Value> {
        use diesel::sql_types::{Integer, SmallInt};
        // Type OIDs from PostgreSQL's `pg_type.dat`, stable across versions.
        match value.get_oid().get() {
            20 => int::<Self, BigInt>(value),
            23 => <i32 as FromSql<Integer, Self>>::from_sql(value).map(|i| Value::Int(i.into())),
            21 => <i16 as FromSql<SmallInt, Self>>::from_sql(value).map(|i| Value::Int(i.into())),
            // text, varchar, bpchar, name, unknown (an untyped literal)
            25 | 1043 | 1042 | 19 | 705 => text::<Self>(value),
            oid => Err(format!("unsupported column type (PostgreSQL type oid {oid})").into()),
        }
    }
}

#[cfg(feature = "mysql")]
impl DecodeField for diesel::mysql::Mysql {
    fn decode_field(value: diesel::mysql::MysqlValue<'_>) -> deserialize::Result<Value> {
        use diesel::mysql::MysqlType;
        match value.value_type() {
            MysqlType::Tiny
            | MysqlType::UnsignedTiny
            | MysqlType::Short
            | MysqlType::UnsignedShort
            | MysqlType::Long
            | MysqlType::UnsignedLong
            | MysqlType::LongLong
            | MysqlType::UnsignedLongLong => int::<Self, BigInt>(value),
            // `TEXT` columns arrive as blobs.
            MysqlType::String | MysqlType::Blob | MysqlType::Enum | MysqlType::Set => {
                text::<Self>(value)
            }
            other => Err(format!("unsupported column type (MySQL {other:?})").into()),
        }
    }
}

#[cfg(feature = "sqlite")]
impl DecodeField for diesel::sqlite::Sqlite {
    fn decode_field(value: diesel::sqlite::SqliteValue<'_, '_, '_>) -> deserialize::Result<Value> {
        use diesel::sqlite::SqliteType;
        // SQLite types values, not columns: this is the storage class of this value.
        match value.value_type() {
            Some(SqliteType::Long | SqliteType::Integer | SqliteType::SmallInt) => {
                int::<Self, BigInt>(value)
            }
            Some(SqliteType::Text) => text::<Self>(value),
            None => Ok(Value::Null),
            Some(other) => Err(format!("unsupported value type (SQLite {other:?})").into()),
        }
    }
}

/// Checks decoded rows against the column types the core expects.
pub(crate) fn conform(
    rows: Vec<DynamicRow>,
    columns: &[ColumnType],
) -> Result<Vec<Row>, QueryError> {
    rows.into_iter()
        .map(|DynamicRow(values)| {
            if values.len() != columns.len() {
                return Err(shape_error(format!(
                    "expected {} columns, the database returned {}",
                    columns.len(),
                    values.len()
                )));
            }
            for (index, (value, column)) in values.iter().zip(columns).enumerate() {
                match (column, value) {
                    (_, Value::Null) | (ColumnType::Int, Value::Int(_)) => {}
                    (ColumnType::Text, Value::Text(_)) => {}
                    (expected, found) => {
                        return Err(shape_error(format!(
                            "column {index}: expected {expected:?}, the database returned {found:?}"
                        )));
                    }
                }
            }
            Ok(values)
        })
        .collect()
}

fn shape_error(message: String) -> QueryError {
    QueryError::new(QueryErrorKind::Statement, None, message)
}
