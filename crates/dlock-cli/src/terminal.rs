//! Text from the lock table, made safe and unambiguous on a terminal. A lock name or a
//! holder label is whatever an application passed: escape sequences that would recolour
//! or rewrite the operator's screen, bidirectional overrides that would reorder a line,
//! invisible characters that would make two names look alike.

/// `text` as a column or a field shows it: as is when every character prints as itself;
/// otherwise quoted as bash's `$'…'`, with every control and other non-printing
/// character (Unicode's Cc, Cf, Zl, Zp, Zs but the space, private use, unassigned) as
/// `\n`, `\t`, `\r`, `\xHH`, `\uHHHH` or `\UHHHHHHHH`, and `\` and `'` escaped, so that it
/// can be pasted back into a shell command (`dlock inspect $'job\x1b[31m'`).
///
/// Also quoted: an empty text, one with a space at either end (invisible in a column),
/// one starting with a combining mark (it would join the previous column), and one
/// starting with `$'` (so that a name never passes for another's quoted form).
pub(crate) fn shown(text: &str) -> String {
    // A raw text never starts with `$'`, so what is shown raw is always literal, and a
    // `\` or a `'` (common in Windows paths and in prose) needs no quoting.
    let plain = !text.is_empty()
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("$'")
        && text
            .chars()
            .enumerate()
            .all(|(index, c)| prints(c, index == 0));
    if plain {
        return text.to_owned();
    }
    quoted(text)
}

/// `name` as an argument to paste into a shell command: `"name"`, or `$'…'` (as
/// [`shown`] writes it) when double quotes would not keep it as it is.
pub(crate) fn argument(name: &str) -> String {
    let shown = shown(name);
    if shown.starts_with("$'") || name.contains(['$', '`', '!', '\\', '"']) {
        quoted(name)
    } else {
        format!("\"{name}\"")
    }
}

/// `text` in bash's `$'…'` quoting.
fn quoted(text: &str) -> String {
    let mut out = String::from("$'");
    for (index, c) in text.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if prints(c, index == 0) => out.push(c),
            c => push_code(&mut out, c),
        }
    }
    out.push('\'');
    out
}

/// `text` with its non-printing characters (as in [`shown`]) replaced by `\u{…}`, for
/// messages on stderr, which are prose rather than values to paste.
pub(crate) fn defanged(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (index, c) in text.chars().enumerate() {
        if prints(c, index == 0) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// `text` cut to `width` characters, its last one `…`, when it is longer; and whether
/// it was cut.
pub(crate) fn cut(text: String, width: usize) -> (String, bool) {
    if text.chars().count() <= width {
        return (text, false);
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    (out, true)
}

/// Whether `c` shows as itself: Rust's `Debug` decides, from the Unicode tables of the
/// standard library. A combining mark (grapheme extender) prints after another
/// character but not first.
pub(crate) fn prints(c: char, first: bool) -> bool {
    if matches!(c, '"' | '\'' | '\\') {
        // `Debug` escapes these for its own quoting; they print.
        return true;
    }
    if first {
        return c.escape_debug().eq(std::iter::once(c));
    }
    let pair: String = ['a', c].into_iter().collect();
    pair.escape_debug().eq(pair.chars())
}

/// `c` as bash's `$'…'` writes it: `\xHH` for ASCII, whose bytes it stands for,
/// `\uHHHH` and `\UHHHHHHHH` for the rest, always with every digit so that a following
/// hexadecimal digit is never taken into the escape.
fn push_code(out: &mut String, c: char) {
    let code = u32::from(c);
    let escaped = match code {
        0..=0x7f => format!("\\x{code:02x}"),
        0x80..=0xffff => format!("\\u{code:04x}"),
        _ => format!("\\U{code:08x}"),
    };
    out.push_str(&escaped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_are_shown_as_they_are() {
        for name in [
            "nightly report",
            "verrou-é",
            "e\u{301}te",
            "ジョブ",
            "C:\\jobs\\it's",
            "😀",
        ] {
            assert_eq!(shown(name), name);
        }
    }

    #[test]
    fn escape_sequences_never_reach_the_terminal() {
        assert_eq!(shown("job\u{1b}[2J\u{1b}[H"), "$'job\\x1b[2J\\x1b[H'");
        assert_eq!(shown("a\nb\tc\rd\0"), "$'a\\nb\\tc\\rd\\x00'");
        assert_eq!(shown("del\u{7f}"), "$'del\\x7f'");
        // C1 controls, 8-bit CSI included; bidirectional overrides; invisible characters.
        assert_eq!(shown("x\u{9b}31m"), "$'x\\u009b31m'");
        assert_eq!(shown("abc\u{202e}fed"), "$'abc\\u202efed'");
        assert_eq!(shown("a\u{200b}b"), "$'a\\u200bb'");
        assert_eq!(shown("nb\u{a0}sp"), "$'nb\\u00a0sp'");
        assert_eq!(shown("tag\u{e0041}"), "$'tag\\U000e0041'");
        assert_eq!(shown("\u{301}x"), "$'\\u0301x'");
        // Once quoted, quotes and backslashes are escaped too.
        assert_eq!(shown("it's\\\u{1b}"), "$'it\\'s\\\\\\x1b'");
    }

    #[test]
    fn names_that_would_look_like_others_are_quoted() {
        assert_eq!(shown(""), "$''");
        assert_eq!(shown("job "), "$'job '");
        assert_eq!(shown(" job"), "$' job'");
        assert_eq!(shown("$'job'"), "$'$\\'job\\''");
    }

    #[test]
    fn arguments_paste_into_a_shell() {
        assert_eq!(argument("nightly report"), "\"nightly report\"");
        assert_eq!(argument("cost $5"), "$'cost $5'");
        assert_eq!(argument("a\u{1b}b"), "$'a\\x1bb'");
    }

    #[test]
    fn messages_keep_their_punctuation() {
        assert_eq!(
            defanged("lock \"a\\b\" held by x\u{1b}[31m"),
            "lock \"a\\b\" held by x\\u{1b}[31m"
        );
    }

    #[test]
    fn long_texts_are_cut_with_an_ellipsis() {
        assert_eq!(cut("abcdef".into(), 6), ("abcdef".into(), false));
        assert_eq!(cut("abcdefg".into(), 6), ("abcde…".into(), true));
        assert_eq!(cut("ééééééé".into(), 3), ("éé…".into(), true));
    }
}
