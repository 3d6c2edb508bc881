use super::*;

fn build_labels() -> BuildLabels {
    BuildLabels {
        created_unix: 1_795_779_771,
        base_name: Some("docker.io/library/busybox:1.36".into()),
        base_digest: Some("sha256:abc".into()),
        arch: "amd64".into(),
        builder_version: "0.1.0".into(),
    }
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[test]
fn base_layout_has_apptainers_files_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_base_layout(root, true).unwrap();
    for dir in [
        ".singularity.d/libs",
        "dev",
        "proc",
        "var/tmp",
        "home",
        "sys",
    ] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }
    assert_eq!(
        std::fs::read_link(root.join("singularity")).unwrap(),
        Path::new(".singularity.d/runscript")
    );
    assert_eq!(
        std::fs::read_link(root.join("environment")).unwrap(),
        Path::new(".singularity.d/env/90-environment.sh")
    );
    let run = root.join(".singularity.d/actions/run");
    assert_eq!(run.metadata().unwrap().permissions().mode() & 0o777, 0o755);
    assert!(read(root, ".singularity.d/actions/run")
        .contains("exec \"/.singularity.d/runscript\" \"$@\""));
    assert!(read(root, ".singularity.d/runscript").contains("There is no runscript"));
    let envs: Vec<_> = std::fs::read_dir(root.join(".singularity.d/env"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for name in [
        "01-base.sh",
        "90-environment.sh",
        "95-apps.sh",
        "99-base.sh",
        "99-runtimevars.sh",
    ] {
        assert!(envs.contains(&name.to_owned()), "{name} in {envs:?}");
    }
}

#[test]
fn base_layout_keeps_existing_files_unless_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(".singularity.d")).unwrap();
    std::fs::write(
        root.join(".singularity.d/runscript"),
        "#!/bin/sh\necho mine\n",
    )
    .unwrap();
    write_base_layout(root, false).unwrap();
    assert_eq!(
        read(root, ".singularity.d/runscript"),
        "#!/bin/sh\necho mine\n"
    );
    write_base_layout(root, true).unwrap();
    assert!(read(root, ".singularity.d/runscript").contains("There is no runscript"));
}

#[test]
fn metadata_follows_apptainers_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_base_layout(root, true).unwrap();
    let content = ImageContent {
        environment: b"    export GREETING=hello\n".to_vec(),
        runscript: Script {
            body: b"    echo \"$GREETING $@\"\n".to_vec(),
            args: "-e # trailing comment".into(),
        },
        startscript: Script::default(),
        test: Script {
            body: b"#!/bin/bash\ntest -n \"$GREETING\"\n".to_vec(),
            args: String::new(),
        },
        help: b"Says hello.".to_vec(),
        labels: b"Author me\nVersion 1.0\norg.label-schema.schema-version 9\n".to_vec(),
        header: vec![
            ("bootstrap".into(), "docker".into()),
            ("from".into(), "busybox".into()),
        ],
        definition: b"Bootstrap: docker\nFrom: busybox\n".to_vec(),
    };
    let (meta, warnings) = write_metadata(root, &content, &build_labels()).unwrap();

    assert_eq!(
        read(root, ".singularity.d/runscript"),
        "#!/bin/sh -e \n\n    echo \"$GREETING $@\"\n\n"
    );
    assert_eq!(
        read(root, ".singularity.d/test"),
        "#!/bin/bash\n\ntest -n \"$GREETING\"\n\n"
    );
    assert_eq!(read(root, ".singularity.d/runscript.help"), "Says hello.\n");
    assert_eq!(
        read(root, ".singularity.d/Singularity"),
        "Bootstrap: docker\nFrom: busybox\n"
    );
    let env = read(root, ".singularity.d/env/90-environment.sh");
    assert!(
        env.starts_with("#!/bin/sh\n") && env.ends_with("\n    export GREETING=hello\n\n"),
        "{env:?}"
    );

    let labels: BTreeMap<String, String> =
        serde_json::from_str(&read(root, ".singularity.d/labels.json")).unwrap();
    assert_eq!(labels["Author"], "me");
    assert_eq!(
        labels["org.label-schema.schema-version"], "1.0",
        "build labels win"
    );
    assert_eq!(
        labels["org.label-schema.build-date"],
        "Friday_27_November_2026_11:42:51_UTC"
    );
    assert_eq!(
        labels["org.label-schema.usage.singularity.deffile.from"],
        "busybox"
    );
    assert_eq!(labels["org.opencontainers.image.base.digest"], "sha256:abc");
    assert_eq!(
        labels["org.label-schema.usage"],
        "/.singularity.d/runscript.help"
    );
    assert!(warnings
        .iter()
        .any(|w| w.contains("org.label-schema.schema-version")));

    assert_eq!(meta.kind, "container");
    assert_eq!(meta.data.attributes.labels, labels);
    assert!(meta.data.attributes.runscript.contains("$GREETING"));
    assert_eq!(meta.data.attributes.helpfile, "Says hello.\n");
    assert!(
        meta.data.attributes.environment["/.singularity.d/env/90-environment.sh"]
            .contains("GREETING")
    );
}

#[test]
fn a_second_definition_moves_the_first_to_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_base_layout(root, true).unwrap();
    let mut content = ImageContent {
        definition: b"first\n".to_vec(),
        ..Default::default()
    };
    write_metadata(root, &content, &build_labels()).unwrap();
    content.definition = b"second\n".to_vec();
    write_metadata(root, &content, &build_labels()).unwrap();
    assert_eq!(read(root, ".singularity.d/Singularity"), "second\n");
    assert_eq!(
        read(root, ".singularity.d/bootstrap_history/Apptainer0"),
        "first\n"
    );
}

#[test]
fn symlinks_left_in_the_root_cannot_send_writes_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    // As a malicious %post could leave behind: absolute links to the host.
    std::os::unix::fs::symlink(outside.path(), root.join(".singularity.d")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("hosts"), root.join("etc")).unwrap();
    let result = write_base_layout(&root, true);
    let content = ImageContent {
        runscript: Script {
            body: b"echo hi\n".to_vec(),
            args: String::new(),
        },
        definition: b"x\n".to_vec(),
        ..Default::default()
    };
    let _ = write_metadata(&root, &content, &build_labels());
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing may be written outside the root (layout result: {result:?})"
    );
}

#[test]
fn null_base_labels_and_post_labels_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_base_layout(root, true).unwrap();
    std::fs::write(root.join(".singularity.d/labels.json"), "null").unwrap();
    std::fs::write(root.join(BUILD_LABELS_FILE), "FromPost yes\nAuthor post\n").unwrap();
    let content = ImageContent {
        labels: b"Author recipe\n".to_vec(),
        definition: b"x\n".to_vec(),
        ..Default::default()
    };
    write_metadata(root, &content, &build_labels()).unwrap();
    let labels: BTreeMap<String, String> =
        serde_json::from_str(&read(root, ".singularity.d/labels.json")).unwrap();
    assert_eq!(labels["FromPost"], "yes");
    assert_eq!(
        labels["Author"], "post",
        "%labels never overwrite an existing label"
    );
    assert!(
        !root.join(BUILD_LABELS_FILE).exists(),
        "the labels file is consumed"
    );
}
