//! Recipe discovery: which files of a repository are recipes, what
//! container and tag each builds, and which of them a push changed.
//!
//! Naming (DESIGN.md §5): the container is the recipe's folder name (the
//! repository's name for a recipe at the root); the tag comes from the file
//! name: `Singularity` → `latest`, `Singularity.<tag>` → `<tag>`,
//! `<tag>.def` → `<tag>`. So `envs/tools/Singularity.v2` builds `tools:v2`.
//!
//! Two recipe files can name the same container and tag
//! (`a/tools/Singularity` and `b/tools/Singularity`). The hub builds one
//! and reports the other: among files found together the earliest path in
//! byte order wins ([`resolve_conflicts`]); against recipes already in the
//! catalog the recorded one keeps its container and tag, so a new file
//! elsewhere never silently replaces the image people pull.

use std::collections::{BTreeMap, BTreeSet};

use super::webhook::PayloadCommit;

/// GitHub lists at most this many commits in a push payload; a payload
/// with this many may have been cut, so the tree is listed instead.
pub const PAYLOAD_COMMIT_LIMIT: usize = 20;

/// Longest container or tag name accepted (the library API's limit).
const MAX_NAME_LEN: usize = 128;

/// What a recipe file builds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecipeTarget {
    pub container: String,
    pub tag: String,
}

/// The container and tag the file at `path` builds in repository
/// `repo_name`, or `None` when it is not a recipe (or its names are not
/// usable as a container or tag).
pub fn recipe_target(repo_name: &str, path: &str) -> Option<RecipeTarget> {
    let (folder, file) = match path.rsplit_once('/') {
        Some((folder, file)) => (folder, file),
        None => ("", path),
    };
    let tag = if file == "Singularity" {
        "latest"
    } else if let Some(tag) = file.strip_prefix("Singularity.") {
        tag
    } else {
        file.strip_suffix(".def")?
    };
    let container = match folder.rsplit_once('/') {
        Some((_, last)) => last,
        None if folder.is_empty() => repo_name,
        None => folder,
    };
    (valid_name(container) && valid_name(tag)).then(|| RecipeTarget {
        container: container.to_owned(),
        tag: tag.to_owned(),
    })
}

/// Letters, digits, `.`, `_`, `-`; not starting with `.` or `-` (no hidden
/// files, nothing that reads as an option or a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What a push did to the repository's files, commits applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Files present after the push that some commit added or modified.
    pub changed: BTreeSet<String>,
    /// Files the push left removed.
    pub removed: BTreeSet<String>,
}

/// Folds the commits (oldest first) into the files the push changed: a
/// later `removed` cancels an earlier add or change, a later add brings
/// the file back. A rename shows as removed + added.
pub fn change_set(commits: &[PayloadCommit]) -> ChangeSet {
    // true: present and changed; false: removed.
    let mut last: BTreeMap<&str, bool> = BTreeMap::new();
    for commit in commits {
        for path in &commit.removed {
            last.insert(path, false);
        }
        for path in commit.added.iter().chain(&commit.modified) {
            last.insert(path, true);
        }
    }
    let mut set = ChangeSet::default();
    for (path, present) in last {
        if present {
            set.changed.insert(path.to_owned());
        } else {
            set.removed.insert(path.to_owned());
        }
    }
    set
}

/// Whether the push's file lists cannot be trusted to name every recipe to
/// build, so the tree at the head commit must be listed: the payload may
/// have been cut at GitHub's commit limit, or the repository has no
/// recipes recorded yet (its first delivery: existing recipes were not
/// changed by this push but have never been built).
pub fn needs_tree_listing(commit_count: usize, repository_has_recipes: bool) -> bool {
    commit_count >= PAYLOAD_COMMIT_LIMIT || !repository_has_recipes
}

/// A recipe file left unbuilt because another builds the same container and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: String,
    pub target: RecipeTarget,
    /// The path that builds `target`.
    pub kept: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} not built: {} already builds {}:{}",
            self.path, self.kept, self.target.container, self.target.tag
        )
    }
}

/// The recipes among `paths` with their targets, sorted by path, one per
/// target: the earliest path wins, the others are conflicts.
pub fn resolve_conflicts<'a>(
    repo_name: &str,
    paths: impl IntoIterator<Item = &'a String>,
) -> (Vec<(String, RecipeTarget)>, Vec<Conflict>) {
    let sorted: BTreeSet<&String> = paths.into_iter().collect();
    let mut owners: BTreeMap<RecipeTarget, String> = BTreeMap::new();
    let mut kept = Vec::new();
    let mut conflicts = Vec::new();
    for path in sorted {
        let Some(target) = recipe_target(repo_name, path) else {
            continue;
        };
        match owners.get(&target) {
            Some(owner) => conflicts.push(Conflict {
                path: path.clone(),
                target,
                kept: owner.clone(),
            }),
            None => {
                owners.insert(target.clone(), path.clone());
                kept.push((path.clone(), target));
            }
        }
    }
    (kept, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(container: &str, tag: &str) -> Option<RecipeTarget> {
        Some(RecipeTarget {
            container: container.to_owned(),
            tag: tag.to_owned(),
        })
    }

    fn commit(added: &[&str], modified: &[&str], removed: &[&str]) -> PayloadCommit {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PayloadCommit {
            id: "c".to_owned(),
            added: own(added),
            modified: own(modified),
            removed: own(removed),
        }
    }

    #[test]
    fn names_follow_the_folder_and_the_file() {
        assert_eq!(
            recipe_target("analysis", "Singularity"),
            target("analysis", "latest")
        );
        assert_eq!(
            recipe_target("analysis", "envs/tools/Singularity.v2"),
            target("tools", "v2")
        );
        assert_eq!(
            recipe_target("analysis", "Singularity.dev"),
            target("analysis", "dev")
        );
        assert_eq!(
            recipe_target("analysis", "tools/base.def"),
            target("tools", "base")
        );
        assert_eq!(recipe_target("analysis", "x.def"), target("analysis", "x"));
        assert_eq!(
            recipe_target("r", "a/b/c/Singularity"),
            target("c", "latest")
        );
    }

    #[test]
    fn other_files_are_not_recipes() {
        for path in [
            "README.md",
            "singularity",
            "Singularity.",
            ".def",
            "tools/.def",
            "Singularityfile",
            "docs/Singularity.md.bak/readme",
            "tools/Singularity.v 2",
            "tools/Singularity.-x",
            ".hidden/Singularity",
            "tools/a.def.txt",
        ] {
            assert_eq!(recipe_target("repo", path), None, "{path}");
        }
        assert_eq!(recipe_target("-repo", "Singularity"), None);
    }

    #[test]
    fn later_removal_cancels_and_later_add_restores() {
        let set = change_set(&[
            commit(&["Singularity", "a/Singularity"], &[], &[]),
            commit(&[], &["b/Singularity"], &["a/Singularity"]),
            commit(&["c/Singularity"], &[], &[]),
            commit(&[], &[], &["c/Singularity"]),
            commit(&["c/Singularity"], &[], &[]),
        ]);
        assert_eq!(
            set.changed.iter().map(String::as_str).collect::<Vec<_>>(),
            ["Singularity", "b/Singularity", "c/Singularity"]
        );
        assert_eq!(
            set.removed.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a/Singularity"]
        );
    }

    #[test]
    fn a_rename_builds_the_new_path() {
        let set = change_set(&[commit(&["new/Singularity"], &[], &["old/Singularity"])]);
        assert!(set.changed.contains("new/Singularity"));
        assert!(set.removed.contains("old/Singularity"));
    }

    #[test]
    fn the_tree_is_listed_at_the_payload_limit_or_for_a_new_repository() {
        assert!(!needs_tree_listing(1, true));
        assert!(!needs_tree_listing(19, true));
        assert!(needs_tree_listing(20, true));
        assert!(needs_tree_listing(1, false));
        assert!(needs_tree_listing(0, false));
    }

    #[test]
    fn the_earliest_path_wins_a_shared_target() {
        let paths = [
            "b/tools/Singularity".to_owned(),
            "a/tools/Singularity".to_owned(),
            "tools/latest.def".to_owned(),
            "README.md".to_owned(),
            "Singularity".to_owned(),
        ];
        let (kept, conflicts) = resolve_conflicts("repo", &paths);
        assert_eq!(
            kept,
            vec![
                ("Singularity".to_owned(), target("repo", "latest").unwrap()),
                (
                    "a/tools/Singularity".to_owned(),
                    target("tools", "latest").unwrap()
                ),
            ]
        );
        let lost: Vec<(&str, &str)> = conflicts
            .iter()
            .map(|c| (c.path.as_str(), c.kept.as_str()))
            .collect();
        assert_eq!(
            lost,
            [
                ("b/tools/Singularity", "a/tools/Singularity"),
                ("tools/latest.def", "a/tools/Singularity")
            ]
        );
        assert_eq!(
            conflicts[0].to_string(),
            "b/tools/Singularity not built: a/tools/Singularity already builds tools:latest"
        );
    }

    /// A model of the repository's files, changed commit by commit.
    fn apply(files: &mut BTreeSet<String>, c: &PayloadCommit) {
        for p in &c.removed {
            files.remove(p);
        }
        for p in c.added.iter().chain(&c.modified) {
            files.insert(p.clone());
        }
    }

    fn arb_commit() -> impl Strategy<Value = PayloadCommit> {
        let path = prop::sample::select(vec!["Singularity", "a/Singularity", "b/x.def", "c/d"]);
        (
            prop::collection::vec(path.clone(), 0..3),
            prop::collection::vec(path.clone(), 0..3),
            prop::collection::vec(path, 0..3),
        )
            .prop_map(|(added, modified, removed)| {
                let own = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
                let added: Vec<String> = own(added);
                let modified: Vec<String> = own(modified);
                // GitHub never lists a file both removed and kept in one commit.
                let removed = own(removed)
                    .into_iter()
                    .filter(|p| !added.contains(p) && !modified.contains(p))
                    .collect();
                PayloadCommit {
                    id: "c".to_owned(),
                    added,
                    modified,
                    removed,
                }
            })
    }

    proptest! {
        #[test]
        fn change_set_matches_replaying_the_commits(
            before in prop::collection::btree_set(
                prop::sample::select(vec!["Singularity", "a/Singularity", "b/x.def", "c/d"])
                    .prop_map(str::to_owned),
                0..4,
            ),
            commits in prop::collection::vec(arb_commit(), 0..8),
        ) {
            let mut files = before.clone();
            let mut touched = BTreeSet::new();
            for c in &commits {
                apply(&mut files, c);
                touched.extend(c.added.iter().chain(&c.modified).cloned());
            }
            let set = change_set(&commits);
            // Every changed file exists afterwards and was touched by an add or change.
            for p in &set.changed {
                prop_assert!(files.contains(p));
                prop_assert!(touched.contains(p));
            }
            // Every removed file is gone afterwards.
            for p in &set.removed {
                prop_assert!(!files.contains(p));
            }
            // A file touched by an add or change that still exists is in `changed`.
            for p in touched.iter().filter(|p| files.contains(*p)) {
                prop_assert!(set.changed.contains(p));
            }
            prop_assert!(set.changed.is_disjoint(&set.removed));
        }

        #[test]
        fn resolved_targets_are_unique_and_each_path_accounted_for(
            paths in prop::collection::vec(
                prop::sample::select(vec![
                    "Singularity", "x/Singularity", "y/x/Singularity", "x/latest.def",
                    "x/Singularity.v1", "x/v1.def", "README", "z/y/x/Singularity.v1",
                ]).prop_map(str::to_owned),
                0..10,
            ),
        ) {
            let (kept, conflicts) = resolve_conflicts("x", &paths);
            let targets: BTreeSet<_> = kept.iter().map(|(_, t)| t.clone()).collect();
            prop_assert_eq!(targets.len(), kept.len());
            let recipes: BTreeSet<&String> =
                paths.iter().filter(|p| recipe_target("x", p).is_some()).collect();
            prop_assert_eq!(kept.len() + conflicts.len(), recipes.len());
            for c in &conflicts {
                prop_assert!(c.kept < c.path);
                prop_assert!(kept.iter().any(|(p, t)| *p == c.kept && *t == c.target));
            }
        }
    }
}
