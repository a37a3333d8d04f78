//! The repository README's Rust snippets are doc-tested through this crate (see
//! `RepositoryReadme` in `src/lib.rs`). Two things a doctest cannot see are checked here:
//! a snippet marked `ignore` is never compiled, and a snippet that imports an adapter
//! crate (`dlock_tokio_postgres::…`) compiles in the doctest — the adapters are this
//! crate's dependencies — but not in a user's project that depends on `dlock` alone.

const README: &str = include_str!("../../../README.md");

/// The README's Rust code blocks: their info string and their lines.
fn rust_blocks() -> Vec<(String, Vec<&'static str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in README.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.to_owned(), Vec::new())),
            (Some(_), Some(_)) => {
                let (info, lines) = current.take().expect("inside a block");
                if info.split(',').next() == Some("rust") {
                    blocks.push((info, lines));
                }
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "the README ends inside a code block");
    blocks
}

#[test]
fn the_readme_has_rust_snippets_and_none_is_ignored() {
    let blocks = rust_blocks();
    assert!(blocks.len() >= 3, "found {} Rust blocks", blocks.len());
    for (info, lines) in blocks {
        assert!(
            !info.split(',').any(|attribute| attribute == "ignore"),
            "a README snippet is marked `{info}`, so it is never compiled:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn readme_snippets_use_the_facade_not_the_adapter_crates() {
    for (_, lines) in rust_blocks() {
        for line in lines {
            let visible = !line.trim_start().starts_with("# ");
            for adapter in [
                "dlock_core::",
                "dlock_tokio_postgres::",
                "dlock_seaorm::",
                "dlock_diesel::",
            ] {
                assert!(
                    !(visible && line.contains(adapter)),
                    "a README snippet uses `{adapter}`, which a project that depends on \
                     `dlock` cannot import; use the facade's path (`dlock::…`):\n{line}"
                );
            }
        }
    }
}
