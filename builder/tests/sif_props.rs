//! Property tests for the SIF reader and writer: arbitrary and mutated bytes
//! never make the reader panic, sizes and offsets beyond the file are
//! rejected before use, and whatever the writer produces reads back exactly.

// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Cursor, Read};

use proptest::prelude::*;
use sifhub_builder::sif::{
    Arch, DescriptorInput, FsType, Link, ObjectKind, PartType, PartitionInfo, SifBuilder, SifError,
    SifFile, Uuid, DESCRIPTOR_SIZE, HEADER_SIZE, MAX_METADATA_SIZE,
};

/// Descriptor slots in the sample image (few, to keep it small).
const CAPACITY: u32 = 3;
const DESCRIPTORS_OFFSET: usize = 4096;
const DATA_OFFSET: usize = DESCRIPTORS_OFFSET + CAPACITY as usize * DESCRIPTOR_SIZE;
/// Offsets of the i64 fields in the header that the reader must validate.
const HEADER_SIZE_FIELDS: [usize; 5] = [88, 96, 104, 112, 120];
/// Offsets of offset and size within a descriptor.
const DESCRIPTOR_OFFSET_FIELD: usize = 17;
const DESCRIPTOR_SIZE_FIELD: usize = 25;

/// A valid image: recipe, labels and an aligned primary partition.
fn sample_image() -> Vec<u8> {
    let mut builder = SifBuilder::new()
        .id(Uuid::from_u128(99))
        .timestamp(1_700_000_000)
        .descriptor_capacity(CAPACITY);
    builder
        .add_bytes(
            DescriptorInput::new(ObjectKind::Deffile),
            "Bootstrap: scratch\n",
        )
        .add_bytes(
            DescriptorInput::new(ObjectKind::Labels),
            r#"{"maintainer":"props"}"#,
        )
        .add_bytes(
            DescriptorInput::new(ObjectKind::Partition(PartitionInfo {
                fs_type: FsType::Squashfs,
                part_type: PartType::PrimarySystem,
                arch: Arch::AMD64,
            })),
            (0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
        );
    let mut out = Cursor::new(Vec::new());
    builder.write_to_writer(&mut out, "sample").unwrap();
    out.into_inner()
}

fn open(bytes: Vec<u8>) -> Result<SifFile<Cursor<Vec<u8>>>, SifError> {
    SifFile::from_reader(Cursor::new(bytes), "prop.sif")
}

/// Whatever opened must be self-consistent: every object lies inside the
/// file and reads back at exactly its size; accessors do not panic.
fn check_opened(mut sif: SifFile<Cursor<Vec<u8>>>) {
    let len = sif.file_len();
    let descriptors = sif.descriptors().to_vec();
    for d in &descriptors {
        assert!(d.offset >= 0 && d.size >= 0, "{d:?}");
        let end = d.offset.checked_add(d.size).unwrap();
        assert!(
            end as u64 <= len,
            "object {} ends at {end} past {len}",
            d.id
        );
        // Duplicate ids (possible in mutated files) resolve to the first.
        let first = *sif.descriptor(d.id).unwrap();
        let mut bytes = Vec::new();
        sif.read_object(d.id)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len() as i64, first.size);
        let _ = d.kind();
        let _ = d.name();
    }
    let _ = sif.recipe();
    let _ = sif.labels();
    let _ = sif.primary_fs_type();
    for d in &descriptors {
        match sif.read_object_bytes(d.id, MAX_METADATA_SIZE) {
            Ok(bytes) => assert!(bytes.len() as u64 <= MAX_METADATA_SIZE),
            Err(SifError::ObjectTooLarge { .. }) => {}
            Err(other) => panic!("unexpected error reading object {}: {other}", d.id),
        }
    }
}

fn put_i64(bytes: &mut [u8], at: usize, value: i64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Interesting i64s for size and offset fields: extremes, values around the
/// file length, and anything else.
fn size_field(len: usize) -> impl Strategy<Value = i64> {
    let len = len as i64;
    prop_oneof![
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-1i64),
        Just(0i64),
        Just(len),
        Just(len + 1),
        (len - 64)..(len + 64),
        (len + 1)..i64::MAX,
        any::<i64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        match open(bytes) {
            Ok(sif) => check_opened(sif),
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn random_bytes_behind_a_valid_magic_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), HEADER_SIZE..6000),
        small_numbers in any::<bool>(),
    ) {
        bytes[32..45].copy_from_slice(b"SIF_MAGIC\x0001\0");
        if small_numbers {
            // Plausible counts and offsets reach the descriptor parsing.
            let len = bytes.len() as i64;
            put_i64(&mut bytes, 88, 2);
            put_i64(&mut bytes, 96, 128);
            put_i64(&mut bytes, 104, (2 * DESCRIPTOR_SIZE) as i64);
            put_i64(&mut bytes, 112, 0);
            put_i64(&mut bytes, 120, len.min(100));
        }
        if let Ok(sif) = open(bytes) {
            check_opened(sif);
        }
    }

    #[test]
    fn mutated_header_and_descriptors_never_panic(
        flips in prop::collection::vec(
            (prop_oneof![0..HEADER_SIZE, DESCRIPTORS_OFFSET..DATA_OFFSET], any::<u8>()),
            1..12,
        ),
    ) {
        let mut bytes = sample_image();
        for (at, value) in flips {
            bytes[at] = value;
        }
        if let Ok(sif) = open(bytes) {
            check_opened(sif);
        }
    }

    #[test]
    fn header_sizes_beyond_the_file_are_rejected(
        field in prop::sample::select(HEADER_SIZE_FIELDS.to_vec()),
        value in size_field(sample_image().len()),
    ) {
        let mut bytes = sample_image();
        let len = bytes.len() as i64;
        put_i64(&mut bytes, field, value);
        let result = open(bytes);
        if value < 0 || value > len {
            prop_assert!(result.is_err(), "field at {field} = {value} accepted");
        }
        if let Ok(sif) = result {
            check_opened(sif);
        }
    }

    #[test]
    fn object_offsets_and_sizes_beyond_the_file_are_rejected(
        slot in 0..3usize,
        field in prop::sample::select(vec![DESCRIPTOR_OFFSET_FIELD, DESCRIPTOR_SIZE_FIELD]),
        value in size_field(sample_image().len()),
    ) {
        let mut bytes = sample_image();
        let len = bytes.len() as i64;
        let at = DESCRIPTORS_OFFSET + slot * DESCRIPTOR_SIZE;
        let read = |b: &[u8], f: usize| i64::from_le_bytes(b[at + f..at + f + 8].try_into().unwrap());
        put_i64(&mut bytes, at + field, value);
        let (offset, size) = (read(&bytes, DESCRIPTOR_OFFSET_FIELD), read(&bytes, DESCRIPTOR_SIZE_FIELD));
        let inside = offset >= 0
            && size >= 0
            && offset.checked_add(size).is_some_and(|end| end <= len);
        match open(bytes) {
            Ok(sif) => {
                prop_assert!(inside, "object {} at {offset}+{size} accepted in {len} bytes", slot + 1);
                check_opened(sif);
            }
            Err(SifError::ObjectOutOfBounds { id, offset: o, size: s, .. }) => {
                prop_assert!(!inside);
                prop_assert_eq!(id as usize, slot + 1);
                prop_assert_eq!((o, s), (offset, size));
            }
            Err(other) => prop_assert!(false, "unexpected error: {}", other),
        }
    }

    #[test]
    fn any_truncation_is_rejected(cut in 0..13_000usize) {
        let bytes = sample_image();
        let cut = cut % bytes.len();
        prop_assert!(open(bytes[..cut].to_vec()).is_err(), "truncated to {cut} bytes accepted");
    }

    #[test]
    fn written_images_read_back_exactly(
        objects in prop::collection::vec(
            (
                0..6u8,
                prop::option::of(1..5u32),
                prop::option::of(0..4096u64),
                "[a-z.]{0,20}",
                prop::collection::vec(any::<u8>(), 0..300),
                0..3u8,
            ),
            0..6,
        ),
        capacity_spare in 0..4u32,
        timestamp in any::<i64>(),
    ) {
        let mut builder = SifBuilder::new()
            .id(Uuid::from_u128(u128::from(timestamp.unsigned_abs())))
            .timestamp(timestamp)
            .launch_script("")
            .descriptor_capacity(objects.len() as u32 + capacity_spare);
        for (index, (kind, group, alignment, name, data, link)) in objects.iter().enumerate() {
            let kind = match kind {
                0 => ObjectKind::Deffile,
                1 => ObjectKind::Labels,
                2 => ObjectKind::GenericJson,
                3 => ObjectKind::Generic,
                4 => ObjectKind::Sbom(sifhub_builder::sif::SbomFormat::SyftJson),
                // Only the first object may be the primary partition.
                _ if index == 0 => ObjectKind::Partition(PartitionInfo {
                    fs_type: FsType::Squashfs,
                    part_type: PartType::PrimarySystem,
                    arch: Arch::ARM64,
                }),
                _ => ObjectKind::Partition(PartitionInfo {
                    fs_type: FsType::Raw,
                    part_type: PartType::Data,
                    arch: Arch::RISCV64,
                }),
            };
            let mut input = DescriptorInput::new(kind).name(name.clone());
            input.group = *group;
            input.alignment = *alignment;
            input.link = match link {
                0 => Link::None,
                1 => Link::Object(1),
                _ => Link::Group(2),
            };
            builder.add_object(input, &data[..]);
        }
        let mut out = Cursor::new(Vec::new());
        let layout = builder.write_to_writer(&mut out, "prop").unwrap();
        let bytes = out.into_inner();

        let mut sif = open(bytes.clone()).unwrap();
        prop_assert_eq!(sif.header(), &layout.header);
        prop_assert_eq!(sif.descriptors(), &layout.descriptors[..]);
        prop_assert_eq!(layout.header.data_offset + layout.header.data_size, bytes.len() as i64);
        for (d, (_, group, alignment, name, data, _)) in layout.descriptors.iter().zip(&objects) {
            prop_assert_eq!(d.group(), *group);
            prop_assert_eq!(&d.name(), name);
            if let Some(alignment) = alignment.filter(|&a| a > 1) {
                prop_assert_eq!(d.offset as u64 % alignment, 0);
            }
            prop_assert_eq!(&sif.read_object_bytes(d.id, u64::MAX).unwrap(), data);
        }
        if layout.descriptors.first().is_some_and(|d| d.is_primary_partition()) {
            prop_assert_eq!(sif.header().arch, Arch::ARM64);
            prop_assert_eq!(sif.primary_fs_type(), Some(FsType::Squashfs));
        } else {
            prop_assert_eq!(sif.header().arch, Arch::UNKNOWN);
        }
    }
}
