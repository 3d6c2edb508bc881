//! Writing SIF images, streaming each object from its source.
//!
//! The layout is the reference's: header at 0, a descriptor table of fixed
//! capacity at 4096, then the objects in the order they were added, each at
//! the next offset satisfying its alignment (4096 for partitions). Because the
//! table has a fixed size the data section's start is known up front, so
//! objects are copied straight from their readers into the output and the
//! header and descriptors are filled in last.
//!
//! Given [`SifBuilder::id`] and [`SifBuilder::timestamp`] the output depends on
//! nothing but the inputs: padding is written as zeros and nothing reads the
//! clock or a random source.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::descriptor::{
    Descriptor, Link, ObjectKind, DESCRIPTOR_NAME_LEN, DESCRIPTOR_SIZE, GROUP_MASK,
};
use super::error::SifError;
use super::header::{Header, CURRENT_VERSION, HEADER_SIZE, LAUNCH_SCRIPT_LEN, SIF_MAGIC};
use super::types::{Arch, PartType};
use super::Result;

/// Descriptor slots in a new image, as the reference creates them.
pub const DEFAULT_DESCRIPTOR_CAPACITY: u32 = 48;
/// Where the descriptor table starts, as in the reference.
pub const DESCRIPTORS_OFFSET: u64 = 4096;
/// Default alignment of partition objects (other objects are unaligned).
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// The group objects are put in unless told otherwise.
pub const DEFAULT_GROUP: u32 = 1;
/// The launch script apptainer writes, making the image executable.
pub const APPTAINER_LAUNCH_SCRIPT: &str = "#!/usr/bin/env run-singularity\n";

/// Largest group or object id that fits beside [`GROUP_MASK`].
const MAX_ID: u32 = !GROUP_MASK;

/// How a new data object is described: its type and metadata, grouping,
/// link, name, alignment and timestamp. Build with [`DescriptorInput::new`]
/// and the chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorInput {
    /// Type and type-specific metadata.
    pub kind: ObjectKind,
    /// Object group; `None` for no group. Defaults to [`DEFAULT_GROUP`].
    pub group: Option<u32>,
    /// What the object is linked to. Defaults to nothing.
    pub link: Link,
    /// Name, at most 128 bytes. Defaults to empty.
    pub name: String,
    /// Alignment of the data in bytes; `None` means 4096 for partitions and
    /// none for everything else, as the reference does.
    pub alignment: Option<u64>,
    /// Creation/modification time of the object; `None` means the image's.
    pub timestamp: Option<i64>,
}

impl DescriptorInput {
    /// An object of `kind` with the reference defaults.
    pub fn new(kind: ObjectKind) -> Self {
        DescriptorInput {
            kind,
            group: Some(DEFAULT_GROUP),
            link: Link::None,
            name: String::new(),
            alignment: None,
            timestamp: None,
        }
    }

    /// Puts the object in group `group` (1 to 268435455).
    pub fn group(mut self, group: u32) -> Self {
        self.group = Some(group);
        self
    }

    /// Puts the object in no group.
    pub fn no_group(mut self) -> Self {
        self.group = None;
        self
    }

    /// Links the object to another object or a group.
    pub fn link(mut self, link: Link) -> Self {
        self.link = link;
        self
    }

    /// Names the object.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Aligns the object's data on `alignment` bytes (0 or 1: unaligned).
    pub fn alignment(mut self, alignment: u64) -> Self {
        self.alignment = Some(alignment);
        self
    }

    /// Stamps the object with its own time instead of the image's.
    pub fn timestamp(mut self, unix_seconds: i64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }

    fn effective_alignment(&self) -> u64 {
        self.alignment.unwrap_or(match self.kind {
            ObjectKind::Partition(_) => PARTITION_ALIGNMENT,
            _ => 0,
        })
    }
}

/// Where an object's bytes come from.
enum ObjectSource<'a> {
    Reader(Box<dyn Read + 'a>),
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// The header and descriptors of an image just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifLayout {
    /// The global header.
    pub header: Header,
    /// The used descriptors, in order.
    pub descriptors: Vec<Descriptor>,
}

/// Assembles a SIF image from objects and writes it in one streaming pass.
///
/// Configuration methods take and return the builder by value; the `add_*`
/// methods take `&mut self` so objects can be added in loops. The header's
/// architecture is the primary partition's, or unknown without one, as the
/// reference sets it.
pub struct SifBuilder<'a> {
    id: Option<Uuid>,
    timestamp: Option<i64>,
    launch_script: String,
    descriptor_capacity: u32,
    objects: Vec<(DescriptorInput, ObjectSource<'a>)>,
}

impl Default for SifBuilder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SifBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SifBuilder")
            .field("id", &self.id)
            .field("timestamp", &self.timestamp)
            .field("launch_script", &self.launch_script)
            .field("descriptor_capacity", &self.descriptor_capacity)
            .field(
                "objects",
                &self
                    .objects
                    .iter()
                    .map(|(input, _)| input)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<'a> SifBuilder<'a> {
    /// An empty image: random id, current time, apptainer's launch script and
    /// 48 descriptor slots, unless set otherwise.
    pub fn new() -> Self {
        SifBuilder {
            id: None,
            timestamp: None,
            launch_script: APPTAINER_LAUNCH_SCRIPT.to_string(),
            descriptor_capacity: DEFAULT_DESCRIPTOR_CAPACITY,
            objects: Vec::new(),
        }
    }

    /// Sets the image id (random v4 otherwise).
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the creation time, Unix seconds (now otherwise). Also the
    /// objects' time unless they carry their own.
    pub fn timestamp(mut self, unix_seconds: i64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }

    /// Sets the launch script (at most 31 bytes; empty for none).
    pub fn launch_script(mut self, script: impl Into<String>) -> Self {
        self.launch_script = script.into();
        self
    }

    /// Sets how many descriptor slots the table has (at least the number of
    /// objects; spare slots let tools add objects later).
    pub fn descriptor_capacity(mut self, capacity: u32) -> Self {
        self.descriptor_capacity = capacity;
        self
    }

    /// Adds an object whose bytes are read from `reader` while writing.
    pub fn add_object(&mut self, input: DescriptorInput, reader: impl Read + 'a) -> &mut Self {
        self.objects
            .push((input, ObjectSource::Reader(Box::new(reader))));
        self
    }

    /// Adds an object whose bytes are the file at `path`, opened and
    /// streamed while writing.
    pub fn add_file(&mut self, input: DescriptorInput, path: impl Into<PathBuf>) -> &mut Self {
        self.objects.push((input, ObjectSource::File(path.into())));
        self
    }

    /// Adds an object from bytes in memory (for small metadata).
    pub fn add_bytes(&mut self, input: DescriptorInput, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.objects
            .push((input, ObjectSource::Bytes(bytes.into())));
        self
    }

    /// Writes the image to `path` atomically: into a temporary file in the
    /// same folder, synced, made executable like the reference's, then
    /// renamed over `path`. On error `path` is untouched.
    pub fn write_to(self, path: impl AsRef<Path>) -> Result<SifLayout> {
        let path = path.as_ref();
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let io_error = |action: &str| {
            let path = path.to_path_buf();
            let action = action.to_string();
            move |source| SifError::Io {
                path,
                action,
                source,
            }
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".sifhub-")
            .suffix(".sif.partial")
            .tempfile_in(folder)
            .map_err(io_error("cannot create a temporary file beside it"))?;
        let layout = self.write_to_writer(temp.as_file_mut(), path)?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("cannot sync the written image"))?;
        set_executable(temp.as_file()).map_err(io_error("cannot set the image's permissions"))?;
        temp.persist(path)
            .map_err(|err| io_error("cannot rename the temporary file into place")(err.error))?;
        Ok(layout)
    }

    /// Writes the image to `out` from its start; `label` names the output in
    /// errors. Objects are copied from their sources without being held in
    /// memory.
    pub fn write_to_writer<W: Write + Seek>(
        self,
        out: &mut W,
        label: impl AsRef<Path>,
    ) -> Result<SifLayout> {
        let label = label.as_ref();
        let plan = self.plan()?;
        let io_error = |action: String| {
            let path = label.to_path_buf();
            move |source| SifError::Io {
                path,
                action,
                source,
            }
        };

        let data_offset = plan.header.data_offset.unsigned_abs();
        out.seek(SeekFrom::Start(0))
            .map_err(io_error("cannot seek to the start of the output".into()))?;
        // Header and table get their real contents at the end; writing their
        // zeros first keeps the file dense and the pass sequential.
        write_zeros(out, data_offset)
            .map_err(io_error("cannot write the header placeholder".into()))?;

        let mut position = data_offset;
        let mut descriptors = Vec::with_capacity(plan.objects.len());
        for (mut descriptor, alignment, source) in plan.objects {
            let id = descriptor.id;
            let too_large = || SifError::TooLarge {
                path: label.to_path_buf(),
                id,
            };
            let start = align_up(position, alignment).ok_or_else(too_large)?;
            write_zeros(out, start - position).map_err(io_error(format!(
                "cannot write padding before data object {id} at offset {position}"
            )))?;
            let written = copy_source(source, out, label, id, start)?;
            // Every offset and size below is at most `end`, so once `end`
            // fits SIF's signed fields they all do.
            let end = start
                .checked_add(written)
                .filter(|&end| end <= i64::MAX as u64)
                .ok_or_else(too_large)?;
            descriptor.offset = start as i64;
            descriptor.size = written as i64;
            descriptor.size_with_padding = (end - position) as i64;
            descriptors.push(descriptor);
            position = end;
        }

        let mut header = plan.header;
        header.data_size = (position - data_offset) as i64;

        out.seek(SeekFrom::Start(0))
            .map_err(io_error("cannot seek back to the header".into()))?;
        out.write_all(&header.encode())
            .map_err(io_error("cannot write the header".into()))?;
        out.seek(SeekFrom::Start(DESCRIPTORS_OFFSET))
            .map_err(io_error("cannot seek to the descriptor table".into()))?;
        let unused = Descriptor::EMPTY.encode();
        for slot in 0..plan.capacity as usize {
            let bytes = descriptors.get(slot).map_or(unused, Descriptor::encode);
            out.write_all(&bytes)
                .map_err(io_error(format!("cannot write descriptor slot {slot}")))?;
        }
        out.seek(SeekFrom::Start(position))
            .and_then(|_| out.flush())
            .map_err(io_error("cannot finish the output".into()))?;

        Ok(SifLayout {
            header,
            descriptors,
        })
    }

    /// Validates everything before a byte is written, so a bad name does not
    /// surface after copying gigabytes, and fills in what is known up front.
    fn plan(self) -> Result<Plan<'a>> {
        let launch_len = self.launch_script.len();
        if launch_len >= LAUNCH_SCRIPT_LEN {
            return Err(SifError::LaunchScriptTooLong { len: launch_len });
        }
        if self.objects.len() > self.descriptor_capacity as usize {
            return Err(SifError::TooManyObjects {
                count: self.objects.len(),
                capacity: self.descriptor_capacity,
            });
        }
        let timestamp = match self.timestamp {
            Some(t) => t,
            None => now_unix_seconds(),
        };

        let mut primary: Option<(u32, Arch)> = None;
        let mut objects = Vec::with_capacity(self.objects.len());
        for (index, (input, source)) in self.objects.into_iter().enumerate() {
            // Fits: index < capacity, a u32.
            let id = index as u32 + 1;
            objects.push((
                describe(&input, id, timestamp)?,
                input.effective_alignment(),
                source,
            ));
            if let ObjectKind::Partition(info) = &input.kind {
                if info.part_type == PartType::PrimarySystem {
                    if let Some((first, _)) = primary {
                        return Err(SifError::DuplicatePrimaryPartition { first, second: id });
                    }
                    primary = Some((id, info.arch));
                }
            }
        }

        let mut launch_script = [0u8; LAUNCH_SCRIPT_LEN];
        launch_script[..launch_len].copy_from_slice(self.launch_script.as_bytes());
        let capacity = i64::from(self.descriptor_capacity);
        let descriptors_size = capacity * DESCRIPTOR_SIZE as i64;
        let descriptors_offset = DESCRIPTORS_OFFSET as i64;
        debug_assert!(HEADER_SIZE as i64 <= descriptors_offset);
        let header = Header {
            launch_script,
            magic: SIF_MAGIC,
            version: CURRENT_VERSION,
            arch: primary.map_or(Arch::UNKNOWN, |(_, arch)| arch),
            id: self.id.unwrap_or_else(Uuid::new_v4),
            created_at: timestamp,
            modified_at: timestamp,
            descriptors_free: capacity - objects.len() as i64,
            descriptors_total: capacity,
            descriptors_offset,
            descriptors_size,
            data_offset: descriptors_offset + descriptors_size,
            data_size: 0,
        };
        Ok(Plan {
            header,
            capacity: self.descriptor_capacity,
            objects,
        })
    }
}

/// What [`SifBuilder::plan`] settles before writing.
struct Plan<'a> {
    header: Header,
    capacity: u32,
    objects: Vec<(Descriptor, u64, ObjectSource<'a>)>,
}

/// The descriptor for `input` as object `id`, less offset and sizes.
fn describe(input: &DescriptorInput, id: u32, image_time: i64) -> Result<Descriptor> {
    let raw_group = match input.group {
        None => GROUP_MASK,
        Some(group) if (1..=MAX_ID).contains(&group) => group | GROUP_MASK,
        Some(group) => return Err(SifError::InvalidGroup { id, group }),
    };
    let link_in_range = match input.link {
        Link::None => true,
        Link::Object(target) | Link::Group(target) => (1..=MAX_ID).contains(&target),
    };
    if !link_in_range {
        return Err(SifError::InvalidLink {
            id,
            link: input.link,
        });
    }
    let name_bytes = input.name.as_bytes();
    if name_bytes.len() > DESCRIPTOR_NAME_LEN {
        return Err(SifError::NameTooLong {
            id,
            name: input.name.clone(),
            len: name_bytes.len(),
        });
    }
    let mut name = [0u8; DESCRIPTOR_NAME_LEN];
    name[..name_bytes.len()].copy_from_slice(name_bytes);
    let time = input.timestamp.unwrap_or(image_time);
    Ok(Descriptor {
        data_type: input.kind.data_type(),
        used: true,
        id,
        raw_group,
        raw_link: input.link.to_raw(),
        offset: 0,
        size: 0,
        size_with_padding: 0,
        created_at: time,
        modified_at: time,
        uid: 0,
        gid: 0,
        name,
        extra: input.kind.encode_extra()?,
    })
}

/// Copies one object's bytes to `out`, returning how many were written.
fn copy_source<W: Write>(
    source: ObjectSource<'_>,
    out: &mut W,
    label: &Path,
    id: u32,
    offset: u64,
) -> Result<u64> {
    let write_error = |source| SifError::Io {
        path: label.to_path_buf(),
        action: format!("cannot write data object {id} at offset {offset}"),
        source,
    };
    match source {
        ObjectSource::Bytes(bytes) => {
            out.write_all(&bytes).map_err(write_error)?;
            Ok(bytes.len() as u64)
        }
        // A concrete `File` lets `io::copy` use copy_file_range/sendfile when
        // the output is a file too.
        ObjectSource::File(path) => {
            let mut file = File::open(&path).map_err(|source| SifError::Io {
                path: path.clone(),
                action: format!("cannot open the source of data object {id}"),
                source,
            })?;
            copy_with_context(&mut file, out, &path, label, id, offset)
        }
        ObjectSource::Reader(mut reader) => {
            copy_with_context(&mut reader, out, label, label, id, offset)
        }
    }
}

/// `io::copy` with an error naming the object. A failure is attributed to
/// the output; the source path is named too when it differs.
fn copy_with_context<R: Read + ?Sized, W: Write>(
    reader: &mut R,
    out: &mut W,
    source_path: &Path,
    label: &Path,
    id: u32,
    offset: u64,
) -> Result<u64> {
    io::copy(reader, out).map_err(|source| SifError::Io {
        path: label.to_path_buf(),
        action: if source_path == label {
            format!("cannot copy data object {id} to offset {offset}")
        } else {
            format!(
                "cannot copy data object {id} from {} to offset {offset}",
                source_path.display()
            )
        },
        source,
    })
}

/// Writes `count` zero bytes.
fn write_zeros<W: Write>(out: &mut W, count: u64) -> io::Result<()> {
    let copied = io::copy(&mut io::repeat(0).take(count), out)?;
    debug_assert_eq!(copied, count);
    Ok(())
}

/// The first offset at or after `offset` that is a multiple of `alignment`
/// (any alignment, not just powers of two), or `None` on overflow.
fn align_up(offset: u64, alignment: u64) -> Option<u64> {
    if alignment <= 1 {
        return Some(offset);
    }
    match offset % alignment {
        0 => Some(offset),
        rest => offset.checked_add(alignment - rest),
    }
}

/// The current time; a clock before 1970 counts as 1970.
fn now_unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Gives the image the reference's mode (0755): the launch script makes it
/// directly executable.
#[cfg(unix)]
fn set_executable(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::sif::{FsType, PartitionInfo, SifFile};

    fn partition(part_type: PartType) -> ObjectKind {
        ObjectKind::Partition(PartitionInfo {
            fs_type: FsType::Squashfs,
            part_type,
            arch: Arch::AMD64,
        })
    }

    fn write(builder: SifBuilder<'_>) -> Result<(SifLayout, Vec<u8>)> {
        let mut out = Cursor::new(Vec::new());
        let layout = builder.write_to_writer(&mut out, "memory")?;
        Ok((layout, out.into_inner()))
    }

    #[test]
    fn lays_out_objects_like_the_reference() {
        let mut builder = SifBuilder::new()
            .id(Uuid::from_u128(1))
            .timestamp(1_700_000_000)
            .launch_script("");
        builder
            .add_bytes(DescriptorInput::new(ObjectKind::Deffile), vec![b'd'; 31])
            .add_bytes(
                DescriptorInput::new(ObjectKind::Labels)
                    .group(2)
                    .name("labels"),
                vec![b'l'; 10],
            )
            .add_object(
                DescriptorInput::new(partition(PartType::PrimarySystem)).link(Link::Object(1)),
                &[7u8; 4096][..],
            )
            .add_bytes(
                DescriptorInput::new(ObjectKind::Generic).no_group(),
                vec![1, 2, 3],
            );
        let (layout, bytes) = write(builder).unwrap();

        let header = layout.header;
        assert_eq!(header.descriptors_total, 48);
        assert_eq!(header.descriptors_free, 44);
        assert_eq!(header.descriptors_offset, 4096);
        assert_eq!(header.descriptors_size, 28_080);
        assert_eq!(header.data_offset, 32_176);
        assert_eq!(header.arch, Arch::AMD64);
        // Same offsets `siftool add` produced for these sizes.
        let spans: Vec<_> = layout
            .descriptors
            .iter()
            .map(|d| (d.id, d.offset, d.size, d.size_with_padding))
            .collect();
        assert_eq!(
            spans,
            [
                (1, 32_176, 31, 31),
                (2, 32_207, 10, 10),
                (3, 32_768, 4096, 4096 + 32_768 - 32_217),
                (4, 36_864, 3, 3),
            ]
        );
        assert_eq!(header.data_size, 36_867 - 32_176);
        assert_eq!(bytes.len(), 36_867);
        // Padding is zeros.
        assert!(bytes[32_217..32_768].iter().all(|&b| b == 0));

        let mut sif = SifFile::from_reader(Cursor::new(bytes), "memory").unwrap();
        assert_eq!(sif.header(), &header);
        assert_eq!(sif.descriptors(), &layout.descriptors[..]);
        assert_eq!(
            sif.descriptor(2).map(|d| d.name()).as_deref(),
            Some("labels")
        );
        assert_eq!(sif.descriptor(4).and_then(|d| d.group()), None);
        assert_eq!(sif.descriptor(3).map(|d| d.link()), Some(Link::Object(1)));
        assert_eq!(sif.primary_fs_type(), Some(FsType::Squashfs));
        let mut partition_bytes = Vec::new();
        sif.read_object(3)
            .unwrap()
            .read_to_end(&mut partition_bytes)
            .unwrap();
        assert_eq!(partition_bytes, vec![7u8; 4096]);
    }

    #[test]
    fn same_inputs_give_identical_bytes() {
        let build = || {
            let mut builder = SifBuilder::new()
                .id(Uuid::from_u128(42))
                .timestamp(1_600_000_000);
            builder
                .add_bytes(DescriptorInput::new(ObjectKind::Deffile), "Bootstrap: x\n")
                .add_object(
                    DescriptorInput::new(partition(PartType::PrimarySystem)),
                    &b"fs"[..],
                );
            write(builder).unwrap().1
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn custom_alignment_need_not_be_a_power_of_two() {
        assert_eq!(align_up(10, 3), Some(12));
        assert_eq!(align_up(12, 3), Some(12));
        assert_eq!(align_up(5, 0), Some(5));
        assert_eq!(align_up(u64::MAX, 4096), None);
    }

    #[test]
    fn invalid_inputs_fail_before_writing() {
        let mut builder = SifBuilder::new();
        builder.add_bytes(
            DescriptorInput::new(ObjectKind::Generic).name("n".repeat(129)),
            vec![],
        );
        assert!(matches!(
            write(builder),
            Err(SifError::NameTooLong {
                id: 1,
                len: 129,
                ..
            })
        ));

        let mut builder = SifBuilder::new();
        builder
            .add_bytes(
                DescriptorInput::new(partition(PartType::PrimarySystem)),
                vec![],
            )
            .add_bytes(
                DescriptorInput::new(partition(PartType::PrimarySystem)),
                vec![],
            );
        assert!(matches!(
            write(builder),
            Err(SifError::DuplicatePrimaryPartition {
                first: 1,
                second: 2
            })
        ));

        let mut builder = SifBuilder::new().descriptor_capacity(1);
        builder
            .add_bytes(DescriptorInput::new(ObjectKind::Generic), vec![])
            .add_bytes(DescriptorInput::new(ObjectKind::Generic), vec![]);
        assert!(matches!(
            write(builder),
            Err(SifError::TooManyObjects {
                count: 2,
                capacity: 1
            })
        ));

        let mut builder = SifBuilder::new();
        builder.add_bytes(DescriptorInput::new(ObjectKind::Generic).group(0), vec![]);
        assert!(matches!(write(builder), Err(SifError::InvalidGroup { .. })));

        let mut builder = SifBuilder::new();
        builder.add_bytes(
            DescriptorInput::new(ObjectKind::Generic).link(Link::Group(GROUP_MASK)),
            vec![],
        );
        assert!(matches!(write(builder), Err(SifError::InvalidLink { .. })));

        let builder = SifBuilder::new().launch_script("#".repeat(32));
        assert!(matches!(
            write(builder),
            Err(SifError::LaunchScriptTooLong { len: 32 })
        ));
    }

    #[test]
    fn failing_source_names_the_object() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut builder = SifBuilder::new();
        builder.add_object(DescriptorInput::new(ObjectKind::Generic), Broken);
        let err = write(builder).unwrap_err();
        assert!(
            err.to_string().contains("data object 1"),
            "unexpected message: {err}"
        );
    }

    #[test]
    fn write_to_is_atomic_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("image.sif");
        let mut builder = SifBuilder::new();
        builder.add_file(
            DescriptorInput::new(ObjectKind::Generic),
            dir.path().join("missing"),
        );
        let err = builder.write_to(&target).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let source = dir.path().join("payload");
        std::fs::write(&source, b"payload").unwrap();
        let mut builder = SifBuilder::new();
        builder.add_file(DescriptorInput::new(ObjectKind::Generic), &source);
        builder.write_to(&target).unwrap();
        let mut sif = SifFile::open(&target).unwrap();
        assert_eq!(sif.read_object_bytes(1, 100).unwrap(), b"payload");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
