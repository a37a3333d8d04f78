//! The faults, and how long the suite took to recover from each.

use std::fmt;

use crate::ledger::Section;
use crate::worker_process::Hold;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum FaultKind {
    /// A holder killed with SIGKILL.
    Kill,
    /// A holder frozen with SIGSTOP past its lease, then resumed with SIGCONT.
    Stop,
    /// The database connections of random workers terminated by the server.
    Terminate,
    /// The database unreachable (a partition at the workers' proxy) for longer than the lease.
    Unreachable,
    /// A holder frozen with SIGSTOP just after one of its renewals, and resumed after its
    /// local deadline (0.9 TTL after the renewal was sent) but before its lease ends by the
    /// database's clock (a TTL after the renewal ran).
    ShortStop,
    /// An acquire statement that commits, but whose reply reaches the worker more than a
    /// TTL later (its connection's replies held at the proxy).
    DelayedAcquire,
    /// A renewal sent on a pooled connection that has gone silent (half-open at the
    /// proxy) while the database and the worker's other connections are healthy.
    HungRenewal,
    /// The PostgreSQL server restarted.
    Restart,
    /// The PostgreSQL primary killed (`-m immediate`) and its standby promoted (the
    /// failover rig of `--failover`); asynchronous, the standby stopped receiving half a
    /// TTL before, so acquisitions the primary acknowledged are lost.
    Failover,
}

impl FaultKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Terminate => "terminate",
            Self::Unreachable => "unreachable",
            Self::ShortStop => "short-stop",
            Self::DelayedAcquire => "delayed-acquire",
            Self::HungRenewal => "hung-renewal",
            Self::Restart => "restart",
            Self::Failover => "failover",
        }
    }

    /// Whether the fault acts on a database server or on the network between it and the
    /// workers (the proxy), which SQLite does not have.
    pub(crate) fn needs_network(self) -> bool {
        matches!(
            self,
            Self::Terminate | Self::Unreachable | Self::DelayedAcquire | Self::HungRenewal
        )
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
    /// When it ended: the server answered again (restart), the partition or the
    /// connection's fault was lifted (unreachable, delayed-acquire, hung-renewal), the
    /// process was resumed (stop, short-stop); `at_us` for instant faults.
    pub(crate) ended_us: i64,
    /// The lock held by the worker it hit (kill, stop, short-stop, hung-renewal), or
    /// taken by the acquire whose reply it delayed (delayed-acquire).
    pub(crate) target: Option<Hold>,
}

impl Fault {
    /// How long, in milliseconds, until the suite worked again after this fault:
    ///
    /// - kill, stop, short-stop: from the signal until the holder's lock name was entered
    ///   again by a later holder (a section with a larger fencing token);
    /// - delayed-acquire: from the acquire statement until its name was entered by a later
    ///   holder;
    /// - terminate: from the termination until the next section entered, on any name;
    /// - unreachable, restart, hung-renewal: from the end of the fault (partition or
    ///   connection lifted, server back) until the next section entered, on any name;
    /// - failover: from the promotion until the next section entered, on any name (the
    ///   lock-delay, a TTL, included).
    ///
    /// `None` if that never happened before the run ended.
    pub(crate) fn recovery_ms(&self, sections: &[Section]) -> Option<i64> {
        let (since, next) = match (&self.target, self.kind) {
            (_, FaultKind::Unreachable | FaultKind::Restart | FaultKind::HungRenewal) => {
                (self.ended_us, next_entry(sections, self.ended_us))
            }
            (Some((name, token)), _) => (
                self.at_us,
                sections
                    .iter()
                    .filter(|s| &s.name == name && s.token > *token && s.entry_us >= self.at_us)
                    .map(|s| s.entry_us)
                    .min(),
            ),
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
            write: true,
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
            ..kill.clone()
        };
        assert_eq!(late.recovery_ms(&sections), None);
        // The holder of a hung renewal should keep its lock: recovery is counted from
        // the silent connection's end, on any name, not from the holder's name.
        let hung = Fault {
            kind: FaultKind::HungRenewal,
            ended_us: 1_400_000,
            ..kill
        };
        assert_eq!(hung.recovery_ms(&sections), Some(100));
    }

    #[test]
    fn fault_names_are_the_command_line_names() {
        use clap::ValueEnum;
        for kind in FaultKind::value_variants() {
            assert_eq!(FaultKind::from_str(kind.name(), false), Ok(*kind));
        }
        assert!(FaultKind::from_str("pause", false).is_err());
    }
}
