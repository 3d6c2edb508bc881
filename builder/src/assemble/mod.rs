//! Image assembly: the `.singularity.d` layout apptainer gives every image,
//! and the metadata a recipe puts into it (environment, runscript,
//! startscript, test, help, labels, the definition itself).
//!
//! The order and rules follow apptainer's build: the base layout is laid
//! right after bootstrapping (before `%post`), the metadata after `%post`.
//! Every path is resolved inside the root, so a symlink that `%post` or a
//! layer left behind (`.singularity.d -> /etc`) cannot send a write outside.

mod labels;
mod scripts;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::oci::inroot;

pub use labels::{build_date, go_json_indent, parse_labels, BuildLabels};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot write /{path} in the build root: {message}")]
    Path { path: String, message: String },
    #[error("cannot write /{path} in the build root")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid labels.json in the base image: {0}")]
    ExistingLabels(String),
}

/// A script section as the recipe gave it: its body and its arguments
/// (`%runscript -x` → args `-x`).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub body: Vec<u8>,
    pub args: String,
}

/// What one recipe stage contributes to the image's metadata.
#[derive(Debug, Clone, Default)]
pub struct ImageContent {
    pub environment: Vec<u8>,
    pub runscript: Script,
    pub startscript: Script,
    pub test: Script,
    pub help: Vec<u8>,
    /// The raw `%labels` body.
    pub labels: Vec<u8>,
    /// The header, lowercased keys, in file order.
    pub header: Vec<(String, String)>,
    /// The definition as stored in the image (`/.singularity.d/Singularity`).
    pub definition: Vec<u8>,
}

/// apptainer's inspect metadata (`apptainer inspect --all --json`), stored
/// in the SIF as the inspect-metadata JSON object.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InspectMetadata {
    pub data: InspectData,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InspectData {
    pub attributes: InspectAttributes,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InspectAttributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub test: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deffile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub startscript: String,
}

const SD: &str = ".singularity.d";

/// Where `%post` may write `KEY VALUE` labels (`$APPTAINER_LABELS`), as in
/// apptainer; merged into `labels.json` after the base image's.
pub const BUILD_LABELS_FILE: &str = ".build.labels";

/// Lays the base `.singularity.d` layout, the standard mount points and the
/// `/singularity`, `/environment` and action links. With `overwrite` false
/// (a local image as base) existing files are kept, as apptainer keeps them.
pub fn write_base_layout(root: &Path, overwrite: bool) -> Result<(), AssembleError> {
    let fs = RootFs::new(root);
    for dir in [
        ".singularity.d/libs",
        ".singularity.d/actions",
        ".singularity.d/env",
        "dev",
        "proc",
        "root",
        "var/tmp",
        "tmp",
        "etc",
        "sys",
        "home",
    ] {
        fs.create_dir_all(dir)?;
    }
    for (target, link) in [
        (".singularity.d/runscript", "singularity"),
        (".singularity.d/actions/run", ".run"),
        (".singularity.d/actions/exec", ".exec"),
        (".singularity.d/actions/test", ".test"),
        (".singularity.d/actions/shell", ".shell"),
        (".singularity.d/env/90-environment.sh", "environment"),
    ] {
        fs.symlink_replacing_links(target, link)?;
    }
    let files: [(&str, u32, String); 13] = [
        ("etc/hosts", 0o644, String::new()),
        ("etc/resolv.conf", 0o644, String::new()),
        (".singularity.d/actions/exec", 0o755, scripts::action_exec()),
        (".singularity.d/actions/run", 0o755, scripts::action_run()),
        (
            ".singularity.d/actions/shell",
            0o755,
            scripts::action_shell(),
        ),
        (
            ".singularity.d/actions/start",
            0o755,
            scripts::action_start(),
        ),
        (".singularity.d/actions/test", 0o755, scripts::action_test()),
        (
            ".singularity.d/env/01-base.sh",
            0o755,
            scripts::ENV_01_BASE.into(),
        ),
        (
            ".singularity.d/env/90-environment.sh",
            0o755,
            scripts::ENV_90_ENVIRONMENT.into(),
        ),
        (
            ".singularity.d/env/95-apps.sh",
            0o755,
            scripts::ENV_95_APPS.into(),
        ),
        (
            ".singularity.d/env/99-base.sh",
            0o755,
            scripts::ENV_99_BASE.into(),
        ),
        (
            ".singularity.d/env/99-runtimevars.sh",
            0o755,
            scripts::ENV_99_RUNTIMEVARS.into(),
        ),
        (
            ".singularity.d/runscript",
            0o755,
            scripts::DEFAULT_RUNSCRIPT.into(),
        ),
    ];
    for (path, mode, content) in files.iter() {
        fs.make_file(path, *mode, content.as_bytes(), overwrite)?;
    }
    fs.make_file(
        ".singularity.d/startscript",
        0o755,
        scripts::DEFAULT_STARTSCRIPT.as_bytes(),
        overwrite,
    )?;
    Ok(())
}

/// Writes what the recipe says about the image (after `%post`, as apptainer
/// does) and returns the inspect metadata for the SIF.
pub fn write_metadata(
    root: &Path,
    content: &ImageContent,
    build: &BuildLabels,
) -> Result<(InspectMetadata, Vec<String>), AssembleError> {
    let fs = RootFs::new(root);
    let mut warnings = Vec::new();
    let help = format!("{SD}/runscript.help");

    // %help: kept when the base already has one, as apptainer does.
    if !content.help.is_empty() {
        if fs.exists(&help)? {
            warnings.push("help message already exists in the base image, not overwriting".into());
        } else {
            fs.write(&help, 0o644, &[content.help.as_slice(), b"\n"].concat())?;
        }
    }

    // labels.json: the base's labels, then the build's, then %labels
    // (which never overwrite an existing label).
    let labels_path = format!("{SD}/labels.json");
    // A base without labels may hold `null` (Go's nil map): no labels.
    let mut labels = match fs.read(&labels_path)? {
        Some(bytes) => serde_json::from_slice::<Option<BTreeMap<String, String>>>(&bytes)
            .map_err(|e| AssembleError::ExistingLabels(e.to_string()))?
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    // Labels `%post` wrote to `$APPTAINER_LABELS`; the file goes away.
    if let Some(bytes) = fs.take(BUILD_LABELS_FILE)? {
        labels.extend(parse_labels(&bytes));
    }
    labels.extend(build.labels(!content.help.is_empty(), &content.header));
    for (key, value) in parse_labels(&content.labels) {
        match labels.entry(key) {
            std::collections::btree_map::Entry::Occupied(existing) => warnings.push(format!(
                "label {} already exists, not overwriting",
                existing.key()
            )),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
        }
    }
    fs.write(&labels_path, 0o644, go_json_indent(&labels).as_bytes())?;

    // The definition; an earlier one (a local image as base) moves to
    // bootstrap_history, numbered as apptainer numbers it.
    let def_path = format!("{SD}/Singularity");
    if fs.exists(&def_path)? {
        let history = format!("{SD}/bootstrap_history");
        fs.create_dir_all(&history)?;
        let count = fs.count_entries(&history)?;
        fs.rename(&def_path, &format!("{history}/Apptainer{count}"))?;
    }
    fs.write(&def_path, 0o644, &content.definition)?;

    // %environment is appended to 90-environment.sh.
    if !content.environment.is_empty() {
        let env_path = format!("{SD}/env/90-environment.sh");
        let addition = [b"\n".as_slice(), &content.environment, b"\n"].concat();
        if fs.exists(&env_path)? {
            fs.append(&env_path, &addition)?;
        } else {
            fs.write(
                &env_path,
                0o755,
                &[b"#!/bin/sh\n".as_slice(), &addition].concat(),
            )?;
        }
    }
    for (script, name) in [
        (&content.startscript, "startscript"),
        (&content.runscript, "runscript"),
        (&content.test, "test"),
    ] {
        if !script.body.is_empty() {
            fs.write(&format!("{SD}/{name}"), 0o755, &with_shebang(script))?;
        }
    }

    let mut attributes = InspectAttributes {
        labels,
        deffile: String::from_utf8_lossy(&content.definition).into_owned(),
        ..Default::default()
    };
    for (field, path) in [
        (&mut attributes.runscript, format!("{SD}/runscript")),
        (&mut attributes.startscript, format!("{SD}/startscript")),
        (&mut attributes.test, format!("{SD}/test")),
        (&mut attributes.helpfile, help),
    ] {
        if let Some(bytes) = fs.read(&path)? {
            *field = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    for name in ["90-environment.sh", "91-environment.sh"] {
        let path = format!("{SD}/env/{name}");
        if let Some(bytes) = fs.read(&path)? {
            attributes.environment.insert(
                format!("/{path}"),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
    }
    let metadata = InspectMetadata {
        data: InspectData { attributes },
        kind: "container".into(),
    };
    Ok((metadata, warnings))
}

/// A script file: the body's own `#!` line or `#!/bin/sh`, with the
/// section's arguments (up to a `#`) added to it, as apptainer writes
/// `%runscript -x` → `#!/bin/sh -x`.
fn with_shebang(script: &Script) -> Vec<u8> {
    let body = script.body.as_slice();
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&body[body.len()..], |start| &body[start..]);
    let (mut shebang, rest): (Vec<u8>, &[u8]) = if trimmed.starts_with(b"#!") {
        match body.iter().position(|&b| b == b'\n') {
            Some(nl) => (body[..nl].trim_ascii().to_vec(), &body[nl + 1..]),
            None => (body.trim_ascii().to_vec(), &[]),
        }
    } else {
        (b"#!/bin/sh".to_vec(), body)
    };
    if !script.args.is_empty() {
        shebang.push(b' ');
        shebang.extend_from_slice(script.args.split('#').next().unwrap_or("").as_bytes());
    }
    [shebang.as_slice(), b"\n\n", rest, b"\n"].concat()
}

/// File operations with every path resolved inside the root.
struct RootFs<'a> {
    root: &'a Path,
}

impl<'a> RootFs<'a> {
    fn new(root: &'a Path) -> Self {
        Self { root }
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, AssembleError> {
        inroot::resolve(self.root, Path::new(path))
            .map(|rel| self.root.join(rel))
            .map_err(|e| AssembleError::Path {
                path: path.to_owned(),
                message: e.to_string(),
            })
    }

    fn io(path: &str) -> impl FnOnce(std::io::Error) -> AssembleError + '_ {
        move |source| AssembleError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn create_dir_all(&self, path: &str) -> Result<(), AssembleError> {
        let rel = inroot::resolve(self.root, Path::new(path)).map_err(|e| AssembleError::Path {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        inroot::create_dirs(self.root, &rel).map_err(|e| AssembleError::Path {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn parent_dirs(&self, path: &str) -> Result<(), AssembleError> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.create_dir_all(parent),
            None => Ok(()),
        }
    }

    fn exists(&self, path: &str) -> Result<bool, AssembleError> {
        Ok(self.resolve(path)?.symlink_metadata().is_ok())
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, AssembleError> {
        let full = self.resolve(path)?;
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(path)(e)),
        }
    }

    /// Reads a regular file and removes it; anything else of that name is
    /// only removed.
    fn take(&self, path: &str) -> Result<Option<Vec<u8>>, AssembleError> {
        let full = self.resolve(path)?;
        let Ok(meta) = full.symlink_metadata() else {
            return Ok(None);
        };
        let bytes = if meta.is_file() {
            std::fs::read(&full).map_err(Self::io(path))?
        } else {
            Vec::new()
        };
        inroot::remove_any(&full).map_err(Self::io(path))?;
        Ok(Some(bytes))
    }

    fn write(&self, path: &str, mode: u32, bytes: &[u8]) -> Result<(), AssembleError> {
        self.parent_dirs(path)?;
        let full = self.resolve(path)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&full)
            .map_err(Self::io(path))?;
        file.write_all(bytes).map_err(Self::io(path))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(Self::io(path))
    }

    fn append(&self, path: &str, bytes: &[u8]) -> Result<(), AssembleError> {
        let full = self.resolve(path)?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&full)
            .map_err(Self::io(path))?;
        file.write_all(bytes).map_err(Self::io(path))
    }

    /// apptainer's makeFile: an existing regular file gets the mode and is
    /// rewritten only with `overwrite`.
    fn make_file(
        &self,
        path: &str,
        mode: u32,
        bytes: &[u8],
        overwrite: bool,
    ) -> Result<(), AssembleError> {
        let full = self.resolve(path)?;
        if let Ok(meta) = full.symlink_metadata() {
            if meta.is_file() && !overwrite {
                return std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
                    .map_err(Self::io(path));
            }
        }
        self.write(path, mode, bytes)
    }

    /// apptainer's makeSymlink: creates the link, or fixes a link pointing
    /// elsewhere; a real file of that name is left alone.
    fn symlink_replacing_links(&self, target: &str, link: &str) -> Result<(), AssembleError> {
        let full = self.root.join(link);
        match full.symlink_metadata() {
            Ok(meta) if !meta.file_type().is_symlink() => return Ok(()),
            Ok(_) => {
                if std::fs::read_link(&full).map_err(Self::io(link))? == Path::new(target) {
                    return Ok(());
                }
                std::fs::remove_file(&full).map_err(Self::io(link))?;
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(target, &full).map_err(Self::io(link))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), AssembleError> {
        let (src, dst) = (self.resolve(from)?, self.resolve(to)?);
        std::fs::rename(src, dst).map_err(Self::io(from))
    }

    fn count_entries(&self, dir: &str) -> Result<usize, AssembleError> {
        let full = self.resolve(dir)?;
        Ok(std::fs::read_dir(&full).map_err(Self::io(dir))?.count())
    }
}

#[cfg(test)]
mod tests;
