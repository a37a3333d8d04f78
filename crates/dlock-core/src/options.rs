//! Lock options and their validation.

use std::time::Duration;

use crate::{Error, Result, TableName};

/// The longest TTL accepted: far beyond any sensible lease, far below overflow.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The shortest TTL accepted. The holder's margin is a tenth of the TTL, and it must
/// cover the timer's granularity (tokio's timers fire up to 1 ms late), the scheduling of
/// the task that signals the loss, and clock-rate differences: 10 ms at this minimum.
pub(crate) const MIN_TTL: Duration = Duration::from_millis(100);

/// Validated options of a [`DistributedLock`](crate::DistributedLock). Built by
/// [`LockBuilder`](crate::LockBuilder).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) table: TableName,
    pub(crate) ttl: Duration,
    pub(crate) renew_interval: Duration,
    pub(crate) acquire_timeout: Option<Duration>,
    pub(crate) poll_interval: Duration,
    pub(crate) holder: String,
    pub(crate) skip_if_obtained: bool,
}

/// Options as the user set them, before validation.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawOptions {
    pub(crate) table: Option<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) acquire_timeout: Option<Duration>,
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) holder: Option<String>,
    pub(crate) skip_if_obtained: bool,
}

impl Options {
    pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(30);
    pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// How long after sending a successful acquire or renewal the holder still considers
    /// its lease safe: the TTL less a tenth, a margin for clock-rate differences and for
    /// the job to react before the database lets anyone else in.
    pub(crate) fn safe_for(&self) -> Duration {
        self.ttl - self.ttl / 10
    }

    /// How long to wait before retrying a failed renewal.
    pub(crate) fn renew_retry_delay(&self) -> Duration {
        (self.renew_interval / 4).min(Duration::from_millis(500))
    }

    /// How long one renewal attempt may take before it is abandoned and tried again (on
    /// another checkout): a renewal stuck on a half-open connection must not use up the
    /// whole lease. Four retry delays: 2 s with the defaults.
    pub(crate) fn renew_attempt_bound(&self) -> Duration {
        self.renew_retry_delay() * 4
    }

    pub(crate) fn validate(raw: RawOptions) -> Result<Self> {
        let table = match raw.table {
            Some(name) => TableName::parse(&name)?,
            None => TableName::default(),
        };
        let ttl = Self::validate_ttl(raw.ttl.unwrap_or(Self::DEFAULT_TTL))?;
        if raw
            .holder
            .as_deref()
            .is_some_and(|holder| holder.contains('\0'))
        {
            return Err(Error::InvalidOption(
                "the holder name contains a NUL character, which PostgreSQL cannot store; \
                 remove it"
                    .into(),
            ));
        }
        let mut options = Self {
            table,
            ttl,
            renew_interval: ttl / 3,
            acquire_timeout: raw.acquire_timeout,
            poll_interval: raw.poll_interval.unwrap_or(Self::DEFAULT_POLL_INTERVAL),
            holder: recorded_holder(raw.holder.as_deref()),
            skip_if_obtained: raw.skip_if_obtained,
        };
        if let Some(interval) = raw.renew_interval {
            if interval.is_zero() || interval >= options.safe_for() {
                return Err(Error::InvalidOption(format!(
                    "the renew interval is {interval:?}, but it must be above zero and \
                     shorter than 90 % of the TTL ({:?}) so that a renewal can land \
                     before the lease runs out; a third of the TTL is a good choice",
                    options.safe_for()
                )));
            }
            options.renew_interval = interval;
        }
        if options.poll_interval.is_zero() {
            return Err(Error::InvalidOption(
                "the poll interval is zero; waiting would hammer the database: \
                 use at least a few milliseconds (default 1 s)"
                    .into(),
            ));
        }
        Ok(options)
    }

    /// The TTL sent to the database: `given`, in whole milliseconds, within bounds. The
    /// local deadline is derived from the same value, so it can never fall after the
    /// database's expiry.
    fn validate_ttl(given: Duration) -> Result<Duration> {
        if given < MIN_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL is {given:?}, but a lease must last at least {MIN_TTL:?}, so that \
                 the holder's safety margin (a tenth of it) outlasts timer and scheduling \
                 delays; a few seconds to a minute suits most jobs (default {:?})",
                Self::DEFAULT_TTL
            )));
        }
        let ttl = Duration::from_millis(u64::try_from(given.as_millis()).unwrap_or(u64::MAX));
        if given > MAX_TTL {
            return Err(Error::InvalidOption(format!(
                "the TTL is {ttl:?}, longer than the limit of {MAX_TTL:?}; the lease is \
                 renewed while held, so it only needs to cover a crashed holder"
            )));
        }
        Ok(ttl)
    }
}

/// `name (host pid N)`, or `host pid N` without a name: enough for an operator to find
/// the process that holds a lock. The host name is read where Linux keeps it, else from
/// the environment.
fn recorded_holder(name: Option<&str>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".into());
    let process = format!("{host} pid {}", std::process::id());
    match name {
        Some(name) => format!("{name} ({process})"),
        None => process,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(ttl: Duration) -> RawOptions {
        RawOptions {
            ttl: Some(ttl),
            ..RawOptions::default()
        }
    }

    #[test]
    fn defaults() {
        let options = Options::validate(RawOptions::default()).unwrap();
        assert_eq!(options.ttl, Duration::from_secs(30));
        assert_eq!(options.renew_interval, Duration::from_secs(10));
        assert_eq!(options.acquire_timeout, None);
        assert_eq!(options.table.to_string(), "distributed_lock");
        assert!(
            options
                .holder
                .contains(&format!("pid {}", std::process::id()))
        );
    }

    #[test]
    fn ttls_below_the_minimum_are_refused_naming_it() {
        for short in [
            Duration::ZERO,
            Duration::from_micros(1900),
            Duration::from_millis(99),
        ] {
            let error = Options::validate(ttl(short)).unwrap_err();
            assert!(error.to_string().contains("at least 100ms"), "{error}");
        }
        Options::validate(ttl(MIN_TTL)).unwrap();
    }

    #[test]
    fn the_local_margin_is_derived_from_the_whole_milliseconds_sent() {
        let options = Options::validate(ttl(Duration::from_micros(150_900))).unwrap();
        assert_eq!(options.ttl, Duration::from_millis(150));
        assert_eq!(options.safe_for(), Duration::from_millis(135));
    }

    #[test]
    fn renew_interval_must_fit_in_the_lease() {
        for interval in [
            Duration::ZERO,
            Duration::from_secs(9),
            Duration::from_secs(10),
        ] {
            let raw = RawOptions {
                renew_interval: Some(interval),
                ..ttl(Duration::from_secs(10))
            };
            let error = Options::validate(raw).unwrap_err();
            assert!(error.to_string().contains("renew interval"), "{error}");
        }
    }

    #[test]
    fn the_holder_name_comes_with_the_process() {
        let raw = RawOptions {
            holder: Some("nightly-report".into()),
            ..RawOptions::default()
        };
        let holder = Options::validate(raw).unwrap().holder;
        assert!(holder.starts_with("nightly-report ("), "{holder}");
    }
}
