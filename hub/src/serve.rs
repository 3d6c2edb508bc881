//! The HTTP server. For now it carries the operational endpoints; the APIs
//! and the web UI are mounted here as they arrive.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::config::Config;
use crate::db::{redact_url, Db, DbError};
use crate::github::status::StatusReporter;
use crate::github::{GitHubApi, GitHubClient, GitHubError};
use crate::queue::Queue;
use crate::storage::{Storage, StorageError};

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
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::api::routes())
        .with_state(state)
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
    router: Router,
}

impl Server {
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let state = AppState::open(config).await?;
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
        Ok(Self {
            listener,
            router: router(state),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}
