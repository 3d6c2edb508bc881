//! The 128-byte SIF global header.
//!
//! On-disk layout (packed, little-endian):
//!
//! | offset | size | field                                    |
//! |-------:|-----:|------------------------------------------|
//! |      0 |   32 | launch script, NUL padded                |
//! |     32 |   10 | magic `SIF_MAGIC\0`                      |
//! |     42 |    3 | spec version `01\0`                      |
//! |     45 |    3 | primary architecture ([`Arch`])          |
//! |     48 |   16 | image id (UUID bytes)                    |
//! |     64 |    8 | created at (Unix seconds)                |
//! |     72 |    8 | modified at                              |
//! |     80 |    8 | descriptors free                         |
//! |     88 |    8 | descriptors total                        |
//! |     96 |    8 | descriptors offset                       |
//! |    104 |    8 | descriptors size (bytes)                 |
//! |    112 |    8 | data offset                              |
//! |    120 |    8 | data size (bytes)                        |

use uuid::Uuid;

use super::types::Arch;

/// Size of the encoded global header.
pub const HEADER_SIZE: usize = 128;
/// Size of the launch script field; the script itself must be shorter (the
/// reference keeps at least one NUL).
pub const LAUNCH_SCRIPT_LEN: usize = 32;
/// The magic bytes at offset 32.
pub const SIF_MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// The only spec version there is, as stored in the header.
pub const CURRENT_VERSION: [u8; 3] = *b"01\0";

/// Where the magic starts in the header.
pub(crate) const MAGIC_OFFSET: usize = 32;

/// The decoded global header, field for field. Sizes and offsets are the
/// signed 64-bit values the file holds; [`super::SifFile`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// A `#!` line making the image executable, NUL padded.
    pub launch_script: [u8; LAUNCH_SCRIPT_LEN],
    /// Must equal [`SIF_MAGIC`].
    pub magic: [u8; 10],
    /// Must equal [`CURRENT_VERSION`].
    pub version: [u8; 3],
    /// The primary partition's architecture.
    pub arch: Arch,
    /// The image id.
    pub id: Uuid,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Last modification time, Unix seconds.
    pub modified_at: i64,
    /// Unused descriptor slots.
    pub descriptors_free: i64,
    /// Descriptor slots in the table, used or not.
    pub descriptors_total: i64,
    /// Where the descriptor table starts.
    pub descriptors_offset: i64,
    /// Size of the descriptor table in bytes.
    pub descriptors_size: i64,
    /// Where the data section starts.
    pub data_offset: i64,
    /// Size of the data section in bytes (up to the end of the last object).
    pub data_size: i64,
}

impl Header {
    /// Encodes the header into its on-disk bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..32].copy_from_slice(&self.launch_script);
        out[32..42].copy_from_slice(&self.magic);
        out[42..45].copy_from_slice(&self.version);
        out[45..48].copy_from_slice(&self.arch.0);
        out[48..64].copy_from_slice(self.id.as_bytes());
        let numbers = [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ];
        for (slot, value) in out[64..].chunks_exact_mut(8).zip(numbers) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// Decodes on-disk bytes. Never fails: checking magic, version and the
    /// offsets is the reader's job, which knows the file length.
    pub fn decode(bytes: &[u8; HEADER_SIZE]) -> Header {
        Header {
            launch_script: take_array(bytes, 0),
            magic: take_array(bytes, 32),
            version: take_array(bytes, 42),
            arch: Arch(take_array(bytes, 45)),
            id: Uuid::from_bytes(take_array(bytes, 48)),
            created_at: take_i64(bytes, 64),
            modified_at: take_i64(bytes, 72),
            descriptors_free: take_i64(bytes, 80),
            descriptors_total: take_i64(bytes, 88),
            descriptors_offset: take_i64(bytes, 96),
            descriptors_size: take_i64(bytes, 104),
            data_offset: take_i64(bytes, 112),
            data_size: take_i64(bytes, 120),
        }
    }

    /// The launch script without its NUL padding.
    pub fn launch_script_text(&self) -> String {
        nul_trimmed_text(&self.launch_script)
    }

    /// The version without its NUL padding, e.g. `"01"`.
    pub fn version_text(&self) -> String {
        nul_trimmed_text(&self.version)
    }
}

/// Bytes up to the trailing NULs, decoded lossily (names and scripts come
/// from the file and may not be UTF-8).
pub(crate) fn nul_trimmed_text(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Copies `N` bytes starting at `at`; callers pass constant in-range offsets.
pub(crate) fn take_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Reads a little-endian i64 at a constant in-range offset.
pub(crate) fn take_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(take_array(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut launch_script = [0u8; LAUNCH_SCRIPT_LEN];
        launch_script[..8].copy_from_slice(b"#!/bin/x");
        Header {
            launch_script,
            magic: SIF_MAGIC,
            version: CURRENT_VERSION,
            arch: Arch::AMD64,
            id: Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            created_at: 1_700_000_000,
            modified_at: -62_135_596_800,
            descriptors_free: 43,
            descriptors_total: 48,
            descriptors_offset: 4096,
            descriptors_size: 48 * 585,
            data_offset: 32_176,
            data_size: 4708,
        }
    }

    #[test]
    fn header_round_trips() {
        let header = sample();
        assert_eq!(Header::decode(&header.encode()), header);
    }

    #[test]
    fn header_fields_sit_where_the_reference_puts_them() {
        let bytes = sample().encode();
        assert_eq!(&bytes[0..8], b"#!/bin/x");
        assert_eq!(&bytes[32..42], b"SIF_MAGIC\0");
        assert_eq!(&bytes[42..45], b"01\0");
        assert_eq!(&bytes[45..48], b"02\0");
        assert_eq!(bytes[48], 0x00);
        assert_eq!(bytes[63], 0xff);
        assert_eq!(&bytes[64..72], &1_700_000_000i64.to_le_bytes());
        assert_eq!(&bytes[88..96], &48i64.to_le_bytes());
        assert_eq!(&bytes[96..104], &4096i64.to_le_bytes());
        assert_eq!(&bytes[112..120], &32_176i64.to_le_bytes());
        assert_eq!(&bytes[120..128], &4708i64.to_le_bytes());
    }

    #[test]
    fn texts_drop_nul_padding() {
        let header = sample();
        assert_eq!(header.launch_script_text(), "#!/bin/x");
        assert_eq!(header.version_text(), "01");
        assert_eq!(nul_trimmed_text(&[0, 0]), "");
    }

    #[test]
    fn decodes_a_header_written_by_siftool() {
        // First 128 bytes of an image made by `siftool new` + `siftool add`
        // (Debian siftool 2.8.3): empty launch script, amd64, 5 objects.
        let hex_bytes = concat!(
            "0000000000000000000000000000000000000000000000000000000000000000",
            "5349465f4d41474943003031003032",
            "00d8bc2c24d66540e0bd64dcf0454aaa6f",
            "786d096b00000000786d096b00000000",
            "2b000000000000003000000000000000",
            "0010000000000000b06d000000000000",
            "b07d0000000000006412000000000000",
        );
        let raw = hex::decode(hex_bytes).unwrap();
        let bytes: [u8; HEADER_SIZE] = raw.try_into().unwrap();
        let header = Header::decode(&bytes);
        assert_eq!(header.magic, SIF_MAGIC);
        assert_eq!(header.version_text(), "01");
        assert_eq!(header.arch, Arch::AMD64);
        assert_eq!(
            header.id.to_string(),
            "d8bc2c24-d665-40e0-bd64-dcf0454aaa6f"
        );
        assert_eq!(header.descriptors_free, 43);
        assert_eq!(header.descriptors_total, 48);
        assert_eq!(header.descriptors_offset, 4096);
        assert_eq!(header.descriptors_size, 28_080);
        assert_eq!(header.data_offset, 32_176);
        assert_eq!(header.data_size, 4708);
        assert_eq!(header.encode(), bytes);
    }
}
