//! The web pages' read model over the hub's database and storage: what
//! `sifhub_web` shows, read through [`sifhub_web::ReadModel`]. Every
//! lookup goes through the visitor's access (`crate::access`): a private
//! repository is found only by its owner and members, and is missing for
//! everyone else.

use sifhub_web::model::{
    BuildListItem, BuildSummary, BuildView, BuildsQuery, CatalogQuery, CatalogResults, CatalogSort,
    CollectionControls, CollectionSummary, CollectionView, ContainerSummary, ContainerView,
    FeedView, LatestTag, LogTail, ModelError, Page, ReadModel, RecipeRow, TagMove, TagView,
    Visitor,
};

use crate::access::{Via, Viewer, ViewerUser};
use crate::db::{
    BuildEntry, BuildFilter, CatalogEntry, CatalogOrder, Db, Permission, Repository, TaggedImage,
    CATALOG_COUNT_CAP,
};
use crate::storage::{Storage, StorageError, StorageKey};

/// Builds listed on a collection or container page.
const RECENT_BUILDS: i64 = 20;

/// [`ReadModel`] over a [`Db`] and [`Storage`].
#[derive(Debug, Clone)]
pub struct WebModel {
    db: Db,
    storage: Storage,
}

impl WebModel {
    pub fn new(db: Db, storage: Storage) -> Self {
        Self { db, storage }
    }

    /// The repository `owner/repo`, unless it is missing or the visitor
    /// may not read it.
    async fn readable_repository(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
    ) -> Result<Option<Repository>, ModelError> {
        self.db
            .readable_repository(&viewer_of(visitor), owner, repo)
            .await
            .map_err(ModelError::read("repository"))
    }

    /// The settings and recipes of `repository` when the visitor may
    /// change them (write or admin).
    async fn controls(
        &self,
        viewer: &Viewer,
        repository: &Repository,
    ) -> Result<Option<CollectionControls>, ModelError> {
        let permission = self
            .db
            .permission(viewer, repository)
            .await
            .map_err(ModelError::read("permission"))?;
        if permission < Some(Permission::Write) {
            return Ok(None);
        }
        let recipes = self
            .db
            .list_recipes(repository.id)
            .await
            .map_err(ModelError::read("recipes"))?;
        Ok(Some(CollectionControls {
            build_branches: repository.build_branches.clone(),
            private: repository.private,
            paused: repository.paused,
            recipes: recipes
                .into_iter()
                .map(|r| RecipeRow {
                    path: r.path,
                    container: r.container_name,
                    tag: r.tag,
                })
                .collect(),
        }))
    }
}

/// Who the hub's access rules see in a page's visitor: the signed-in
/// session's user, or nobody.
pub fn viewer_of(visitor: &Visitor) -> Viewer {
    match &visitor.user {
        Some(user) => Viewer {
            user: Some(ViewerUser {
                id: user.id,
                login: user.login.clone(),
            }),
            via: Via::Session,
        },
        None => Viewer::anonymous(),
    }
}

fn collection_summary(entry: CatalogEntry) -> CollectionSummary {
    let latest = match (entry.latest_container, entry.latest_tag, entry.latest_size) {
        (Some(container), Some(tag), Some(size)) => Some(LatestTag {
            container,
            tag,
            size,
        }),
        _ => None,
    };
    CollectionSummary {
        owner: entry.owner,
        name: entry.name,
        containers: entry.containers,
        updated_at: entry.updated_at,
        latest,
        status: entry.status,
        downloads: entry.downloads,
    }
}

fn build_summary(entry: BuildEntry) -> BuildSummary {
    BuildSummary {
        id: entry.id,
        status: entry.status,
        container: entry.container,
        tag: entry.tag,
        branch: entry.branch,
        commit_sha: entry.commit_sha,
        queued_at: entry.queued_at,
        started_at: entry.started_at,
        finished_at: entry.finished_at,
    }
}

/// A tag's view, with labels, help and runscript from the image's SIF
/// metadata when it has them (`labels`: an object; `help`, `runscript`:
/// strings). Label values that are not strings show as JSON.
fn tag_view(tagged: TaggedImage) -> TagView {
    let metadata = &tagged.sif_metadata;
    let labels = metadata
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
        .unwrap_or_default();
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    TagView {
        help: text("help"),
        runscript: text("runscript"),
        labels,
        name: tagged.tag,
        frozen: tagged.frozen,
        updated_at: tagged.updated_at,
        digest: tagged.digest,
        size: tagged.size,
        commit_sha: tagged.commit_sha,
        recipe_path: tagged.recipe_path,
        pushed: tagged.pushed,
    }
}

#[async_trait::async_trait]
impl ReadModel for WebModel {
    async fn catalog(
        &self,
        visitor: &Visitor,
        query: &CatalogQuery,
    ) -> Result<CatalogResults, ModelError> {
        let viewer = viewer_of(visitor);
        let order = match query.sort {
            CatalogSort::Name => CatalogOrder::Name,
            CatalogSort::Updated => CatalogOrder::Updated,
            CatalogSort::Downloads => CatalogOrder::Downloads,
        };
        let per_page = i64::from(query.per_page);
        let offset = i64::from(query.page.saturating_sub(1)) * per_page;
        // One more than a page tells whether another follows.
        let mut entries = self
            .db
            .catalog_page(&viewer, &query.search, order, per_page + 1, offset)
            .await
            .map_err(ModelError::read("catalog"))?;
        // A search's page says how many it matched; otherwise (all, or a
        // page past the last match) count.
        let total = match entries.first().and_then(|e| e.matches) {
            Some(matches) => matches,
            None => self
                .db
                .catalog_count(&viewer, &query.search)
                .await
                .map_err(ModelError::read("catalog count"))?,
        };
        let has_next = entries.len() > query.per_page as usize;
        entries.truncate(query.per_page as usize);
        Ok(CatalogResults {
            page: Page {
                items: entries.into_iter().map(collection_summary).collect(),
                has_next,
            },
            total: total.min(CATALOG_COUNT_CAP),
            total_capped: total > CATALOG_COUNT_CAP,
        })
    }

    async fn collection(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
    ) -> Result<Option<CollectionView>, ModelError> {
        let Some(repository) = self.readable_repository(visitor, owner, repo).await? else {
            return Ok(None);
        };
        let controls = self.controls(&viewer_of(visitor), &repository).await?;
        let containers = self
            .db
            .container_entries(repository.id)
            .await
            .map_err(ModelError::read("containers"))?;
        let builds = self
            .db
            .repository_builds(repository.id, RECENT_BUILDS)
            .await
            .map_err(ModelError::read("builds"))?;
        Ok(Some(CollectionView {
            owner: repository.owner,
            name: repository.name,
            default_branch: repository.default_branch,
            private: repository.private,
            controls,
            containers: containers
                .into_iter()
                .map(|c| ContainerSummary {
                    name: c.name,
                    tags: c.tags,
                    updated_at: c.updated_at,
                })
                .collect(),
            builds: builds.into_iter().map(build_summary).collect(),
        }))
    }

    async fn container(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: &str,
    ) -> Result<Option<ContainerView>, ModelError> {
        let Some(repository) = self.readable_repository(visitor, owner, repo).await? else {
            return Ok(None);
        };
        let Some(found) = self
            .db
            .find_container(repository.id, container)
            .await
            .map_err(ModelError::read("container"))?
        else {
            return Ok(None);
        };
        let tags = self
            .db
            .tagged_images(found.id)
            .await
            .map_err(ModelError::read("tags"))?;
        let builds = self
            .db
            .container_builds(found.id, RECENT_BUILDS)
            .await
            .map_err(ModelError::read("builds"))?;
        Ok(Some(ContainerView {
            owner: repository.owner,
            repo: repository.name,
            name: found.name,
            tags: tags.into_iter().map(tag_view).collect(),
            builds: builds.into_iter().map(build_summary).collect(),
        }))
    }

    async fn feed(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: Option<&str>,
        limit: i64,
    ) -> Result<Option<FeedView>, ModelError> {
        let Some(repository) = self.readable_repository(visitor, owner, repo).await? else {
            return Ok(None);
        };
        let (container, moves) = match container {
            None => (
                None,
                self.db
                    .repository_tag_moves(repository.id, limit)
                    .await
                    .map_err(ModelError::read("tag moves"))?,
            ),
            Some(name) => {
                let Some(found) = self
                    .db
                    .find_container(repository.id, name)
                    .await
                    .map_err(ModelError::read("container"))?
                else {
                    return Ok(None);
                };
                let moves = self
                    .db
                    .container_tag_moves(found.id, limit)
                    .await
                    .map_err(ModelError::read("tag moves"))?;
                (Some(found.name), moves)
            }
        };
        Ok(Some(FeedView {
            owner: repository.owner,
            repo: repository.name,
            container,
            entries: moves
                .into_iter()
                .map(|m| TagMove {
                    container: m.container,
                    tag: m.tag,
                    digest: m.digest,
                    moved_at: m.moved_at,
                    commit_sha: m.commit_sha,
                    recipe_path: m.recipe_path,
                })
                .collect(),
        }))
    }

    async fn build_status(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        container: &str,
        tag: Option<&str>,
    ) -> Result<Option<Option<String>>, ModelError> {
        let Some(repository) = self.readable_repository(visitor, owner, repo).await? else {
            return Ok(None);
        };
        let Some(found) = self
            .db
            .find_container(repository.id, container)
            .await
            .map_err(ModelError::read("container"))?
        else {
            return Ok(None);
        };
        let status = self
            .db
            .latest_build_status(found.id, tag)
            .await
            .map_err(ModelError::read("latest build"))?;
        Ok(Some(status))
    }

    async fn build(&self, visitor: &Visitor, id: i64) -> Result<Option<BuildView>, ModelError> {
        let detail = self
            .db
            .readable_build(&viewer_of(visitor), id)
            .await
            .map_err(ModelError::read("build"))?;
        Ok(detail.map(|d| BuildView {
            summary: build_summary(d.entry),
            owner: d.owner,
            repo: d.repo,
            recipe_path: d.recipe_path,
            trigger: d.trigger_kind,
            attempt: d.attempt,
            error: d.error,
            image_digest: d.image_digest,
        }))
    }

    async fn build_log(&self, visitor: &Visitor, id: i64) -> Result<Option<String>, ModelError> {
        let Some(detail) = self
            .db
            .readable_build(&viewer_of(visitor), id)
            .await
            .map_err(ModelError::read("build"))?
        else {
            return Ok(None);
        };
        if detail.log_key.is_some() {
            match self.storage.get_bytes(&StorageKey::build_log(id)).await {
                Ok(bytes) => return Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                // Not written yet (the build is ending): the chunks still hold it.
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(ModelError::read("build log")(e)),
            }
        }
        let text = self
            .db
            .build_log_text(id, detail.attempt)
            .await
            .map_err(ModelError::read("build log chunks"))?;
        Ok(Some(text))
    }

    async fn log_since(
        &self,
        visitor: &Visitor,
        id: i64,
        attempt: Option<i64>,
        after_seq: i64,
    ) -> Result<Option<LogTail>, ModelError> {
        let Some(detail) = self
            .db
            .readable_build(&viewer_of(visitor), id)
            .await
            .map_err(ModelError::read("build"))?
        else {
            return Ok(None);
        };
        let after_seq = if attempt == Some(detail.attempt) {
            after_seq
        } else {
            -1
        };
        let chunks = self
            .db
            .log_chunks_after(id, detail.attempt, after_seq)
            .await
            .map_err(ModelError::read("build log chunks"))?;
        Ok(Some(LogTail {
            status: detail.entry.status,
            attempt: detail.attempt,
            chunks,
        }))
    }

    async fn builds(
        &self,
        visitor: &Visitor,
        query: &BuildsQuery,
    ) -> Result<Option<Page<BuildListItem>>, ModelError> {
        let repository_id = match &query.collection {
            None => None,
            Some((owner, repo)) => match self.readable_repository(visitor, owner, repo).await? {
                Some(repository) => Some(repository.id),
                None => return Ok(None),
            },
        };
        let filter = BuildFilter {
            repository_id,
            status: query.status.clone(),
        };
        let per_page = i64::from(query.per_page);
        let offset = i64::from(query.page.saturating_sub(1)) * per_page;
        // One more than a page tells whether another follows.
        let mut entries = self
            .db
            .build_list(&viewer_of(visitor), &filter, per_page + 1, offset)
            .await
            .map_err(ModelError::read("builds"))?;
        let has_next = entries.len() > query.per_page as usize;
        entries.truncate(query.per_page as usize);
        Ok(Some(Page {
            items: entries
                .into_iter()
                .map(|e| BuildListItem {
                    owner: e.owner,
                    repo: e.repo,
                    summary: build_summary(e.entry),
                })
                .collect(),
            has_next,
        }))
    }
}
