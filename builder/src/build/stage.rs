//! One stage of a build: bootstrap, layout, files, `%setup`, `%post`,
//! metadata and `%test`, in apptainer's order.

use std::path::{Path, PathBuf};

use crate::assemble::{self, BuildLabels, ImageContent, InspectMetadata, Script};
use crate::deffile::{files_source, FilesSource, Recipe, Section, Stage};
use crate::oci::inroot;
use crate::sandbox::{Bind, RunSpec, DEFAULT_PATH};

use super::bootstrap::{self, BaseRecord};
use super::error::BuildError;
use super::files::{self, Source};
use super::{apps, Build};

/// Where `%post` runs its script from, inside the root (apptainer's path).
const POST_SCRIPT: &str = "/.post.script";
/// Where `%setup` sees its script.
const SETUP_SCRIPT: &str = "/.setup.script";
/// Where `%post` can leave labels (`$APPTAINER_LABELS`).
/// apptainer's `$APPTAINER_ENVIRONMENT` for build scripts.
const BUILD_ENVIRONMENT: &str = "/.singularity.d/env/91-environment.sh";

/// The `/etc/hosts` of `%post` and `%test`.
const SESSION_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// A finished stage.
#[derive(Debug)]
pub(crate) struct StageOutcome {
    pub name: Option<String>,
    pub root: PathBuf,
    pub base: BaseRecord,
    pub oci_config_json: Option<String>,
    pub inspect: InspectMetadata,
}

/// `%files` sections copying from the build context.
fn host_files(stage: &Stage) -> Vec<&Section> {
    stage
        .sections
        .iter()
        .filter(|s| s.name == "files" && s.app.is_none())
        .filter(|s| matches!(files_source(&s.args), FilesSource::Host) && !s.files.is_empty())
        .collect()
}

/// `%files from <stage>` sections, with the stage name.
fn stage_files(stage: &Stage) -> Vec<(&Section, String)> {
    stage
        .sections
        .iter()
        .filter(|s| s.name == "files" && s.app.is_none() && !s.files.is_empty())
        .filter_map(|s| match files_source(&s.args) {
            FilesSource::Stage(name) => Some((s, name.to_owned())),
            _ => None,
        })
        .collect()
}

fn script_of<'a>(stage: &'a Stage, name: &str) -> Option<&'a Section> {
    stage.section(name).filter(|s| !s.script.is_empty())
}

/// How many numbered steps the recipe's stages take.
pub(crate) fn count_steps(recipe: &Recipe, run_tests: bool) -> usize {
    recipe
        .stages
        .iter()
        .map(|stage| {
            let post = script_of(stage, "post").is_some() || !stage.apps().is_empty();
            2 + stage_files(stage).len()
                + usize::from(script_of(stage, "setup").is_some())
                + usize::from(!host_files(stage).is_empty())
                + usize::from(post)
                + usize::from(run_tests && script_of(stage, "test").is_some())
        })
        .sum()
}

/// Builds stage `index` of `recipe`; `earlier` are the stages before it.
pub(crate) fn build_stage(
    build: &mut Build<'_, '_>,
    recipe: &Recipe,
    index: usize,
    earlier: &[StageOutcome],
) -> Result<StageOutcome, BuildError> {
    let stage = &recipe.stages[index];
    let stage_dir = build.work.join(format!("stage-{}", index + 1));
    let root = stage_dir.join("rootfs");
    std::fs::create_dir_all(&root)
        .map_err(BuildError::io("cannot create the build root", &root))?;
    if recipe.stages.len() > 1 {
        build.log.info(format!(
            "stage {}/{}{} (line {})",
            index + 1,
            recipe.stages.len(),
            stage.name().map(|n| format!(" {n:?}")).unwrap_or_default(),
            stage.line
        ));
    }

    // 1. Bootstrap and the base layout.
    build.log.step(bootstrap::describe(stage))?;
    let boot = bootstrap::bootstrap(build, stage, &root)?;
    assemble::write_base_layout(&root, boot.overwrite_layout)?;
    if let Some(files) = &boot.apptainer_files {
        files
            .write_into(&root)
            .map_err(|source| BuildError::Unpack {
                reference: boot.record.reference.clone().unwrap_or_default(),
                source,
            })?;
    }

    // 2. SCIF apps: folders, scripts, files; their installs run with %post.
    let app_post = apps::create_apps(build, stage, &root)?;

    // 3. %files from earlier stages, %setup, %files from the context.
    for (section, name) in stage_files(stage) {
        let source = earlier
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| BuildError::StageNotFound {
                line: section.line,
                stage: name.clone(),
            })?;
        build
            .log
            .step(format!("copying %files from stage {name}"))?;
        let from = Source::Stage {
            name: &name,
            root: &source.root,
        };
        copy_section(build, &from, &root, section)?;
    }
    if let Some(setup) = script_of(stage, "setup") {
        build
            .log
            .step(format!("running %setup (line {})", setup.line))?;
        let script = stage_dir.join("setup.script");
        write_script(&script, setup.script.as_bytes())?;
        let command = section_command(setup, SETUP_SCRIPT)?;
        let spec = RunSpec::setup_section(&root, &build.context, command)
            .bind(Bind::read_only(&script, SETUP_SCRIPT))
            .env("APPTAINER_ENVIRONMENT", BUILD_ENVIRONMENT)
            .env("SINGULARITY_ENVIRONMENT", BUILD_ENVIRONMENT);
        build.run_checked(&spec, "%setup", "setup", setup.line)?;
    }
    let host = host_files(stage);
    if !host.is_empty() {
        build.log.step("copying %files")?;
        let context = build.context.clone();
        for section in host {
            copy_section(build, &Source::Context(&context), &root, section)?;
        }
    }

    // apptainer binds the host's /etc/hosts into %post and %test (the base
    // layout leaves the image's empty); a minimal one names no host.
    let hosts = stage_dir.join("hosts");
    std::fs::write(&hosts, SESSION_HOSTS).map_err(BuildError::io("cannot write", &hosts))?;

    // 4. %post (with the apps' installs appended, as apptainer does).
    let post = script_of(stage, "post");
    if post.is_some() || !app_post.is_empty() {
        let (line, args) = post.map_or((stage.line, String::new()), |p| (p.line, p.args.clone()));
        let mut script = post
            .map(|p| p.script.as_bytes().to_vec())
            .unwrap_or_default();
        script.extend_from_slice(app_post.as_bytes());
        build.log.step(format!("running %post (line {line})"))?;
        run_post(build, &root, &hosts, &script, line, &args)?;
    }

    // 5. Metadata.
    build.log.step("writing the image metadata")?;
    let content = image_content(stage, recipe);
    let labels = BuildLabels {
        created_unix: build.timestamp,
        base_name: boot.label_base.as_ref().map(|(n, _)| n.clone()),
        base_digest: boot.label_base.as_ref().map(|(_, d)| d.clone()),
        arch: "amd64".into(),
        builder_version: env!("CARGO_PKG_VERSION").into(),
    };
    let (inspect, warnings) = assemble::write_metadata(&root, &content, &labels)?;
    for warning in warnings {
        build.log.warn(warning);
    }

    // 6. %test on the finished root.
    if let Some(test) = script_of(stage, "test") {
        if build.options.run_tests {
            build
                .log
                .step(format!("running %test (line {})", test.line))?;
            let spec = base_spec(&root, ["/.singularity.d/actions/test"])
                .bind(Bind::read_only(&hosts, "/etc/hosts"))
                .read_only_root();
            build.run_checked(&spec, "%test", "test", test.line)?;
        } else {
            build.log.info("skipping %test (tests turned off)");
        }
    }

    Ok(StageOutcome {
        name: stage.name().map(str::to_owned),
        root,
        base: boot.record,
        oci_config_json: boot.oci_config_json,
        inspect,
    })
}

/// Copies every entry of one `%files` section, logging each, within the
/// build's disk limit.
fn copy_section(
    build: &mut Build<'_, '_>,
    from: &Source<'_>,
    root: &Path,
    section: &Section,
) -> Result<(), BuildError> {
    for entry in &section.files {
        let max = build.options.limits.disk;
        let stats = files::copy_entry(from, root, entry, max, &mut build.copied_bytes)?;
        log_copy(build, entry, &stats);
    }
    Ok(())
}

fn log_copy(
    build: &mut Build<'_, '_>,
    entry: &crate::deffile::FileEntry,
    stats: &files::CopyStats,
) {
    let dest = if entry.dest.is_empty() {
        &entry.src
    } else {
        &entry.dest
    };
    build.log.info(format!(
        "%files line {}: {} → {dest}: {} files, {} folders{}, {}",
        entry.line,
        entry.src,
        stats.files,
        stats.dirs,
        if stats.symlinks > 0 {
            format!(", {} symlinks", stats.symlinks)
        } else {
            String::new()
        },
        crate::sandbox::format_bytes(stats.bytes)
    ));
    for warning in &stats.warnings {
        build
            .log
            .warn(format!("%files line {}: {warning}", entry.line));
    }
}

/// A spec in the build root with apptainer's build environment.
fn base_spec<I, S>(root: &Path, command: I) -> RunSpec
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    RunSpec::in_folder(root, command)
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/root")
        .env("LANG", "C")
        .cwd("/")
}

/// Runs `%post`: the script is written into the root and run through the
/// image's `exec` action (so its environment scripts apply), then removed.
fn run_post(
    build: &mut Build<'_, '_>,
    root: &Path,
    hosts: &Path,
    script: &[u8],
    line: usize,
    args: &str,
) -> Result<(), BuildError> {
    let rel = Path::new(POST_SCRIPT.trim_start_matches('/'));
    let written = inroot::write_file(root, rel, script, 0o755).map_err(|e| BuildError::Files {
        line,
        entry: POST_SCRIPT.into(),
        reason: format!("cannot write the %post script: {e}"),
    })?;
    let fake = Section {
        name: "post".into(),
        app: None,
        args: args.to_owned(),
        line,
        text: Default::default(),
        files: Vec::new(),
        occurrences: vec![line],
        script: Default::default(),
    };
    let mut command = section_command(&fake, POST_SCRIPT)?;
    if has_shell(root) {
        command.insert(0, "/.singularity.d/actions/exec".into());
    }
    let spec = base_spec(root, command)
        .bind(Bind::read_only(hosts, "/etc/hosts"))
        .env("APPTAINER_ENVIRONMENT", BUILD_ENVIRONMENT)
        .env("SINGULARITY_ENVIRONMENT", BUILD_ENVIRONMENT)
        .env(
            "APPTAINER_LABELS",
            format!("/{}", assemble::BUILD_LABELS_FILE),
        )
        .env(
            "SINGULARITY_LABELS",
            format!("/{}", assemble::BUILD_LABELS_FILE),
        );
    let result = build.run_checked(&spec, "%post", "post", line);
    // %post may have replaced the script with anything; remove what is there now.
    if let Ok(rel) = inroot::resolve(root, rel) {
        let _ = inroot::remove_any(&root.join(rel));
    } else {
        let _ = inroot::remove_any(&root.join(written));
    }
    result
}

/// Whether the root has a `/bin/sh` and the `exec` action (to source the
/// image's environment before a build script).
fn has_shell(root: &Path) -> bool {
    ["bin/sh", ".singularity.d/actions/exec"].iter().all(|p| {
        inroot::resolve(root, Path::new(p))
            .ok()
            .and_then(|rel| std::fs::metadata(root.join(rel)).ok())
            .is_some_and(|m| m.is_file())
    })
}

/// apptainer's `getSectionScriptArgs`: `/bin/sh -ex [args] SCRIPT`, or with
/// `-c` in the arguments, everything after it and the script as one `-c`
/// command (`%post -c /bin/bash` → `/bin/sh -ex -c "/bin/bash SCRIPT"`).
pub(crate) fn section_command(section: &Section, script: &str) -> Result<Vec<String>, BuildError> {
    let mut args = vec!["/bin/sh".to_owned(), "-ex".to_owned()];
    let clean = section.args.split('#').next().unwrap_or("");
    let params: Vec<&str> = clean.split_whitespace().collect();
    match params.iter().position(|p| *p == "-c") {
        Some(i) => {
            if i + 1 >= params.len() {
                return Err(BuildError::SectionArgs {
                    line: section.line,
                    section: section.name.clone(),
                    args: section.args.clone(),
                    reason: "'-c' needs the interpreter after it".into(),
                });
            }
            args.extend(params[..=i].iter().map(|s| (*s).to_owned()));
            args.push(format!("{} {script}", params[i + 1..].join(" ")));
        }
        None => {
            args.extend(params.iter().map(|s| (*s).to_owned()));
            args.push(script.to_owned());
        }
    }
    Ok(args)
}

fn write_script(path: &Path, body: &[u8]) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).map_err(BuildError::io("cannot write the script", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(BuildError::io("cannot make the script executable", path))
}

/// What the stage's sections put into the image's metadata.
fn image_content(stage: &Stage, recipe: &Recipe) -> ImageContent {
    let body = |name: &str| {
        stage
            .section(name)
            .map(|s| s.script.as_bytes().to_vec())
            .unwrap_or_default()
    };
    let script = |name: &str| match stage.section(name) {
        Some(s) => Script {
            body: s.script.as_bytes().to_vec(),
            args: s.args.clone(),
        },
        None => Script::default(),
    };
    ImageContent {
        environment: body("environment"),
        runscript: script("runscript"),
        startscript: script("startscript"),
        test: script("test"),
        help: body("help"),
        labels: body("labels"),
        header: stage
            .header
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        definition: recipe.definition.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(args: &str) -> Section {
        Section {
            name: "post".into(),
            app: None,
            args: args.into(),
            line: 3,
            text: Default::default(),
            files: Vec::new(),
            occurrences: vec![3],
            script: Default::default(),
        }
    }

    #[test]
    fn section_commands_follow_apptainer() {
        let cmd = |args: &str| section_command(&section(args), "/.post.script").unwrap();
        assert_eq!(cmd(""), ["/bin/sh", "-ex", "/.post.script"]);
        assert_eq!(
            cmd("-c /bin/bash"),
            ["/bin/sh", "-ex", "-c", "/bin/bash /.post.script"]
        );
        assert_eq!(
            cmd(" -c /bin/bash -l # a login shell"),
            ["/bin/sh", "-ex", "-c", "/bin/bash -l /.post.script"]
        );
        assert_eq!(cmd("-u"), ["/bin/sh", "-ex", "-u", "/.post.script"]);
        let err = section_command(&section("-c"), "/x")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 3: %post"), "{err}");
    }

    #[test]
    fn steps_are_counted_per_section() {
        let recipe = crate::deffile::parse(
            b"Bootstrap: docker\nFrom: busybox\nStage: one\n%post\n  true\n\nBootstrap: docker\nFrom: busybox\n%files from one\n  /a /b\n%files\n  x /x\n%post\n  true\n%test\n  true\n",
            &crate::deffile::BuildArgs::new(),
        )
        .unwrap();
        // one: bootstrap, post, metadata; two: bootstrap, files from, files, post, metadata, test
        assert_eq!(count_steps(&recipe, true), 9);
        assert_eq!(count_steps(&recipe, false), 8);
    }
}
