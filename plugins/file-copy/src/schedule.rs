//! When a copy is due: every interval, or daily at a UTC time.

use standby_plugin_sdk::Error;

const DAY_MS: u64 = 86_400_000;

/// A copy schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every this many milliseconds, counted from the last copy.
    Every(u64),
    /// Once a day at this many milliseconds after UTC midnight.
    DailyAt(u64),
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::DailyAt(2 * 3_600_000)
    }
}

impl Schedule {
    /// The wall-clock time of the next copy after one made at `last` (or none yet), seen at `now`.
    pub fn next_due(&self, last: Option<u64>, now: u64) -> u64 {
        match *self {
            Schedule::Every(ms) => last.map_or(now, |l| l.saturating_add(ms)),
            Schedule::DailyAt(offset) => {
                let today = now - now % DAY_MS + offset;
                match last {
                    // Never copied: the first copy runs now, then on schedule.
                    None => now,
                    Some(l) if l >= today => today + DAY_MS,
                    Some(_) if now >= today => today,
                    Some(l) if l >= today.saturating_sub(DAY_MS) => today,
                    Some(_) => now,
                }
            }
        }
    }
}

/// Parse a duration such as `500ms`, `2s`, `10m`, `24h`.
pub fn parse_duration(key: &str, text: &str) -> Result<u64, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad(key, text))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return Err(bad(key, text)),
    };
    match n.checked_mul(factor) {
        Some(ms) if ms >= 100 => Ok(ms),
        _ => Err(Error::InvalidArgument(format!(
            "setting `{key}` = \"{text}\" must be between 100ms and 2^64 ms"
        ))),
    }
}

/// Parse `HH:MM` (UTC) into milliseconds after midnight.
pub fn parse_time_of_day(key: &str, text: &str) -> Result<u64, Error> {
    let (h, m) = text.split_once(':').ok_or_else(|| bad_time(key, text))?;
    let h: u64 = h.parse().map_err(|_| bad_time(key, text))?;
    let m: u64 = m.parse().map_err(|_| bad_time(key, text))?;
    if h > 23 || m > 59 {
        return Err(bad_time(key, text));
    }
    Ok((h * 60 + m) * 60_000)
}

fn bad(key: &str, text: &str) -> Error {
    Error::InvalidArgument(format!(
        "setting `{key}` = \"{text}\" is not a duration like 500ms, 2s, 10m, 24h"
    ))
}

fn bad_time(key: &str, text: &str) -> Error {
    Error::InvalidArgument(format!(
        "setting `{key}` = \"{text}\" is not a UTC time of day like 02:00"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "2s").ok(), Some(2_000));
        assert_eq!(parse_duration("k", "24h").ok(), Some(86_400_000));
        assert!(parse_duration("k", "2 weeks").is_err());
        assert!(parse_duration("k", "1ms").is_err());
    }

    #[test]
    fn daily() {
        let s = Schedule::DailyAt(2 * 3_600_000);
        let midnight = 100 * DAY_MS;
        assert_eq!(s.next_due(None, midnight + 5), midnight + 5);
        // copied today after 02:00: next is tomorrow 02:00
        assert_eq!(
            s.next_due(Some(midnight + 3 * 3_600_000), midnight + 4 * 3_600_000),
            midnight + DAY_MS + 2 * 3_600_000
        );
        // copied yesterday at 02:00, now 01:00: today 02:00
        assert_eq!(
            s.next_due(
                Some(midnight - DAY_MS + 2 * 3_600_000),
                midnight + 3_600_000
            ),
            midnight + 2 * 3_600_000
        );
    }
}
