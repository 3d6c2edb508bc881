//! How times, sizes and durations read on the pages.

/// A unix-millisecond time as `2026-11-27 15:48 UTC`.
pub fn when(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(time) => time.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => "unknown".to_owned(),
    }
}

/// A unix-millisecond time as RFC 3339 in UTC (`2026-11-27T15:48:00Z`),
/// as Atom wants it; out of range reads as the epoch.
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How long before `now` the time `millis` was, in words: `just now`,
/// `5 minutes ago`, `3 days ago`; a time ahead reads `just now`.
pub fn relative(millis: i64, now: i64) -> String {
    let seconds = (now - millis).max(0) / 1000;
    let (count, unit) = match seconds {
        0..=59 => return "just now".to_owned(),
        60..=3_599 => (seconds / 60, "minute"),
        3_600..=86_399 => (seconds / 3_600, "hour"),
        86_400..=2_591_999 => (seconds / 86_400, "day"),
        2_592_000..=31_535_999 => (seconds / 2_592_000, "month"),
        _ => (seconds / 31_536_000, "year"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

/// A count with thousands separated by commas: `5,000`.
pub fn count(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    if value < 0 {
        text.insert(0, '-');
    }
    text
}

/// A byte count in binary units, one decimal above bytes.
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss past 2^53 bytes does not show at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The time between two unix-millisecond times as `1h 2m 3s`.
pub fn duration(from: i64, to: i64) -> String {
    let seconds = (to - from).max(0) / 1000;
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(0, 59_999), "59s");
        assert_eq!(duration(0, 61_000), "1m 1s");
        assert_eq!(duration(0, 3_723_000), "1h 2m 3s");
        assert_eq!(duration(10, 0), "0s");
        assert_eq!(relative(0, 59_000), "just now");
        assert_eq!(relative(0, 60_000), "1 minute ago");
        assert_eq!(relative(0, 7_200_000), "2 hours ago");
        assert_eq!(relative(0, 3 * 86_400_000), "3 days ago");
        assert_eq!(relative(1_000, 0), "just now");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(5_000), "5,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-1_000), "-1,000");
    }
}
