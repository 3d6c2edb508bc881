//! Local git repositories made with the `git` CLI, for the GitHub stand-in
//! to serve and for tests to commit to.

use std::path::{Path, PathBuf};
use std::process::Command;

/// GitHub's "no commit" sha: `before` of a new branch, `after` of a deleted one.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// A git repository with a work tree in a temporary folder.
#[derive(Debug)]
pub struct GitRepo {
    dir: tempfile::TempDir,
}

/// One entry of `git ls-tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub sha: String,
    pub path: String,
}

/// What a commit changed, as `git diff-tree --name-status` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub removed: Vec<String>,
}

impl GitRepo {
    /// An empty repository whose first branch is `default_branch`.
    pub fn init(default_branch: &str) -> GitRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", default_branch]);
        repo.git(&["config", "user.name", "Test Author"]);
        repo.git(&["config", "user.email", "author@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the repository; panics with git's stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.git_bytes(args)).unwrap()
    }

    pub fn git_bytes(&self, args: &[&str]) -> Vec<u8> {
        self.try_git(args)
            .unwrap_or_else(|stderr| panic!("git {}: {stderr}", args.join(" ")))
    }

    /// Runs git; `Err(stderr)` when it fails.
    pub fn try_git(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run git ({e}): install the Debian package git"));
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Writes a file into the work tree (folders made as needed).
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) {
        let full: PathBuf = self.dir.path().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(full, contents).unwrap();
    }

    /// Removes a file from the work tree.
    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).unwrap();
    }

    /// Switches to `branch`, making it from the current commit if new.
    pub fn checkout(&self, branch: &str) {
        let exists = self
            .try_git(&[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .is_ok();
        if exists {
            self.git(&["checkout", "-q", branch]);
        } else {
            self.git(&["checkout", "-q", "-b", branch]);
        }
    }

    /// Commits every change of the work tree on the current branch; returns
    /// the new commit's sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// The current commit's sha.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// The commit a ref, branch, tag or sha names, if any.
    pub fn resolve(&self, reference: &str) -> Option<String> {
        self.try_git(&[
            "rev-parse",
            "--verify",
            "-q",
            &format!("{reference}^{{commit}}"),
        ])
        .ok()
        .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// `git archive` of `sha` in `format` (`tar.gz`, `zip`) under `prefix`.
    pub fn archive(&self, format: &str, prefix: &str, sha: &str) -> Vec<u8> {
        self.git_bytes(&[
            "archive",
            &format!("--format={format}"),
            &format!("--prefix={prefix}"),
            sha,
        ])
    }

    /// The entries of `sha`'s tree: every level with `recursive`, else the
    /// top one.
    pub fn ls_tree(&self, sha: &str, recursive: bool) -> Vec<TreeEntry> {
        let mut args = vec!["ls-tree", "--full-tree", "-z"];
        if recursive {
            args.extend(["-r", "-t"]);
        }
        args.push(sha);
        let out = self.git(&args);
        out.split('\0')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (meta, path) = line.split_once('\t').unwrap();
                let mut meta = meta.split(' ');
                TreeEntry {
                    mode: meta.next().unwrap().to_owned(),
                    kind: meta.next().unwrap().to_owned(),
                    sha: meta.next().unwrap().to_owned(),
                    path: path.to_owned(),
                }
            })
            .collect()
    }

    /// A file's bytes at `sha`, or `None` if it is not a file there.
    pub fn file_at(&self, sha: &str, path: &str) -> Option<Vec<u8>> {
        let object = format!("{sha}:{path}");
        let kind = self.try_git(&["cat-file", "-t", &object]).ok()?;
        (String::from_utf8_lossy(&kind).trim() == "blob")
            .then(|| self.git_bytes(&["cat-file", "blob", &object]))
    }

    /// What `sha` changed relative to its first parent.
    pub fn changes(&self, sha: &str) -> Changes {
        let out = self.git(&[
            "diff-tree",
            "--no-commit-id",
            "--name-status",
            "-r",
            "--root",
            "-z",
            sha,
        ]);
        let mut changes = Changes::default();
        let mut fields = out.split('\0').filter(|f| !f.is_empty());
        while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
            let list = match status {
                "A" => &mut changes.added,
                "D" => &mut changes.removed,
                _ => &mut changes.modified,
            };
            list.push(path.to_owned());
        }
        changes
    }

    /// Commits reachable from `after` but not from `before` (or from no
    /// other branch, when `before` is [`ZERO_SHA`]), oldest first.
    pub fn commits_between(&self, before: &str, after: &str, branch_ref: &str) -> Vec<String> {
        let out = if before == ZERO_SHA {
            let others: Vec<String> = self
                .git(&["for-each-ref", "--format=%(refname)", "refs/heads"])
                .lines()
                .filter(|r| *r != branch_ref)
                .map(|r| format!("^{r}"))
                .collect();
            let mut args = vec!["rev-list", "--reverse", after];
            args.extend(others.iter().map(String::as_str));
            self.git(&args)
        } else {
            self.git(&["rev-list", "--reverse", &format!("{before}..{after}")])
        };
        out.lines().map(str::to_owned).collect()
    }

    /// Whether `ancestor` is an ancestor of (or is) `sha`.
    pub fn is_ancestor(&self, ancestor: &str, sha: &str) -> bool {
        self.try_git(&["merge-base", "--is-ancestor", ancestor, sha])
            .is_ok()
    }

    /// A commit's `(message, author name, author email, ISO 8601 date,
    /// tree sha)`.
    pub fn commit_info(&self, sha: &str) -> (String, String, String, String, String) {
        let out = self.git(&["show", "-s", "--format=%an%x00%ae%x00%aI%x00%T%x00%B", sha]);
        let mut parts = out.splitn(5, '\0');
        let mut next = || parts.next().unwrap_or_default().to_owned();
        let (name, email, date, tree, message) = (next(), next(), next(), next(), next());
        (message.trim_end().to_owned(), name, email, date, tree)
    }
}
