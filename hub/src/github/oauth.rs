//! "Sign in with GitHub": the OAuth web flow of the App's client (the
//! browser goes to `{web}/login/oauth/authorize`, comes back with a code,
//! the hub trades it at `{web}/login/oauth/access_token`), then what the
//! hub asks GitHub as the user with the token it got: who they are, which
//! repositories they may read, write or administer, and which App
//! installations (and their repositories) they can see.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::client::{decode, next_link, send};
use super::GitHubError;
use crate::config::{Config, Secret};
use crate::db::Permission;

/// Every call has to finish within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages of a list followed at most (100 entries each).
const MAX_PAGES: usize = 50;

/// The App's OAuth client at GitHub's configured web and API addresses.
pub struct OAuthClient {
    http: reqwest::Client,
    web_url: Url,
    api_url: Url,
    client_id: String,
    client_secret: Secret,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("web_url", &self.web_url.as_str())
            .field("api_url", &self.api_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The signed-in user as GitHub describes them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitHubUser {
    pub id: i64,
    pub login: String,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A repository the user can reach, with what they may do to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRepository {
    pub github_id: i64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
    /// `None`: GitHub lists it but grants nothing (should not happen).
    pub permission: Option<Permission>,
}

/// An App installation the user can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInstallation {
    /// GitHub's installation id.
    pub id: i64,
    pub account: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct RepoJson {
    id: i64,
    name: String,
    owner: OwnerJson,
    private: bool,
    default_branch: String,
    #[serde(default)]
    permissions: Option<PermissionsJson>,
}

#[derive(Deserialize)]
struct OwnerJson {
    login: String,
}

#[derive(Deserialize, Default)]
struct PermissionsJson {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    maintain: bool,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    pull: bool,
}

#[derive(Deserialize)]
struct InstallationsJson {
    installations: Vec<InstallationJson>,
}

#[derive(Deserialize)]
struct InstallationJson {
    id: i64,
    account: OwnerJson,
}

#[derive(Deserialize)]
struct RepositoriesJson {
    repositories: Vec<RepoJson>,
}

impl RepoJson {
    fn into_repository(self) -> UserRepository {
        let p = self.permissions.unwrap_or_default();
        let permission = if p.admin {
            Some(Permission::Admin)
        } else if p.maintain || p.push {
            Some(Permission::Write)
        } else if p.pull {
            Some(Permission::Read)
        } else {
            None
        };
        UserRepository {
            github_id: self.id,
            owner: self.owner.login,
            name: self.name,
            private: self.private,
            default_branch: self.default_branch,
            permission,
        }
    }
}

/// `base` with a trailing slash, so joining keeps a path prefix
/// (GitHub Enterprise's `/api/v3`).
fn base_url(what: &str, text: &str) -> Result<Url, GitHubError> {
    let mut url = Url::parse(text).map_err(|e| GitHubError::NotConfigured {
        what: "oauth client".to_owned(),
        message: format!("invalid {what} {text:?}: {e}"),
    })?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// `base` + the path segments, each escaped.
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

impl OAuthClient {
    /// The client when `github_client_id` and `github_client_secret` are
    /// both set; `None` when neither is (sign-in is then off).
    pub fn from_config(config: &Config) -> Result<Option<Self>, GitHubError> {
        let (client_id, client_secret) = match (
            &config.github_client_id,
            &config.github_client_secret,
        ) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            (None, None) => return Ok(None),
            _ => return Err(GitHubError::NotConfigured {
                what: "oauth client".to_owned(),
                message:
                    "set both SIFHUB_GITHUB_CLIENT_ID and SIFHUB_GITHUB_CLIENT_SECRET, or neither"
                        .to_owned(),
            }),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
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
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| GitHubError::NotConfigured {
                what: "oauth client".to_owned(),
                message: format!("cannot build the http client: {e}"),
            })?;
        Ok(Some(Self {
            http,
            web_url: base_url("web url", &config.github_web_url)?,
            api_url: base_url("api url", &config.github_api_url)?,
            client_id,
            client_secret,
        }))
    }

    /// Where the browser goes to sign in; GitHub sends it back to
    /// `redirect_uri` with a code and `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        let mut url = join(&self.web_url, &["login", "oauth", "authorize"]);
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("allow_signup", "false");
        url.into()
    }

    /// Trades the code GitHub gave the browser for the user's token.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Secret, GitHubError> {
        let what = "oauth code exchange";
        let url = join(&self.web_url, &["login", "oauth", "access_token"]);
        let form = serde_urlencoded::to_string([
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ])
        .map_err(|e| GitHubError::Decode {
            what: what.to_owned(),
            message: format!("cannot encode the form: {e}"),
        })?;
        let request = self
            .http
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        let response = send(what, request, false).await?;
        // GitHub answers a refused code with 200 and an `error` field.
        let answer: TokenAnswer = decode(what, response).await?;
        match answer {
            TokenAnswer {
                access_token: Some(token),
                ..
            } => Ok(Secret::new(token)),
            TokenAnswer {
                error,
                error_description,
                ..
            } => Err(GitHubError::Status {
                what: what.to_owned(),
                status: 401,
                message: error_description
                    .or(error)
                    .unwrap_or_else(|| "no access token in the answer".to_owned()),
            }),
        }
    }

    /// Who the token belongs to.
    pub async fn user(&self, token: &Secret) -> Result<GitHubUser, GitHubError> {
        let what = "signed-in user";
        let request = self
            .http
            .request(Method::GET, join(&self.api_url, &["user"]))
            .bearer_auth(token.expose());
        let response = send(what, request, false).await?;
        decode(what, response).await
    }

    /// Every repository the user can reach, with their permission.
    pub async fn user_repositories(
        &self,
        token: &Secret,
    ) -> Result<Vec<UserRepository>, GitHubError> {
        let repos: Vec<RepoJson> = self
            .pages(
                "repositories of the signed-in user",
                token,
                &["user", "repos"],
                |page: Vec<RepoJson>| page,
            )
            .await?;
        Ok(repos.into_iter().map(RepoJson::into_repository).collect())
    }

    /// The App installations the user can see.
    pub async fn user_installations(
        &self,
        token: &Secret,
    ) -> Result<Vec<UserInstallation>, GitHubError> {
        let found = self
            .pages(
                "installations of the signed-in user",
                token,
                &["user", "installations"],
                |page: InstallationsJson| page.installations,
            )
            .await?;
        Ok(found
            .into_iter()
            .map(|i| UserInstallation {
                id: i.id,
                account: i.account.login,
            })
            .collect())
    }

    /// The repositories of installation `id` the user can reach.
    pub async fn installation_repositories(
        &self,
        token: &Secret,
        id: i64,
    ) -> Result<Vec<UserRepository>, GitHubError> {
        let id_text = id.to_string();
        let repos = self
            .pages(
                &format!("repositories of installation {id} for the signed-in user"),
                token,
                &["user", "installations", &id_text, "repositories"],
                |page: RepositoriesJson| page.repositories,
            )
            .await?;
        Ok(repos.into_iter().map(RepoJson::into_repository).collect())
    }

    /// The items of every page of the list at `segments`, following
    /// `Link: rel="next"` (only under the API's address: the token goes
    /// nowhere else).
    async fn pages<P, T>(
        &self,
        what: &str,
        token: &Secret,
        segments: &[&str],
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError>
    where
        P: DeserializeOwned,
    {
        let mut url = join(&self.api_url, segments);
        url.query_pairs_mut().append_pair("per_page", "100");
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let request = self
                .http
                .request(Method::GET, url)
                .bearer_auth(token.expose());
            let response = send(what, request, false).await?;
            let next = next_link(&response);
            let page: P = decode(what, response).await?;
            found.extend(items(page));
            let Some(next) = next else {
                return Ok(found);
            };
            url = match Url::parse(&next) {
                Ok(next) if next.as_str().starts_with(self.api_url.as_str()) => next,
                _ => {
                    return Err(GitHubError::Decode {
                        what: what.to_owned(),
                        message: format!("next page {next:?} is not under {}", self.api_url),
                    })
                }
            };
        }
        Err(GitHubError::Decode {
            what: what.to_owned(),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }
}
