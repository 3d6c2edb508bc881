//! The 585-byte object descriptor and the typed view of its `extra` field.
//!
//! On-disk layout (packed, little-endian):
//!
//! | offset | size | field                                         |
//! |-------:|-----:|-----------------------------------------------|
//! |      0 |    4 | data type ([`DataType`] code)                 |
//! |      4 |    1 | used flag                                     |
//! |      5 |    4 | object id                                     |
//! |      9 |    4 | group id, OR-ed with [`GROUP_MASK`]           |
//! |     13 |    4 | linked id (object id, or group id + mask)     |
//! |     17 |    8 | offset of the data                            |
//! |     25 |    8 | size of the data                              |
//! |     33 |    8 | size including the alignment padding before it |
//! |     41 |    8 | created at (Unix seconds)                     |
//! |     49 |    8 | modified at                                   |
//! |     57 |    8 | uid (deprecated, 0)                           |
//! |     65 |    8 | gid (deprecated, 0)                           |
//! |     73 |  128 | name, NUL padded                              |
//! |    201 |  384 | type-specific `extra`                         |
//!
//! `extra` holds, packed from its start: for partitions fs type (i32),
//! partition type (i32), arch (3 bytes); for signatures hash type (i32) and a
//! 256-byte entity whose first 20 bytes are the signing key fingerprint; for
//! crypto messages format (i32) and message type (i32); for SBOMs the format
//! (i32); for OCI objects the digest as NUL-terminated text.

use super::error::SifError;
use super::header::{nul_trimmed_text, take_array, take_i64};
use super::types::{
    Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat,
};

/// Size of one encoded descriptor.
pub const DESCRIPTOR_SIZE: usize = 585;
/// Size of the name field.
pub const DESCRIPTOR_NAME_LEN: usize = 128;
/// Size of the type-specific `extra` field.
pub const DESCRIPTOR_EXTRA_LEN: usize = 384;
/// Length of the signing-key fingerprint kept in a signature's entity.
pub const FINGERPRINT_LEN: usize = 20;
/// Bits set in group ids, and in linked ids that name a group.
pub const GROUP_MASK: u32 = 0xf000_0000;

/// Size of the signature entity field inside `extra`.
const SIGNATURE_ENTITY_LEN: usize = 256;

/// One descriptor, field for field as stored. Sizes and offsets are the
/// signed 64-bit values the file holds; [`super::SifFile`] only hands out
/// descriptors whose data lies inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// What the object holds.
    pub data_type: DataType,
    /// Whether this table slot is in use.
    pub used: bool,
    /// Object id, from 1.
    pub id: u32,
    /// Group id as stored (with [`GROUP_MASK`]); see [`Descriptor::group`].
    pub raw_group: u32,
    /// Linked id as stored; see [`Descriptor::link`].
    pub raw_link: u32,
    /// Where the data starts in the file.
    pub offset: i64,
    /// Size of the data.
    pub size: i64,
    /// Size of the data plus the alignment padding written before it.
    pub size_with_padding: i64,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Modification time, Unix seconds.
    pub modified_at: i64,
    /// Deprecated owner uid, kept for round trips.
    pub uid: i64,
    /// Deprecated owner gid, kept for round trips.
    pub gid: i64,
    /// Name, NUL padded; see [`Descriptor::name`].
    pub name: [u8; DESCRIPTOR_NAME_LEN],
    /// Type-specific metadata; see [`Descriptor::kind`].
    pub extra: [u8; DESCRIPTOR_EXTRA_LEN],
}

/// What an object is linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Link {
    /// Not linked.
    #[default]
    None,
    /// Linked to the object with this id (e.g. a signature to what it signs).
    Object(u32),
    /// Linked to the object group with this id.
    Group(u32),
}

impl Link {
    /// Decodes a stored linked-id field.
    pub fn from_raw(raw: u32) -> Link {
        let id = raw & !GROUP_MASK;
        if id == 0 {
            Link::None
        } else if raw & GROUP_MASK == GROUP_MASK {
            Link::Group(id)
        } else {
            Link::Object(id)
        }
    }

    /// Encodes for the linked-id field.
    pub fn to_raw(self) -> u32 {
        match self {
            Link::None => 0,
            Link::Object(id) => id,
            Link::Group(id) => id | GROUP_MASK,
        }
    }
}

/// Metadata of a partition object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionInfo {
    /// The filesystem inside.
    pub fs_type: FsType,
    /// Its role; [`PartType::PrimarySystem`] is the container root.
    pub part_type: PartType,
    /// The architecture of the binaries inside.
    pub arch: Arch,
}

/// Metadata of a signature object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignatureInfo {
    /// Hash function used.
    pub hash_type: HashType,
    /// The signing key's fingerprint; `None` when the field is all zeros.
    pub fingerprint: Option<[u8; FINGERPRINT_LEN]>,
}

impl SignatureInfo {
    /// The fingerprint as upper-case hex, as `siftool info` prints it.
    pub fn fingerprint_hex(&self) -> Option<String> {
        self.fingerprint.map(hex::encode_upper)
    }
}

/// Metadata of a cryptographic message object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CryptoMessageInfo {
    /// How the message is encoded.
    pub format: FormatType,
    /// What it is.
    pub message: MessageType,
}

/// A data object's type together with its decoded `extra` metadata: what the
/// writer is given for a new object and what the reader reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The definition file (recipe).
    Deffile,
    /// Environment variables.
    EnvVars,
    /// JSON labels.
    Labels,
    /// Generic JSON metadata.
    GenericJson,
    /// Generic raw data.
    Generic,
    /// A filesystem partition.
    Partition(PartitionInfo),
    /// A signature.
    Signature(SignatureInfo),
    /// A cryptographic message.
    CryptoMessage(CryptoMessageInfo),
    /// A software bill of materials.
    Sbom(SbomFormat),
    /// An OCI root index, with its digest (`sha256:…`).
    OciRootIndex {
        /// The digest text.
        digest: String,
    },
    /// An OCI blob, with its digest.
    OciBlob {
        /// The digest text.
        digest: String,
    },
    /// A data type this implementation does not know (code kept verbatim;
    /// its `extra` is not interpreted).
    Other(i32),
}

impl ObjectKind {
    /// The data type code this kind is stored as.
    pub fn data_type(&self) -> DataType {
        match self {
            ObjectKind::Deffile => DataType::Deffile,
            ObjectKind::EnvVars => DataType::EnvVars,
            ObjectKind::Labels => DataType::Labels,
            ObjectKind::GenericJson => DataType::GenericJson,
            ObjectKind::Generic => DataType::Generic,
            ObjectKind::Partition(_) => DataType::Partition,
            ObjectKind::Signature(_) => DataType::Signature,
            ObjectKind::CryptoMessage(_) => DataType::CryptoMessage,
            ObjectKind::Sbom(_) => DataType::Sbom,
            ObjectKind::OciRootIndex { .. } => DataType::OciRootIndex,
            ObjectKind::OciBlob { .. } => DataType::OciBlob,
            ObjectKind::Other(code) => DataType::from_code(*code),
        }
    }

    /// Decodes a data type and its `extra` bytes, as the reference does.
    pub fn decode(data_type: DataType, extra: &[u8; DESCRIPTOR_EXTRA_LEN]) -> ObjectKind {
        let i32_at = |at: usize| i32::from_le_bytes(take_array(extra, at));
        match data_type {
            DataType::Deffile => ObjectKind::Deffile,
            DataType::EnvVars => ObjectKind::EnvVars,
            DataType::Labels => ObjectKind::Labels,
            DataType::GenericJson => ObjectKind::GenericJson,
            DataType::Generic => ObjectKind::Generic,
            DataType::Partition => ObjectKind::Partition(PartitionInfo {
                fs_type: FsType::from_code(i32_at(0)),
                part_type: PartType::from_code(i32_at(4)),
                arch: Arch(take_array(extra, 8)),
            }),
            DataType::Signature => {
                let fingerprint: [u8; FINGERPRINT_LEN] = take_array(extra, 4);
                ObjectKind::Signature(SignatureInfo {
                    hash_type: HashType::from_code(i32_at(0)),
                    // The reference treats an all-zero fingerprint as absent.
                    fingerprint: fingerprint.iter().any(|&b| b != 0).then_some(fingerprint),
                })
            }
            DataType::CryptoMessage => ObjectKind::CryptoMessage(CryptoMessageInfo {
                format: FormatType::from_code(i32_at(0)),
                message: MessageType::from_code(i32_at(4)),
            }),
            DataType::Sbom => ObjectKind::Sbom(SbomFormat::from_code(i32_at(0))),
            DataType::OciRootIndex => ObjectKind::OciRootIndex {
                digest: nul_terminated_text(extra),
            },
            DataType::OciBlob => ObjectKind::OciBlob {
                digest: nul_terminated_text(extra),
            },
            DataType::Other(code) => ObjectKind::Other(code),
        }
    }

    /// Encodes the `extra` field for this kind (zeros for kinds without
    /// metadata). Fails only for an OCI digest too long for the field.
    pub fn encode_extra(&self) -> Result<[u8; DESCRIPTOR_EXTRA_LEN], SifError> {
        let mut extra = [0u8; DESCRIPTOR_EXTRA_LEN];
        match self {
            ObjectKind::Partition(info) => {
                extra[0..4].copy_from_slice(&info.fs_type.code().to_le_bytes());
                extra[4..8].copy_from_slice(&info.part_type.code().to_le_bytes());
                extra[8..11].copy_from_slice(&info.arch.0);
            }
            ObjectKind::Signature(info) => {
                extra[0..4].copy_from_slice(&info.hash_type.code().to_le_bytes());
                if let Some(fingerprint) = info.fingerprint {
                    extra[4..4 + FINGERPRINT_LEN].copy_from_slice(&fingerprint);
                }
            }
            ObjectKind::CryptoMessage(info) => {
                extra[0..4].copy_from_slice(&info.format.code().to_le_bytes());
                extra[4..8].copy_from_slice(&info.message.code().to_le_bytes());
            }
            ObjectKind::Sbom(format) => {
                extra[0..4].copy_from_slice(&format.code().to_le_bytes());
            }
            ObjectKind::OciRootIndex { digest } | ObjectKind::OciBlob { digest } => {
                // Keep one NUL so readers find the end of the text.
                if digest.len() >= DESCRIPTOR_EXTRA_LEN || digest.contains('\0') {
                    return Err(SifError::InvalidDigest {
                        digest: digest.clone(),
                    });
                }
                extra[..digest.len()].copy_from_slice(digest.as_bytes());
            }
            ObjectKind::Deffile
            | ObjectKind::EnvVars
            | ObjectKind::Labels
            | ObjectKind::GenericJson
            | ObjectKind::Generic
            | ObjectKind::Other(_) => {}
        }
        Ok(extra)
    }
}

/// Text up to the first NUL, decoded lossily.
fn nul_terminated_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

// The signature entity must fit in `extra` after the hash type.
const _: () = assert!(4 + SIGNATURE_ENTITY_LEN <= DESCRIPTOR_EXTRA_LEN);

impl Descriptor {
    /// An unused, all-zero table slot.
    pub const EMPTY: Descriptor = Descriptor {
        data_type: DataType::Other(0),
        used: false,
        id: 0,
        raw_group: 0,
        raw_link: 0,
        offset: 0,
        size: 0,
        size_with_padding: 0,
        created_at: 0,
        modified_at: 0,
        uid: 0,
        gid: 0,
        name: [0; DESCRIPTOR_NAME_LEN],
        extra: [0; DESCRIPTOR_EXTRA_LEN],
    };

    /// Encodes the descriptor into its on-disk bytes.
    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut out = [0u8; DESCRIPTOR_SIZE];
        out[0..4].copy_from_slice(&self.data_type.code().to_le_bytes());
        out[4] = u8::from(self.used);
        out[5..9].copy_from_slice(&self.id.to_le_bytes());
        out[9..13].copy_from_slice(&self.raw_group.to_le_bytes());
        out[13..17].copy_from_slice(&self.raw_link.to_le_bytes());
        let numbers = [
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
        ];
        for (slot, value) in out[17..73].chunks_exact_mut(8).zip(numbers) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        out[73..201].copy_from_slice(&self.name);
        out[201..585].copy_from_slice(&self.extra);
        out
    }

    /// Decodes on-disk bytes. Never fails; validation is the reader's job.
    pub fn decode(bytes: &[u8; DESCRIPTOR_SIZE]) -> Descriptor {
        let u32_at = |at: usize| u32::from_le_bytes(take_array(bytes, at));
        Descriptor {
            data_type: DataType::from_code(i32::from_le_bytes(take_array(bytes, 0))),
            // Go decodes a bool as "byte is non-zero".
            used: bytes[4] != 0,
            id: u32_at(5),
            raw_group: u32_at(9),
            raw_link: u32_at(13),
            offset: take_i64(bytes, 17),
            size: take_i64(bytes, 25),
            size_with_padding: take_i64(bytes, 33),
            created_at: take_i64(bytes, 41),
            modified_at: take_i64(bytes, 49),
            uid: take_i64(bytes, 57),
            gid: take_i64(bytes, 65),
            name: take_array(bytes, 73),
            extra: take_array(bytes, 201),
        }
    }

    /// The object group id, or `None` when the object is in no group.
    pub fn group(&self) -> Option<u32> {
        Some(self.raw_group & !GROUP_MASK).filter(|&id| id != 0)
    }

    /// What the object is linked to.
    pub fn link(&self) -> Link {
        Link::from_raw(self.raw_link)
    }

    /// The name without NUL padding (lossy UTF-8).
    pub fn name(&self) -> String {
        nul_trimmed_text(&self.name)
    }

    /// The type with its decoded metadata.
    pub fn kind(&self) -> ObjectKind {
        ObjectKind::decode(self.data_type, &self.extra)
    }

    /// The partition metadata, if this is a partition.
    pub fn partition(&self) -> Option<PartitionInfo> {
        match self.kind() {
            ObjectKind::Partition(info) => Some(info),
            _ => None,
        }
    }

    /// True for the primary system partition (the container root).
    pub fn is_primary_partition(&self) -> bool {
        self.partition()
            .is_some_and(|p| p.part_type == PartType::PrimarySystem)
    }

    /// End of the data (`offset + size`), or `None` on overflow.
    pub fn end(&self) -> Option<i64> {
        self.offset.checked_add(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: &ObjectKind) -> Descriptor {
        let mut name = [0u8; DESCRIPTOR_NAME_LEN];
        name[..6].copy_from_slice(b"rootfs");
        Descriptor {
            data_type: kind.data_type(),
            used: true,
            id: 3,
            raw_group: 1 | GROUP_MASK,
            raw_link: Link::Group(2).to_raw(),
            offset: 32_768,
            size: 4096,
            size_with_padding: 4657,
            created_at: 1_700_000_000,
            modified_at: 1_700_000_001,
            uid: 0,
            gid: 0,
            name,
            extra: kind.encode_extra().unwrap(),
        }
    }

    fn all_kinds() -> Vec<ObjectKind> {
        vec![
            ObjectKind::Deffile,
            ObjectKind::EnvVars,
            ObjectKind::Labels,
            ObjectKind::GenericJson,
            ObjectKind::Generic,
            ObjectKind::Partition(PartitionInfo {
                fs_type: FsType::Squashfs,
                part_type: PartType::PrimarySystem,
                arch: Arch::ARM64,
            }),
            ObjectKind::Signature(SignatureInfo {
                hash_type: HashType::Sha384,
                fingerprint: Some([0xab; FINGERPRINT_LEN]),
            }),
            ObjectKind::Signature(SignatureInfo {
                hash_type: HashType::Sha256,
                fingerprint: None,
            }),
            ObjectKind::CryptoMessage(CryptoMessageInfo {
                format: FormatType::Pem,
                message: MessageType::RsaOaep,
            }),
            ObjectKind::Sbom(SbomFormat::SpdxJson),
            ObjectKind::OciRootIndex {
                digest: format!("sha256:{}", "0".repeat(64)),
            },
            ObjectKind::OciBlob {
                digest: format!("sha256:{}", "f".repeat(64)),
            },
            ObjectKind::Other(0x5000),
        ]
    }

    #[test]
    fn descriptors_round_trip_for_every_kind() {
        for kind in all_kinds() {
            let descriptor = sample(&kind);
            let decoded = Descriptor::decode(&descriptor.encode());
            assert_eq!(decoded, descriptor);
            assert_eq!(decoded.kind(), kind);
        }
    }

    #[test]
    fn descriptor_fields_sit_where_the_reference_puts_them() {
        let kind = all_kinds()[5].clone();
        let bytes = sample(&kind).encode();
        assert_eq!(&bytes[0..4], &0x4004i32.to_le_bytes());
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[5..9], &3u32.to_le_bytes());
        assert_eq!(&bytes[9..13], &0xf000_0001u32.to_le_bytes());
        assert_eq!(&bytes[13..17], &0xf000_0002u32.to_le_bytes());
        assert_eq!(&bytes[17..25], &32_768i64.to_le_bytes());
        assert_eq!(&bytes[25..33], &4096i64.to_le_bytes());
        assert_eq!(&bytes[33..41], &4657i64.to_le_bytes());
        assert_eq!(&bytes[73..79], b"rootfs");
        // extra: fs type 1, part type 2, arch "04\0".
        assert_eq!(&bytes[201..205], &1i32.to_le_bytes());
        assert_eq!(&bytes[205..209], &2i32.to_le_bytes());
        assert_eq!(&bytes[209..212], b"04\0");
    }

    #[test]
    fn group_and_link_decode_like_the_reference() {
        let mut d = sample(&ObjectKind::Generic);
        assert_eq!(d.group(), Some(1));
        assert_eq!(d.link(), Link::Group(2));
        d.raw_group = GROUP_MASK;
        assert_eq!(d.group(), None);
        d.raw_link = 7;
        assert_eq!(d.link(), Link::Object(7));
        d.raw_link = GROUP_MASK;
        assert_eq!(d.link(), Link::None);
        assert_eq!(d.name(), "rootfs");
    }

    #[test]
    fn oversized_digest_is_rejected() {
        let kind = ObjectKind::OciBlob {
            digest: "x".repeat(DESCRIPTOR_EXTRA_LEN),
        };
        assert!(matches!(
            kind.encode_extra(),
            Err(SifError::InvalidDigest { .. })
        ));
    }

    #[test]
    fn used_flag_is_any_non_zero_byte() {
        let mut bytes = Descriptor::EMPTY.encode();
        assert!(!Descriptor::decode(&bytes).used);
        bytes[4] = 0x80;
        assert!(Descriptor::decode(&bytes).used);
    }
}
