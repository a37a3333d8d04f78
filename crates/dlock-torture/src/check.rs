//! The checker: what the ledger must show after a run, whatever the faults.

use std::collections::BTreeMap;

use crate::ledger::{Loss, Section};

/// What the checker found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Sections whose entry and exit both committed.
    pub(crate) sections: usize,
    /// Pairs of committed sections on one name whose times overlap.
    pub(crate) overlaps: usize,
    /// Sections on one name whose fencing token is not above that of the section before
    /// (in entry order).
    pub(crate) fencing_violations: usize,
    /// Ledger writes of a lease made after its worker noticed the lease was lost.
    pub(crate) late_writes: usize,
    /// What each violation was, for the report.
    pub(crate) details: Vec<String>,
}

impl Verdict {
    pub(crate) fn is_clean(&self) -> bool {
        self.overlaps == 0 && self.fencing_violations == 0 && self.late_writes == 0
    }
}

/// Checks, per name: no committed section that excludes the others (a lock's, a term, a
/// write) overlaps any other, reads (`--rw`) overlapping only each other; fencing tokens
/// increase in entry order (counting sections whose exit never committed too), strictly
/// next to every such section, reads between two writes sharing one; no section wrote
/// after its worker noticed the loss of its lease.
pub(crate) fn check(sections: &[Section], losses: &[Loss]) -> Verdict {
    let mut verdict = Verdict {
        sections: sections.iter().filter(|s| s.exit_us.is_some()).count(),
        ..Verdict::default()
    };
    let mut by_name: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for section in sections {
        by_name.entry(&section.name).or_default().push(section);
    }
    for (name, mut sections) in by_name {
        sections.sort_by_key(|s| (s.entry_us, s.token));
        for pair in sections.windows(2) {
            // Tokens grow at every section next to a write; reads between two writes
            // share one, and never go back.
            let grows = pair[1].token > pair[0].token
                || (!pair[0].write && !pair[1].write && pair[1].token == pair[0].token);
            if !grows {
                verdict.fencing_violations += 1;
                verdict.details.push(format!(
                    "{name}: token {} entered at {} us after token {} at {} us",
                    pair[1].token, pair[1].entry_us, pair[0].token, pair[0].entry_us
                ));
            }
        }
        // The committed sections entered so far with the latest exit: of any kind, and
        // of those that exclude the others (every one but reads).
        let mut latest: Option<&Section> = None;
        let mut latest_write: Option<&Section> = None;
        for section in sections.iter().filter(|s| s.exit_us.is_some()) {
            let before = [latest_write, latest.filter(|_| section.write)]
                .into_iter()
                .flatten()
                .find(|before| section.entry_us < before.exit_us.unwrap_or(i64::MIN));
            if let Some(before) = before {
                verdict.overlaps += 1;
                verdict.details.push(format!(
                    "{name}: token {} (worker {}) entered at {} us, before token {} (worker {}) \
                     exited at {} us",
                    section.token,
                    section.worker,
                    section.entry_us,
                    before.token,
                    before.worker,
                    before.exit_us.unwrap_or_default()
                ));
            }
            if latest.is_none_or(|before| section.exit_us > before.exit_us) {
                latest = Some(section);
            }
            if section.write && latest_write.is_none_or(|before| section.exit_us > before.exit_us) {
                latest_write = Some(section);
            }
        }
    }
    for loss in losses {
        for section in sections
            .iter()
            .filter(|s| s.name == loss.name && s.token == loss.token && s.worker == loss.worker)
        {
            for (what, at) in [("entry", Some(section.entry_us)), ("exit", section.exit_us)] {
                if let Some(at) = at.filter(|at| *at > loss.noticed_us) {
                    verdict.late_writes += 1;
                    verdict.details.push(format!(
                        "{}: token {} wrote its {what} at {at} us, after noticing the loss at {} us",
                        loss.name, loss.token, loss.noticed_us
                    ));
                }
            }
        }
    }
    verdict
}

/// `--semaphore`: checks that no more than `permits` committed sections of one semaphore
/// (the sections of its permits' rows, `name#i`) ran at any instant; each instant with
/// more counts as an overlap. Returns the most sections seen at once on any semaphore.
pub(crate) fn check_permits(sections: &[Section], permits: u32, verdict: &mut Verdict) -> usize {
    let mut by_semaphore: BTreeMap<&str, Vec<(i64, i32)>> = BTreeMap::new();
    for section in sections {
        let (Some((semaphore, _permit)), Some(exit)) =
            (section.name.rsplit_once('#'), section.exit_us)
        else {
            continue;
        };
        let events = by_semaphore.entry(semaphore).or_default();
        events.push((section.entry_us, 1));
        events.push((exit, -1));
    }
    let bound = i32::try_from(permits).unwrap_or(i32::MAX);
    let mut most = 0;
    for (semaphore, mut events) in by_semaphore {
        // At one instant, exits before entries: a section that ends as another starts
        // does not run alongside it.
        events.sort_unstable();
        let mut running = 0;
        for (at, change) in events {
            running += change;
            most = most.max(running);
            if change > 0 && running > bound {
                verdict.overlaps += 1;
                verdict.details.push(format!(
                    "{semaphore}: {running} sections ran at once at {at} us, on {permits} permits"
                ));
            }
        }
    }
    usize::try_from(most).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, token: i64, entry_us: i64, exit_us: Option<i64>) -> Section {
        Section {
            name: name.into(),
            token,
            worker: token,
            entry_us,
            exit_us,
            write: true,
        }
    }

    fn read(token: i64, worker: i64, entry_us: i64, exit_us: Option<i64>) -> Section {
        Section {
            worker,
            write: false,
            ..section("a", token, entry_us, exit_us)
        }
    }

    #[test]
    fn reads_overlap_each_other_but_no_write() {
        let clean = [
            read(1, 1, 0, Some(50)),
            read(1, 2, 10, Some(60)),
            section("a", 2, 60, Some(70)),
            read(3, 1, 70, Some(90)),
            read(3, 3, 75, None),
        ];
        assert!(check(&clean, &[]).is_clean(), "{:?}", check(&clean, &[]));
        let overlapping = [
            read(1, 1, 0, Some(50)),
            section("a", 2, 40, Some(45)),
            read(3, 2, 44, Some(80)),
        ];
        assert_eq!(check(&overlapping, &[]).overlaps, 2);
        // A read after a write with its old token; a read whose token went back.
        let tokens = [
            read(1, 1, 0, Some(5)),
            section("a", 2, 10, Some(20)),
            read(2, 2, 30, Some(40)),
            read(1, 3, 50, Some(60)),
        ];
        assert_eq!(check(&tokens, &[]).fencing_violations, 2);
    }

    #[test]
    fn a_loss_is_its_own_workers_among_readers_sharing_a_token() {
        let sections = [read(1, 1, 0, Some(10)), read(1, 2, 0, Some(500))];
        let loss = Loss {
            name: "a".into(),
            token: 1,
            worker: 1,
            noticed_us: 100,
        };
        assert!(check(&sections, &[loss]).is_clean());
    }

    #[test]
    fn more_sections_of_a_semaphore_than_permits_are_overlaps() {
        let sections = [
            section("s#1", 1, 0, Some(100)),
            section("s#2", 1, 10, Some(100)),
            // Ends as the next starts: not alongside it.
            section("s#3", 1, 20, Some(50)),
            section("s#3", 2, 50, Some(60)),
            // Another semaphore is independent; a section without exit is not counted.
            section("t#1", 1, 0, Some(100)),
            section("s#1", 2, 30, None),
        ];
        let mut verdict = check(&sections, &[]);
        assert_eq!(check_permits(&sections, 3, &mut verdict), 3);
        assert!(verdict.is_clean(), "{verdict:?}");
        assert_eq!(check_permits(&sections, 2, &mut verdict), 3);
        assert_eq!(verdict.overlaps, 2, "{verdict:?}");
    }

    #[test]
    fn a_clean_ledger_passes() {
        let sections = [
            section("a", 1, 0, Some(10)),
            section("a", 2, 10, Some(20)),
            // Killed in its section: no exit.
            section("a", 3, 25, None),
            section("a", 4, 3000, Some(3010)),
            // Other names are independent.
            section("b", 1, 5, Some(15)),
        ];
        let verdict = check(&sections, &[]);
        assert_eq!(verdict.sections, 4);
        assert!(verdict.is_clean(), "{verdict:?}");
    }

    #[test]
    fn overlapping_sections_are_found_even_past_a_short_one() {
        let sections = [
            section("a", 1, 0, Some(100)),
            section("a", 2, 50, Some(60)),
            section("a", 3, 70, Some(120)),
        ];
        let verdict = check(&sections, &[]);
        assert_eq!(verdict.overlaps, 2, "{verdict:?}");
        assert_eq!(verdict.fencing_violations, 0);
    }

    #[test]
    fn tokens_must_grow_in_entry_order() {
        let sections = [
            section("a", 2, 0, Some(10)),
            section("a", 1, 20, None),
            section("a", 1, 30, Some(40)),
        ];
        let verdict = check(&sections, &[]);
        assert_eq!(verdict.fencing_violations, 2, "{verdict:?}");
    }

    #[test]
    fn writes_after_the_noticed_loss_are_late() {
        let sections = [section("a", 1, 0, Some(500)), section("a", 2, 600, None)];
        let losses = [
            Loss {
                name: "a".into(),
                token: 1,
                worker: 1,
                noticed_us: 400,
            },
            Loss {
                name: "a".into(),
                token: 2,
                worker: 2,
                noticed_us: 700,
            },
        ];
        let verdict = check(&sections, &losses);
        assert_eq!(verdict.late_writes, 1, "{verdict:?}");
        assert!(verdict.details[0].contains("exit at 500"), "{verdict:?}");
    }
}
