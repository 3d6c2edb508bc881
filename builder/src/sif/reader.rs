//! Reading SIF images from a path or any `Read + Seek`.
//!
//! Opening reads the header and the descriptor table and checks every offset
//! and size they hold against the file length before anything is read or
//! allocated from them, so a corrupt or hostile file yields an error, never a
//! panic or a huge allocation. Object data is only read on request.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use super::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use super::error::SifError;
use super::header::{Header, CURRENT_VERSION, HEADER_SIZE, MAGIC_OFFSET, SIF_MAGIC};
use super::types::{DataType, FsType};
use super::Result;

/// The most [`SifFile::read_object_bytes`]'s convenience callers (recipe,
/// labels, JSON) load into memory: metadata objects are small, and a
/// multi-gigabyte "recipe" is a corrupt or hostile file.
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;

/// An open SIF image: its header and used descriptors, with object data read
/// on demand from the underlying source.
#[derive(Debug)]
pub struct SifFile<R> {
    source: R,
    path: PathBuf,
    len: u64,
    header: Header,
    descriptors: Vec<Descriptor>,
}

impl SifFile<File> {
    /// Opens and validates the image at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| SifError::Io {
            path: path.to_path_buf(),
            action: "cannot open the image".into(),
            source,
        })?;
        Self::from_reader(file, path)
    }
}

impl<R: Read + Seek> SifFile<R> {
    /// Reads and validates an image from `source`; `path` is only used to
    /// name the image in errors.
    pub fn from_reader(mut source: R, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let io_error = |action: String| {
            let path = path.clone();
            move |source| SifError::Io {
                path,
                action,
                source,
            }
        };

        let len = source
            .seek(SeekFrom::End(0))
            .map_err(io_error("cannot find the file length".into()))?;

        let header = read_header(&mut source, &path, len)?;
        check_header(&header, &path, len)?;

        let table_offset = header.descriptors_offset.unsigned_abs();
        source
            .seek(SeekFrom::Start(table_offset))
            .map_err(io_error(format!(
                "cannot seek to the descriptor table at offset {table_offset}"
            )))?;
        // Total was checked against the table size and the file length, so
        // the loop reads bytes that exist; only used slots are kept.
        let total = header.descriptors_total.unsigned_abs();
        let mut table = BufReader::new(&mut source);
        let mut descriptors = Vec::new();
        let mut slot_bytes = [0u8; DESCRIPTOR_SIZE];
        for slot in 0..total {
            let slot_offset = table_offset + slot * DESCRIPTOR_SIZE as u64;
            table.read_exact(&mut slot_bytes).map_err(io_error(format!(
                "cannot read descriptor slot {slot} at offset {slot_offset}"
            )))?;
            let descriptor = Descriptor::decode(&slot_bytes);
            if !descriptor.used {
                continue;
            }
            if !within(descriptor.offset, descriptor.size, len) {
                return Err(SifError::ObjectOutOfBounds {
                    path,
                    id: descriptor.id,
                    slot,
                    offset: descriptor.offset,
                    size: descriptor.size,
                    len,
                });
            }
            descriptors.push(descriptor);
        }
        drop(table);

        Ok(SifFile {
            source,
            path,
            len,
            header,
            descriptors,
        })
    }

    /// The global header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The used descriptors, in table order.
    pub fn descriptors(&self) -> &[Descriptor] {
        &self.descriptors
    }

    /// The path (or label) the image was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file length in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The descriptor with object id `id` (the first, should a corrupt file
    /// repeat an id).
    pub fn descriptor(&self, id: u32) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.id == id)
    }

    /// Descriptors of one data type, in table order.
    pub fn descriptors_of(&self, data_type: DataType) -> impl Iterator<Item = &Descriptor> {
        self.descriptors
            .iter()
            .filter(move |d| d.data_type == data_type)
    }

    /// The primary system partition (the container root), if any.
    pub fn primary_partition(&self) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.is_primary_partition())
    }

    /// The filesystem type of the primary partition, if any.
    pub fn primary_fs_type(&self) -> Option<FsType> {
        self.primary_partition()
            .and_then(Descriptor::partition)
            .map(|p| p.fs_type)
    }

    /// A reader over object `id`'s data, bounded to its size.
    pub fn read_object(&mut self, id: u32) -> Result<Take<&mut R>> {
        let descriptor = *self.descriptor(id).ok_or_else(|| SifError::NoSuchObject {
            path: self.path.clone(),
            id,
        })?;
        // Both are non-negative: checked when the table was read.
        let offset = descriptor.offset.unsigned_abs();
        let size = descriptor.size.unsigned_abs();
        self.source
            .seek(SeekFrom::Start(offset))
            .map_err(|source| SifError::Io {
                path: self.path.clone(),
                action: format!("cannot seek to data object {id} at offset {offset}"),
                source,
            })?;
        Ok((&mut self.source).take(size))
    }

    /// Object `id`'s data in memory, refusing objects larger than `limit`.
    pub fn read_object_bytes(&mut self, id: u32, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .descriptor(id)
            .map(|d| d.size)
            .ok_or_else(|| SifError::NoSuchObject {
                path: self.path.clone(),
                id,
            })?;
        let expected = size.unsigned_abs();
        if expected > limit {
            return Err(SifError::ObjectTooLarge {
                path: self.path.clone(),
                id,
                size,
                limit,
            });
        }
        let path = self.path.clone();
        let offset = self.descriptor(id).map_or(0, |d| d.offset);
        let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        let read = self
            .read_object(id)?
            .read_to_end(&mut bytes)
            .map_err(|source| SifError::Io {
                path: path.clone(),
                action: format!("cannot read data object {id} at offset {offset}"),
                source,
            })?;
        if read as u64 != expected {
            // The file shrank since it was opened.
            return Err(SifError::Io {
                path,
                action: format!(
                    "cannot read data object {id} at offset {offset}: got {read} of {expected} bytes"
                ),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(bytes)
    }

    /// The definition file the image was built from (the first deffile
    /// object), decoded lossily as UTF-8.
    pub fn recipe(&mut self) -> Result<Option<String>> {
        let Some(id) = self.descriptors_of(DataType::Deffile).next().map(|d| d.id) else {
            return Ok(None);
        };
        let bytes = self.read_object_bytes(id, MAX_METADATA_SIZE)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The JSON labels (the first labels object), parsed.
    pub fn labels(&mut self) -> Result<Option<serde_json::Value>> {
        let Some(id) = self.descriptors_of(DataType::Labels).next().map(|d| d.id) else {
            return Ok(None);
        };
        self.read_json(id).map(Some)
    }

    /// Object `id` parsed as JSON (for labels and generic JSON objects).
    pub fn read_json(&mut self, id: u32) -> Result<serde_json::Value> {
        let bytes = self.read_object_bytes(id, MAX_METADATA_SIZE)?;
        serde_json::from_slice(&bytes).map_err(|source| SifError::InvalidJson {
            path: self.path.clone(),
            id,
            source,
        })
    }

    /// Gives back the underlying source.
    pub fn into_inner(self) -> R {
        self.source
    }
}

/// Reads the header and checks magic, length and version.
fn read_header<R: Read + Seek>(source: &mut R, path: &Path, len: u64) -> Result<Header> {
    let mut bytes = [0u8; HEADER_SIZE];
    let available = usize::try_from(len.min(HEADER_SIZE as u64)).unwrap_or(HEADER_SIZE);
    source
        .seek(SeekFrom::Start(0))
        .and_then(|_| source.read_exact(&mut bytes[..available]))
        .map_err(|source| SifError::Io {
            path: path.to_path_buf(),
            action: "cannot read the SIF header".into(),
            source,
        })?;
    let magic_end = MAGIC_OFFSET + SIF_MAGIC.len();
    if available < magic_end || bytes[MAGIC_OFFSET..magic_end] != SIF_MAGIC {
        return Err(SifError::NotSif {
            path: path.to_path_buf(),
            len,
        });
    }
    if available < HEADER_SIZE {
        return Err(SifError::TruncatedHeader {
            path: path.to_path_buf(),
            len,
        });
    }
    let header = Header::decode(&bytes);
    if header.version != CURRENT_VERSION {
        return Err(SifError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: header.version_text(),
        });
    }
    Ok(header)
}

/// Checks the header's counts, offsets and sizes against each other and the
/// file length.
fn check_header(header: &Header, path: &Path, len: u64) -> Result<()> {
    let invalid = |field: &'static str, value: i64, problem: String| SifError::InvalidHeader {
        path: path.to_path_buf(),
        field,
        value,
        problem,
    };
    let fields = [
        ("descriptors total", header.descriptors_total),
        ("descriptors offset", header.descriptors_offset),
        ("descriptors size", header.descriptors_size),
        ("data offset", header.data_offset),
        ("data size", header.data_size),
    ];
    for (field, value) in fields {
        if value < 0 {
            return Err(invalid(field, value, "negative".into()));
        }
    }

    let total = header.descriptors_total;
    let table_size = total
        .checked_mul(DESCRIPTOR_SIZE as i64)
        .ok_or_else(|| invalid("descriptors total", total, "absurdly large".into()))?;
    if table_size > header.descriptors_size {
        return Err(invalid(
            "descriptors size",
            header.descriptors_size,
            format!("{total} descriptors need {table_size} bytes"),
        ));
    }

    let sections = [
        (
            "descriptor table",
            header.descriptors_offset,
            header.descriptors_size,
        ),
        ("data section", header.data_offset, header.data_size),
    ];
    for (section, offset, size) in sections {
        if !within(offset, size, len) {
            return Err(SifError::SectionOutOfBounds {
                path: path.to_path_buf(),
                section,
                offset,
                size,
                len,
            });
        }
    }
    Ok(())
}

/// True when `offset..offset + size` is a valid range inside a file of
/// `len` bytes.
fn within(offset: i64, size: i64, len: u64) -> bool {
    offset >= 0
        && size >= 0
        && offset
            .checked_add(size)
            .is_some_and(|end| end.unsigned_abs() <= len)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sif::{DescriptorInput, ObjectKind, SifBuilder};

    fn small_image() -> Vec<u8> {
        let mut builder = SifBuilder::new()
            .id(uuid::Uuid::from_u128(7))
            .timestamp(1_700_000_000)
            .descriptor_capacity(4);
        builder.add_bytes(
            DescriptorInput::new(ObjectKind::Deffile),
            b"Bootstrap: scratch\n".to_vec(),
        );
        builder.add_bytes(
            DescriptorInput::new(ObjectKind::Labels),
            br#"{"maintainer":"me"}"#.to_vec(),
        );
        let mut out = Cursor::new(Vec::new());
        builder.write_to_writer(&mut out, "memory").unwrap();
        out.into_inner()
    }

    fn open(bytes: Vec<u8>) -> Result<SifFile<Cursor<Vec<u8>>>> {
        SifFile::from_reader(Cursor::new(bytes), "test.sif")
    }

    #[test]
    fn reads_metadata_accessors() {
        let mut sif = open(small_image()).unwrap();
        assert_eq!(sif.descriptors().len(), 2);
        assert_eq!(
            sif.recipe().unwrap().as_deref(),
            Some("Bootstrap: scratch\n")
        );
        assert_eq!(
            sif.labels().unwrap(),
            Some(serde_json::json!({"maintainer": "me"}))
        );
        assert_eq!(sif.primary_partition(), None);
        assert!(matches!(
            sif.read_object(9),
            Err(SifError::NoSuchObject { id: 9, .. })
        ));
    }

    #[test]
    fn empty_and_foreign_files_are_not_sif() {
        assert!(matches!(
            open(Vec::new()),
            Err(SifError::NotSif { len: 0, .. })
        ));
        let err = open(b"#!/bin/sh\necho hello\n".to_vec()).unwrap_err();
        assert!(
            err.to_string().starts_with("test.sif: not a SIF image"),
            "{err}"
        );
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let image = small_image();
        for cut in [40, 100, 127, 128, 4096, 4200, image.len() - 1] {
            assert!(open(image[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn out_of_range_object_size_is_rejected_with_its_id() {
        let mut image = small_image();
        // Size field of descriptor slot 0 (object 1).
        let at = 4096 + 25;
        image[at..at + 8].copy_from_slice(&i64::MAX.to_le_bytes());
        let err = open(image).unwrap_err();
        assert!(
            matches!(err, SifError::ObjectOutOfBounds { id: 1, slot: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("data object 1"), "{err}");
    }

    #[test]
    fn huge_descriptor_count_is_rejected_before_reading() {
        let mut image = small_image();
        image[88..96].copy_from_slice(&(i64::MAX / 2).to_le_bytes());
        assert!(matches!(open(image), Err(SifError::InvalidHeader { .. })));
    }

    #[test]
    fn wrong_version_is_named() {
        let mut image = small_image();
        image[42..45].copy_from_slice(b"02\0");
        let err = open(image).unwrap_err();
        assert!(matches!(err, SifError::UnsupportedVersion { .. }), "{err}");
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let mut sif = open(small_image()).unwrap();
        assert!(matches!(
            sif.read_object_bytes(1, 3),
            Err(SifError::ObjectTooLarge { id: 1, .. })
        ));
    }
}
