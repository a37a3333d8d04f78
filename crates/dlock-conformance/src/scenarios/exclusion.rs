//! Mutual exclusion: contenders in separate processes, each with its own connections,
//! record every critical section; no two may overlap.

use std::time::{Duration, Instant};

use crate::child::{self, Mode};
use crate::support::{Env, Verdict, unique_name};

const CONTENDERS: usize = 8;
const SECTIONS_EACH: usize = 250;

pub(crate) async fn mutual_exclusion(env: Env) -> Verdict {
    let name = unique_name("mutual_exclusion");
    let started = Instant::now();
    let children = (0..CONTENDERS)
        .map(|_| {
            let mode = Mode::Contend {
                sections: SECTIONS_EACH,
            };
            child::spawn(&env, &name, mode, Duration::from_secs(5))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sections = Vec::new();
    for child in children {
        for line in child.finish(Duration::from_secs(240)).await? {
            sections.push(parse_section("SECTION", &line)?);
        }
    }
    let elapsed = started.elapsed();
    if sections.len() != CONTENDERS * SECTIONS_EACH {
        return Err(format!(
            "expected {} sections, got {}",
            CONTENDERS * SECTIONS_EACH,
            sections.len()
        ));
    }
    let overlaps = overlaps(&mut sections, "fencing token")?;
    eprintln!(
        "mutual_exclusion: {} critical sections by {CONTENDERS} processes in {elapsed:.1?}, \
         {overlaps} overlaps",
        sections.len()
    );
    if overlaps > 0 {
        return Err(format!("{overlaps} overlapping critical sections"));
    }
    Ok(())
}

/// The critical sections that overlap another, once sorted by entry; an error if
/// `token`s (fencing tokens, terms) do not grow in entry order.
pub(crate) fn overlaps(sections: &mut [Section], token: &str) -> Result<usize, String> {
    sections.sort_by_key(|section| section.entry);
    let mut overlaps = 0;
    for pair in sections.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if later.entry < earlier.exit {
            overlaps += 1;
        }
        if later.token <= earlier.token {
            return Err(format!(
                "{token} {} entered after {token} {}: they must grow in entry order",
                later.token, earlier.token
            ));
        }
    }
    Ok(overlaps)
}

/// A critical section (a term, for elections) as a child reports it.
pub(crate) struct Section {
    pub(crate) token: i64,
    pub(crate) entry: u64,
    pub(crate) exit: u64,
}

/// Parses `<word> <token> <entry ns> <exit ns>`.
pub(crate) fn parse_section(word: &str, line: &str) -> Result<Section, String> {
    let bad = || format!("unexpected child output {line:?}");
    let mut words = line.split_whitespace();
    if words.next() != Some(word) {
        return Err(bad());
    }
    let mut number = || {
        words
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .ok_or_else(bad)
    };
    let token = i64::try_from(number()?).map_err(|_| bad())?;
    Ok(Section {
        token,
        entry: number()?,
        exit: number()?,
    })
}

/// Holding one name does not block another.
pub(crate) async fn independent_names(env: Env) -> Verdict {
    let queries = env.connect().await?;
    let first = crate::support::quick(dlock_core::DistributedLock::builder(
        unique_name("independent_a"),
        queries.clone(),
    ))
    .acquire_timeout(Duration::from_secs(1))
    .build()
    .map_err(|e| e.to_string())?;
    let second = crate::support::quick(dlock_core::DistributedLock::builder(
        unique_name("independent_b"),
        queries,
    ))
    .acquire_timeout(Duration::from_secs(1))
    .build()
    .map_err(|e| e.to_string())?;
    let a = first.acquire().await.map_err(|e| e.to_string())?;
    let b = second
        .acquire()
        .await
        .map_err(|e| format!("a second name was blocked: {e}"))?;
    a.release().await.map_err(|e| e.to_string())?;
    b.release().await.map_err(|e| e.to_string())?;
    Ok(())
}
