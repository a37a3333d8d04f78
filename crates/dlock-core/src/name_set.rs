//! The names of a multi-lock: validated, merged, bound as one JSON array, and the
//! statements that take them all or none.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::adapter::{Row, Value};
use crate::dialect::SetSql;
use crate::inner::LockInner;
use crate::lease::Taken;
use crate::{Dialect, Error, FencingToken, Result};

/// A multi-lock's names (distinct, in name order) and its own statements.
#[derive(Debug)]
pub(crate) struct NameSet {
    pub(crate) members: Vec<String>,
    pub(crate) sql: SetSql,
    /// Whether this multi-lock has made sure its rows exist, where the acquire statement
    /// cannot tell a missing row from one it took (MySQL): see [`LockInner::take_all`].
    rows_exist: AtomicBool,
}

impl NameSet {
    /// The distinct `names` in name order, each valid as a lock's name on `dialect`, and
    /// the JSON array that the statements bind. Duplicates are merged: a set holds a name
    /// once, and a caller that builds the list from data need not dedupe it first.
    pub(crate) fn new(names: Vec<String>, dialect: Dialect, sql: SetSql) -> Result<(Self, String)> {
        let mut members = names;
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Err(Error::InvalidOption(
                "a multi-lock needs at least one name; give it the names to lock together".into(),
            ));
        }
        for name in &members {
            crate::builder::validate_name(name, dialect)?;
        }
        let json = json_array(&members);
        let set = Self {
            members,
            sql,
            rows_exist: AtomicBool::new(false),
        };
        Ok((set, json))
    }

    pub(crate) fn rows(&self) -> u64 {
        u64::try_from(self.members.len()).unwrap_or(u64::MAX)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.members
            .binary_search_by(|member| member.as_str().cmp(name))
            .is_ok()
    }

    /// Wakes the waiters of every name just released: this process's at once, other
    /// processes' by a notice per name in the background (where the dialect can), each
    /// as a lock's release would.
    pub(crate) fn announce(&self, lock: &LockInner) {
        for name in &self.members {
            let _sending = lock
                .releases
                .announce(name, &lock.queries, lock.sql.notify(name));
        }
    }

    /// The tokens of an acquisition that took every name, from `(name, fencing)` rows;
    /// `None` if the rows do not name every member exactly once.
    fn tokens(&self, rows: Vec<Row>) -> Option<Taken> {
        let mut named: Vec<(String, i64)> = rows
            .into_iter()
            .filter_map(|row| match <[Value; 2]>::try_from(row) {
                Ok([Value::Text(name), Value::Int(token)]) => Some((name, token)),
                _ => None,
            })
            .collect();
        named.sort_unstable();
        let complete = named.len() == self.members.len()
            && named
                .iter()
                .zip(&self.members)
                .all(|((name, _), member)| name == member);
        if !complete {
            return None;
        }
        let tokens: Vec<FencingToken> = named
            .into_iter()
            .map(|(_, token)| FencingToken(token))
            .collect();
        Some(Taken {
            token: *tokens.first()?,
            tokens,
        })
    }
}

/// `names` as a JSON array of strings. Names hold no NUL (refused), and every other
/// control character is escaped, as JSON requires.
pub(crate) fn json_array(names: &[String]) -> String {
    let mut json = String::from("[");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        for c in name.chars() {
            match c {
                '"' => json.push_str("\\\""),
                '\\' => json.push_str("\\\\"),
                c if u32::from(c) < 0x20 => json.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => json.push(c),
            }
        }
        json.push('"');
    }
    json.push(']');
    json
}

/// A multi-lock's acquire: every name or none (see `dialect::SetTemplates`).
impl LockInner {
    pub(crate) async fn take_all(&self, set: &NameSet, owner: &str) -> Result<Option<Taken>> {
        let (holder, ttl) = (&self.options.holder, self.options.ttl);
        let statement = set.sql.acquire(&self.name, owner, holder, ttl);
        let action = "acquire the multi-lock";
        let Some(read_tokens) = set.sql.read_tokens(&self.name, owner) else {
            // PostgreSQL and SQLite: the rows taken, or nothing; on PostgreSQL a
            // `(NULL, NULL)` row when rows are missing, which are then created (free) and
            // the statement run once more.
            for _ in 0..2 {
                let first = self.queries.query(&statement).await;
                let rows = self
                    .or_create_table(action, first, || self.queries.query(&statement))
                    .await?;
                let missing = rows.iter().any(|row| row.first() == Some(&Value::Null));
                if !missing {
                    return self.confirm(set, owner, rows).await;
                }
                self.create_rows(set).await?;
            }
            return Ok(None);
        };
        // MySQL: the UPDATE cannot create rows, nor tell a missing one from one it took,
        // so rows are made to exist first, once per multi-lock (and again if some vanish).
        if !set.rows_exist.load(Ordering::Relaxed) {
            self.create_rows(set).await?;
            set.rows_exist.store(true, Ordering::Relaxed);
        }
        let affected = match self.queries.execute(&statement).await {
            Err(error) if self.dialect.is_not_all_free(&error) => return Ok(None),
            Err(error) => return Err(Error::query(action, error)),
            Ok(affected) => affected,
        };
        if affected != set.rows() {
            // Rows deleted since they were created: free those taken; the next attempt
            // creates the rest.
            set.rows_exist.store(false, Ordering::Relaxed);
            if affected > 0 {
                let _ = self.release_once(owner, false).await;
            }
            return Ok(None);
        }
        match self.query(&read_tokens).await {
            Ok(rows) => self.confirm(set, owner, rows).await,
            Err(error) => {
                let error = Error::query("read the new fencing tokens", error);
                // As for a lock: nobody will hear of this acquisition, so free it now.
                let _ = self.release_once(owner, false).await;
                Err(error)
            }
        }
    }

    /// The tokens of `rows`, or, when they are not every name's, nothing held: an
    /// acquisition that took only some names (which the statements rule out) is freed.
    async fn confirm(&self, set: &NameSet, owner: &str, rows: Vec<Row>) -> Result<Option<Taken>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let taken = set.tokens(rows);
        if taken.is_none() {
            let _ = self.release_once(owner, false).await;
        }
        Ok(taken)
    }

    /// Adds the missing rows of the set, free: nothing any other acquisition could see as
    /// held. Creates the table first if needed.
    async fn create_rows(&self, set: &NameSet) -> Result<()> {
        let Some(statement) = set.sql.create_rows(&self.name) else {
            return Ok(());
        };
        let first = self.queries.execute(&statement).await;
        self.or_create_table("create the multi-lock's rows", first, || {
            self.queries.execute(&statement)
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TableName;

    fn set(names: &[&str]) -> Result<(NameSet, String)> {
        let (_, sql) = Dialect::Postgres.set_sql(&TableName::default());
        NameSet::new(
            names.iter().map(|&n| n.to_owned()).collect(),
            Dialect::Postgres,
            sql,
        )
    }

    #[test]
    fn names_are_merged_sorted_and_bound_as_json() {
        let (set, json) = set(&["b", "a\"q\"", "b", "c\\\n"]).unwrap();
        assert_eq!(set.members, ["a\"q\"", "b", "c\\\n"]);
        assert_eq!(json, r#"["a\"q\"","b","c\\\u000a"]"#);
        assert_eq!(set.rows(), 3);
        assert!(set.contains("b") && !set.contains("d"));
    }

    #[test]
    fn bad_sets_are_errors() {
        assert!(matches!(set(&[]), Err(Error::InvalidOption(_))));
        assert!(matches!(set(&["a", ""]), Err(Error::EmptyName)));
        assert!(matches!(set(&["a\0"]), Err(Error::InvalidOption(_))));
        let long = "x".repeat(2001);
        assert!(matches!(set(&[&long]), Err(Error::NameTooLong { .. })));
    }

    #[test]
    fn tokens_need_every_name_once() {
        let (set, _) = set(&["a", "b"]).unwrap();
        let row = |name: &str, token| vec![Value::Text(name.into()), Value::Int(token)];
        let taken = set.tokens(vec![row("b", 7), row("a", 3)]).unwrap();
        assert_eq!(taken.token, FencingToken(3));
        assert_eq!(taken.tokens, [FencingToken(3), FencingToken(7)]);
        assert!(set.tokens(vec![row("a", 3)]).is_none());
        assert!(set.tokens(vec![row("a", 3), row("a", 4)]).is_none());
    }
}
