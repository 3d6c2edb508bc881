//! What the pages read, and the trait the hub implements to answer it.
//! Plain data: the web crate never sees the database or storage. Every
//! lookup answers `None` for what a visitor may not see (unknown or
//! private alike), so a private collection is indistinguishable from a
//! missing one.

/// A failure of the read model (database or storage), shown as a 500.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}")]
pub struct ModelError {
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ModelError {
    /// Wraps an error with what was being read.
    pub fn read<E>(what: &'static str) -> impl FnOnce(E) -> ModelError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| ModelError {
            what,
            source: Box::new(source),
        }
    }
}

/// Who is looking at a page: the hub's session middleware puts one in
/// each request's extensions; a request without one is anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visitor {
    pub user: Option<SignedIn>,
    /// The session's token every form carries back; `None` when anonymous.
    pub csrf_token: Option<String>,
    /// The hub's key for the session (a hash, not the cookie's secret),
    /// for [`Controls`] to find what it keeps with it; no page shows it.
    pub session: Option<String>,
}

/// A signed-in visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The hub's user id.
    pub id: i64,
    pub login: String,
}

impl Visitor {
    /// The session's CSRF token, empty when anonymous (forms are then refused).
    pub fn csrf(&self) -> &str {
        self.csrf_token.as_deref().unwrap_or("")
    }

    /// Whether `sent` is this visitor's CSRF token: a signed-in session's,
    /// compared in constant time.
    pub fn csrf_matches(&self, sent: &str) -> bool {
        match (&self.user, &self.csrf_token) {
            (Some(_), Some(expected)) if expected.len() == sent.len() => {
                expected
                    .bytes()
                    .zip(sent.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
            }
            _ => false,
        }
    }
}

/// How the catalog is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatalogSort {
    /// By owner, then repository name.
    #[default]
    Name,
    /// Most recently updated tag first.
    Updated,
    /// Most downloaded first.
    Downloads,
}

impl CatalogSort {
    pub const fn as_str(self) -> &'static str {
        match self {
            CatalogSort::Name => "name",
            CatalogSort::Updated => "updated",
            CatalogSort::Downloads => "downloads",
        }
    }

    /// The sort a `?sort=` value names; anything else is the default.
    pub fn from_param(value: Option<&str>) -> Self {
        match value {
            Some("updated") => CatalogSort::Updated,
            Some("downloads") => CatalogSort::Downloads,
            _ => CatalogSort::Name,
        }
    }
}

/// One page of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogQuery {
    /// Text to find in owner, repository, container or tag names or label
    /// text; empty: all.
    pub search: String,
    pub sort: CatalogSort,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

/// Some items of a longer list, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
}

/// One page of the catalog, and how many collections match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogResults {
    pub page: Page<CollectionSummary>,
    /// Matching collections, counted up to a cap.
    pub total: i64,
    /// True when more than `total` match.
    pub total_capped: bool,
}

/// A collection (repository) as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSummary {
    pub owner: String,
    pub name: String,
    pub containers: i64,
    /// When a tag of it last moved (unix milliseconds); `None`: no images yet.
    pub updated_at: Option<i64>,
    /// The tag that moved last; `None`: no images yet.
    pub latest: Option<LatestTag>,
    /// Its latest build's status (as [`BuildSummary::status`]), leaving
    /// out cancelled and superseded builds; `None`: none built.
    pub status: Option<String>,
    /// Completed downloads of its images.
    pub downloads: i64,
}

/// The tag of a collection that moved last, and its image's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestTag {
    pub container: String,
    pub tag: String,
    pub size: i64,
}

/// A collection page: its containers and latest builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionView {
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub private: bool,
    pub containers: Vec<ContainerSummary>,
    /// Newest first.
    pub builds: Vec<BuildSummary>,
    /// What its owners may change; `Some` only for visitors with write
    /// or admin permission.
    pub controls: Option<CollectionControls>,
}

/// A collection's settings and recipes, for its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionControls {
    /// Empty: the default branch only.
    pub build_branches: Vec<String>,
    pub private: bool,
    pub paused: bool,
    /// By path.
    pub recipes: Vec<RecipeRow>,
}

/// A recipe file and what it builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeRow {
    pub path: String,
    pub container: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub name: String,
    /// Tags that name an image.
    pub tags: i64,
    pub updated_at: Option<i64>,
}

/// A container page: its tags with their images, and latest builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub owner: String,
    pub repo: String,
    pub name: String,
    /// By name.
    pub tags: Vec<TagView>,
    /// Newest first.
    pub builds: Vec<BuildSummary>,
}

/// A tag and the image it names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagView {
    pub name: String,
    pub frozen: bool,
    pub updated_at: i64,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: i64,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    /// From the image's SIF metadata, when it has them.
    pub labels: Vec<(String, String)>,
    pub help: Option<String>,
    pub runscript: Option<String>,
    /// Pushed by a client (`apptainer push`) rather than built here.
    pub pushed: bool,
}

/// A build as lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    pub id: i64,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, `superseded`.
    pub status: String,
    pub container: String,
    pub tag: String,
    pub branch: String,
    pub commit_sha: String,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Which builds a builds list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildsQuery {
    /// `(owner, repo)`: one collection's builds; `None`: every visible one.
    pub collection: Option<(String, String)>,
    /// One of [`BUILD_STATUSES`]; `None`: all.
    pub status: Option<String>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

/// The statuses a build can have, as lists filter them.
pub const BUILD_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "superseded",
];

/// A build in a builds list, with the collection it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildListItem {
    pub owner: String,
    pub repo: String,
    pub summary: BuildSummary,
}

/// A build page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildView {
    pub summary: BuildSummary,
    pub owner: String,
    pub repo: String,
    pub recipe_path: String,
    pub trigger: String,
    pub attempt: i64,
    pub error: Option<String>,
    /// The digest of the image it made, once succeeded.
    pub image_digest: Option<String>,
}

/// The images tags of a collection (or one container of it) got, for its
/// Atom feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedView {
    pub owner: String,
    pub repo: String,
    /// `None`: the whole collection.
    pub container: Option<String>,
    /// Newest first.
    pub entries: Vec<TagMove>,
}

/// A tag naming an image, from when on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMove {
    pub container: String,
    pub tag: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Unix milliseconds.
    pub moved_at: i64,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
}

/// What a live log viewer learns on each poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    /// The build's status, read before the chunks, so a finished status
    /// means the chunks include everything the worker sent.
    pub status: String,
    /// The build's current attempt: a retried build's log starts over.
    pub attempt: i64,
    /// `(seq, text)` of the current attempt's chunks after the asked-for
    /// sequence number (all of them when the asked-for attempt is not the
    /// current one), in order.
    pub chunks: Vec<(i64, String)>,
}

/// The read side of the hub, as the pages need it.
#[async_trait::async_trait]
pub trait ReadModel: Send + Sync {
    /// Collections the visitor may see matching the query.
    async fn catalog(
        &self,
        visitor: &Visitor,
        query: &CatalogQuery,
    ) -> Result<CatalogResults, ModelError>;

    async fn collection(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
    ) -> Result<Option<CollectionView>, ModelError>;

    async fn container(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: &str,
    ) -> Result<Option<ContainerView>, ModelError>;

    /// The latest images tags got, newest first, at most `limit`; of one
    /// container when `container` is given.
    async fn feed(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: Option<&str>,
        limit: i64,
    ) -> Result<Option<FeedView>, ModelError>;

    /// The status of the container's latest build (of `tag`, when given),
    /// leaving out cancelled and superseded ones; `Some(None)`: no build.
    async fn build_status(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: &str,
        tag: Option<&str>,
    ) -> Result<Option<Option<String>>, ModelError>;

    async fn build(&self, visitor: &Visitor, id: i64) -> Result<Option<BuildView>, ModelError>;

    /// The build's log: the stored one once it ended, the chunks streamed
    /// so far while it runs; `None` when the build is not visible.
    async fn build_log(&self, visitor: &Visitor, id: i64) -> Result<Option<String>, ModelError>;

    /// The build's status and its current attempt's log chunks after
    /// `after_seq` of `attempt` (from the start when `attempt` is `None` or
    /// not the current one); `None` when the build is not visible.
    async fn log_since(
        &self,
        visitor: &Visitor,
        id: i64,
        attempt: Option<i64>,
        after_seq: i64,
    ) -> Result<Option<LogTail>, ModelError>;

    /// A page of builds the visitor may see, newest first; `None` when
    /// the asked-for collection is not visible.
    async fn builds(
        &self,
        visitor: &Visitor,
        query: &BuildsQuery,
    ) -> Result<Option<Page<BuildListItem>>, ModelError>;
}

/// Why an owner's action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Unknown, or not visible to this visitor.
    #[error("not found")]
    NotFound,
    /// Visible, but the visitor may not change it.
    #[error("{0}")]
    Forbidden(String),
    /// The request does not make sense (unknown recipe, bad branch name).
    #[error("{0}")]
    Invalid(String),
    /// GitHub could not be asked (down, token expired).
    #[error("{0}")]
    Upstream(String),
    #[error(transparent)]
    Failed(#[from] ModelError),
}

/// A repository the App can see, on the connect page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRepo {
    pub owner: String,
    pub name: String,
    pub private: bool,
    /// Added to the hub and not paused.
    pub enabled: bool,
    /// The visitor may enable or disable it (write or admin on GitHub).
    pub can_manage: bool,
}

/// An account the App is installed on, with the repositories it grants
/// that the visitor can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAccount {
    pub login: String,
    pub repos: Vec<ConnectRepo>,
}

/// The connect page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectView {
    pub accounts: Vec<ConnectAccount>,
    /// Where to install the App (`{github}/apps/{slug}/installations/new`);
    /// `None` when the hub does not know its App's slug.
    pub install_href: Option<String>,
    /// The App is not installed on the visitor's own account.
    pub own_account_missing: bool,
}

/// What an owner may change about a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsChange {
    /// Empty: the default branch only.
    pub build_branches: Vec<String>,
    pub private: bool,
    pub paused: bool,
}

/// The write side: connecting repositories and owners' controls. Each
/// call checks the visitor's permission itself.
#[async_trait::async_trait]
pub trait Controls: Send + Sync {
    /// The visitor's repositories the App can see.
    async fn connect(&self, visitor: &Visitor) -> Result<ConnectView, ControlError>;

    /// Enables (adds and unpauses, queueing the first builds) or disables
    /// (pauses) `owner/repo`.
    async fn set_enabled(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        enabled: bool,
    ) -> Result<(), ControlError>;

    async fn update_settings(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        change: &SettingsChange,
    ) -> Result<(), ControlError>;

    /// Queues a build of the recipe at `recipe_path` at its branch head;
    /// returns the build's id.
    async fn rebuild(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        recipe_path: &str,
    ) -> Result<i64, ControlError>;
}
