//! Collections, containers with their tags, tag history and images.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    read_page, rfc3339, rfc3339_at, ApiError, ApiPath, ApiQuery, Caller, ErrorBody, Page,
    PageParams,
};
use crate::access::Viewer;
use crate::db::{Container, Permission, Repository, TaggedImage};
use crate::serve::AppState;

/// A collection in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionSummary {
    pub owner: String,
    pub name: String,
    /// Only its owner and collaborators see it.
    pub private: bool,
    /// How many containers it has.
    pub containers: i64,
    /// When a tag of it last moved; `null` before its first image.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// A collection (a GitHub repository the hub builds).
#[derive(Debug, Serialize, ToSchema)]
pub struct Collection {
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
    /// Branches whose pushes build; empty: the default branch.
    pub build_branches: Vec<String>,
    /// Pushes queue no builds while paused.
    pub paused: bool,
    /// What the caller may do: `read`, `write` or `admin`.
    pub permission: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A container in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerSummary {
    pub name: String,
    /// Tags that name an image.
    pub tags: i64,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// A container with its tags.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerDetail {
    pub owner: String,
    pub repo: String,
    pub name: String,
    /// Status of its latest build that was neither cancelled nor
    /// superseded; `null` before its first build.
    pub latest_build_status: Option<String>,
    pub tags: Vec<TagInfo>,
}

/// A tag and the image it names.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagInfo {
    pub name: String,
    /// A frozen tag keeps its image: rebuilds do not move it.
    pub frozen: bool,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// `sha256:<hex>` of the image's bytes.
    pub digest: String,
    pub size: i64,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    /// Where the image downloads from (by digest: it never changes).
    pub download_url: String,
}

/// An image a tag got.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagMove {
    pub tag: String,
    pub digest: String,
    pub size: i64,
    #[schema(format = DateTime)]
    pub moved_at: String,
    /// When the tag moved on; `null` while it still names the image.
    #[schema(format = DateTime)]
    pub replaced_at: Option<String>,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
}

/// Where an image came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provenance {
    /// `owner/name` of the collection that built or received it, when the
    /// caller may read that collection.
    pub collection: Option<String>,
    pub commit_sha: Option<String>,
    pub recipe_path: Option<String>,
    /// The image it was built from, for `Bootstrap: docker|oras|library`.
    pub base_image_digest: Option<String>,
    pub builder_version: Option<String>,
    /// Uploaded by a client (`apptainer push`) rather than built here.
    pub pushed: bool,
}

/// An image by its digest.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageInfo {
    pub digest: String,
    pub size: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub provenance: Provenance,
    /// The image's labels (`%labels`), values as text.
    pub labels: BTreeMap<String, String>,
    /// Everything the hub read from the SIF: header, descriptors, labels,
    /// help, runscript, recipe.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub download_url: String,
}

/// `?search=` with the page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CollectionQuery {
    /// Collections whose `owner/name` or a container name contains this,
    /// without case.
    pub search: Option<String>,
    /// `next_cursor` of the previous page; none for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// `?tag=` with the page parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this tag's history.
    pub tag: Option<String>,
    /// `next_cursor` of the previous page; none for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// The repository `owner/repo` when `viewer` may read it; else not found,
/// private or missing alike.
pub(super) async fn readable(
    state: &AppState,
    viewer: &Viewer,
    owner: &str,
    repo: &str,
) -> Result<Repository, ApiError> {
    state
        .db
        .readable_repository(viewer, owner, repo)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("collection {owner}/{repo}")))
}

/// The container `name` of `repository`, or not found.
pub(super) async fn container_of(
    state: &AppState,
    repository: &Repository,
    name: &str,
) -> Result<Container, ApiError> {
    state
        .db
        .find_container(repository.id, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("container {}/{name}", repository.full_name())))
}

fn download_url(state: &AppState, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!(
        "{}/download/sha256/{hex}",
        state.config.resolved_public_url().trim_end_matches('/')
    )
}

/// Labels from SIF metadata (`labels`: an object); values that are not
/// strings as JSON.
fn labels(metadata: &serde_json::Value) -> BTreeMap<String, String> {
    metadata
        .get("labels")
        .and_then(serde_json::Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    (key.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/api/v1/collections",
    tag = "collections",
    summary = "List the collections the caller may read",
    params(CollectionQuery),
    responses(
        (status = 200, description = "a page of collections by owner and name", body = Page<CollectionSummary>),
        (status = 400, description = "bad cursor or limit", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
    )
)]
pub async fn list_collections(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiQuery(query): ApiQuery<CollectionQuery>,
) -> Result<Json<Page<CollectionSummary>>, ApiError> {
    let page = read_page::<(String, String)>(query.cursor.as_deref(), query.limit)?;
    let rows = state
        .db
        .visible_collections(
            &viewer,
            query.search.as_deref().unwrap_or(""),
            page.after.as_ref(),
            i64::from(page.limit) + 1,
        )
        .await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |row| (row.sort_owner.clone(), row.sort_name.clone()),
        |row| CollectionSummary {
            owner: row.owner,
            name: row.name,
            private: row.private,
            containers: row.containers,
            updated_at: row.updated_at.map(rfc3339),
        },
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}",
    tag = "collections",
    summary = "A collection",
    params(("owner" = String, Path, description = "GitHub owner"), ("repo" = String, Path, description = "GitHub repository")),
    responses(
        (status = 200, description = "the collection", body = Collection),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such collection, or a private one the caller may not read", body = ErrorBody),
    )
)]
pub async fn get_collection(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
) -> Result<Json<Collection>, ApiError> {
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    let permission = state
        .db
        .permission(&viewer, &repository)
        .await?
        .unwrap_or(Permission::Read);
    Ok(Json(collection_view(repository, permission)))
}

/// A collection as the API shows it to a caller with `permission`.
pub(super) fn collection_view(repository: Repository, permission: Permission) -> Collection {
    Collection {
        owner: repository.owner,
        name: repository.name,
        private: repository.private,
        default_branch: repository.default_branch,
        build_branches: repository.build_branches,
        paused: repository.paused,
        permission: permission.to_string(),
        created_at: rfc3339_at(repository.created_at),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}/containers",
    tag = "collections",
    summary = "A collection's containers, by name",
    params(("owner" = String, Path), ("repo" = String, Path), PageParams),
    responses(
        (status = 200, description = "a page of containers by name", body = Page<ContainerSummary>),
        (status = 400, description = "bad cursor or limit", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such collection, or a private one", body = ErrorBody),
    )
)]
pub async fn list_containers(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Page<ContainerSummary>>, ApiError> {
    let page = params.read::<String>()?;
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    let rows = state
        .db
        .containers_after(
            repository.id,
            page.after.as_deref().unwrap_or(""),
            i64::from(page.limit) + 1,
        )
        .await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |row| row.name.clone(),
        |row| ContainerSummary {
            name: row.name,
            tags: row.tags,
            updated_at: row.updated_at.map(rfc3339),
        },
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}/containers/{container}",
    tag = "collections",
    summary = "A container with its tags and the images they name",
    params(("owner" = String, Path), ("repo" = String, Path), ("container" = String, Path)),
    responses(
        (status = 200, description = "the container and its tags", body = ContainerDetail),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such container or collection, or a private one", body = ErrorBody),
    )
)]
pub async fn get_container(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo, container)): ApiPath<(String, String, String)>,
) -> Result<Json<ContainerDetail>, ApiError> {
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    let found = container_of(&state, &repository, &container).await?;
    let tags = state.db.tagged_images(found.id).await?;
    let latest_build_status = state.db.latest_build_status(found.id, None).await?;
    Ok(Json(ContainerDetail {
        owner: repository.owner,
        repo: repository.name,
        name: found.name,
        latest_build_status,
        tags: tags.into_iter().map(|t| tag_info(&state, t)).collect(),
    }))
}

fn tag_info(state: &AppState, tagged: TaggedImage) -> TagInfo {
    TagInfo {
        download_url: download_url(state, &tagged.digest),
        name: tagged.tag,
        frozen: tagged.frozen,
        updated_at: rfc3339(tagged.updated_at),
        digest: tagged.digest,
        size: tagged.size,
        commit_sha: tagged.commit_sha,
        recipe_path: tagged.recipe_path,
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/collections/{owner}/{repo}/containers/{container}/history",
    tag = "collections",
    summary = "The images a container's tags got, newest first",
    params(("owner" = String, Path), ("repo" = String, Path), ("container" = String, Path), HistoryQuery),
    responses(
        (status = 200, description = "a page of tag moves, newest first", body = Page<TagMove>),
        (status = 400, description = "bad cursor or limit", body = ErrorBody),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such container or collection, or a private one", body = ErrorBody),
    )
)]
pub async fn container_history(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath((owner, repo, container)): ApiPath<(String, String, String)>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Page<TagMove>>, ApiError> {
    let page = read_page::<i64>(query.cursor.as_deref(), query.limit)?;
    let repository = readable(&state, &viewer, &owner, &repo).await?;
    let found = container_of(&state, &repository, &container).await?;
    let rows = state
        .db
        .tag_history_before(
            found.id,
            query.tag.as_deref(),
            page.after.unwrap_or(i64::MAX),
            i64::from(page.limit) + 1,
        )
        .await?;
    Ok(Json(Page::from_rows(
        rows,
        page.limit,
        |row| row.id,
        |row| TagMove {
            tag: row.tag,
            digest: row.digest,
            size: row.size,
            moved_at: rfc3339(row.moved_at),
            replaced_at: row.replaced_at.map(rfc3339),
            commit_sha: row.commit_sha,
            recipe_path: row.recipe_path,
        },
    )))
}

#[utoipa::path(
    get,
    path = "/api/v1/images/{digest}",
    tag = "images",
    summary = "An image by digest: metadata, provenance, labels",
    params(("digest" = String, Path, description = "`sha256:<64 hex>`")),
    responses(
        (status = 200, description = "the image", body = ImageInfo),
        (status = 401, description = "unknown, expired or revoked credentials", body = ErrorBody),
        (status = 404, description = "no such image, or only in collections the caller may not read", body = ErrorBody),
    )
)]
pub async fn get_image(
    State(state): State<AppState>,
    Caller(viewer): Caller,
    ApiPath(digest): ApiPath<String>,
) -> Result<Json<ImageInfo>, ApiError> {
    let image = state
        .db
        .find_readable_image_by_digest(&viewer, &digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("image {digest}")))?;
    let collection = match image.repository_id {
        Some(id) => match state.db.find_repository_by_id(id).await? {
            Some(repository) => state
                .db
                .permission(&viewer, &repository)
                .await?
                .map(|_| repository.full_name()),
            None => None,
        },
        None => None,
    };
    Ok(Json(ImageInfo {
        download_url: download_url(&state, &image.digest),
        labels: labels(&image.sif_metadata),
        digest: image.digest,
        size: image.size,
        created_at: rfc3339_at(image.created_at),
        provenance: Provenance {
            collection,
            commit_sha: image.commit_sha,
            recipe_path: image.recipe_path,
            base_image_digest: image.base_image_digest,
            builder_version: image.builder_version,
            pushed: image.pushed,
        },
        metadata: image.sif_metadata,
    }))
}
