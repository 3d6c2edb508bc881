//! `labels.json`: how apptainer reads `%labels`, the labels every build adds,
//! and Go's JSON formatting, so the file reads as apptainer's own.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the build itself records as labels.
#[derive(Debug, Clone)]
pub struct BuildLabels {
    /// Build time, seconds since the epoch (the commit time for a
    /// reproducible build).
    pub created_unix: i64,
    /// The base image as named in the recipe and its resolved digest.
    pub base_name: Option<String>,
    pub base_digest: Option<String>,
    /// OCI architecture name (`amd64`).
    pub arch: String,
    pub builder_version: String,
}

impl BuildLabels {
    /// apptainer's build labels (addBuildLabels), with sifhub's version in
    /// place of apptainer's.
    pub fn labels(&self, has_help: bool, header: &[(String, String)]) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            labels.insert(k.to_owned(), v);
        };
        put("org.label-schema.schema-version", "1.0".into());
        put(
            "org.opencontainers.image.created",
            rfc3339(self.created_unix),
        );
        put("org.label-schema.build-date", build_date(self.created_unix));
        put(
            "org.label-schema.usage.sifhub.version",
            self.builder_version.clone(),
        );
        if has_help {
            put(
                "org.label-schema.usage",
                "/.singularity.d/runscript.help".into(),
            );
            put(
                "org.label-schema.usage.apptainer.runscript.help",
                "/.singularity.d/runscript.help".into(),
            );
        }
        if let (Some(name), Some(digest)) = (&self.base_name, &self.base_digest) {
            put("org.opencontainers.image.base.name", name.clone());
            put("org.opencontainers.image.base.digest", digest.clone());
        }
        put("org.opencontainers.image.architecture", self.arch.clone());
        put("org.label-schema.build-arch", self.arch.clone());
        for (key, value) in header {
            labels.insert(
                format!("org.label-schema.usage.singularity.deffile.{key}"),
                value.clone(),
            );
        }
        labels
    }
}

/// `%labels` as apptainer reads it (parser.GetLabels): one `KEY VALUE` a
/// line, split at the first space; blank and `#` lines skipped; a later key
/// wins.
pub fn parse_labels(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    let mut labels = BTreeMap::new();
    for line in text.trim().split('\n') {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        labels.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    labels
}

/// Go's `json.MarshalIndent(v, "", "\t")`: tab indents, sorted keys, and
/// `<`, `>`, `&`, U+2028, U+2029 escaped.
pub fn go_json_indent<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // A BTreeMap<String, String> (all we pass) always serializes.
    if value.serialize(&mut ser).is_err() {
        return "{}".to_owned();
    }
    let text = String::from_utf8_lossy(&out);
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    weekday: usize,
}

fn utc(unix: i64) -> Utc {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Utc {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `2026-11-27T11:42:51Z`
pub fn rfc3339(unix: i64) -> String {
    let t = utc(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// apptainer's `org.label-schema.build-date`: `Friday_27_November_2026_11:42:51_UTC`.
pub fn build_date(unix: i64) -> String {
    let t = utc(unix);
    let month = MONTHS[(t.month as usize).saturating_sub(1) % 12];
    format!(
        "{}_{}_{}_{}_{}:{}:{}_UTC",
        WEEKDAYS[t.weekday], t.day, month, t.year, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_apptainer_does() {
        // 2026-11-27 11:42:51 UTC, a Friday.
        let t = 1_795_779_771;
        assert_eq!(rfc3339(t), "2026-11-27T11:42:51Z");
        assert_eq!(build_date(t), "Friday_27_November_2026_11:42:51_UTC");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            build_date(951_782_400),
            "Tuesday_29_February_2000_0:0:0_UTC"
        );
    }

    #[test]
    fn labels_split_at_the_first_space() {
        let labels = parse_labels(
            b"  Author  me@example.org\n# comment\n\nVersion v1.0 beta\nLONE\nVersion v2\n",
        );
        assert_eq!(labels["Author"], "me@example.org");
        assert_eq!(labels["Version"], "v2");
        assert_eq!(labels["LONE"], "");
        assert_eq!(labels.len(), 3);
    }

    #[test]
    fn json_looks_like_go() {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), "<x> & y".to_owned());
        m.insert("a".to_owned(), "1".to_owned());
        assert_eq!(
            go_json_indent(&m),
            "{\n\t\"a\": \"1\",\n\t\"b\": \"\\u003cx\\u003e \\u0026 y\"\n}"
        );
    }
}
