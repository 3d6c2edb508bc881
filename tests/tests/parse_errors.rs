//! Malformed recipes: each must be rejected (as apptainer rejects it) with
//! the right 1-based line, what was found and what was expected, and a
//! suggestion for near-misses.

use sifhub_builder::deffile::{parse, BuildArgs, DefError};

fn err_with(text: &str, args: &[&str]) -> DefError {
    let build_args = BuildArgs::from_pairs(args).unwrap_or_else(|e| panic!("{e}"));
    match parse(text.as_bytes(), &build_args) {
        Ok(r) => panic!("accepted, but apptainer rejects it: {r:#?}\n--- recipe:\n{text}"),
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.chars().next().is_some_and(|c| !c.is_uppercase()),
                "message starts lowercase: {shown}"
            );
            assert!(!e.apptainer_message().is_empty());
            e
        }
    }
}

fn err(text: &str) -> DefError {
    err_with(text, &[])
}

/// Asserts the line and that the message holds every piece.
fn check(e: &DefError, line: Option<usize>, pieces: &[&str]) {
    assert_eq!(e.line(), line, "line of: {e}");
    let shown = e.to_string();
    if let Some(line) = line {
        assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
    }
    for piece in pieces {
        assert!(shown.contains(piece), "`{piece}` missing from: {shown}");
    }
}

#[test]
fn misspelled_section_suggests_the_right_one() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%post\n  echo hi\n%enviroment\n  export A=1\n");
    check(
        &e,
        Some(5),
        &["invalid section %enviroment", "did you mean %environment?"],
    );
    assert_eq!(
        e.apptainer_message(),
        "invalid section(s) specified: enviroment"
    );
}

#[test]
fn several_invalid_sections_are_all_named() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%psot\n  x\n%runscript\n  y\n%tset\n  z\n");
    check(
        &e,
        Some(3),
        &[
            "%psot",
            "did you mean %post?",
            "line 7",
            "%tset",
            "did you mean %test?",
        ],
    );
    assert_eq!(
        e.apptainer_message(),
        "invalid section(s) specified: psot, tset"
    );
}

#[test]
fn misspelled_header_key_suggests_the_right_one() {
    let e = err("Bootsrap: docker\nFrom: alpine\n");
    check(
        &e,
        Some(1),
        &[
            "invalid header keyword `bootsrap`",
            "did you mean bootstrap?",
        ],
    );
    assert_eq!(
        e.apptainer_message(),
        "failed to parse deffile header: invalid header keyword found: bootsrap"
    );
}

#[test]
fn misspelled_agent_suggests_the_right_one() {
    let e = err("Bootstrap: dokcer\nFrom: alpine\n%post\n  x\n");
    check(
        &e,
        Some(1),
        &["invalid bootstrap agent `dokcer`", "did you mean docker?"],
    );
    assert_eq!(e.apptainer_message(), "invalid build source dokcer");
}

#[test]
fn agent_names_are_case_sensitive() {
    let e = err("# comment\nBootstrap: Docker\nFrom: alpine\n");
    check(&e, Some(2), &["`Docker`", "did you mean docker"]);
}

#[test]
fn undefined_build_argument_is_named() {
    let e = err(
        "Bootstrap: docker\nFrom: alpine\n%arguments\n  VERSOIN=1\n%post\n  echo {{ VERSION }}\n",
    );
    check(
        &e,
        Some(6),
        &[
            "build argument `VERSION` is not defined",
            "--build-arg VERSION=VALUE",
            "did you mean VERSOIN?",
        ],
    );
    assert!(e
        .apptainer_message()
        .starts_with("build var VERSION is not defined"));
}

#[test]
fn unused_build_argument_is_rejected() {
    let e = err_with(
        "Bootstrap: docker\nFrom: alpine:{{ TAG }}\n",
        &["TAG=3", "TGA=1", "OTHER=2"],
    );
    check(&e, None, &["unused build argument(s) OTHER, TGA"]);
    assert_eq!(
        e.apptainer_message(),
        "unused build args: OTHER TGA. Use option --warn-unused-build-args to show a warning instead of a fatal message"
    );
}

#[test]
fn malformed_build_argument_is_rejected() {
    let e = BuildArgs::from_pairs(["NOVALUE"]).unwrap_err();
    assert!(e.to_string().contains("`NOVALUE` has no `=`"), "{e}");
    assert_eq!(e.apptainer_message(), "\"NOVALUE\" is not a key=value pair");
}

#[test]
fn debootstrap_needs_osversion_and_mirrorurl() {
    let e = err("Bootstrap: debootstrap\nMirrorURL: http://deb.debian.org/debian\n%post\n  x\n");
    check(
        &e,
        Some(1),
        &[
            "`debootstrap` needs the header key `OSVersion`",
            "expected `OSVersion:",
        ],
    );
    assert_eq!(
        e.apptainer_message(),
        "invalid debootstrap header, no osversion specified"
    );
    let e = err("\n\nBootstrap: debootstrap\nOSVersion: bookworm\n");
    check(&e, Some(3), &["`MirrorURL`"]);
    assert_eq!(
        e.apptainer_message(),
        "invalid debootstrap header, no mirrorurl specified"
    );
}

#[test]
fn busybox_and_yum_need_their_keys() {
    let e = err("Bootstrap: busybox\n%post\n  x\n");
    check(&e, Some(1), &["`busybox` needs the header key `MirrorURL`"]);
    assert_eq!(
        e.apptainer_message(),
        "invalid busybox header, no mirrur url specified"
    );
    let e = err("Bootstrap: yum\nMirrorURL: http://mirror/centos-%{OSVERSION}/os\n");
    check(&e, Some(1), &["`OSVersion`", "%{OSVERSION}"]);
    assert!(e
        .apptainer_message()
        .ends_with("osversion referenced in mirror but no osversion specified"));
}

#[test]
fn files_from_unknown_stage() {
    let e = err("Bootstrap: docker\nFrom: golang\nStage: build\n%post\n  go build\nBootstrap: docker\nFrom: alpine\n%files from biuld\n  /app /app\n");
    check(
        &e,
        Some(8),
        &[
            "`%files from biuld`",
            "no stage has `Stage: biuld`",
            "stages named here: build",
            "did you mean build?",
        ],
    );
    assert_eq!(e.apptainer_message(), "stage biuld was not found");
    let e = err("Bootstrap: docker\nFrom: alpine\n%files from nosuchstage\n  /a /b\n");
    check(
        &e,
        Some(3),
        &["nosuchstage", "no stage of this file has a `Stage:` name"],
    );
}

#[test]
fn headerless_stage_in_a_multistage_file() {
    let e = err("%post\n  echo first\n\nBootstrap: docker\nFrom: alpine\n%post\n  echo second\n");
    check(&e, Some(1), &["this stage has no header", "`Bootstrap:`"]);
    assert_eq!(
        e.apptainer_message(),
        "multiple stages detected, all must have headers"
    );
}

#[test]
fn crlf_file_reports_the_right_line() {
    let e = err("Bootstrap: docker\r\nFrom: alpine\r\n\r\n%post\r\n  echo hi\r\n\r\n%runscirpt\r\n  exec x\r\n");
    check(&e, Some(7), &["%runscirpt", "did you mean %runscript?"]);
    assert_eq!(
        e.apptainer_message(),
        "invalid section(s) specified: runscirpt"
    );
    let e = err("Bootstrap: docker\r\nFrom alpine\r\n");
    check(
        &e,
        Some(2),
        &[
            "header line `From alpine` has no `:`",
            "expected `Key: value`",
            "did you mean `from:`?",
        ],
    );
}

#[test]
fn byte_order_mark_is_explained() {
    let e = err("\u{feff}Bootstrap: docker\nFrom: alpine\n%post\n  x\n");
    check(&e, Some(1), &["byte order mark", "without a BOM"]);
    assert_eq!(
        e.apptainer_message(),
        "failed to parse deffile header: invalid header keyword found: \u{feff}bootstrap"
    );
}

#[test]
fn bootstrap_line_inside_a_heredoc_cuts_a_stage() {
    let e = err("Bootstrap: docker\nFrom: ubuntu:22.04\n%post\n    cat > /opt/inner.def <<EOF\nBootstrap: docker\nFrom: alpine\nEOF\n");
    check(
        &e,
        Some(7),
        &["header line `EOF` has no `:`", "line 5 starts a new stage"],
    );
    assert_eq!(
        e.apptainer_message(),
        "failed to parse deffile header: header key EOF had no val"
    );
}

#[test]
fn continued_header_value_before_a_blank_line() {
    let e = err("Bootstrap: docker\nFrom: alpine \\\n\nStage: x\n%post\n  x\n");
    check(
        &e,
        Some(3),
        &["continued with `\\` (line 2)", "apptainer crashes"],
    );
    assert!(e.apptainer_panics());
}

#[test]
fn lone_double_quote_in_files() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%files\n  a b\n  \"\n");
    check(
        &e,
        Some(5),
        &["lone double quote", "expected `source [destination]`"],
    );
    assert!(e.apptainer_panics());
}

#[test]
fn app_section_without_app_name() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%apprun\n  exec x\n");
    check(
        &e,
        Some(3),
        &[
            "app section `%apprun` has no app name",
            "expected `%apprun <app name>`",
        ],
    );
    assert_eq!(
        e.apptainer_message(),
        "app section apprun: could not be split into section name and app name"
    );
}

#[test]
fn app_section_names_are_lowercase() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%AppRun foo\n  exec x\n");
    check(&e, Some(3), &["did you mean %apprun foo?"]);
    assert_eq!(
        e.apptainer_message(),
        "invalid section(s) specified: AppRun foo"
    );
}

#[test]
fn indented_percent_line_opens_a_section() {
    let e = err("Bootstrap: docker\nFrom: alpine\n%post\n  echo a\n  %s is not a word here\n");
    check(
        &e,
        Some(5),
        &[
            "indented line whose first word starts with %",
            "expected one of %help",
        ],
    );
    assert_eq!(e.apptainer_message(), "invalid section(s) specified: ");
}

#[test]
fn only_comments_is_no_stage() {
    let e = err("# nothing here\n\n   \n# at all\n");
    check(&e, None, &["no stages found"]);
    assert_eq!(e.apptainer_message(), "no stages found in definition file");
}

#[test]
fn header_without_bootstrap() {
    let e = err("\nFrom: alpine\n%post\n  x\n");
    check(&e, Some(2), &["no `Bootstrap:` key"]);
    assert_eq!(e.apptainer_message(), "no bootstrap specification found");
}

#[test]
fn empty_bootstrap_value() {
    let e = err("Bootstrap:\nRegistry: quay.io\nFrom: x/y\n");
    check(&e, Some(1), &["`Bootstrap:` has an empty value"]);
    assert_eq!(
        e.apptainer_message(),
        "unable to parse image name :quay.io/x/y:  not a registered transport"
    );
}

#[test]
fn section_over_64_kib() {
    let mut text = String::from("Bootstrap: docker\nFrom: alpine\n%post\n");
    for _ in 0..2000 {
        text.push_str("  echo 0123456789012345678901234567890123\n");
    }
    text.push_str("%runscript\n  x\n");
    let e = err(&text);
    check(
        &e,
        Some(3),
        &["section `%post` is too long", "64 KiB", "token too long"],
    );
    assert_eq!(e.apptainer_message(), "bufio.Scanner: token too long");
}

#[test]
fn headerless_section_without_body() {
    let e = err("  %post   \n\n");
    check(
        &e,
        Some(1),
        &["section `%post` has no body and there is no header"],
    );
    assert_eq!(
        e.apptainer_message(),
        "section %post: could not be split into section name and body"
    );
}

#[test]
fn invalid_header_key_in_second_stage_uses_file_line() {
    let e = err("Bootstrap: docker\nFrom: a\nStage: one\n%post\n  x\n\nBootstrap: docker\nFrom: b\nOtherURL: http://x\n");
    check(&e, Some(9), &["`otherurl`", "OtherURL needs a number"]);
}

#[test]
fn section_name_in_the_header_without_percent() {
    let e = err("Bootstrap: docker\nFrom: alpine\npost\n  echo\n");
    check(
        &e,
        Some(3),
        &["header line `post` has no `:`", "did you mean %post?"],
    );
}
