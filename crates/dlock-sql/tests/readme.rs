//! The repository's Markdown, checked where a doctest cannot see.
//!
//! The README's Rust snippets, and those of the pages under `docs/`, are doc-tested through
//! this crate (see `RepositoryReadme` in `src/lib.rs`). Checked here: a snippet marked
//! `ignore` is never compiled; a snippet that imports an adapter crate
//! (`dlock_tokio_postgres::…`) compiles in the doctest — the adapters are this crate's
//! dependencies — but not in a user's project that depends on the facade alone; a page
//! with Rust snippets that `src/lib.rs` does not include is never compiled at all; a link
//! to a file or a heading of the repository that no longer exists; and the README's two
//! commands drifting from what `.ci/run` runs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const README: &str = include_str!("../../../README.md");
const MIGRATIONS: &str = include_str!("../../../docs/migrations.md");
const LIB: &str = include_str!("../src/lib.rs");

/// Where the published repository's files are, for links written as absolute URLs (crate
/// READMEs are shown on crates.io and docs.rs, where a relative link would not resolve).
const REPOSITORY_FILES: &str = "https://github.com/dlock-rs/dlock/blob/main/";

/// The README stays a front door; reference material belongs in the pages it links to.
/// 8,500 until the fourth adapter (sqlx) needed its row in the adapter table; 8,700 until
/// the multi-lock's example (509 bytes); 9,210 until the semaphore's (about 560 bytes,
/// with the link to the page on picking a primitive) and the reader-writer lock's (about
/// 500).
const README_MAX_BYTES: usize = 10_300;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// A Markdown page's fenced code blocks: their info string and their lines.
fn code_blocks(page: &str) -> Vec<(String, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in page.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.to_owned(), Vec::new())),
            (Some(_), Some(_)) => blocks.push(current.take().expect("inside a block")),
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "a page ends inside a code block");
    blocks
}

fn rust_blocks(page: &str) -> Vec<(String, Vec<&str>)> {
    code_blocks(page)
        .into_iter()
        .filter(|(info, _)| info.split(',').next() == Some("rust"))
        .collect()
}

#[test]
fn the_readme_has_rust_snippets_and_none_is_ignored() {
    assert!(
        rust_blocks(README).len() >= 3,
        "found {} Rust blocks",
        rust_blocks(README).len()
    );
    for (info, lines) in rust_blocks(README)
        .into_iter()
        .chain(rust_blocks(MIGRATIONS))
    {
        assert!(
            !info.split(',').any(|attribute| attribute == "ignore"),
            "a snippet is marked `{info}`, so it is never compiled:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn snippets_use_the_facade_not_the_adapter_crates() {
    for (_, lines) in rust_blocks(README)
        .into_iter()
        .chain(rust_blocks(MIGRATIONS))
    {
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
                    "a snippet uses `{adapter}`, which a project that depends on the \
                     facade (`dlock-sql`) cannot import; use its path (`dlock::…`):\n{line}"
                );
            }
        }
    }
}

#[test]
fn every_page_of_docs_with_rust_snippets_is_doc_tested() {
    let docs = repository_root().join("docs");
    for entry in fs::read_dir(&docs).expect("the docs/ directory") {
        let path = entry.expect("a docs/ entry").path();
        let text = fs::read_to_string(&path).expect("a docs/ page");
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a name");
        if !rust_blocks(&text).is_empty() {
            assert!(
                LIB.contains(&format!("include_str!(\"../../../docs/{name}\")")),
                "docs/{name} has Rust snippets, but src/lib.rs does not include it for \
                 the doctests, so they are never compiled"
            );
        }
    }
}

#[test]
fn the_readme_stays_a_front_door() {
    assert!(
        README.len() <= README_MAX_BYTES,
        "the README has grown to {} bytes (at most {README_MAX_BYTES}): move reference \
         material to the page that holds it (docs/, CONTRIBUTING.md, a crate's README)",
        README.len()
    );
}

/// The repository's Markdown pages whose links are checked.
fn markdown_pages() -> Vec<PathBuf> {
    let root = repository_root();
    let mut pages: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "MIGRATING.md",
        "BENCHMARKS.md",
    ]
    .iter()
    .map(|name| root.join(name))
    .collect();
    for dir in ["docs", "crates"] {
        for entry in fs::read_dir(root.join(dir)).expect("a directory of the repository") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pages.extend(
                    fs::read_dir(&path)
                        .expect("a crate directory")
                        .map(|entry| entry.expect("an entry").path())
                        .filter(|path| path.extension().is_some_and(|ext| ext == "md")),
                );
            } else if path.extension().is_some_and(|ext| ext == "md") {
                pages.push(path);
            }
        }
    }
    pages
}

/// The targets of a page's inline links, `[text](target)`, outside code blocks and spans.
fn link_targets(page: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_block = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Code spans may hold `](` that is no link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &str) -> BTreeSet<String> {
    let mut in_block = false;
    let mut anchors = BTreeSet::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            anchors.insert(anchor(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn links_within_the_repository_lead_somewhere() {
    let root = repository_root();
    let mut broken = Vec::new();
    for page in markdown_pages() {
        let text = fs::read_to_string(&page).expect("a Markdown page");
        let dir = page.parent().expect("a page has a directory");
        for target in link_targets(&text) {
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target.as_str(), None),
            };
            let path = if let Some(in_repository) = file.strip_prefix(REPOSITORY_FILES) {
                root.join(in_repository)
            } else if file.starts_with("http") || file.starts_with("mailto:") {
                continue;
            } else if !file.contains(['.', '/']) && !file.is_empty() {
                // An intra-doc link (`LockAdmin::list`) of a crate README, which
                // `cargo doc` resolves and checks.
                continue;
            } else if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            let shown = format!(
                "{} → {target}",
                page.strip_prefix(&root).unwrap_or(&page).display()
            );
            if !path.exists() {
                broken.push(format!("{shown}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                let target_text = fs::read_to_string(&path).unwrap_or_default();
                if path.extension().is_some_and(|ext| ext == "md")
                    && !anchors(&target_text).contains(fragment)
                {
                    broken.push(format!("{shown}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README's two commands: `.ci/run` runs the test command as printed, and the
/// example the first one runs exists.
#[test]
fn the_two_commands_are_what_ci_runs() {
    let section = README
        .split("## Two commands")
        .nth(1)
        .expect("the README has a \"Two commands\" section");
    let (_, lines) = code_blocks(section)
        .into_iter()
        .next()
        .expect("a code block in \"Two commands\"");
    let commands: Vec<&str> = lines
        .iter()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --example quickstart", "cargo test --workspace"],
        "the README's two commands changed: keep .ci/run and this test in step"
    );
    let ci = fs::read_to_string(repository_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == commands[1]),
        ".ci/run does not run the README's test command `{}`",
        commands[1]
    );
    let examples =
        fs::read_to_string(repository_root().join("examples/Cargo.toml")).expect("examples");
    assert!(
        examples.contains("name = \"quickstart\""),
        "examples/Cargo.toml has no `quickstart` example for the README's first command"
    );
}
