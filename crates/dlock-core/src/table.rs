//! The lock table's name, validated as an SQL identifier.

use std::fmt;

use crate::{Error, Result};

/// The longest identifier part we accept: PostgreSQL's limit (63 bytes), which is below
/// MySQL's (64) and SQLite's (none).
const MAX_PART_LEN: usize = 63;

/// The name of the lock table, optionally schema-qualified (`schema.table`).
///
/// Each part must start with a lower-case ASCII letter or `_` and continue with lower-case
/// ASCII letters, digits or `_`, at most 63 characters. The name is quoted in SQL, so it is
/// used exactly as written and may be a reserved word; anything else — spaces, quotes,
/// semicolons — is refused, so a table name can never change the meaning of a statement.
///
/// **Upper-case letters are refused**, not folded: SQLite treats `Locks` and `locks` as
/// one table, PostgreSQL (which dlock quotes) as two, and MySQL/MariaDB as either,
/// depending on `lower_case_table_names`. Two configurations that differ only by case
/// would then share their locks on one database and not on another; refusing the name
/// makes one configuration mean the same table everywhere. Folding it silently instead
/// would make `dlock --table Locks` act on a table whose name was never written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    /// The default table name, `distributed_lock`.
    pub const DEFAULT: &'static str = "distributed_lock";

    /// What [`companion`](Self::companion) appends to the lock table's name.
    pub const COMPANION_SUFFIX: &'static str = "_slots";

    /// Validates `name` as a table name, `table` or `schema.table`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTableName`] saying what is wrong: an empty part, more than one
    /// dot, a character other than lower-case ASCII letters, digits and `_` (upper case is
    /// refused with the lower-case spelling suggested), a leading digit, or a name longer
    /// than the databases' identifiers allow.
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidTableName {
            name: name.to_owned(),
            reason,
        };
        let mut parts = name.split('.');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        if parts.next().is_some() {
            return Err(invalid(
                "use `table` or `schema.table`, with at most one dot".into(),
            ));
        }
        for part in std::iter::once(first).chain(second) {
            validate_part(part).map_err(invalid)?;
        }
        Ok(match second {
            Some(table) => Self {
                schema: Some(first.to_owned()),
                table: table.to_owned(),
            },
            None => Self {
                schema: None,
                table: first.to_owned(),
            },
        })
    }

    /// The schema, if the name is qualified.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table name without its schema.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The companion table of this lock table: `{table}_slots`, in the same schema, with
    /// the lock table's columns. Semaphores and reader-writer locks keep their rows there
    /// (one row per permit or holder), so that they never share a name with a lock, and
    /// `dlock list` of the lock table shows locks only. It is created on first use, as
    /// the lock table is.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTableName`] when the table's name is too long to take the suffix
    /// (more than 57 characters).
    pub fn companion(&self) -> Result<Self> {
        let table = format!("{}{}", self.table, Self::COMPANION_SUFFIX);
        if table.len() > MAX_PART_LEN {
            return Err(Error::InvalidTableName {
                name: self.to_string(),
                reason: format!(
                    "semaphores and reader-writer locks keep their rows in the companion \
                     table {table:?}, which is longer than {MAX_PART_LEN} characters; use a \
                     lock table name of at most {} characters",
                    MAX_PART_LEN - Self::COMPANION_SUFFIX.len()
                ),
            });
        }
        Ok(Self {
            schema: self.schema.clone(),
            table,
        })
    }

    /// The name quoted for SQL, each part between `quote` characters. Validation
    /// guarantees that no part contains a quote character.
    pub(crate) fn quoted(&self, quote: char) -> String {
        match &self.schema {
            Some(schema) => format!("{quote}{schema}{quote}.{quote}{}{quote}", self.table),
            None => format!("{quote}{}{quote}", self.table),
        }
    }
}

impl Default for TableName {
    fn default() -> Self {
        Self {
            schema: None,
            table: Self::DEFAULT.to_owned(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

fn validate_part(part: &str) -> std::result::Result<(), String> {
    let mut chars = part.chars();
    match chars.next() {
        None => return Err("a name part is empty".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(format!("{part:?} must start with an ASCII letter or `_`"));
        }
        Some(_) => {}
    }
    if part.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{part:?} has upper-case letters; write it in lower case ({:?}): SQLite and, \
             depending on its settings, MySQL fold the case of table names while PostgreSQL \
             does not, so a mixed-case name would not mean the same table on every database",
            part.to_ascii_lowercase()
        ));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Err(format!(
            "{c:?} is not allowed; use only ASCII letters, digits and `_`"
        ));
    }
    if part.len() > MAX_PART_LEN {
        return Err(format!(
            "{part:?} is {} characters long; the limit is {MAX_PART_LEN}",
            part.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_qualified_names() {
        assert_eq!(TableName::parse("locks").unwrap().quoted('"'), "\"locks\"");
        let qualified = TableName::parse("ops.locks_2").unwrap();
        assert_eq!(qualified.schema(), Some("ops"));
        assert_eq!(qualified.table(), "locks_2");
        assert_eq!(qualified.quoted('`'), "`ops`.`locks_2`");
        assert_eq!(qualified.to_string(), "ops.locks_2");
        assert_eq!(TableName::default().to_string(), "distributed_lock");
    }

    #[test]
    fn refuses_everything_that_is_not_an_identifier() {
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a.b.c",
            "1locks",
            "locks; DROP TABLE users",
            "locks\"--",
            "lo`cks",
            "lo cks",
            "verrou_é",
            &"x".repeat(64),
            "Locks",
            "peer_TCase",
            "Ops.locks",
            "ops.lockS",
        ] {
            let error = TableName::parse(bad).expect_err(bad);
            assert!(
                matches!(&error, Error::InvalidTableName { name, .. } if name == bad),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn the_companion_table_sits_beside_the_lock_table() {
        let companion = TableName::parse("ops.locks").unwrap().companion().unwrap();
        assert_eq!(companion.to_string(), "ops.locks_slots");
        assert_eq!(
            TableName::default().companion().unwrap().to_string(),
            "distributed_lock_slots"
        );
        assert!(
            TableName::parse(&"x".repeat(57))
                .unwrap()
                .companion()
                .is_ok()
        );
        let long = "x".repeat(58);
        let error = TableName::parse(&long).unwrap().companion().unwrap_err();
        assert!(
            matches!(&error, Error::InvalidTableName { name, reason } if *name == long && reason.contains("at most 57")),
            "{error}"
        );
    }

    /// SQLite folds case: `peer_TCase` and `peer_tcase` would be one table there and two
    /// on PostgreSQL. The refusal names the part and the lower-case spelling to use.
    #[test]
    fn refuses_upper_case_and_names_the_lower_case_spelling() {
        assert!(TableName::parse("peer_tcase").is_ok());
        let error = TableName::parse("ops.peer_TCase").unwrap_err().to_string();
        assert!(
            error.contains("\"peer_TCase\" has upper-case letters"),
            "{error}"
        );
        assert!(error.contains("(\"peer_tcase\")"), "{error}");
        let error = TableName::parse("Ops.locks").unwrap_err().to_string();
        assert!(error.contains("\"Ops\" has upper-case letters"), "{error}");
    }
}
