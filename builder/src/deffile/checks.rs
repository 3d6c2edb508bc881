//! The checks apptainer makes after parsing and before it bootstraps
//! (`build.New` and each agent's `Get`), made here at parse time, plus the
//! `%files from <stage>` lookup it makes when copying between stages.

use super::error::{did_you_mean, DefError};
use super::text::{fields, split_once};
use super::{Section, Stage};

/// Bootstrap agents apptainer knows (the value is case-sensitive).
pub const AGENTS: &[&str] = &[
    "library",
    "oras",
    "shub",
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "busybox",
    "debootstrap",
    "arch",
    "localimage",
    "yum",
    "dnf",
    "zypper",
    "scratch",
    "buildkit",
    "dockerfile",
];

/// The closest candidate to `word` (case-insensitive, transpositions count
/// as one edit), if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    // Long words are no typo of a short keyword (and would cost time).
    if word.is_empty() || word.chars().count() > 40 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        let d = edit_distance(&word, &cand.to_lowercase());
        let allowed = match cand.chars().count() {
            0..=4 => 1,
            5..=8 => 2,
            _ => 3,
        };
        if d <= allowed && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// `build.New`: every stage has a header with a known `Bootstrap:`.
pub(crate) fn check_headers(stages: &[Stage]) -> Result<(), DefError> {
    for stage in stages {
        if stage.header.is_empty() {
            return Err(DefError::StageWithoutHeader { line: stage.line });
        }
        let Some(agent) = stage.header.entry("bootstrap") else {
            let line = stage
                .header
                .entries()
                .first()
                .map_or(stage.line, |e| e.line);
            return Err(DefError::NoBootstrap { line });
        };
        if !agent.value.is_empty() && !AGENTS.contains(&agent.value.as_str()) {
            let hint = match AGENTS.iter().find(|a| a.eq_ignore_ascii_case(&agent.value)) {
                Some(a) => format!(" (did you mean {a}? agent names are lowercase)"),
                None => {
                    did_you_mean(closest(&agent.value, AGENTS.iter().copied()).map(str::to_owned))
                }
            };
            return Err(DefError::InvalidAgent {
                line: agent.line,
                agent: agent.value.clone(),
                hint,
            });
        }
    }
    Ok(())
}

/// The fixed header checks of the agents' `Get` (fingerprint.py `agent_check`).
pub(crate) fn check_agents(stages: &[Stage]) -> Result<(), DefError> {
    for stage in stages {
        let h = &stage.header;
        let Some(entry) = h.entry("bootstrap") else {
            continue;
        };
        let line = entry.line;
        let agent = entry.value.as_str();
        if agent.is_empty() {
            let mut reference = String::new();
            for key in ["registry", "namespace"] {
                if let Some(v) = h.get(key).filter(|v| !v.is_empty()) {
                    reference.push_str(v);
                    reference.push('/');
                }
            }
            reference.push_str(h.from().unwrap_or_default());
            return Err(DefError::EmptyAgent { line, reference });
        }
        let missing = |key: &'static str, why: &'static str, message: &'static str| {
            DefError::AgentMissingKey {
                line,
                agent: agent.to_owned(),
                key,
                why,
                message,
            }
        };
        match agent {
            "busybox" if h.get("mirrorurl").is_none() => {
                return Err(missing(
                    "MirrorURL",
                    "expected `MirrorURL: <busybox binary URL>`",
                    "invalid busybox header, no mirrur url specified",
                ))
            }
            "debootstrap" if h.get("mirrorurl").is_none() => {
                return Err(missing(
                    "MirrorURL",
                    "expected `MirrorURL: <Debian/Ubuntu archive URL>`",
                    "invalid debootstrap header, no mirrorurl specified",
                ))
            }
            "debootstrap" if h.get("osversion").is_none() => {
                return Err(missing(
                    "OSVersion",
                    "expected `OSVersion: <release>` (e.g. bookworm, jammy)",
                    "invalid debootstrap header, no osversion specified",
                ))
            }
            "yum" | "dnf" if h.get("mirrorurl").is_none() => {
                return Err(missing(
                    "MirrorURL",
                    "expected `MirrorURL: <repository URL>`",
                    "while getting bootstrap options: invalid yum header, no mirrorurl specified",
                ))
            }
            "yum" | "dnf"
                if h.get("osversion").is_none()
                    && ["mirrorurl", "updateurl"]
                        .iter()
                        .any(|k| h.get(k).is_some_and(mentions_osversion)) =>
            {
                return Err(missing(
                    "OSVersion",
                    "the mirror URL uses %{OSVERSION} but no `OSVersion:` is given",
                    "while getting bootstrap options: invalid yum header, osversion referenced in mirror but no osversion specified",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn mentions_osversion(url: &str) -> bool {
    url.to_ascii_lowercase().contains("%{osversion}")
}

/// How apptainer reads a `%files` section's arguments when copying
/// (`copyFiles`/`copyFilesFrom`): text after `#` is dropped; empty means
/// from the host; exactly two words copy from the stage named by the second
/// word; anything else is silently skipped.
pub enum FilesSource<'a> {
    Host,
    Stage(&'a str),
    Ignored,
}

/// The source of a `%files` section, from its arguments.
pub fn files_source(args: &str) -> FilesSource<'_> {
    let (clean, _) = split_once(args.as_bytes(), b'#');
    if clean.is_empty() {
        return FilesSource::Host;
    }
    let words = fields(clean);
    match (words.as_slice(), std::str::from_utf8(clean)) {
        ([_, stage], Ok(_)) => match std::str::from_utf8(stage) {
            Ok(stage) => FilesSource::Stage(stage),
            Err(_) => FilesSource::Ignored,
        },
        _ => FilesSource::Ignored,
    }
}

/// `%files from <stage>` names a stage of the file (apptainer fails the
/// build with `stage X was not found` otherwise).
pub(crate) fn check_files_from(
    stages: &[Stage],
    warnings: &mut Vec<String>,
) -> Result<(), DefError> {
    let names: Vec<Option<&str>> = stages.iter().map(|s| s.header.stage()).collect();
    for (index, stage) in stages.iter().enumerate() {
        for section in stage.sections.iter().filter(|s| s.name == "files") {
            check_one_files_section(section, index, &names, warnings)?;
        }
    }
    Ok(())
}

fn check_one_files_section(
    section: &Section,
    index: usize,
    names: &[Option<&str>],
    warnings: &mut Vec<String>,
) -> Result<(), DefError> {
    let line = section.line;
    match files_source(&section.args) {
        FilesSource::Host => Ok(()),
        FilesSource::Ignored => {
            warnings.push(format!(
                "line {line}: `%files {}` is neither plain `%files` nor `%files from <stage>`; apptainer silently copies nothing for this section",
                section.args.trim_end()
            ));
            Ok(())
        }
        FilesSource::Stage(name) => {
            let first_word = fields(section.args.as_bytes())
                .first()
                .copied()
                .unwrap_or_default();
            if first_word != b"from" {
                warnings.push(format!(
                    "line {line}: apptainer reads `%files {}` as `%files from {name}`",
                    section.args.trim_end()
                ));
            }
            match names.iter().position(|n| *n == Some(name)) {
                Some(found) if found >= index => {
                    warnings.push(format!(
                        "line {line}: `%files from {name}` names {} stage; files can only be copied from a stage built earlier",
                        if found == index { "this same" } else { "a later" }
                    ));
                    Ok(())
                }
                Some(_) => Ok(()),
                None => {
                    let known: Vec<&str> = names.iter().flatten().copied().collect();
                    Err(DefError::FilesFromUnknownStage {
                        line,
                        args: section.args.trim_end().to_owned(),
                        stage: name.to_owned(),
                        known: if known.is_empty() {
                            "no stage of this file has a `Stage:` name".to_owned()
                        } else {
                            format!("stages named here: {}", known.join(", "))
                        },
                        hint: did_you_mean(closest(name, known.iter().copied()).map(str::to_owned)),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("dokcer", AGENTS.iter().copied()), Some("docker"));
        assert_eq!(
            closest("enviroment", ["environment", "post"]),
            Some("environment")
        );
        assert_eq!(closest("xyzzy", AGENTS.iter().copied()), None);
        assert_eq!(closest("", AGENTS.iter().copied()), None);
    }

    #[test]
    fn files_sources() {
        assert!(matches!(files_source(""), FilesSource::Host));
        assert!(matches!(files_source("# from x"), FilesSource::Host));
        assert!(matches!(
            files_source("from build # c"),
            FilesSource::Stage("build")
        ));
        assert!(matches!(files_source("from"), FilesSource::Ignored));
        assert!(matches!(files_source("from a b"), FilesSource::Ignored));
    }
}
