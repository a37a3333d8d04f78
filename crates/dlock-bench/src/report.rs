//! Percentiles and the JSON lines the benchmark prints.

use std::time::Duration;

use dlock_core::Dialect;
use dlock_testkit::Backend;
use serde::{Serialize, Serializer};

/// Latencies of a run, sorted, in milliseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latencies {
    sorted_ms: Vec<f64>,
}

impl Latencies {
    pub(crate) fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Self {
        Self::from_ms(durations.into_iter().map(|d| d.as_secs_f64() * 1e3))
    }

    pub(crate) fn from_ms(values: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted_ms: Vec<f64> = values.into_iter().collect();
        sorted_ms.sort_by(f64::total_cmp);
        Self { sorted_ms }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted_ms.len()
    }

    /// The nearest-rank percentile `p` (0–100); NaN when there are no samples, which
    /// a result line prints as `null`.
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let count = self.sorted_ms.len();
        if count == 0 {
            return f64::NAN;
        }
        // Nearest rank: the smallest value with at least p % of the samples at or below it.
        let rank = (p / 100.0 * count as f64).ceil();
        let index = (1..=count)
            .find(|candidate| *candidate as f64 >= rank)
            .unwrap_or(count);
        self.sorted_ms[index - 1]
    }
}

/// One result: the fields every result has, then its figures, in the order they were
/// added. Printed as one JSON object on one line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ResultLine {
    scenario: &'static str,
    adapter: &'static str,
    dialect: &'static str,
    /// `pgbouncer` when the pools went through PgBouncer; absent when direct.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'static str>,
    workers: usize,
    #[serde(flatten)]
    figures: Figures,
}

/// The figures of a result, by name, in order.
#[derive(Debug, Clone, Default)]
struct Figures(Vec<(&'static str, Figure)>);

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, figure)| (key, figure)))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Figure {
    Int(u64),
    /// Rounded to three decimals (milliseconds to the microsecond); `null` when not
    /// finite, e.g. a percentile of no samples.
    Float(Option<f64>),
    Ints(Vec<u64>),
    Text(String),
}

impl ResultLine {
    /// A line with the fields every result has.
    pub(crate) fn new(
        scenario: &'static str,
        adapter: Backend,
        dialect: Dialect,
        workers: usize,
    ) -> Self {
        Self {
            scenario,
            adapter: adapter.name(),
            dialect: dlock_testkit::dialect_key(dialect),
            route: None,
            workers,
            figures: Figures::default(),
        }
    }

    /// The same, with the pools reaching the database by `route`.
    pub(crate) fn through(mut self, route: dlock_testkit::Route) -> Self {
        self.route = (route != dlock_testkit::Route::Direct).then_some(route.key());
        self
    }

    fn with(mut self, key: &'static str, figure: Figure) -> Self {
        self.figures.0.push((key, figure));
        self
    }

    pub(crate) fn text(self, key: &'static str, value: impl Into<String>) -> Self {
        self.with(key, Figure::Text(value.into()))
    }

    pub(crate) fn int(self, key: &'static str, value: u64) -> Self {
        self.with(key, Figure::Int(value))
    }

    pub(crate) fn float(self, key: &'static str, value: f64) -> Self {
        let rounded = value.is_finite().then(|| (value * 1e3).round() / 1e3);
        self.with(key, Figure::Float(rounded))
    }

    pub(crate) fn ints(self, key: &'static str, values: &[u64]) -> Self {
        self.with(key, Figure::Ints(values.to_vec()))
    }

    /// `ops_per_s`, `p50_ms` and `p99_ms` of operations that took `latencies` over `elapsed`.
    pub(crate) fn throughput(self, latencies: &Latencies, elapsed: Duration) -> Self {
        self.float("ops_per_s", latencies.len() as f64 / elapsed.as_secs_f64())
            .float("p50_ms", latencies.percentile(50.0))
            .float("p99_ms", latencies.percentile(99.0))
            .int("samples", latencies.len() as u64)
    }

    pub(crate) fn scenario(&self) -> &str {
        self.scenario
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// The numeric figure `key`, if the line has it (as printed: rounded).
    pub(crate) fn number(&self, key: &str) -> Option<f64> {
        self.figures
            .0
            .iter()
            .find(|(name, _)| *name == key)
            .and_then(|(_, figure)| match figure {
                Figure::Int(value) => Some(*value as f64),
                Figure::Float(value) => Some(value.unwrap_or(f64::NAN)),
                Figure::Ints(_) | Figure::Text(_) => None,
            })
    }

    pub(crate) fn render(&self) -> String {
        serde_json::to_string(self).expect("BUG: a result line is always valid JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let latencies = Latencies::from_ms((1..=100).rev().map(f64::from));
        assert_eq!(latencies.percentile(50.0), 50.0);
        assert_eq!(latencies.percentile(99.0), 99.0);
        assert_eq!(latencies.percentile(100.0), 100.0);
        assert_eq!(Latencies::from_ms([7.0]).percentile(99.0), 7.0);
        assert!(Latencies::default().percentile(50.0).is_nan());
    }

    #[test]
    fn figures_follow_the_common_fields_in_order() {
        let line = ResultLine::new("skip", Backend::TokioPostgres, Dialect::Postgres, 2)
            .float("nan", f64::NAN)
            .float("ms", 1.23456)
            .ints("list", &[1, 2])
            .text("note", "a\"b");
        assert_eq!(
            line.render(),
            r#"{"scenario":"skip","adapter":"tokio-postgres","dialect":"postgres","workers":2,"nan":null,"ms":1.235,"list":[1,2],"note":"a\"b"}"#
        );
        assert_eq!(line.number("ms"), Some(1.235));
    }
}
