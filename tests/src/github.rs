//! The GitHub stand-in: an HTTP server speaking the REST calls the hub makes
//! (App and installation tokens, tarballs and zipballs, trees, contents,
//! repositories, commit statuses, check runs, installation repositories)
//! over local git repositories made in the test. It records every request
//! and every status and check run, for tests to read back. It also plays
//! GitHub's web sign-in (the OAuth web flow of the App's client: an
//! authorize page that signs in the user the test chose and sends the
//! browser back with a code, the code exchange) and the calls the hub
//! makes as the signed-in user (`/user`, `/user/repos`,
//! `/user/installations` and their repositories).
//!
//! Access follows GitHub: public repositories are readable by anyone;
//! private ones answer 404 unless the call carries the plain token or an
//! installation token of an installation holding the repository; writes
//! need credentials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

use crate::git::GitRepo;

/// How a request authenticated, as the stand-in judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKind {
    None,
    /// A valid App JWT.
    AppJwt,
    /// A valid installation token of this installation.
    Installation(i64),
    /// The plain token.
    Token,
    /// A user's OAuth token, of this login.
    User(String),
    /// Credentials GitHub would refuse (bad signature, expired, unknown).
    Invalid(String),
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/installation/repositories?per_page=100`.
    pub path: String,
    pub auth: AuthKind,
}

/// A commit status as posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStatus {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub target_url: Option<String>,
    pub description: Option<String>,
    pub context: String,
    pub auth: AuthKind,
}

/// A check run create (`POST`) or update (`PATCH`), in the order received.
#[derive(Debug, Clone)]
pub struct RecordedCheckRun {
    pub repo: String,
    pub id: i64,
    /// `created` or `updated`.
    pub action: String,
    /// The request body as sent.
    pub body: Value,
    /// The check run after this call.
    pub state: Value,
}

/// A repository the stand-in serves.
#[derive(Debug, Clone)]
pub struct StandInRepo {
    pub id: i64,
    pub owner: String,
    pub owner_id: i64,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
    /// The installation holding it, for App repositories.
    pub installation_id: Option<i64>,
    pub git: Arc<GitRepo>,
}

impl StandInRepo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// What a user may do to a repository, as GitHub's `permissions` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoPermission {
    Pull,
    Push,
    Admin,
}

#[derive(Debug, Clone)]
struct Installation {
    account: String,
    repos: Vec<String>,
}

struct IssuedToken {
    installation_id: i64,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<String, StandInRepo>,
    installations: HashMap<i64, Installation>,
    tokens: HashMap<String, IssuedToken>,
    token_lifetime: Option<Duration>,
    max_per_page: Option<usize>,
    requests: Vec<RecordedRequest>,
    statuses: Vec<RecordedStatus>,
    check_run_events: Vec<RecordedCheckRun>,
    check_runs: HashMap<i64, Value>,
    codeload: HashMap<String, (String, String, String)>,
    next_id: i64,
    /// The user the authorize page signs in.
    signed_in_user: Option<String>,
    /// OAuth codes not yet exchanged: code → (login, redirect_uri).
    oauth_codes: HashMap<String, (String, String)>,
    /// OAuth tokens handed out: token → login.
    user_tokens: HashMap<String, String>,
    /// `owner/name` → (login, permission) of its collaborators.
    collaborators: HashMap<String, Vec<(String, RepoPermission)>>,
}

struct Shared {
    base_url: String,
    app_id: u64,
    app_public_key: Vec<u8>,
    plain_token: String,
    oauth_client_id: String,
    oauth_client_secret: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }
}

/// A running stand-in; stops when dropped.
pub struct GitHubStandIn {
    shared: Arc<Shared>,
    key_dir: tempfile::TempDir,
    key_file: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for GitHubStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// GitHub's default installation token lifetime.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A fresh 2048-bit RSA private key, PKCS#1 PEM as GitHub hands App keys out.
pub fn generate_rsa_key_pem() -> String {
    let output = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install the Debian package openssl"));
    assert!(
        output.status.success(),
        "openssl genrsa failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn public_key_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs1KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let key = RsaKeyPair::from_der(der.secret_pkcs1_der()).unwrap();
    key.public_key().as_ref().to_vec()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).unwrap();
    hex::encode(buf)
}

impl GitHubStandIn {
    /// Starts the stand-in on 127.0.0.1 with an App (id 4242, a fresh key
    /// written to [`GitHubStandIn::app_key_file`]) and a plain token.
    pub async fn start() -> GitHubStandIn {
        let pem = generate_rsa_key_pem();
        let key_dir = tempfile::tempdir().unwrap();
        let key_file = key_dir.path().join("app.pem");
        std::fs::write(&key_file, &pem).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            app_id: 4242,
            app_public_key: public_key_der(&pem),
            plain_token: format!("ghp_{}", random_hex(18)),
            oauth_client_id: format!("Iv1.{}", random_hex(8)),
            oauth_client_secret: random_hex(20),
            inner: Mutex::new(Inner {
                next_id: 1000,
                ..Inner::default()
            }),
        });
        let router = router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        GitHubStandIn {
            shared,
            key_dir,
            key_file,
            shutdown: Some(tx),
        }
    }

    /// The API's base URL, for `SIFHUB_GITHUB_API_URL`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn app_id(&self) -> u64 {
        self.shared.app_id
    }

    /// The App's private key, for `SIFHUB_GITHUB_APP_KEY_FILE`.
    pub fn app_key_file(&self) -> &Path {
        &self.key_file
    }

    /// A folder that lives as long as the stand-in, for test files.
    pub fn temp_dir(&self) -> &Path {
        self.key_dir.path()
    }

    /// The plain token, for `SIFHUB_GITHUB_TOKEN`.
    pub fn plain_token(&self) -> String {
        self.shared.plain_token.clone()
    }

    /// The App's OAuth client id, for `SIFHUB_GITHUB_CLIENT_ID`.
    pub fn oauth_client_id(&self) -> String {
        self.shared.oauth_client_id.clone()
    }

    /// The App's OAuth client secret, for `SIFHUB_GITHUB_CLIENT_SECRET`.
    pub fn oauth_client_secret(&self) -> String {
        self.shared.oauth_client_secret.clone()
    }

    /// The user the authorize page signs in from now on (as if they had
    /// logged in to GitHub and approved the App).
    pub fn sign_in_as(&self, login: &str) {
        self.shared.lock().signed_in_user = Some(login.to_owned());
    }

    /// An OAuth token of `login`, as the code exchange hands out after
    /// they signed in.
    pub fn user_token(&self, login: &str) -> String {
        let token = format!("gho_{}", random_hex(18));
        self.shared
            .lock()
            .user_tokens
            .insert(token.clone(), login.to_owned());
        token
    }

    /// Gives `login` `permission` on `repo`.
    pub fn add_collaborator(&self, repo: &StandInRepo, login: &str, permission: RepoPermission) {
        self.shared
            .lock()
            .collaborators
            .entry(repo.full_name())
            .or_default()
            .push((login.to_owned(), permission));
    }

    /// Lifetime of installation tokens minted from now on (GitHub: 1 hour).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = Some(lifetime);
    }

    /// Caps `per_page` (GitHub caps it at 100), to make pagination happen
    /// with few repositories.
    pub fn set_max_per_page(&self, max: usize) {
        self.shared.lock().max_per_page = Some(max);
    }

    /// A new installation of the App on `account`; returns its id.
    pub fn create_installation(&self, account: &str) -> i64 {
        let mut inner = self.shared.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.installations.insert(
            id,
            Installation {
                account: account.to_owned(),
                repos: Vec::new(),
            },
        );
        id
    }

    /// A new repository `owner/name` with an empty git repository on branch
    /// `main`, in `installation` if given (an App repository) or not (a
    /// plain webhook repository).
    pub fn create_repo(
        &self,
        owner: &str,
        name: &str,
        private: bool,
        installation: Option<i64>,
    ) -> StandInRepo {
        let git = Arc::new(GitRepo::init("main"));
        let mut inner = self.shared.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let owner_id = owner_id(owner);
        let repo = StandInRepo {
            id,
            owner: owner.to_owned(),
            owner_id,
            name: name.to_owned(),
            private,
            default_branch: "main".to_owned(),
            installation_id: installation,
            git,
        };
        if let Some(installation) = installation {
            let entry = inner
                .installations
                .get_mut(&installation)
                .unwrap_or_else(|| panic!("no installation {installation}"));
            entry.repos.push(repo.full_name());
        }
        inner.repos.insert(repo.full_name(), repo.clone());
        repo
    }

    /// Takes a repository out of its installation (as when a user removes
    /// it from the App's selection).
    pub fn remove_from_installation(&self, repo: &StandInRepo) {
        let mut inner = self.shared.lock();
        let full_name = repo.full_name();
        for installation in inner.installations.values_mut() {
            installation.repos.retain(|r| *r != full_name);
        }
        if let Some(entry) = inner.repos.get_mut(&full_name) {
            entry.installation_id = None;
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Commit statuses posted so far, in order.
    pub fn statuses(&self) -> Vec<RecordedStatus> {
        self.shared.lock().statuses.clone()
    }

    /// Check run creates and updates so far, in order.
    pub fn check_runs(&self) -> Vec<RecordedCheckRun> {
        self.shared.lock().check_run_events.clone()
    }
}

/// A stable fake account id per login.
fn owner_id(login: &str) -> i64 {
    login
        .bytes()
        .fold(7_i64, |h, b| h.wrapping_mul(31).wrapping_add(b as i64))
        .rem_euclid(1_000_000)
        + 1
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/app/installations/{id}", get(get_installation))
        .route(
            "/app/installations/{id}/access_tokens",
            post(create_access_token),
        )
        .route("/installation/repositories", get(installation_repositories))
        .route("/repos/{owner}/{repo}", get(get_repository))
        .route("/repos/{owner}/{repo}/tarball/{*reference}", get(tarball))
        .route("/repos/{owner}/{repo}/zipball/{*reference}", get(zipball))
        .route("/repos/{owner}/{repo}/git/trees/{*sha}", get(tree))
        .route("/repos/{owner}/{repo}/contents", get(contents_root))
        .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
        .route(
            "/repos/{owner}/{repo}/check-runs/{id}",
            patch(update_check_run),
        )
        .route("/_codeload/{nonce}", get(codeload))
        .route("/repos/{owner}/{repo}/branches/{*branch}", get(branch))
        .route("/login/oauth/authorize", get(oauth_authorize))
        .route("/login/oauth/access_token", post(oauth_access_token))
        .route("/user", get(user))
        .route("/user/repos", get(user_repos))
        .route("/user/installations", get(user_installations))
        .route(
            "/user/installations/{id}/repositories",
            get(user_installation_repositories),
        )
        .fallback(|| async { github_error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared)
}

/// GitHub's error body.
fn github_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// A refused call: GitHub's status and message.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Refusal {
        Refusal(status, message.to_owned())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        github_error(self.0, &self.1)
    }
}

/// Judges the `Authorization` header, records the request, and refuses bad
/// credentials with 401 as GitHub does.
async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = judge(&shared, request.headers());
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    shared.lock().requests.push(RecordedRequest {
        method: request.method().to_string(),
        path,
        auth: auth.clone(),
    });
    if let AuthKind::Invalid(_) = auth {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    request.extensions_mut().insert(auth);
    next.run(request).await
}

fn judge(shared: &Shared, headers: &HeaderMap) -> AuthKind {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return AuthKind::None;
    };
    let Some(credential) = value.to_str().ok().and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("token "))
            .map(str::trim)
    }) else {
        return AuthKind::Invalid("malformed Authorization header".to_owned());
    };
    if credential == shared.plain_token {
        return AuthKind::Token;
    }
    if let Some(login) = shared.lock().user_tokens.get(credential) {
        return AuthKind::User(login.clone());
    }
    if let Some(token) = shared.lock().tokens.get(credential) {
        return if token.expires_at > Utc::now() {
            AuthKind::Installation(token.installation_id)
        } else {
            AuthKind::Invalid("expired installation token".to_owned())
        };
    }
    if credential.split('.').count() == 3 {
        return match verify_jwt(shared, credential) {
            Ok(()) => AuthKind::AppJwt,
            Err(reason) => AuthKind::Invalid(reason),
        };
    }
    AuthKind::Invalid("unknown token".to_owned())
}

/// Checks an App JWT as GitHub does: RS256 signed by the App's key, `iss`
/// the App id, not expired, `exp` at most 10 minutes ahead.
fn verify_jwt(shared: &Shared, jwt: &str) -> Result<(), String> {
    let (signing_input, signature) = jwt.rsplit_once('.').ok_or("not a JWT")?;
    let (header, claims) = signing_input.split_once('.').ok_or("not a JWT")?;
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("bad base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}"))
    };
    let header = decode(header)?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| format!("bad signature encoding: {e}"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &shared.app_public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| "signature does not verify with the App's public key".to_owned())?;
    let claims = decode(claims)?;
    let iss = match &claims["iss"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("bad iss {other}")),
    };
    if iss != shared.app_id.to_string() {
        return Err(format!("iss {iss} is not the App id {}", shared.app_id));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    if exp <= now {
        return Err("expired JWT".to_owned());
    }
    if exp - now > 600 || exp - iat > 660 {
        return Err("'Expiration time' claim ('exp') is too far in the future".to_owned());
    }
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                .to_owned(),
        );
    }
    Ok(())
}

async fn get_installation(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath(id): UrlPath<i64>,
) -> Response {
    if auth != AuthKind::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let Some(installation) = shared.lock().installations.get(&id).cloned() else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    Json(crate::webhook::installation_object(
        id,
        &installation.account,
        shared.app_id,
    ))
    .into_response()
}

async fn create_access_token(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath(id): UrlPath<i64>,
) -> Response {
    if auth != AuthKind::AppJwt {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let mut inner = shared.lock();
    if !inner.installations.contains_key(&id) {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let lifetime = inner.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    let expires_at = Utc::now() + chrono::Duration::from_std(lifetime).unwrap();
    let token = format!("ghs_{}", random_hex(18));
    inner.tokens.insert(
        token.clone(),
        IssuedToken {
            installation_id: id,
            expires_at,
        },
    );
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {"contents": "read", "statuses": "write", "checks": "write", "metadata": "read"},
            "repository_selection": "selected",
        })),
    )
        .into_response()
}

/// A repository's JSON, as GitHub's repository endpoints give it.
pub fn repository_json(base_url: &str, repo: &StandInRepo) -> Value {
    let full_name = repo.full_name();
    json!({
        "id": repo.id,
        "node_id": format!("R_{}", repo.id),
        "name": repo.name,
        "full_name": full_name,
        "private": repo.private,
        "visibility": if repo.private { "private" } else { "public" },
        "owner": {
            "login": repo.owner,
            "id": repo.owner_id,
            "type": "User",
        },
        "html_url": format!("https://github.com/{full_name}"),
        "url": format!("{base_url}/repos/{full_name}"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "default_branch": repo.default_branch,
        "fork": false,
        "archived": false,
    })
}

async fn installation_repositories(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let AuthKind::Installation(id) = auth else {
        return github_error(
            StatusCode::FORBIDDEN,
            "This endpoint requires you to authenticate as an installation.",
        );
    };
    let inner = shared.lock();
    let repos: Vec<Value> = inner.installations[&id]
        .repos
        .iter()
        .filter_map(|name| inner.repos.get(name))
        .map(|repo| repository_json(&shared.base_url, repo))
        .collect();
    let max = inner.max_per_page.unwrap_or(100);
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30_usize)
        .clamp(1, max);
    let page = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1_usize)
        .max(1);
    let last = repos.len().div_ceil(per_page).max(1);
    let page_repos: Vec<Value> = repos
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    let link = |p: usize, rel: &str| {
        format!(
            "<{}/installation/repositories?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            shared.base_url
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(page - 1, "prev"));
        links.push(link(1, "first"));
    }
    let mut response = Json(json!({
        "total_count": repos.len(),
        "repository_selection": "selected",
        "repositories": page_repos,
    }))
    .into_response();
    if !links.is_empty() {
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&links.join(", ")).unwrap(),
        );
    }
    response
}

/// The repository if `auth` may read it; GitHub's 404 otherwise.
fn readable(
    shared: &Shared,
    auth: &AuthKind,
    owner: &str,
    name: &str,
) -> Result<StandInRepo, Refusal> {
    let inner = shared.lock();
    let repo = inner
        .repos
        .get(&format!("{owner}/{name}"))
        .cloned()
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "Not Found"))?;
    if repo.private && !has_access(&inner, auth, &repo) {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok(repo)
}

fn has_access(inner: &Inner, auth: &AuthKind, repo: &StandInRepo) -> bool {
    match auth {
        AuthKind::Token => true,
        AuthKind::User(login) => user_permission(inner, login, repo).is_some(),
        AuthKind::Installation(id) => inner
            .installations
            .get(id)
            .is_some_and(|i| i.repos.contains(&repo.full_name())),
        _ => false,
    }
}

/// The repository if `auth` may write to it.
fn writable(
    shared: &Shared,
    auth: &AuthKind,
    owner: &str,
    name: &str,
) -> Result<StandInRepo, Refusal> {
    if *auth == AuthKind::None {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    }
    let repo = readable(shared, auth, owner, name)?;
    if !has_access(&shared.lock(), auth, &repo) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ));
    }
    Ok(repo)
}

async fn get_repository(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
) -> Response {
    match readable(&shared, &auth, &owner, &name) {
        Ok(repo) => Json(repository_json(&shared.base_url, &repo)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn tarball(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, reference)): UrlPath<(String, String, String)>,
) -> Response {
    archive_redirect(&shared, &auth, &owner, &name, &reference, "tar.gz")
}

async fn zipball(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, reference)): UrlPath<(String, String, String)>,
) -> Response {
    archive_redirect(&shared, &auth, &owner, &name, &reference, "zip")
}

/// GitHub answers archive requests with a 302 to codeload, whose URL
/// carries its own short-lived token; so does the stand-in.
fn archive_redirect(
    shared: &Shared,
    auth: &AuthKind,
    owner: &str,
    name: &str,
    reference: &str,
    format: &str,
) -> Response {
    let repo = match readable(shared, auth, owner, name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(sha) = repo.git.resolve(reference) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let nonce = random_hex(16);
    shared
        .lock()
        .codeload
        .insert(nonce.clone(), (repo.full_name(), sha, format.to_owned()));
    let location = format!("{}/_codeload/{nonce}", shared.base_url);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// Streams `git archive`, the top folder named `<owner>-<repo>-<sha7>/` as
/// GitHub names it.
async fn codeload(State(shared): State<Arc<Shared>>, UrlPath(nonce): UrlPath<String>) -> Response {
    let found = {
        let inner = shared.lock();
        inner
            .codeload
            .get(&nonce)
            .and_then(|(full_name, sha, format)| {
                Some((
                    inner.repos.get(full_name)?.clone(),
                    sha.clone(),
                    format.clone(),
                ))
            })
    };
    let Some((repo, sha, format)) = found else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let prefix = format!("{}-{}-{}/", repo.owner, repo.name, &sha[..7]);
    let git = repo.git.clone();
    let content_type = if format == "zip" {
        "application/zip"
    } else {
        "application/x-gzip"
    };
    let bytes = tokio::task::spawn_blocking(move || git.archive(&format, &prefix, &sha))
        .await
        .unwrap();
    ([(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response()
}

async fn tree(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, reference)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let repo = match readable(&shared, &auth, &owner, &name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(tree_sha) = repo
        .git
        .resolve(&reference)
        .map(|c| repo.git.commit_info(&c).4)
    else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    // GitHub takes any value of `recursive` as yes.
    let recursive = query.contains_key("recursive");
    let entries: Vec<Value> = repo
        .git
        .ls_tree(&tree_sha, recursive)
        .into_iter()
        .map(|e| {
            let mut entry = json!({"path": e.path, "mode": e.mode, "type": e.kind, "sha": e.sha});
            if e.kind == "blob" {
                let size = repo.git.git(&["cat-file", "-s", &e.sha]);
                entry["size"] = json!(size.trim().parse::<u64>().unwrap_or(0));
            }
            entry
        })
        .collect();
    Json(json!({
        "sha": tree_sha,
        "url": format!("{}/repos/{}/git/trees/{tree_sha}", shared.base_url, repo.full_name()),
        "tree": entries,
        "truncated": false,
    }))
    .into_response()
}

async fn contents_root(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    contents_of(&shared, &auth, &owner, &name, "", &query)
}

async fn contents(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, path)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    contents_of(&shared, &auth, &owner, &name, &path, &query)
}

fn contents_of(
    shared: &Shared,
    auth: &AuthKind,
    owner: &str,
    name: &str,
    path: &str,
    query: &HashMap<String, String>,
) -> Response {
    let repo = match readable(shared, auth, owner, name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    let reference = query.get("ref").unwrap_or(&repo.default_branch);
    let Some(sha) = repo.git.resolve(reference) else {
        return github_error(
            StatusCode::NOT_FOUND,
            &format!("No commit found for the ref {reference}"),
        );
    };
    let path = path.trim_matches('/');
    if let Some(bytes) = repo.git.file_at(&sha, path) {
        let blob = repo.git.git(&["rev-parse", &format!("{sha}:{path}")]);
        // GitHub wraps the base64 at 60 columns.
        let encoded = STANDARD.encode(&bytes);
        let wrapped: Vec<&str> = encoded
            .as_bytes()
            .chunks(60)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        return Json(json!({
            "type": "file",
            "encoding": "base64",
            "size": bytes.len(),
            "name": path.rsplit('/').next().unwrap_or(path),
            "path": path,
            "sha": blob.trim(),
            "content": wrapped.join("\n") + "\n",
        }))
        .into_response();
    }
    let tree = if path.is_empty() {
        sha.clone()
    } else {
        format!("{sha}:{path}")
    };
    if repo.git.try_git(&["cat-file", "-t", &tree]).is_err() {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let entries: Vec<Value> = repo
        .git
        .ls_tree(&tree, false)
        .into_iter()
        .map(|e| {
            let full = if path.is_empty() {
                e.path.clone()
            } else {
                format!("{path}/{}", e.path)
            };
            let kind = match e.kind.as_str() {
                "tree" => "dir",
                "commit" => "submodule",
                _ if e.mode == "120000" => "symlink",
                _ => "file",
            };
            json!({"type": kind, "name": e.path, "path": full, "sha": e.sha})
        })
        .collect();
    Json(Value::Array(entries)).into_response()
}

async fn create_status(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, sha)): UrlPath<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let repo = match writable(&shared, &auth, &owner, &name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    if repo.git.resolve(&sha).is_none() {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {sha}"),
        );
    }
    let state = body["state"].as_str().unwrap_or_default().to_owned();
    if !["error", "failure", "pending", "success"].contains(&state.as_str()) {
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let description = body["description"].as_str().map(str::to_owned);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 140)
    {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: description is too long (maximum is 140 characters)",
        );
    }
    let status = RecordedStatus {
        repo: repo.full_name(),
        sha: sha.clone(),
        state: state.clone(),
        target_url: body["target_url"].as_str().map(str::to_owned),
        description: description.clone(),
        context: body["context"].as_str().unwrap_or("default").to_owned(),
        auth,
    };
    let mut inner = shared.lock();
    inner.next_id += 1;
    let id = inner.next_id;
    inner.statuses.push(status.clone());
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "state": state,
            "description": description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })),
    )
        .into_response()
}

/// Check runs are GitHub App only.
fn check_run_repo(
    shared: &Shared,
    auth: &AuthKind,
    owner: &str,
    name: &str,
) -> Result<StandInRepo, Refusal> {
    if matches!(auth, AuthKind::Token) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "You must authenticate via a GitHub App.",
        ));
    }
    writable(shared, auth, owner, name)
}

async fn create_check_run(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let repo = match check_run_repo(&shared, &auth, &owner, &name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    let (Some(check_name), Some(head_sha)) = (body["name"].as_str(), body["head_sha"].as_str())
    else {
        return github_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: name and head_sha are required",
        );
    };
    if repo.git.resolve(head_sha).is_none() {
        return github_error(StatusCode::UNPROCESSABLE_ENTITY, "No commit found for SHA");
    }
    let mut inner = shared.lock();
    inner.next_id += 1;
    let id = inner.next_id;
    let mut state = json!({
        "id": id,
        "name": check_name,
        "head_sha": head_sha,
        "status": "queued",
        "conclusion": null,
        "details_url": null,
        "output": {"title": null, "summary": null, "text": null},
    });
    merge_check_run(&mut state, &body);
    inner.check_runs.insert(id, state.clone());
    inner.check_run_events.push(RecordedCheckRun {
        repo: repo.full_name(),
        id,
        action: "created".to_owned(),
        body,
        state: state.clone(),
    });
    (StatusCode::CREATED, Json(state)).into_response()
}

async fn update_check_run(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, id)): UrlPath<(String, String, i64)>,
    Json(body): Json<Value>,
) -> Response {
    let repo = match check_run_repo(&shared, &auth, &owner, &name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    let mut inner = shared.lock();
    let Some(state) = inner.check_runs.get_mut(&id) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    merge_check_run(state, &body);
    let state = state.clone();
    inner.check_run_events.push(RecordedCheckRun {
        repo: repo.full_name(),
        id,
        action: "updated".to_owned(),
        body,
        state: state.clone(),
    });
    Json(state).into_response()
}

/// Applies a create or update body; a conclusion completes the run, as on
/// GitHub.
fn merge_check_run(state: &mut Value, body: &Value) {
    for field in [
        "name",
        "status",
        "conclusion",
        "details_url",
        "output",
        "started_at",
        "completed_at",
        "external_id",
    ] {
        if let Some(value) = body.get(field) {
            state[field] = value.clone();
        }
    }
    if !state["conclusion"].is_null() {
        state["status"] = json!("completed");
    }
}

/// What `login` may do to `repo`: admin on their own, their collaborator
/// permission elsewhere.
fn user_permission(inner: &Inner, login: &str, repo: &StandInRepo) -> Option<RepoPermission> {
    if repo.owner.eq_ignore_ascii_case(login) {
        return Some(RepoPermission::Admin);
    }
    inner
        .collaborators
        .get(&repo.full_name())?
        .iter()
        .find(|(who, _)| who.eq_ignore_ascii_case(login))
        .map(|(_, permission)| *permission)
}

/// A repository's JSON with the user's `permissions`, as `/user/repos` gives it.
fn user_repository_json(base_url: &str, repo: &StandInRepo, permission: RepoPermission) -> Value {
    let mut json = repository_json(base_url, repo);
    json["permissions"] = json!({
        "admin": permission == RepoPermission::Admin,
        "maintain": permission == RepoPermission::Admin,
        "push": permission != RepoPermission::Pull,
        "triage": permission != RepoPermission::Pull,
        "pull": true,
    });
    json
}

async fn branch(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath((owner, name, branch)): UrlPath<(String, String, String)>,
) -> Response {
    let repo = match readable(&shared, &auth, &owner, &name) {
        Ok(repo) => repo,
        Err(refusal) => return refusal.into_response(),
    };
    match repo.git.resolve(&format!("refs/heads/{branch}")) {
        Some(sha) => Json(json!({
            "name": branch,
            "commit": {"sha": sha, "url": format!("{}/repos/{}/commits/{sha}", shared.base_url, repo.full_name())},
            "protected": false,
        }))
        .into_response(),
        None => github_error(StatusCode::NOT_FOUND, "Branch not found"),
    }
}

/// GitHub's authorize page, already approved: the browser goes straight
/// back to `redirect_uri` with a code for the user the test signed in.
async fn oauth_authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("client_id") != Some(&shared.oauth_client_id) {
        return (StatusCode::NOT_FOUND, "unknown client_id").into_response();
    }
    let (Some(redirect_uri), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri and state are required",
        )
            .into_response();
    };
    let mut inner = shared.lock();
    let Some(login) = inner.signed_in_user.clone() else {
        return (StatusCode::FORBIDDEN, "nobody is signed in to the stand-in").into_response();
    };
    let code = random_hex(10);
    inner
        .oauth_codes
        .insert(code.clone(), (login, redirect_uri.clone()));
    let mut target = reqwest::Url::parse(redirect_uri).unwrap();
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

/// The code exchange: a code works once, with the client's secret and the
/// same `redirect_uri`; a refusal is 200 with `error`, as GitHub does.
async fn oauth_access_token(
    State(shared): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let refuse = |error: &str| {
        Json(json!({"error": error, "error_description": format!("stand-in: {error}")}))
            .into_response()
    };
    if form.get("client_id") != Some(&shared.oauth_client_id)
        || form.get("client_secret") != Some(&shared.oauth_client_secret)
    {
        return refuse("incorrect_client_credentials");
    }
    let mut inner = shared.lock();
    let Some((login, redirect_uri)) = form.get("code").and_then(|c| inner.oauth_codes.remove(c))
    else {
        return refuse("bad_verification_code");
    };
    if form.get("redirect_uri") != Some(&redirect_uri) {
        return refuse("redirect_uri_mismatch");
    }
    let token = format!("gho_{}", random_hex(18));
    inner.user_tokens.insert(token.clone(), login);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": ""})).into_response()
}

fn signed_in(auth: &AuthKind) -> Result<String, Refusal> {
    match auth {
        AuthKind::User(login) => Ok(login.clone()),
        _ => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        )),
    }
}

async fn user(Extension(auth): Extension<AuthKind>) -> Response {
    let login = match signed_in(&auth) {
        Ok(login) => login,
        Err(refusal) => return refusal.into_response(),
    };
    Json(json!({
        "login": login,
        "id": owner_id(&login),
        "name": format!("{login} (stand-in)"),
        "avatar_url": null,
        "type": "User",
    }))
    .into_response()
}

async fn user_repos(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
) -> Response {
    let login = match signed_in(&auth) {
        Ok(login) => login,
        Err(refusal) => return refusal.into_response(),
    };
    let inner = shared.lock();
    let mut repos: Vec<&StandInRepo> = inner.repos.values().collect();
    repos.sort_by_key(|r| r.id);
    let list: Vec<Value> = repos
        .into_iter()
        .filter_map(|repo| {
            user_permission(&inner, &login, repo)
                .map(|p| user_repository_json(&shared.base_url, repo, p))
        })
        .collect();
    Json(list).into_response()
}

async fn user_installations(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
) -> Response {
    let login = match signed_in(&auth) {
        Ok(login) => login,
        Err(refusal) => return refusal.into_response(),
    };
    let inner = shared.lock();
    let mut ids: Vec<i64> = inner
        .installations
        .iter()
        .filter(|(_, installation)| {
            installation.account.eq_ignore_ascii_case(&login)
                || installation.repos.iter().any(|name| {
                    inner
                        .repos
                        .get(name)
                        .is_some_and(|repo| user_permission(&inner, &login, repo).is_some())
                })
        })
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    let list: Vec<Value> = ids
        .iter()
        .map(|id| {
            crate::webhook::installation_object(
                *id,
                &inner.installations[id].account,
                shared.app_id,
            )
        })
        .collect();
    Json(json!({"total_count": list.len(), "installations": list})).into_response()
}

async fn user_installation_repositories(
    State(shared): State<Arc<Shared>>,
    Extension(auth): Extension<AuthKind>,
    UrlPath(id): UrlPath<i64>,
) -> Response {
    let login = match signed_in(&auth) {
        Ok(login) => login,
        Err(refusal) => return refusal.into_response(),
    };
    let inner = shared.lock();
    let Some(installation) = inner.installations.get(&id) else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let list: Vec<Value> = installation
        .repos
        .iter()
        .filter_map(|name| inner.repos.get(name))
        .filter_map(|repo| {
            user_permission(&inner, &login, repo)
                .map(|p| user_repository_json(&shared.base_url, repo, p))
        })
        .collect();
    Json(json!({"total_count": list.len(), "repositories": list})).into_response()
}
