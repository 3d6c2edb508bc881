//! GitHub webhook deliveries: the `X-Hub-Signature-256` check, and the
//! parts of the payloads the hub reads. Payload types ignore fields the hub
//! does not use and require the ones it does.

use hmac::{Mac as _, SimpleHmac};
use serde::Deserialize;
use sha2::Sha256;

/// GitHub's all-zero sha: the `after` of a deleted branch.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header: expected sha256=<64 hex digits>")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks `header` (`sha256=<hex>`) against the HMAC-SHA256 of `body`
/// under `secret`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = new_mac(secret);
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

// `SimpleHmac` takes keys of any length, so this cannot fail.
fn new_mac(secret: &[u8]) -> SimpleHmac<Sha256> {
    <SimpleHmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"))
}

/// A repository as payloads describe it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PayloadRepository {
    pub id: i64,
    /// `owner/name`.
    pub full_name: String,
    pub name: String,
    #[serde(default)]
    pub private: bool,
    /// Absent in `installation*` payloads' short repository objects.
    #[serde(default)]
    pub default_branch: Option<String>,
}

impl PayloadRepository {
    /// `(owner, name)` from `full_name`.
    pub fn owner_and_name(&self) -> Option<(&str, &str)> {
        self.full_name.split_once('/')
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PayloadInstallationRef {
    pub id: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PayloadCommit {
    pub id: String,
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub modified: Vec<String>,
}

/// A `push` event.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PushEvent {
    /// `refs/heads/<branch>` or `refs/tags/<tag>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub after: String,
    #[serde(default)]
    pub deleted: bool,
    /// Oldest first; at most 20 listed.
    #[serde(default)]
    pub commits: Vec<PayloadCommit>,
    pub repository: PayloadRepository,
    #[serde(default)]
    pub installation: Option<PayloadInstallationRef>,
}

impl PushEvent {
    /// The branch pushed to; `None` for a tag or another ref.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    /// The branch was deleted: nothing to build.
    pub fn is_deletion(&self) -> bool {
        self.deleted || self.after == ZERO_SHA
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PayloadAccount {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PayloadInstallation {
    pub id: i64,
    pub account: PayloadAccount,
}

/// An `installation` event: `created`, `deleted`, `suspend`, …
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct InstallationEvent {
    pub action: String,
    pub installation: PayloadInstallation,
    /// The repositories granted (on `created`).
    #[serde(default)]
    pub repositories: Vec<PayloadRepository>,
}

/// An `installation_repositories` event: `added` or `removed`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct InstallationRepositoriesEvent {
    pub action: String,
    pub installation: PayloadInstallation,
    #[serde(default)]
    pub repositories_added: Vec<PayloadRepository>,
    #[serde(default)]
    pub repositories_removed: Vec<PayloadRepository>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_mismatches_do_not() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let header = sign(b"s3cret", body);
        assert_eq!(verify_signature(b"s3cret", body, Some(&header)), Ok(()));
        assert_eq!(
            verify_signature(b"other", body, Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", b"{}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, None),
            Err(SignatureError::Missing)
        );
        for bad in ["sha1=abcd", "sha256=zz", "sha256=abcd", &header[7..]] {
            assert_eq!(
                verify_signature(b"s3cret", body, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn known_vector_from_githubs_docs() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn push_payloads_parse_leniently() {
        let push: PushEvent = serde_json::from_str(
            r#"{"ref":"refs/heads/main","before":"a","after":"b","deleted":false,
                "commits":[{"id":"b","added":["Singularity"],"removed":[],"modified":[],"extra":1}],
                "repository":{"id":7,"full_name":"alice/analysis","name":"analysis",
                    "private":false,"default_branch":"main","owner":{"login":"alice"}},
                "installation":{"id":42},"sender":{}}"#,
        )
        .unwrap();
        assert_eq!(push.branch(), Some("main"));
        assert!(!push.is_deletion());
        assert_eq!(push.installation, Some(PayloadInstallationRef { id: 42 }));
        assert_eq!(
            push.repository.owner_and_name(),
            Some(("alice", "analysis"))
        );

        let tag: PushEvent = serde_json::from_str(
            r#"{"ref":"refs/tags/v1","after":"b","repository":{"id":7,"full_name":"a/b","name":"b"}}"#,
        )
        .unwrap();
        assert_eq!(tag.branch(), None);

        let deleted: PushEvent = serde_json::from_str(&format!(
            r#"{{"ref":"refs/heads/x","after":"{ZERO_SHA}","repository":{{"id":7,"full_name":"a/b","name":"b"}}}}"#
        ))
        .unwrap();
        assert!(deleted.is_deletion());

        // A field the hub uses is required.
        assert!(serde_json::from_str::<PushEvent>(r#"{"ref":"refs/heads/main"}"#).is_err());
    }
}
