//! When to try an HTTP request again and how long to wait: `Retry-After` (seconds or HTTP-date, and the
//! odd values servers send, such as an epoch in milliseconds) clamped to a sane range, and exponential
//! backoff when the server gives no hint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Waits and attempt limits of the client.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Shortest wait between two requests to the same URL (a `Retry-After: 0` still waits this long).
    pub min_wait: Duration,
    /// Longest wait; a larger `Retry-After` is clamped to it.
    pub max_wait: Duration,
    /// First backoff wait; doubled on each further failure, up to `max_wait`.
    pub backoff: Duration,
    /// Failed attempts (network errors, 5xx, transient OperationOutcomes) before giving up on a request.
    pub max_attempts: u32,
    /// `429 Too Many Requests` answers accepted for one request before giving up.
    pub max_throttled: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(120),
            backoff: Duration::from_secs(2),
            max_attempts: 6,
            max_throttled: 100,
        }
    }
}

impl RetryPolicy {
    /// Clamps a wait into `[min_wait, max_wait]`.
    pub fn clamp(&self, wait: Duration) -> Duration {
        wait.clamp(self.min_wait, self.max_wait.max(self.min_wait))
    }

    /// The wait before attempt `attempt + 1` when the server gave no `Retry-After` (attempt counts from 0).
    pub fn backoff_wait(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(16));
        self.clamp(self.backoff.saturating_mul(factor))
    }

    /// The wait a `Retry-After` header asks for, clamped; `None` when the header is missing or unreadable.
    pub fn retry_after(&self, header: Option<&str>) -> Option<Duration> {
        let value = header?;
        parse_retry_after(value, SystemTime::now()).map(|wait| self.clamp(wait))
    }

    /// The wait for a `Retry-After` header, or the backoff of `attempt`.
    pub fn wait(&self, header: Option<&str>, attempt: u32) -> Duration {
        self.retry_after(header)
            .unwrap_or_else(|| self.backoff_wait(attempt))
    }
}

/// Reads a `Retry-After` value as the delay from `now` (unclamped).
///
/// RFC 9110 allows delay-seconds or an HTTP-date. Servers also send a Unix time in seconds or in
/// milliseconds; a number too large to be a plausible delay (over ~30 years) is read as such an
/// instant. Past instants give a zero delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(number) = value.parse::<f64>() {
        if !number.is_finite() || number < 0.0 {
            return None;
        }
        const PLAUSIBLE_DELAY_S: f64 = 1e9;
        if number < PLAUSIBLE_DELAY_S {
            return Some(Duration::from_secs_f64(number));
        }
        // An absolute time: epoch seconds, or epoch milliseconds when it is beyond year ~5000.
        let epoch_s = if number > 1e11 {
            number / 1000.0
        } else {
            number
        };
        let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        return Some(Duration::from_secs_f64((epoch_s - now_s).max(0.0)));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(date.timestamp_millis()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A timestamp-derived jitter in `[0, max/4)`, so that parallel downloads do not retry in lockstep.
pub fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let quarter = (max.as_millis() / 4) as u64;
    if quarter == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from(nanos) % quarter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(60),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        // HTTP-date 30 s after `now`.
        let date = chrono::DateTime::from_timestamp(1_800_000_030, 0)
            .unwrap()
            .to_rfc2822()
            .replace("+0000", "GMT");
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        // Epoch seconds and epoch milliseconds.
        assert_eq!(
            parse_retry_after("1800000045", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("1800000045000", now),
            Some(Duration::from_secs(45))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("1700000000000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn waits_are_clamped() {
        let p = policy();
        assert_eq!(p.retry_after(Some("0")), Some(Duration::from_millis(100)));
        assert_eq!(p.retry_after(Some("86400")), Some(Duration::from_secs(60)));
        // An epoch in ms far in the future: clamped, not a 50-year sleep.
        assert_eq!(
            p.retry_after(Some("99999999999999")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p.retry_after(None), None);
        assert_eq!(p.backoff_wait(0), Duration::from_secs(2));
        assert_eq!(p.backoff_wait(3), Duration::from_secs(16));
        assert_eq!(p.backoff_wait(30), Duration::from_secs(60));
    }
}
