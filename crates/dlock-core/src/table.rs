//! The lock table's name, validated as an SQL identifier.

use std::fmt;

use crate::{Error, Result};

/// The longest identifier part we accept: PostgreSQL's limit (63 bytes), which is below
/// MySQL's (64) and SQLite's (none).
const MAX_PART_LEN: usize = 63;

/// The name of the lock table, optionally schema-qualified (`schema.table`).
///
/// Each part must start with an ASCII letter or `_` and continue with ASCII letters,
/// digits or `_`, at most 63 characters. The name is quoted in SQL, so it is used exactly
/// as written (case included) and may be a reserved word; anything else — spaces, quotes,
/// semicolons — is refused, so a table name can never change the meaning of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    /// The default table name, `distributed_lock` (the Node package's default).
    pub const DEFAULT: &'static str = "distributed_lock";

    /// Validates `name` as a table name, `table` or `schema.table`.
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
        let qualified = TableName::parse("ops.Locks_2").unwrap();
        assert_eq!(qualified.schema(), Some("ops"));
        assert_eq!(qualified.table(), "Locks_2");
        assert_eq!(qualified.quoted('`'), "`ops`.`Locks_2`");
        assert_eq!(qualified.to_string(), "ops.Locks_2");
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
        ] {
            let error = TableName::parse(bad).expect_err(bad);
            assert!(
                matches!(&error, Error::InvalidTableName { name, .. } if name == bad),
                "{bad:?}: {error}"
            );
        }
    }
}
