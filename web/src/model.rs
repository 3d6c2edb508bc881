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
    pub containers: Vec<ContainerSummary>,
    /// Newest first.
    pub builds: Vec<BuildSummary>,
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
    /// Public collections matching the query.
    async fn catalog(&self, query: &CatalogQuery) -> Result<CatalogResults, ModelError>;

    async fn collection(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Option<CollectionView>, ModelError>;

    async fn container(
        &self,
        owner: &str,
        repo: &str,
        container: &str,
    ) -> Result<Option<ContainerView>, ModelError>;

    /// The latest images tags got, newest first, at most `limit`; of one
    /// container when `container` is given.
    async fn feed(
        &self,
        owner: &str,
        repo: &str,
        container: Option<&str>,
        limit: i64,
    ) -> Result<Option<FeedView>, ModelError>;

    /// The status of the container's latest build (of `tag`, when given),
    /// leaving out cancelled and superseded ones; `Some(None)`: no build.
    async fn build_status(
        &self,
        owner: &str,
        repo: &str,
        container: &str,
        tag: Option<&str>,
    ) -> Result<Option<Option<String>>, ModelError>;

    async fn build(&self, id: i64) -> Result<Option<BuildView>, ModelError>;

    /// The build's log: the stored one once it ended, the chunks streamed
    /// so far while it runs; `None` when the build is not visible.
    async fn build_log(&self, id: i64) -> Result<Option<String>, ModelError>;

    /// The build's status and its current attempt's log chunks after
    /// `after_seq` of `attempt` (from the start when `attempt` is `None` or
    /// not the current one); `None` when the build is not visible.
    async fn log_since(
        &self,
        id: i64,
        attempt: Option<i64>,
        after_seq: i64,
    ) -> Result<Option<LogTail>, ModelError>;
}
