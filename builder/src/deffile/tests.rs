//! Edge cases apptainer accepts, read the way it reads them.

use super::*;

fn ok(text: &str) -> Recipe {
    match parse(text.as_bytes(), &BuildArgs::new()) {
        Ok(r) => r,
        Err(e) => panic!("{e}\n--- recipe:\n{text}"),
    }
}

fn ok_with(text: &str, args: &[&str]) -> Recipe {
    let build_args = BuildArgs::from_pairs(args).unwrap();
    match parse(text.as_bytes(), &build_args) {
        Ok(r) => r,
        Err(e) => panic!("{e}\n--- recipe:\n{text}"),
    }
}

fn keys(stage: &Stage) -> Vec<String> {
    stage.sections.iter().map(Section::key).collect()
}

#[test]
fn crlf_lines_keep_their_bytes_and_numbers() {
    let text = "Bootstrap: docker\r\nFrom: alpine\r\n\r\n%post -c /bin/sh\r\n  echo hi\r\n%runscript\r\n  exec x\r\n";
    let r = ok(text);
    let s = &r.stages[0];
    assert_eq!(s.header.from(), Some("alpine"));
    let post = s.section("post").unwrap();
    assert_eq!(post.line, 4);
    // apptainer drops one trailing CR from the section line, so args are clean.
    assert_eq!(post.args, "-c /bin/sh");
    assert_eq!(post.text.as_bytes(), b"  echo hi\r\n");
    assert_eq!(post.script.as_bytes(), b"  echo hi\n");
    assert_eq!(s.section("runscript").unwrap().line, 6);
}

#[test]
fn tabs_trailing_whitespace_and_no_final_newline() {
    let r = ok(
        "Bootstrap:\tdocker  \nFrom:\tubuntu:22.04\t\n%post  \n\techo a\t\n%runscript\n\texec b",
    );
    let s = &r.stages[0];
    assert_eq!(s.header.bootstrap(), Some("docker"));
    assert_eq!(s.header.from(), Some("ubuntu:22.04"));
    assert_eq!(keys(s), vec!["post", "runscript"]);
    // Arguments are the raw rest after the first space.
    assert_eq!(s.section("post").unwrap().args, " ");
    let run = s.section("runscript").unwrap();
    assert_eq!(run.text.as_bytes(), b"\texec b");
    assert_eq!(run.script.as_bytes(), b"\texec b\n");
    // A tab does not end the section name: apptainer reads `post\t`.
    let e = parse(
        b"Bootstrap: docker\nFrom: x\n%post\t-c sh\n  x\n",
        &BuildArgs::new(),
    )
    .unwrap_err();
    assert_eq!(
        e.apptainer_message(),
        "invalid section(s) specified: post\t-c"
    );
    assert_eq!(e.line(), Some(3));
}

#[test]
fn percent_inside_scripts_is_not_a_section() {
    let text = "Bootstrap: docker\nFrom: alpine\n%post\n  printf \"%s\\n\" x\n  date +%Y\n  echo 100% done # %post\n%runscript\n  echo \"%test\"\n";
    let r = ok(text);
    let s = &r.stages[0];
    assert_eq!(keys(s), vec!["post", "runscript"]);
    assert_eq!(
        s.section("post").unwrap().text.as_bytes(),
        b"  printf \"%s\\n\" x\n  date +%Y\n  echo 100% done # %post\n"
    );
}

#[test]
fn repeated_sections_are_appended_with_the_arg_reset_rule() {
    let text = "Bootstrap: docker\nFrom: alpine\n%post -c /bin/bash\n  one\n%runscript -x\n  r1\n%post\n  two\n%runscript \n  r2\n";
    let r = ok(text);
    let s = &r.stages[0];
    assert_eq!(keys(s), vec!["post", "runscript"]);
    let post = s.section("post").unwrap();
    assert_eq!(
        post.args, "-c /bin/bash",
        "a bare repeat keeps the arguments"
    );
    assert_eq!(post.text.as_bytes(), b"  one\n  two\n");
    assert_eq!(post.occurrences, vec![3, 7]);
    let run = s.section("runscript").unwrap();
    assert_eq!(run.args, "", "`%runscript ` with a space clears them");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("line 9:") && w.contains("-x")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn post_with_interpreter_args() {
    let r = ok("Bootstrap: docker\nFrom: alpine\n%post -c /bin/bash  \n  set -e\n");
    let post = r.stages[0].section("post").unwrap();
    assert_eq!(post.args, "-c /bin/bash  ");
}

#[test]
fn build_args_defaults_and_overrides() {
    let text = "Bootstrap: docker\nFrom: {{ BASE }}:{{VERSION}}\n%arguments\n  BASE=ubuntu\n  VERSION=22.04\n%post\n  echo {{ VERSION }} # {{ NOT_SUBSTITUTED }}\n";
    let r = ok(text);
    assert_eq!(r.stages[0].header.from(), Some("ubuntu:22.04"));
    let r = ok_with(text, &["VERSION=24.04"]);
    assert_eq!(r.stages[0].header.from(), Some("ubuntu:24.04"));
    assert_eq!(
        r.stages[0].section("post").unwrap().text.as_bytes(),
        b"  echo 24.04 # {{ NOT_SUBSTITUTED }}\n"
    );
    assert!(r
        .definition
        .as_bytes()
        .starts_with(b"Bootstrap: docker\nFrom: ubuntu:24.04\n"));
}

#[test]
fn multiline_build_arg_keeps_file_line_numbers() {
    let text = "Bootstrap: docker\nFrom: alpine\n%post\n  {{ CMDS }}\n%runscript\n  exec x\n";
    let r = ok_with(text, &["CMDS=a\nb\nc"]);
    let s = &r.stages[0];
    assert_eq!(s.section("post").unwrap().text.as_bytes(), b"  a\nb\nc\n");
    assert_eq!(s.section("runscript").unwrap().line, 5);
}

#[test]
fn section_text_is_byte_for_byte() {
    let body = "  a  \t\n\n   # comment\n\t\tb\\\n  \n";
    let text = format!("Bootstrap: docker\nFrom: x\n%post\n{body}%test\n  t");
    let r = ok(&text);
    assert_eq!(
        r.stages[0].section("post").unwrap().text.as_bytes(),
        body.as_bytes()
    );
    assert_eq!(r.stages[0].section("test").unwrap().text.as_bytes(), b"  t");
    assert_eq!(r.definition.as_bytes(), text.as_bytes());
}

#[test]
fn non_utf8_bytes_are_kept() {
    let mut text = b"Bootstrap: docker\nFrom: alpine\n%post\n  echo \xff\xfe\n".to_vec();
    let r = parse(&text, &BuildArgs::new()).unwrap();
    assert_eq!(
        r.stages[0].section("post").unwrap().text.as_bytes(),
        b"  echo \xff\xfe\n"
    );
    assert!(r.warnings.iter().any(|w| w.contains("UTF-8")));
    text.extend_from_slice(b"%\xffbad\n");
    let e = parse(&text, &BuildArgs::new()).unwrap_err();
    assert_eq!(e.line(), Some(5));
}

#[test]
fn apps_files_and_multistage() {
    let text = "\
# preamble: its own empty stage, dropped
Bootstrap: docker
From: golang:1.22
Stage: build
%post
  go build
Bootstrap: docker
From: alpine
%files from build
  /go/bin/app /usr/local/bin/app
%files
  \"my file\" /opt/my file
  README.md
%appinstall foo
  make foo
%apprun foo
  exec foo
%apprun bar extra
  exec bar
";
    let r = ok(text);
    assert_eq!(r.stages.len(), 2);
    assert_eq!(r.stages[0].line, 2);
    assert_eq!(r.stages[0].last_line, 6);
    assert_eq!(r.stages[1].line, 7);
    let s = &r.stages[1];
    assert_eq!(
        keys(s),
        vec![
            "files",
            "files",
            "appinstall foo",
            "apprun foo",
            "apprun bar"
        ]
    );
    assert_eq!(s.sections[0].args, "from build");
    assert_eq!(
        s.sections[0].files,
        vec![FileEntry {
            src: "/go/bin/app".into(),
            dest: "/usr/local/bin/app".into(),
            line: 10
        }]
    );
    assert_eq!(s.sections[1].files[0].src, "my file");
    assert_eq!(s.sections[1].files[0].dest, "/opt/my");
    assert_eq!(s.sections[1].files[1].dest, "");
    assert_eq!(s.apps(), vec!["foo", "bar"]);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.starts_with("line 12:") && w.contains("ignores the words")));
    assert!(r
        .warnings
        .iter()
        .any(|w| w.starts_with("line 18:") && w.contains("app name")));
}

#[test]
fn headerless_first_section_is_trimmed_for_apptainer() {
    // Bootstrap comes after the first section, so the file is two stages:
    // the first has no header and apptainer rejects it.
    let e = parse(
        b"%post\n  echo\nBootstrap: docker\nFrom: x\n",
        &BuildArgs::new(),
    )
    .unwrap_err();
    assert_eq!(
        e.apptainer_message(),
        "multiple stages detected, all must have headers"
    );
    assert_eq!(e.line(), Some(1));
}

#[test]
fn json_shape() {
    let r =
        ok("Bootstrap: docker\nFrom: ubuntu:16.04\n%post -c /bin/bash\n  x\n%apprun foo\n  y\n");
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["stages"][0]["header"]["bootstrap"], "docker");
    assert_eq!(v["stages"][0]["sections"][0]["args"], "-c /bin/bash");
    assert_eq!(
        v["stages"][0]["sections"][0]["app"],
        serde_json::Value::Null
    );
    assert_eq!(v["stages"][0]["sections"][1]["app"], "foo");
    assert_eq!(v["stages"][0]["sections"][1]["line"], 5);
    assert!(v["warnings"].as_array().unwrap().is_empty());
}
