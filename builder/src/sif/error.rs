//! Errors from reading and writing SIF images. Every message names the file
//! (or the writer's output) and, where one is involved, the object id and
//! the offending offset or size.

use std::io;
use std::path::PathBuf;

use super::descriptor::Link;

/// Why a SIF image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SifError {
    /// An I/O operation failed; `action` says which.
    #[error("{}: {action}", path.display())]
    Io {
        /// The file involved (image, output or object source).
        path: PathBuf,
        /// What was being done, e.g. "cannot read the descriptor table at offset 4096".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file does not start with a SIF header.
    #[error("{}: not a SIF image (no SIF_MAGIC at byte 32; the file is {len} bytes)", path.display())]
    NotSif {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },

    /// The file has the SIF magic but ends inside the header.
    #[error("{}: truncated SIF image: {len} bytes, shorter than the 128-byte header", path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },

    /// The spec version is not 01.
    #[error("{}: unsupported SIF version {version:?} (only version 01 exists)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version bytes found, as text.
        version: String,
    },

    /// A header field holds an impossible value.
    #[error("{}: corrupt SIF header: {field} is {value} ({problem})", path.display())]
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// The field, e.g. "descriptors total".
        field: &'static str,
        /// Its value.
        value: i64,
        /// What is wrong with it.
        problem: String,
    },

    /// A section named by the header lies (partly) outside the file.
    #[error(
        "{}: truncated or corrupt SIF image: the {section} (offset {offset}, {size} bytes) is not within the file ({len} bytes)",
        path.display()
    )]
    SectionOutOfBounds {
        /// The file.
        path: PathBuf,
        /// "descriptor table" or "data section".
        section: &'static str,
        /// Its offset per the header.
        offset: i64,
        /// Its size per the header.
        size: i64,
        /// The file length.
        len: u64,
    },

    /// A descriptor's data lies (partly) outside the file.
    #[error(
        "{}: truncated or corrupt SIF image: data object {id} (descriptor slot {slot}, offset {offset}, size {size}) is not within the file ({len} bytes)",
        path.display()
    )]
    ObjectOutOfBounds {
        /// The file.
        path: PathBuf,
        /// The object id.
        id: u32,
        /// Index of the descriptor in the table.
        slot: u64,
        /// The stored offset.
        offset: i64,
        /// The stored size.
        size: i64,
        /// The file length.
        len: u64,
    },

    /// No used descriptor has this id.
    #[error("{}: no data object with id {id}", path.display())]
    NoSuchObject {
        /// The file.
        path: PathBuf,
        /// The id asked for.
        id: u32,
    },

    /// An object is too large to load into memory as metadata.
    #[error("{}: data object {id} is {size} bytes, more than the {limit} bytes loaded into memory as metadata", path.display())]
    ObjectTooLarge {
        /// The file.
        path: PathBuf,
        /// The object id.
        id: u32,
        /// Its size.
        size: i64,
        /// The limit.
        limit: u64,
    },

    /// A JSON object does not parse.
    #[error("{}: data object {id} is not valid JSON", path.display())]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// The object id.
        id: u32,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// The launch script does not fit the header.
    #[error("launch script is {len} bytes; the SIF header holds at most 31")]
    LaunchScriptTooLong {
        /// Its length.
        len: usize,
    },

    /// An object name does not fit its descriptor.
    #[error(
        "name of data object {id} is {len} bytes; a SIF descriptor holds at most 128: {name:?}"
    )]
    NameTooLong {
        /// The id the object would get.
        id: u32,
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },

    /// More objects than descriptor slots.
    #[error("{count} data objects do not fit in a descriptor table of {capacity}")]
    TooManyObjects {
        /// Objects added.
        count: usize,
        /// Descriptor slots.
        capacity: u32,
    },

    /// Two objects claim to be the primary system partition.
    #[error("data objects {first} and {second} are both primary system partitions; a SIF image has at most one")]
    DuplicatePrimaryPartition {
        /// Id of the first.
        first: u32,
        /// Id of the second.
        second: u32,
    },

    /// A group id is zero or does not fit beside the group mask.
    #[error("data object {id}: group id {group} is out of range (1 to 268435455)")]
    InvalidGroup {
        /// The id the object would get.
        id: u32,
        /// The group id given.
        group: u32,
    },

    /// A link target is zero or does not fit beside the group mask.
    #[error("data object {id}: link {link:?} is out of range (ids 1 to 268435455)")]
    InvalidLink {
        /// The id the object would get.
        id: u32,
        /// The link given.
        link: Link,
    },

    /// An OCI digest does not fit the descriptor's `extra` field.
    #[error("OCI digest {digest:?} does not fit in the 384-byte descriptor metadata field")]
    InvalidDigest {
        /// The digest given.
        digest: String,
    },

    /// Offsets would exceed what SIF's signed 64-bit fields can hold.
    #[error("{}: data object {id} would end beyond the largest offset SIF can store", path.display())]
    TooLarge {
        /// The output.
        path: PathBuf,
        /// The object id.
        id: u32,
    },
}
