//! SCIF apps (`%appinstall`, `%apprun`, `%appenv`, `%applabels`,
//! `%appfiles`, `%apphelp`, `%apptest`, `%appstart`), laid out as
//! apptainer's `internal/pkg/build/apps` does: `/scif/apps/<app>` with its
//! `scif/` metadata, `/scif/data/<app>/{input,output}`, the global
//! `94-appsbase.sh` exports, and each app's install script appended to
//! `%post`.

use std::path::Path;

use crate::assemble::{go_json_indent, parse_labels};
use crate::deffile::{FileEntry, Stage};
use crate::oci::inroot;

use super::error::BuildError;
use super::files::{self, Source};
use super::Build;

/// Creates every app of the stage in `root` and returns the text to append
/// to `%post` (the apps' installs, in the recipe's order).
pub(crate) fn create_apps(
    build: &mut Build<'_, '_>,
    stage: &Stage,
    root: &Path,
) -> Result<String, BuildError> {
    let mut global_env = String::new();
    let mut post = String::new();
    for app in stage.apps() {
        let line = stage
            .sections
            .iter()
            .find(|s| s.app.as_deref() == Some(app))
            .map_or(stage.line, |s| s.line);
        let body = |kind: &str| {
            stage
                .app_section(kind, app)
                .map(|s| s.script.to_string_lossy())
                .unwrap_or_default()
        };
        let base = format!("scif/apps/{app}");
        let meta = format!("{base}/scif");
        for dir in [
            base.clone(),
            meta.clone(),
            format!("{base}/bin"),
            format!("{base}/lib"),
            format!("{meta}/env"),
            format!("scif/data/{app}/input"),
            format!("scif/data/{app}/output"),
        ] {
            make_dirs(root, &dir, line)?;
        }
        write(
            root,
            &format!("{meta}/env/01-base.sh"),
            &env_01_base(app),
            0o755,
            line,
        )?;
        let env = body("appenv");
        if !env.is_empty() {
            write(
                root,
                &format!("{meta}/env/90-environment.sh"),
                &env,
                0o755,
                line,
            )?;
        }
        for (kind, file) in [
            ("apprun", "runscript"),
            ("appstart", "startscript"),
            ("apptest", "test"),
        ] {
            let script = body(kind);
            if !script.is_empty() {
                write(
                    root,
                    &format!("{meta}/{file}"),
                    &format!("#!/bin/sh\n\n{script}\n"),
                    0o755,
                    line,
                )?;
            }
        }
        let help = body("apphelp");
        if !help.is_empty() {
            write(root, &format!("{meta}/runscript.help"), &help, 0o644, line)?;
        }
        if let Some(section) = stage.app_section("appfiles", app) {
            let context = build.context.clone();
            for entry in &section.files {
                let dest = if entry.dest.is_empty() {
                    &entry.src
                } else {
                    &entry.dest
                };
                let inside = FileEntry {
                    src: entry.src.clone(),
                    dest: format!("/{base}/{}", dest.trim_start_matches('/')),
                    line: entry.line,
                };
                let max = build.options.limits.disk;
                files::copy_entry(
                    &Source::Context(&context),
                    root,
                    &inside,
                    max,
                    &mut build.copied_bytes,
                )?;
                build.log.info(format!(
                    "%appfiles {app} line {}: {} → {}",
                    entry.line, entry.src, inside.dest
                ));
            }
        }
        // apptainer sets the name first; the app's own labels may override it.
        let mut labels =
            std::collections::BTreeMap::from([("SCIF_APP_NAME".to_owned(), app.to_owned())]);
        labels.extend(parse_labels(body("applabels").as_bytes()));
        write(
            root,
            &format!("{meta}/labels.json"),
            &go_json_indent(&labels),
            0o644,
            line,
        )?;

        global_env.push_str(&global_exports(root, app, &meta));
        post.push_str(&format!(
            "\ncd /\n. /scif/apps/{app}/scif/env/01-base.sh\n\ncd /scif/apps/{app}\n{}\n\ncd /\n",
            body("appinstall")
        ));
        build.log.info(format!("created SCIF app {app} in /{base}"));
    }
    write(
        root,
        ".singularity.d/env/94-appsbase.sh",
        &global_env,
        0o755,
        stage.line,
    )?;
    Ok(post)
}

fn env_01_base(app: &str) -> String {
    format!(
        "#!/bin/sh\n\nSCIF_APPNAME={app}\nSCIF_APPROOT=\"/scif/apps/{app}\"\nSCIF_APPMETA=\"/scif/apps/{app}/scif\"\nSCIF_DATA=\"/scif/data\"\nSCIF_APPDATA=\"/scif/data/{app}\"\nSCIF_APPINPUT=\"/scif/data/{app}/input\"\nSCIF_APPOUTPUT=\"/scif/data/{app}/output\"\nexport SCIF_APPDATA SCIF_APPNAME SCIF_APPROOT SCIF_APPMETA SCIF_APPINPUT SCIF_APPOUTPUT SCIF_DATA\n"
    )
}

/// The app's lines of `94-appsbase.sh`.
fn global_exports(root: &Path, app: &str, meta: &str) -> String {
    let name: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = format!(
        "## App Global Exports For: {name}\n\nSCIF_APPDATA_{name}=/scif/data/{name}\nSCIF_APPMETA_{name}=/scif/apps/{name}/scif\nSCIF_APPROOT_{name}=/scif/apps/{name}\nSCIF_APPBIN_{name}=/scif/apps/{name}/bin\nSCIF_APPLIB_{name}=/scif/apps/{name}/lib\n\nexport SCIF_APPDATA_{name} SCIF_APPMETA_{name} SCIF_APPROOT_{name} SCIF_APPBIN_{name} SCIF_APPLIB_{name}\n"
    );
    let exists = |file: &str| {
        inroot::resolve(root, Path::new(&format!("{meta}/{file}")))
            .is_ok_and(|rel| root.join(rel).exists())
    };
    for (file, line) in [
        (
            "env/90-environment.sh",
            format!("export SCIF_APPENV_{name}=\"/scif/apps/{name}/scif/env/90-environment.sh\"\n"),
        ),
        (
            "labels.json",
            format!("export SCIF_APPLABELS_{name}=\"/scif/apps/{name}/scif/labels.json\"\n"),
        ),
        (
            "runscript",
            format!("export SCIF_APPRUN_{name}=\"/scif/apps/{name}/scif/runscript\"\n"),
        ),
        (
            "startscript",
            format!("export SCIF_APPSTART_{name}=\"/scif/apps/{name}/scif/startscript\"\n"),
        ),
    ] {
        if exists(file) {
            out.push_str(&line);
        }
    }
    out
}

fn make_dirs(root: &Path, dir: &str, line: usize) -> Result<(), BuildError> {
    let fail = |e: inroot::ResolveError| BuildError::Files {
        line,
        entry: format!("/{dir}"),
        reason: format!("cannot create the app folder: {e}"),
    };
    let rel = inroot::resolve(root, Path::new(dir)).map_err(fail)?;
    inroot::create_dirs(root, &rel).map_err(fail)
}

fn write(root: &Path, path: &str, content: &str, mode: u32, line: usize) -> Result<(), BuildError> {
    inroot::write_file(root, Path::new(path), content.as_bytes(), mode)
        .map(drop)
        .map_err(|e| BuildError::Files {
            line,
            entry: format!("/{path}"),
            reason: format!("cannot write it: {e}"),
        })
}
