//! How busy the machine's cores were, from `/proc/stat` (Linux; elsewhere nothing is
//! reported). Whether a scenario is bound by the CPU rather than by waiting — for the
//! disk, for the network — shows in the share of core time spent working while it ran.

/// Core time counted since boot, over all cores, in the kernel's clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTime {
    /// Ticks spent running anything: user, system, interrupts, and time stolen by the
    /// hypervisor (a shared machine's other tenants).
    busy: u64,
    /// All ticks, idle and waiting for the disk included.
    total: u64,
}

impl CpuTime {
    /// The machine's counters now, if it has `/proc/stat`.
    pub(crate) fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    /// The summary line, `cpu  user nice system idle iowait irq softirq steal guest
    /// guest_nice` (guest time is already counted in user and nice).
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks.try_into().ok()?;
        let busy = user + nice + system + irq + softirq + steal;
        Some(Self {
            busy,
            total: busy + idle + iowait,
        })
    }

    /// The ticks counted between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// Sums two spans of ticks.
    pub(crate) fn add(self, other: Self) -> Self {
        Self {
            busy: self.busy + other.busy,
            total: self.total + other.total,
        }
    }

    /// The busy share of the cores' time, 0 to 1; `None` before any tick was counted.
    pub(crate) fn busy_share(self) -> Option<f64> {
        (self.total > 0).then(|| self.busy as f64 / self.total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_counts_all_but_idle_and_disk_waits() {
        let before = CpuTime::parse("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        let after = CpuTime::parse("cpu  160 5 80 830 60 2 3 10 7 0").unwrap();
        // Busy: 60 + 5 + 30 + 2 + 3 + 10 = 110 ticks of 110 + 30 + 10.
        assert_eq!(after.since(before).busy_share(), Some(110.0 / 150.0));
    }

    #[test]
    fn a_line_that_is_not_the_summary_gives_nothing() {
        assert_eq!(CpuTime::parse("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(CpuTime::parse("cpu  1 2 3"), None);
    }
}
