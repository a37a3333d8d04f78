//! Percentiles and the JSON lines the benchmark prints.

use std::fmt::Write as _;
use std::time::Duration;

use crate::backend::{Adapter, Dialect};

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
    /// the JSON writer prints as `null`.
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

/// One JSON object on one line, written by hand: keys in insertion order.
#[derive(Debug, Clone)]
pub(crate) struct JsonLine {
    body: String,
    scenario: String,
    workers: usize,
    /// The numeric fields, for checking targets after the run.
    numbers: Vec<(String, f64)>,
}

impl JsonLine {
    /// A line with the fields every result has.
    pub(crate) fn new(scenario: &str, adapter: Adapter, dialect: Dialect, workers: usize) -> Self {
        Self {
            body: String::new(),
            scenario: scenario.to_owned(),
            workers,
            numbers: Vec::new(),
        }
        .text("scenario", scenario)
        .text("adapter", adapter.name())
        .text("dialect", dialect.name())
        .int("workers", workers as u64)
    }

    fn key(mut self, key: &str) -> Self {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        push_string(&mut self.body, key);
        self.body.push(':');
        self
    }

    pub(crate) fn text(self, key: &str, value: &str) -> Self {
        let mut line = self.key(key);
        push_string(&mut line.body, value);
        line
    }

    pub(crate) fn int(self, key: &str, value: u64) -> Self {
        let mut line = self.key(key);
        line.numbers.push((key.to_owned(), value as f64));
        let _ = write!(line.body, "{value}");
        line
    }

    /// A number with three decimals (enough for milliseconds to the microsecond);
    /// `null` when it is not finite, e.g. a percentile of no samples.
    pub(crate) fn float(self, key: &str, value: f64) -> Self {
        let mut line = self.key(key);
        line.numbers.push((key.to_owned(), value));
        if value.is_finite() {
            let _ = write!(line.body, "{value:.3}");
        } else {
            line.body.push_str("null");
        }
        line
    }

    pub(crate) fn ints(self, key: &str, values: &[u64]) -> Self {
        let mut line = self.key(key);
        let list: Vec<String> = values.iter().map(u64::to_string).collect();
        let _ = write!(line.body, "[{}]", list.join(","));
        line
    }

    /// `ops_per_s`, `p50_ms` and `p99_ms` of operations that took `latencies` over `elapsed`.
    pub(crate) fn throughput(self, latencies: &Latencies, elapsed: Duration) -> Self {
        self.float("ops_per_s", latencies.len() as f64 / elapsed.as_secs_f64())
            .float("p50_ms", latencies.percentile(50.0))
            .float("p99_ms", latencies.percentile(99.0))
            .int("samples", latencies.len() as u64)
    }

    pub(crate) fn scenario(&self) -> &str {
        &self.scenario
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// The numeric field `key`, if the line has it.
    pub(crate) fn number(&self, key: &str) -> Option<f64> {
        self.numbers
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    pub(crate) fn render(&self) -> String {
        format!("{{{}}}", self.body)
    }
}

/// Appends `value` as a JSON string (RFC 8259 escapes).
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if u32::from(control) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(control));
            }
            other => out.push(other),
        }
    }
    out.push('"');
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
    fn strings_are_escaped() {
        let line = JsonLine::new(
            "a\"b\\c\n\u{1}é",
            Adapter::TokioPostgres,
            Dialect::Postgres,
            2,
        )
        .float("nan", f64::NAN)
        .ints("list", &[1, 2]);
        assert_eq!(
            line.render(),
            r#"{"scenario":"a\"b\\c\n\u0001é","adapter":"tokio-postgres","dialect":"postgres","workers":2,"nan":null,"list":[1,2]}"#
        );
    }
}
