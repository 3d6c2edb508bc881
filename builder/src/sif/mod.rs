//! The SIF container format (sylabs/sif v2 layout): read and stream-write.
//!
//! A SIF file is a fixed 128-byte global header, a table of fixed 585-byte
//! object descriptors, then the data objects themselves (definition file,
//! JSON metadata, filesystem partitions, signatures …), each described by
//! one descriptor. All integers are little-endian and the structures are
//! packed, exactly as Go's `encoding/binary` writes the reference structs.
//!
//! The layout matched here is SIF spec version 01 as written by
//! `github.com/sylabs/sif/v2` 2.8 (Debian's `siftool` 2.8.3), plus the two
//! OCI object types later versions added, so newer files still decode.
//!
//! * [`SifFile`] reads an image from a path or any `Read + Seek`, checking
//!   every offset and size against the file length before using it.
//! * [`SifBuilder`] writes an image, streaming each object from a reader or a
//!   file so multi-gigabyte partitions never sit in memory; given an id and a
//!   timestamp the output is byte-for-byte reproducible.

mod descriptor;
mod error;
mod header;
mod reader;
mod types;
mod writer;

pub use descriptor::{
    CryptoMessageInfo, Descriptor, Link, ObjectKind, PartitionInfo, SignatureInfo,
    DESCRIPTOR_EXTRA_LEN, DESCRIPTOR_NAME_LEN, DESCRIPTOR_SIZE, FINGERPRINT_LEN, GROUP_MASK,
};
pub use error::SifError;
pub use header::{Header, CURRENT_VERSION, HEADER_SIZE, LAUNCH_SCRIPT_LEN, SIF_MAGIC};
pub use reader::{SifFile, MAX_METADATA_SIZE};
pub use types::{Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
pub use writer::{
    DescriptorInput, SifBuilder, SifLayout, APPTAINER_LAUNCH_SCRIPT, DEFAULT_DESCRIPTOR_CAPACITY,
    DEFAULT_GROUP, DESCRIPTORS_OFFSET, PARTITION_ALIGNMENT,
};

/// The image id type, re-exported so callers need not depend on `uuid`.
pub use uuid::Uuid;

/// Shorthand for results whose error is a [`SifError`].
pub type Result<T, E = SifError> = std::result::Result<T, E>;

/// Formats a Unix timestamp (seconds) as an RFC 3339 UTC string such as
/// `2023-11-14T22:13:20Z`. Works for any `i64`, including the Go zero time
/// (`0001-01-01T00:00:00Z`) that deterministic reference images carry.
pub fn format_unix_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`. Done in i128 so no input overflows.
fn civil_from_days(days: i64) -> (i128, u32, u32) {
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::format_unix_time;

    #[test]
    fn formats_unix_times_in_utc() {
        assert_eq!(format_unix_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_time(-1), "1969-12-31T23:59:59Z");
        // Go's zero time.Time, which deterministic reference images store.
        assert_eq!(format_unix_time(-62_135_596_800), "0001-01-01T00:00:00Z");
        // Extremes must not panic.
        let _ = format_unix_time(i64::MAX);
        let _ = format_unix_time(i64::MIN);
    }
}
