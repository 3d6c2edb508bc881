//! The image configuration, and what apptainer derives from it when it
//! builds from a Docker/OCI base:
//!
//! - `Env` → `/.singularity.d/env/10-docker2singularity.sh`, one line per
//!   variable: `export NAME="${NAME:-"value"}"` (an image value is a default
//!   the user's environment may override), except `PATH`, which is set
//!   outright (`export PATH="value"`); names that are not shell identifiers
//!   are skipped; values are escaped for double quotes (`\ " $ ``).
//! - `Entrypoint`/`Cmd` → `/.singularity.d/runscript`: `OCI_ENTRYPOINT` and
//!   `OCI_CMD` set to the quoted argument lists and apptainer's evaluation
//!   logic (both the `SINGULARITY_NO_EVAL` path and the default one).
//! - `Labels` → `/.singularity.d/labels.json` (tab-indented, keys sorted,
//!   `null` when the image has none, `<>&` escaped as Go's encoder does).
//! - `WorkingDir` is returned as data, as is the image's `config` object
//!   (apptainer stores it in the SIF as the OCI config JSON).
//!
//! The texts match apptainer's `conveyorPacker_oci.go` byte for byte
//! (checked against goldens in `testdata/`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{OciError, Result};
use super::inroot;

/// The parts of an image config (`application/vnd.oci.image.config.v1+json`
/// or Docker's `application/vnd.docker.container.image.v1+json`) the builder uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    /// `architecture` (e.g. `amd64`).
    pub architecture: Option<String>,
    /// `os` (e.g. `linux`).
    pub os: Option<String>,
    /// `variant` (e.g. `v8`).
    pub variant: Option<String>,
    /// `created`, RFC 3339, as written in the image.
    pub created: Option<String>,
    /// `config.Env`.
    pub env: Vec<String>,
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.WorkingDir` (empty strings become `None`).
    pub working_dir: Option<String>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.Labels` (`None` when the image has no `Labels` object).
    pub labels: Option<BTreeMap<String, String>>,
    /// The image's `config` object, compact JSON (`{}` when absent).
    pub container_config_json: String,
}

#[derive(Deserialize)]
struct RawConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct RawContainerConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

impl ImageConfig {
    /// Parses an image config blob (`digest` is only used in error messages).
    pub fn parse(bytes: &[u8], digest: &str) -> Result<Self> {
        let err = |reason: String| OciError::Config {
            digest: digest.to_string(),
            reason,
        };
        let raw: RawConfigFile =
            serde_json::from_slice(bytes).map_err(|e| err(format!("invalid json: {e}")))?;
        let container = match &raw.config {
            None | Some(serde_json::Value::Null) => RawContainerConfig::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| err(format!("invalid \"config\" object: {e}")))?,
        };
        let container_config_json = match &raw.config {
            None | Some(serde_json::Value::Null) => "{}".to_string(),
            Some(v) => serde_json::to_string(v).map_err(|e| err(e.to_string()))?,
        };
        Ok(ImageConfig {
            architecture: raw.architecture,
            os: raw.os,
            variant: raw.variant,
            created: raw.created,
            env: container.env.unwrap_or_default(),
            entrypoint: container.entrypoint.unwrap_or_default(),
            cmd: container.cmd.unwrap_or_default(),
            working_dir: container.working_dir.filter(|w| !w.is_empty()),
            user: container.user.filter(|u| !u.is_empty()),
            labels: container.labels,
            container_config_json,
        })
    }

    /// What apptainer writes into `/.singularity.d` for this config.
    pub fn apptainer_files(&self) -> ApptainerFiles {
        ApptainerFiles {
            env_script: env_script(&self.env),
            runscript: runscript(&self.entrypoint, &self.cmd),
            labels_json: labels_json(self.labels.as_ref()),
            labels: self.labels.clone().unwrap_or_default(),
            working_dir: self.working_dir.clone(),
            oci_config_json: self.container_config_json.clone(),
        }
    }
}

/// The `.singularity.d` content derived from an image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApptainerFiles {
    /// Content of `/.singularity.d/env/10-docker2singularity.sh` (mode 0755).
    pub env_script: String,
    /// Content of `/.singularity.d/runscript` (mode 0755).
    pub runscript: String,
    /// Content of `/.singularity.d/labels.json` (mode 0644).
    pub labels_json: String,
    /// The image labels.
    pub labels: BTreeMap<String, String>,
    /// The image's working directory, if it sets one.
    pub working_dir: Option<String>,
    /// The image's `config` object as JSON (for the SIF's OCI config descriptor).
    pub oci_config_json: String,
}

impl ApptainerFiles {
    /// Path of the env script inside the root.
    pub const ENV_SCRIPT_PATH: &'static str = ".singularity.d/env/10-docker2singularity.sh";
    /// Path of the runscript inside the root.
    pub const RUNSCRIPT_PATH: &'static str = ".singularity.d/runscript";
    /// Path of the labels file inside the root.
    pub const LABELS_PATH: &'static str = ".singularity.d/labels.json";

    /// Writes the env script, runscript and labels into `root` (paths are
    /// resolved inside the root, so an image's `.singularity.d` symlink
    /// cannot redirect the writes outside it).
    pub fn write_into(&self, root: &Path) -> Result<()> {
        for (rel, content, mode) in [
            (Self::ENV_SCRIPT_PATH, &self.env_script, 0o755),
            (Self::RUNSCRIPT_PATH, &self.runscript, 0o755),
            (Self::LABELS_PATH, &self.labels_json, 0o644),
        ] {
            inroot::write_file(root, Path::new(rel), content.as_bytes(), mode).map_err(|e| {
                OciError::Io {
                    context: format!("cannot write /{rel} into"),
                    path: root.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        }
        Ok(())
    }
}

/// Escapes `\`, `"`, `` ` `` and `$` for use inside shell double quotes.
fn escape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes `'` for use inside shell single quotes.
fn escape_single(s: &str) -> String {
    s.replace('\'', r#"'"'"'"#)
}

/// Each argument in double quotes, escaped, separated by spaces.
fn args_quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("\"{}\"", escape_double(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `/.singularity.d/env/10-docker2singularity.sh` for these `Env` entries.
pub fn env_script(env: &[String]) -> String {
    let mut out = String::from("#!/bin/sh\n");
    for entry in env {
        let (name, value) = match entry.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (entry.as_str(), None),
        };
        if !is_shell_name(name) {
            tracing::debug!(name, "env name is not a shell identifier, skipped");
            continue;
        }
        match value {
            None => out.push_str(&format!("export {name}=\"${{{name}:-}}\"\n")),
            Some(v) if name == "PATH" => {
                out.push_str(&format!("export {name}=\"{}\"\n", escape_double(v)))
            }
            Some(v) => out.push_str(&format!(
                "export {name}=\"${{{name}:-\"{}\"}}\"\n",
                escape_double(v)
            )),
        }
    }
    out
}

/// `set -- 'arg' "$@"` lines that prepend `args` to the positional parameters.
fn prepend_lines(args: &[String]) -> String {
    args.iter()
        .rev()
        .map(|a| format!("set -- '{}' \"$@\"\n", escape_single(a)))
        .collect()
}

/// The default runscript apptainer writes for an image's Entrypoint and Cmd.
pub fn runscript(entrypoint: &[String], cmd: &[String]) -> String {
    let pe = prepend_lines(entrypoint);
    let pc = prepend_lines(cmd);
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!(
        "OCI_ENTRYPOINT='{}'\n",
        escape_single(&args_quoted(entrypoint))
    ));
    s.push_str(&format!("OCI_CMD='{}'\n", escape_single(&args_quoted(cmd))));
    s.push_str(
        "\n# When SINGULARITY_NO_EVAL set, use OCI compatible behavior that does\n\
         # not evaluate resolved CMD / ENTRYPOINT / ARGS through the shell, and\n\
         # does not modify expected quoting behavior of args.\n\
         if [ -n \"$SINGULARITY_NO_EVAL\" ]; then\n\
         \x20   # ENTRYPOINT only - run entrypoint plus args\n\
         \x20   if [ -z \"$OCI_CMD\" ] && [ -n \"$OCI_ENTRYPOINT\" ]; then\n\
         \x20       ",
    );
    s.push_str(&pe);
    s.push_str(
        "\n        exec \"$@\"\n\
         \x20   fi\n\
         \n\
         \x20   # CMD only - run CMD or override with args\n\
         \x20   if [ -n \"$OCI_CMD\" ] && [ -z \"$OCI_ENTRYPOINT\" ]; then",
    );
    if !pc.is_empty() {
        s.push_str("\n        if [ $# -eq 0 ]; then\n            ");
        s.push_str(&pc);
        s.push_str("\n        fi");
    }
    s.push_str(
        "\n        exec \"$@\"\n\
         \x20   fi\n\
         \n\
         \x20   # ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args\n\
         \x20   # override with user provided args",
    );
    if !pe.is_empty() {
        s.push_str("\n    if [ $# -gt 0 ]; then\n        ");
        s.push_str(&pe);
        s.push_str("\n\telse\n        ");
        s.push_str(&pc);
        s.push_str("\n        ");
        s.push_str(&pe);
        s.push_str("\n    fi");
    } else if !pc.is_empty() {
        s.push_str("\n    if [ $# -eq 0 ]; then\n        ");
        s.push_str(&pc);
        s.push_str("\n    fi");
    }
    s.push_str("\n    exec \"$@\"\nfi\n\n");
    s.push_str(RUNSCRIPT_EVAL_PART);
    s
}

/// The part of the runscript that does not depend on the image.
const RUNSCRIPT_EVAL_PART: &str = r#"# Standard Apptainer behavior evaluates CMD / ENTRYPOINT / ARGS
# combination through shell before exec, and requires special quoting
# due to concatenation of CMDLINE_ARGS.
CMDLINE_ARGS=""
# prepare command line arguments for evaluation
for arg in "$@"; do
        CMDLINE_ARGS="${CMDLINE_ARGS} \"$arg\""
done

# ENTRYPOINT only - run entrypoint plus args
if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
    else
        SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT}"
    fi
fi

# CMD only - run CMD or override with args
if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
    if [ $# -gt 0 ]; then
        SINGULARITY_OCI_RUN="${CMDLINE_ARGS}"
    else
        SINGULARITY_OCI_RUN="${OCI_CMD}"
    fi
fi

# ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args
# override with user provided args
if [ $# -gt 0 ]; then
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
else
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"
fi

# Evaluate shell expressions first and set arguments accordingly,
# then execute final command as first container process
eval "set ${SINGULARITY_OCI_RUN}"
exec "$@"
"#;

/// `labels.json` as apptainer writes it: tab-indented JSON, keys sorted,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped; `null` for no labels object.
pub fn labels_json(labels: Option<&BTreeMap<String, String>>) -> String {
    let Some(labels) = labels else {
        return "null".to_string();
    };
    if labels.is_empty() {
        return "{}".to_string();
    }
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    if serde::Serialize::serialize(labels, &mut ser).is_err() {
        return "{}".to_string();
    }
    String::from_utf8_lossy(&buf)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runscripts_match_apptainer() {
        let cases: [(&str, Vec<String>, Vec<String>); 4] = [
            (
                include_str!("testdata/runscript-cmd-only.sh"),
                v(&[]),
                v(&["sh"]),
            ),
            (
                include_str!("testdata/runscript-both.sh"),
                v(&["/bin/echo", "it's"]),
                v(&["a b", "$HOME", r#"back\slash "q""#]),
            ),
            (
                include_str!("testdata/runscript-entrypoint-only.sh"),
                v(&["/entry"]),
                v(&[]),
            ),
            (include_str!("testdata/runscript-none.sh"), v(&[]), v(&[])),
        ];
        for (golden, ep, cmd) in cases {
            assert_eq!(
                runscript(&ep, &cmd),
                golden,
                "entrypoint {ep:?} cmd {cmd:?}"
            );
        }
    }

    #[test]
    fn env_script_matches_apptainer() {
        let env = v(&[
            "PATH=/usr/local/bin:/usr/bin",
            r#"GREETING=hello "world" $HOME"#,
            "EMPTY",
            "EQ=a=b",
            "1BAD=x",
            "BAD-NAME=y",
            "BLANK=",
            "BS=back\\slash`tick`",
        ]);
        assert_eq!(env_script(&env), include_str!("testdata/env.sh"));
        assert_eq!(env_script(&[]), "#!/bin/sh\n");
    }

    #[test]
    fn labels_match_apptainer() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "x<y>&z".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!(labels_json(Some(&m)), include_str!("testdata/labels.json"));
        assert_eq!(labels_json(None), "null");
    }

    #[test]
    fn parse_config() {
        let raw = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Env":["A=1"],"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"/w",
            "Labels":{"k":"v"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::parse(raw, "sha256:x").unwrap();
        assert_eq!(c.env, v(&["A=1"]));
        assert_eq!(c.cmd, v(&["sh"]));
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.architecture.as_deref(), Some("amd64"));
        let files = c.apptainer_files();
        assert_eq!(files.labels_json, "{\n\t\"k\": \"v\"\n}");
        assert!(files.runscript.contains("OCI_CMD='\"sh\"'"));
        let bare = ImageConfig::parse(br#"{"architecture":"amd64"}"#, "sha256:x").unwrap();
        assert_eq!(bare.container_config_json, "{}");
        assert_eq!(bare.apptainer_files().labels_json, "null");
        let e = ImageConfig::parse(b"not json", "sha256:abc").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("image config sha256:abc: invalid json"),
            "{e}"
        );
    }

    #[test]
    fn write_into_root_stays_inside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".singularity.d")).unwrap();
        let c = ImageConfig::parse(br#"{"config":{"Env":["A=1"],"Cmd":["sh"]}}"#, "d").unwrap();
        c.apptainer_files().write_into(&root).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let resolved = root.join(outside.strip_prefix("/").unwrap());
        let env = std::fs::read_to_string(resolved.join("env/10-docker2singularity.sh")).unwrap();
        assert_eq!(env, "#!/bin/sh\nexport A=\"${A:-\"1\"}\"\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(resolved.join("runscript"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }
}
