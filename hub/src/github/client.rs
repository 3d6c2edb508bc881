//! [`GitHubClient`]: the [`GitHubApi`] over GitHub's REST API, with
//! `reqwest` (already in the build through the OCI client; octocrab would
//! bring a second HTTP stack and its own redirect and streaming rules).
//!
//! Credentials per repository: an installation token when the repository
//! came from an App installation, else the configured token, else none
//! (public repositories only, no commit statuses).

use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK, USER_AGENT};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::app::{AppKey, InstallationToken, TokenCache};
use super::{
    ByteStream, CommitStatus, GitHubApi, GitHubError, RemoteRepository, RepoRef, TreeListing,
};
use crate::config::{Config, Secret};

/// Every call but the tarball's body has to finish within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A tarball may take long; a stall may not.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// GitHub's limit on a commit status description.
const MAX_DESCRIPTION_CHARS: usize = 140;
/// Longest error body kept in a message.
const MAX_ERROR_BODY: usize = 300;

/// The answer to a 404 that may be a private repository asked for without
/// credentials (GitHub hides private repositories behind 404s).
const PRIVATE_HINT: &str =
    "not found (private repository? set SIFHUB_GITHUB_TOKEN or install the App)";

struct App {
    key: AppKey,
    tokens: TokenCache,
}

/// GitHub's REST API at a configurable base URL.
pub struct GitHubClient {
    http: reqwest::Client,
    api_url: Url,
    app: Option<App>,
    token: Option<Secret>,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_url", &self.api_url.as_str())
            .field("app_id", &self.app.as_ref().map(|a| a.key.app_id()))
            .field("token", &self.token)
            .finish()
    }
}

/// How one call authenticates.
enum Credential {
    Installation(i64, String),
    Token(String),
    Anonymous,
}

impl Credential {
    fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Credential::Installation(_, token) | Credential::Token(token) => {
                request.bearer_auth(token)
            }
            Credential::Anonymous => request,
        }
    }
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
struct Tree {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct InstallationRepositories {
    repositories: Vec<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    id: i64,
    name: String,
    owner: Owner,
    private: bool,
    default_branch: String,
}

#[derive(Deserialize)]
struct Owner {
    login: String,
}

#[derive(Deserialize)]
struct Branch {
    commit: BranchCommit,
}

#[derive(Deserialize)]
struct BranchCommit {
    sha: String,
}

impl GitHubClient {
    /// App mode when `github_app_id` and `github_app_key_file` are set,
    /// token mode when `github_token` is (both may be: App repositories use
    /// installation tokens, plain webhook repositories the token), else
    /// anonymous.
    pub fn from_config(config: &Config) -> Result<Self, GitHubError> {
        let what = "client".to_owned();
        let mut api_url =
            Url::parse(&config.github_api_url).map_err(|e| GitHubError::NotConfigured {
                what: what.clone(),
                message: format!("invalid api url {:?}: {e}", config.github_api_url),
            })?;
        // So joining `repos/…` keeps a GitHub Enterprise `/api/v3` prefix.
        if !api_url.path().ends_with('/') {
            api_url.set_path(&format!("{}/", api_url.path()));
        }
        let app = match (config.github_app_id, &config.github_app_key_file) {
            (Some(app_id), Some(path)) => Some(App {
                key: AppKey::load(app_id, path)?,
                tokens: TokenCache::default(),
            }),
            (Some(app_id), None) => {
                return Err(GitHubError::NotConfigured {
                    what,
                    message: format!(
                        "app {app_id} has no private key (set SIFHUB_GITHUB_APP_KEY_FILE)"
                    ),
                })
            }
            (None, Some(_)) => {
                return Err(GitHubError::NotConfigured {
                    what,
                    message: "an App key file is set but no App id (set SIFHUB_GITHUB_APP_ID)"
                        .to_owned(),
                })
            }
            (None, None) => None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "X-GitHub-Api-Version",
            HeaderValue::from_static("2022-11-28"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("sifhub/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| GitHubError::NotConfigured {
                what,
                message: format!("cannot build the http client: {e}"),
            })?;
        Ok(Self {
            http,
            api_url,
            app,
            token: config.github_token.clone(),
        })
    }

    /// One line for the log: `app 123 at URL`, `token at URL`, `anonymous
    /// at URL`.
    pub fn mode(&self) -> String {
        let url = self.api_url.as_str().trim_end_matches('/');
        match (&self.app, &self.token) {
            (Some(app), Some(_)) => format!("app {} and token at {url}", app.key.app_id()),
            (Some(app), None) => format!("app {} at {url}", app.key.app_id()),
            (None, Some(_)) => format!("token at {url}"),
            (None, None) => format!("anonymous at {url}"),
        }
    }

    /// `api_url` + the given path segments, each escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    async fn credential(&self, repo: &RepoRef) -> Result<Credential, GitHubError> {
        match repo.installation_id {
            Some(id) => Ok(Credential::Installation(
                id,
                self.installation_token(id).await?,
            )),
            None => Ok(match &self.token {
                Some(token) => Credential::Token(token.expose().to_owned()),
                None => Credential::Anonymous,
            }),
        }
    }

    async fn installation_token(&self, installation_id: i64) -> Result<String, GitHubError> {
        let what = format!("installation {installation_id} token");
        let app = self.app.as_ref().ok_or_else(|| GitHubError::NotConfigured {
            what: what.clone(),
            message: "no GitHub App is configured (set SIFHUB_GITHUB_APP_ID and SIFHUB_GITHUB_APP_KEY_FILE)"
                .to_owned(),
        })?;
        app.tokens
            .get(installation_id, || async {
                let jwt = app.key.jwt(SystemTime::now())?;
                let url = self.url(&[
                    "app",
                    "installations",
                    &installation_id.to_string(),
                    "access_tokens",
                ]);
                let request = self
                    .request(Method::POST, url)
                    .bearer_auth(jwt)
                    .timeout(CALL_TIMEOUT);
                let response = send(&what, request, false).await?;
                let answer: AccessToken = decode(&what, response).await?;
                Ok(InstallationToken {
                    token: answer.token,
                    expires_at: answer.expires_at,
                })
            })
            .await
    }

    /// Sends a call made with `credential`; a refused installation token is
    /// dropped from the cache so the next call mints a new one.
    async fn send_as(
        &self,
        what: &str,
        credential: &Credential,
        request: RequestBuilder,
    ) -> Result<Response, GitHubError> {
        let anonymous = matches!(credential, Credential::Anonymous);
        let result = send(what, credential.apply(request), anonymous).await;
        if let (Err(GitHubError::Status { status: 401, .. }), Credential::Installation(id, _)) =
            (&result, credential)
        {
            if let Some(app) = &self.app {
                app.tokens.forget(*id).await;
            }
        }
        result
    }
}

/// Sends `request`; an error status becomes [`GitHubError::Status`] with
/// GitHub's `message`.
pub(super) async fn send(
    what: &str,
    request: RequestBuilder,
    anonymous: bool,
) -> Result<Response, GitHubError> {
    let response = request.send().await.map_err(|e| transport(what, &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = if status == StatusCode::NOT_FOUND && anonymous {
        PRIVATE_HINT.to_owned()
    } else {
        error_message(&body)
    };
    Err(GitHubError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        message,
    })
}

/// GitHub's `{"message": …}`, or the start of whatever else came back.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => e.message,
        Err(_) => body.trim().chars().take(MAX_ERROR_BODY).collect(),
    }
}

fn transport(what: &str, e: &reqwest::Error) -> GitHubError {
    // reqwest's Display omits the cause (connection refused, timed out).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    GitHubError::Transport {
        what: what.to_owned(),
        message,
    }
}

pub(super) async fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    response: Response,
) -> Result<T, GitHubError> {
    let body = response.bytes().await.map_err(|e| transport(what, &e))?;
    serde_json::from_slice(&body).map_err(|e| GitHubError::Decode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// The `rel="next"` URL of a `Link` header.
pub(super) fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// `description` cut to GitHub's limit, on a character boundary.
fn clip_description(description: &str) -> String {
    if description.chars().count() <= MAX_DESCRIPTION_CHARS {
        return description.to_owned();
    }
    let mut clipped: String = description
        .chars()
        .take(MAX_DESCRIPTION_CHARS - 1)
        .collect();
    clipped.push('…');
    clipped
}

#[async_trait::async_trait]
impl GitHubApi for GitHubClient {
    async fn tarball(&self, repo: &RepoRef, sha: &str) -> Result<ByteStream, GitHubError> {
        let what = format!("tarball of {} at {}", repo.full_name(), short(sha));
        let credential = self.credential(repo).await?;
        // No call timeout: the body may take long; connect and read
        // timeouts catch a dead server. GitHub answers with a redirect to
        // codeload, which reqwest follows (dropping the token if the host
        // changes; codeload's URL carries its own).
        let url = self.url(&["repos", &repo.owner, &repo.name, "tarball", sha]);
        let response = self
            .send_as(&what, &credential, self.request(Method::GET, url))
            .await?;
        let stream = response
            .bytes_stream()
            .map_err(move |e| transport(&what, &e));
        Ok(Box::pin(stream))
    }

    async fn tree(&self, repo: &RepoRef, sha: &str) -> Result<TreeListing, GitHubError> {
        let what = format!("tree of {} at {}", repo.full_name(), short(sha));
        let credential = self.credential(repo).await?;
        let url = self.url(&["repos", &repo.owner, &repo.name, "git", "trees", sha]);
        let request = self
            .request(Method::GET, url)
            .query(&[("recursive", "1")])
            .timeout(CALL_TIMEOUT);
        let response = self.send_as(&what, &credential, request).await?;
        let tree: Tree = decode(&what, response).await?;
        Ok(TreeListing {
            paths: tree
                .tree
                .into_iter()
                .filter(|entry| entry.kind == "blob")
                .map(|entry| entry.path)
                .collect(),
            truncated: tree.truncated,
        })
    }

    async fn set_status(
        &self,
        repo: &RepoRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), GitHubError> {
        let what = format!(
            "status {} on {} at {}",
            status.context,
            repo.full_name(),
            short(sha)
        );
        let credential = self.credential(repo).await?;
        if matches!(credential, Credential::Anonymous) {
            return Ok(());
        }
        let mut body = serde_json::json!({
            "state": status.state.as_str(),
            "context": status.context,
            "description": clip_description(&status.description),
        });
        if let Some(target_url) = &status.target_url {
            body["target_url"] = serde_json::Value::from(target_url.as_str());
        }
        let url = self.url(&["repos", &repo.owner, &repo.name, "statuses", sha]);
        let request = self
            .request(Method::POST, url)
            .json(&body)
            .timeout(CALL_TIMEOUT);
        self.send_as(&what, &credential, request).await?;
        Ok(())
    }

    async fn installation_repositories(
        &self,
        installation_id: i64,
    ) -> Result<Vec<RemoteRepository>, GitHubError> {
        let what = format!("installation {installation_id} repositories");
        let token = self.installation_token(installation_id).await?;
        let credential = Credential::Installation(installation_id, token);
        let mut url = self.url(&["installation", "repositories"]);
        url.query_pairs_mut().append_pair("per_page", "100");
        let mut repositories = Vec::new();
        loop {
            let request = self.request(Method::GET, url).timeout(CALL_TIMEOUT);
            let response = self.send_as(&what, &credential, request).await?;
            let next = next_link(&response);
            let page: InstallationRepositories = decode(&what, response).await?;
            repositories.extend(page.repositories.into_iter().map(|r| RemoteRepository {
                github_id: r.id,
                owner: r.owner.login,
                name: r.name,
                private: r.private,
                default_branch: r.default_branch,
            }));
            let Some(next) = next else { break };
            // The token goes only where the API is.
            url = match Url::parse(&next) {
                Ok(next) if next.as_str().starts_with(self.api_url.as_str()) => next,
                _ => {
                    return Err(GitHubError::Decode {
                        what,
                        message: format!("next page {next:?} is not under {}", self.api_url),
                    })
                }
            };
        }
        Ok(repositories)
    }

    async fn branch_head(&self, repo: &RepoRef, branch: &str) -> Result<String, GitHubError> {
        let what = format!("branch {branch} of {}", repo.full_name());
        let credential = self.credential(repo).await?;
        let url = self.url(&["repos", &repo.owner, &repo.name, "branches", branch]);
        let request = self.request(Method::GET, url).timeout(CALL_TIMEOUT);
        let response = self.send_as(&what, &credential, request).await?;
        let answer: Branch = decode(&what, response).await?;
        Ok(answer.commit.sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_clipped_to_github_limit() {
        assert_eq!(clip_description("queued"), "queued");
        let long = "é".repeat(200);
        let clipped = clip_description(&long);
        assert_eq!(clipped.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn error_bodies_give_github_message() {
        assert_eq!(
            error_message(r#"{"message":"Bad credentials","documentation_url":"x"}"#),
            "Bad credentials"
        );
        assert_eq!(error_message(" oops \n"), "oops");
    }
}
