//! The faults, and how long the suite took to recover from each.

use std::fmt;

use crate::ledger::Section;
use crate::workers::Hold;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    /// A holder killed with SIGKILL.
    Kill,
    /// A holder frozen with SIGSTOP past its lease, then resumed with SIGCONT.
    Stop,
    /// The database connections of random workers terminated by the server.
    Terminate,
    /// The database unreachable (a partition at the workers' proxy) for longer than the lease.
    Unreachable,
    /// The PostgreSQL server restarted.
    Restart,
}

impl FaultKind {
    pub(crate) const ALL: [Self; 5] = [
        Self::Kill,
        Self::Stop,
        Self::Terminate,
        Self::Unreachable,
        Self::Restart,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Terminate => "terminate",
            Self::Unreachable => "unreachable",
            Self::Restart => "restart",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected fault, in database-clock microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    /// When it began.
    pub(crate) at_us: i64,
    /// When it ended: the server answered again (restart), the partition was lifted
    /// (unreachable), the process was resumed (stop); `at_us` for instant faults.
    pub(crate) ended_us: i64,
    /// The lock held by the worker it hit (kill, stop).
    pub(crate) target: Option<Hold>,
}

impl Fault {
    /// How long, in milliseconds, until the suite worked again after this fault:
    ///
    /// - kill, stop: from the signal until the holder's lock name was entered again by a
    ///   later holder (a section with a larger fencing token);
    /// - terminate: from the termination until the next section entered, on any name;
    /// - unreachable, restart: from the end of the fault (partition lifted, server back)
    ///   until the next section entered, on any name.
    ///
    /// `None` if that never happened before the run ended.
    pub(crate) fn recovery_ms(&self, sections: &[Section]) -> Option<i64> {
        let (since, next) = match (&self.target, self.kind) {
            (Some((name, token)), _) => (
                self.at_us,
                sections
                    .iter()
                    .filter(|s| &s.name == name && s.token > *token && s.entry_us >= self.at_us)
                    .map(|s| s.entry_us)
                    .min(),
            ),
            (None, FaultKind::Unreachable | FaultKind::Restart) => {
                (self.ended_us, next_entry(sections, self.ended_us))
            }
            (None, _) => (self.at_us, next_entry(sections, self.at_us)),
        };
        next.map(|entry| (entry - since).max(0) / 1000)
    }
}

fn next_entry(sections: &[Section], after_us: i64) -> Option<i64> {
    sections
        .iter()
        .map(|s| s.entry_us)
        .filter(|entry| *entry >= after_us)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, token: i64, entry_us: i64) -> Section {
        Section {
            name: name.into(),
            token,
            worker: 0,
            entry_us,
            exit_us: Some(entry_us + 10),
        }
    }

    #[test]
    fn a_killed_holder_recovers_when_its_name_is_taken_again() {
        let sections = [
            section("a", 5, 1_000_000),
            section("b", 9, 1_500_000),
            section("a", 6, 3_200_000),
        ];
        let kill = Fault {
            kind: FaultKind::Kill,
            at_us: 1_200_000,
            ended_us: 1_200_000,
            target: Some(("a".into(), 5)),
        };
        assert_eq!(kill.recovery_ms(&sections), Some(2000));
        let partition = Fault {
            kind: FaultKind::Unreachable,
            at_us: 0,
            ended_us: 1_400_000,
            target: None,
        };
        assert_eq!(partition.recovery_ms(&sections), Some(100));
        let late = Fault {
            at_us: 4_000_000,
            ..kill
        };
        assert_eq!(late.recovery_ms(&sections), None);
    }
}
