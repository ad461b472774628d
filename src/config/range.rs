//! The ranges every count and duration of the file is checked against, and how the message for
//! one out of its range reads: `FIELD: must be from MIN to MAX[ (how)][, or ...], not VALUE`.
//!
//! A value serde accepts is not yet one galera-lb can run with: a `health.timeout` of
//! `18446744073709551615s` overflowed the first addition to it (a panic at start), a
//! `health.interval` of `1ns` made hundreds of check connections a second, and
//! `runtime.worker_threads: 200000` ran the process out of threads. So each section's `validate`
//! puts every count and duration through [`count`] or [`duration`] (or [`keepalive`], whose range
//! is the kernel's), with a range an operator would find sane; the ranges are in each field's
//! doc comment and in the book's configuration reference (docs/src/configuration.md).

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::ConfigError;

/// `value` within `range`, or an error naming `field`: `must be from MIN to MAX{how}, not VALUE`
/// (`how` says what else the field takes, e.g. ` (or left out)`).
pub(super) fn count<T: PartialOrd + Display>(
    file: &str,
    field: &str,
    value: T,
    range: RangeInclusive<T>,
    how: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        file,
        field,
        format!(
            "must be from {} to {}{how}, not {value}",
            range.start(),
            range.end()
        ),
    ))
}

/// `value` within `range`, or an error naming `field`: `must be from MIN to MAX{how}, not VALUE`,
/// the durations written as the file writes them (`10ms`, `1h`).
pub(super) fn duration(
    file: &str,
    field: &str,
    value: Duration,
    range: RangeInclusive<Duration>,
    how: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        file,
        field,
        format!(
            "must be from {} to {}{how}, not {}",
            show(*range.start()),
            show(*range.end()),
            show(value)
        ),
    ))
}

/// The longest keepalive idle time Linux takes (`MAX_TCP_KEEPIDLE`, in whole seconds).
pub(crate) const MAX_KEEPIDLE_SECS: u64 = 32_767;

/// `tcp.keepalive`: TCP_KEEPIDLE takes whole seconds from 1 to 32767; anything else makes every
/// `setsockopt` fail with EINVAL, so it is refused here rather than on every connection.
/// Fractions are refused rather than rounded: `1500ms` would silently mean 1 s.
pub(super) fn keepalive(file: &str, field: &str, value: Duration) -> Result<(), ConfigError> {
    let whole = value.subsec_nanos() == 0;
    if whole && (1..=MAX_KEEPIDLE_SECS).contains(&value.as_secs()) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        file,
        field,
        format!(
            "must be whole seconds from 1s to {MAX_KEEPIDLE_SECS}s (Linux's range for \
             TCP_KEEPIDLE), or null to turn keepalive off, not {}",
            show(value)
        ),
    ))
}

/// The range of `tcp.user_timeout`: below a second, a few lost packets in a row (the first
/// retransmission waits 200 ms, each next one twice as long) would end a healthy session; past
/// an hour it is longer than the kernel's own ~15 minutes, which it replaces.
pub(crate) const USER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// `tcp.user_timeout`: TCP_USER_TIMEOUT takes whole milliseconds; within
/// [`USER_TIMEOUT_RANGE`]. Fractions of a millisecond are refused rather than rounded, as for
/// keepalive.
pub(super) fn user_timeout(file: &str, field: &str, value: Duration) -> Result<(), ConfigError> {
    let whole = value.subsec_nanos() % 1_000_000 == 0;
    if whole && USER_TIMEOUT_RANGE.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        file,
        field,
        format!(
            "must be whole milliseconds from {} to {} (e.g. 30s), or null for the kernel's \
             default, not {}",
            show(*USER_TIMEOUT_RANGE.start()),
            show(*USER_TIMEOUT_RANGE.end()),
            show(value)
        ),
    ))
}

/// A duration as the file would write it: its non-zero parts from days (from two days on) to
/// nanoseconds (`1h`, `24h`, `30d`, `1s 500ms`, `0s`).
pub(super) fn show(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    // Days from two on: a day is written `24h`, as operators say it.
    let days = if secs >= 2 * 86_400 { secs / 86_400 } else { 0 };
    let parts = [
        (days, "d"),
        ((secs - days * 86_400) / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if shown.is_empty() {
        "0s".to_string()
    } else {
        shown.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_the_file_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_nanos(1)), "1ns");
        assert_eq!(show(ms(10)), "10ms");
        assert_eq!(show(ms(1500)), "1s 500ms");
        assert_eq!(show(Duration::from_secs(3600)), "1h");
        assert_eq!(show(Duration::from_secs(36_000)), "10h");
        assert_eq!(show(Duration::from_secs(86_400)), "24h");
        assert_eq!(show(Duration::from_secs(86_400 + 60)), "24h 1m");
        assert_eq!(show(Duration::from_secs(2 * 86_400 + 3_600)), "2d 1h");
        assert_eq!(show(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(
            show(Duration::new(u64::MAX, 999_000_000)),
            "213503982334601d 7h 15s 999ms"
        );
    }

    #[test]
    fn bounds_are_inclusive() {
        let ms = Duration::from_millis;
        assert!(duration("f", "x", ms(10), ms(10)..=ms(20), "").is_ok());
        assert!(duration("f", "x", ms(20), ms(10)..=ms(20), "").is_ok());
        let error = duration("f", "x", ms(21), ms(10)..=ms(20), " (e.g. 15ms)").unwrap_err();
        assert_eq!(
            error.to_string(),
            "f: x: must be from 10ms to 20ms (e.g. 15ms), not 21ms"
        );
        assert!(count("f", "n", 1u32, 1..=3, "").is_ok());
        assert!(count("f", "n", 3u32, 1..=3, "").is_ok());
        assert_eq!(
            count("f", "n", 0u32, 1..=3, " (or left out)")
                .unwrap_err()
                .to_string(),
            "f: n: must be from 1 to 3 (or left out), not 0"
        );
    }

    #[test]
    fn user_timeout_takes_whole_milliseconds_from_a_second_to_an_hour() {
        let ms = Duration::from_millis;
        for ok in [ms(1000), ms(1500), ms(30_000), ms(3_600_000)] {
            assert!(user_timeout("f", "u", ok).is_ok(), "{ok:?}");
        }
        for refused in [
            Duration::ZERO,
            ms(999),
            Duration::from_micros(1_500_500),
            ms(3_600_001),
            Duration::from_secs(u64::MAX),
        ] {
            let error = user_timeout("f", "u", refused).unwrap_err().to_string();
            assert!(
                error.contains("must be whole milliseconds from 1s to 1h"),
                "{error}"
            );
        }
    }

    #[test]
    fn keepalive_takes_the_kernels_whole_seconds() {
        for ok in [1, 60, MAX_KEEPIDLE_SECS] {
            assert!(keepalive("f", "k", Duration::from_secs(ok)).is_ok(), "{ok}");
        }
        for refused in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(MAX_KEEPIDLE_SECS + 1),
            Duration::from_secs(36_000),
        ] {
            let error = keepalive("f", "k", refused).unwrap_err().to_string();
            assert!(error.contains("whole seconds from 1s to 32767s"), "{error}");
        }
    }
}
