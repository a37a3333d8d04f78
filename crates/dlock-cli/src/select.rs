//! Which locks `dlock list` shows: by name (prefix, glob) and by state. The table is
//! read whole and filtered here, so a filter never changes what the database runs.

use dlock_seaorm::{LockInfo, LockState};

/// The locks to show; every lock when nothing is set.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Names starting with this, exactly (no wildcards).
    pub(crate) prefix: Option<String>,
    /// Names matching this glob.
    pub(crate) pattern: Option<Glob>,
    /// Locks in one of these states; any state when empty.
    pub(crate) states: Vec<LockState>,
}

impl Selection {
    pub(crate) fn is_everything(&self) -> bool {
        self.prefix.is_none() && self.pattern.is_none() && self.states.is_empty()
    }

    pub(crate) fn admits(&self, lock: &LockInfo) -> bool {
        self.prefix
            .as_deref()
            .is_none_or(|prefix| lock.name.starts_with(prefix))
            && self
                .pattern
                .as_ref()
                .is_none_or(|glob| glob.matches(&lock.name))
            && (self.states.is_empty() || self.states.contains(&lock.state))
    }
}

/// A shell-style pattern on the whole name: `*` any run of characters (none included),
/// `?` one character, `\` takes the next character literally.
#[derive(Debug, Clone)]
pub(crate) struct Glob(Vec<Token>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    AnyRun,
    AnyOne,
    Literal(char),
}

impl Glob {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                '\\' => Token::Literal(chars.next().ok_or_else(|| {
                    format!("{pattern:?} ends with a lone `\\`; write `\\\\` for a backslash")
                })?),
                c => Token::Literal(c),
            });
        }
        Ok(Self(tokens))
    }

    /// Whether `name` matches, whole. The usual greedy match with one backtrack point
    /// (the last `*`): linear in practice, never exponential, whatever the pattern.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.0;
        let (mut at, mut next) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while at < name.len() {
            match tokens.get(next) {
                Some(Token::AnyRun) => {
                    star = Some((next, at));
                    next += 1;
                }
                Some(Token::AnyOne) => {
                    at += 1;
                    next += 1;
                }
                Some(Token::Literal(c)) if *c == name[at] => {
                    at += 1;
                    next += 1;
                }
                _ => match star {
                    // The last `*` takes one more character and the rest is tried again.
                    Some((star_token, star_at)) => {
                        star = Some((star_token, star_at + 1));
                        at = star_at + 1;
                        next = star_token + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[next..].iter().all(|token| *token == Token::AnyRun)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Glob::parse(pattern).expect("a valid pattern").matches(name)
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(matches("job-*", "job-42"));
        assert!(matches("job-*", "job-"));
        assert!(!matches("job-*", "a-job-42"));
        assert!(matches("*report*", "nightly report 2"));
        assert!(matches("j?b", "jéb"));
        assert!(!matches("j?b", "jb"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
        assert!(matches("\\*lit\\?", "*lit?"));
        assert!(!matches("\\*lit", "xlit"));
    }

    #[test]
    fn a_lone_backslash_is_refused() {
        assert!(Glob::parse("job\\").unwrap_err().contains("lone"));
    }

    #[test]
    fn long_names_against_many_stars_stay_fast() {
        let name = "a".repeat(65_535);
        assert!(!matches("*a*a*a*a*a*a*a*b", &name));
    }
}
