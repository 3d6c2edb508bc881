//! The HTTP server. For now it carries the operational endpoints; the APIs
//! and the web UI are mounted here as they arrive.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::config::{Config, Secret};
use crate::db::{redact_url, Db, DbError};
use crate::github::oauth::OAuthClient;
use crate::github::status::StatusReporter;
use crate::github::{GitHubApi, GitHubClient, GitHubError};
use crate::queue::Queue;
use crate::storage::{Storage, StorageError};
use crate::web_controls::WebControls;
use crate::web_model::WebModel;
use crate::worker::{Worker, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data folder {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot start the in-process worker")]
    Worker(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub queue: Queue,
    pub github: Arc<dyn GitHubApi>,
    pub storage: Storage,
    /// Posts builds' commit statuses, in order.
    pub statuses: StatusReporter,
}

impl AppState {
    /// Opens what the configuration names: the data folder, the database
    /// (migrated), GitHub and storage, each logged in one line.
    pub async fn open(config: &Config) -> Result<Self, ServeError> {
        for dir in [config.data_dir.clone(), config.storage_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| ServeError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let database_url = config.resolved_database_url();
        let db = Db::connect(&database_url).await?;
        tracing::info!("database: {}", redact_url(&database_url));
        let github = GitHubClient::from_config(config)?;
        tracing::info!("github: {}", github.mode());
        let storage = Storage::open(&config.resolved_storage_url())?;
        tracing::info!("storage: {}", storage.describe());
        let github: Arc<dyn GitHubApi> = Arc::new(github);
        Ok(AppState {
            config: Arc::new(config.clone()),
            queue: Queue::new(db.clone()),
            db,
            statuses: StatusReporter::spawn(github.clone(), &config.resolved_public_url()),
            github,
            storage,
        })
    }
}

/// The hub's routes.
pub fn router(state: AppState) -> Router {
    // A half-configured OAuth client was refused at start (`Server::bind`).
    let oauth = OAuthClient::from_config(&state.config)
        .ok()
        .flatten()
        .map(Arc::new);
    let pages = sifhub_web::router(
        Arc::new(WebModel::new(state.db.clone(), state.storage.clone())),
        Arc::new(WebControls::new(state.clone(), oauth.clone())),
        sifhub_web::Site {
            public_url: state.config.resolved_public_url(),
            sign_in: oauth.is_some(),
            github_url: state.config.github_web_url.clone(),
        },
    );
    // Pages and sign-in learn who is looking from the session cookie.
    let browser = crate::web_auth::routes(state.clone(), oauth)
        // The pages last: their 404 page answers every path nothing else takes.
        .merge(pages)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::web_auth::visitor_layer,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::api::routes())
        .with_state(state)
        .merge(browser)
        .layer(axum::middleware::from_fn(log_request))
}

/// One log line per request: method, path (never the query, which may
/// carry signed parameters), status and time taken.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        "{method} {path} {} {:.1} ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!("not ready: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n"))
        }
    }
}

/// A bound server, so callers (and tests) learn the real address before it runs.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let state = AppState::open(config).await?;
        if OAuthClient::from_config(config)?.is_some() {
            tracing::info!("sign-in: with GitHub at {}", config.github_web_url);
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        // Repository scans pending from before a restart are picked up too.
        crate::github::scan::spawn_scanner(
            state.queue.clone(),
            state.github.clone(),
            state.statuses.clone(),
        );
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, with the in-process worker
    /// unless `worker_slots` is 0.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = match self.state.config.worker_slots {
            0 => None,
            slots => Some(self.start_worker(slots, stopped).await?),
        };
        let served = axum::serve(self.listener, router(self.state.clone()))
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .map_err(ServeError::Serve);
        if let Some((task, token_id)) = worker {
            let _ = task.await;
            // Its secret died with the worker; revoke the row too.
            let _ = self
                .state
                .db
                .revoke_token(token_id, self.state.queue.now())
                .await;
        }
        served
    }

    /// Runs the worker against this server's own address, with a token
    /// issued to itself: the same protocol as remote workers.
    async fn start_worker(
        &self,
        slots: usize,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(tokio::task::JoinHandle<()>, i64), ServeError> {
        let addr = self.listener.local_addr().map_err(ServeError::Serve)?;
        let (token, secret) = crate::api::worker::issue_worker_token(
            &self.state.db,
            "in-process worker",
            self.state.queue.now(),
        )
        .await
        .map_err(|e| ServeError::Worker(Box::new(e)))?;
        let config = &self.state.config;
        let host = match addr.ip() {
            ip if !ip.is_unspecified() => addr,
            std::net::IpAddr::V4(_) => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            }
            std::net::IpAddr::V6(_) => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
        };
        let mut settings = WorkerSettings::new(
            &format!("http://{host}"),
            Secret::new(secret),
            slots,
            config.data_dir.join("worker"),
        );
        settings.cache_dir = config.data_dir.join("cache").join("oci");
        settings.name = "in-process".to_owned();
        let worker = Worker::new(settings).map_err(|e| ServeError::Worker(Box::new(e)))?;
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        Ok((task, token.id))
    }
}
