//! `/{owner}/{repo}/{container}`: tags with their images, pull commands
//! for every client, download buttons, labels, help and runscript.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::format;
use crate::model::{BuildSummary, TagView, Visitor};
use crate::{Site, WebState};

use super::{Header, PageError, TimeText};

#[derive(Template)]
#[template(path = "container.html")]
struct ContainerPage {
    header: Header,
    owner: String,
    repo: String,
    name: String,
    tags: Vec<TagRow>,
    builds: Vec<BuildSummary>,
    /// Markdown that embeds the build badge, linking here.
    badge_markdown: String,
}

struct TagRow {
    tag: TagView,
    pulls: Vec<Pull>,
    /// `/download/owner/repo/container:tag`.
    download_href: String,
}

/// One client's command to fetch the image.
struct Pull {
    client: &'static str,
    command: String,
}

impl TagView {
    pub fn size_text(&self) -> String {
        format::size(self.size)
    }

    pub fn updated_time(&self) -> TimeText {
        TimeText::of(self.updated_at)
    }
}

/// The commands that fetch `owner/repo/container:tag` with each client.
/// `shub://` names only a collection's root container (the one named
/// after the repository), as Singularity Hub did.
fn pulls(site: &Site, owner: &str, repo: &str, container: &str, tag: &str) -> Vec<Pull> {
    let host = site.host();
    let mut pulls = Vec::new();
    if container == repo {
        pulls.push(Pull {
            client: "shub",
            command: format!(
                "apptainer pull shub://{}/{owner}/{repo}:{tag}",
                site.host_without_port()
            ),
        });
    }
    pulls.push(Pull {
        client: "library",
        command: format!("apptainer pull library://{host}/{owner}/{repo}/{container}:{tag}"),
    });
    pulls.push(Pull {
        client: "oras",
        command: format!("apptainer pull oras://{host}/{owner}/{repo}/{container}:{tag}"),
    });
    pulls.push(Pull {
        client: "curl",
        command: format!(
            "curl -L -O {}/download/{owner}/{repo}/{container}:{tag}",
            site.public_url
        ),
    });
    pulls
}

pub(crate) async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo, container)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let view = state
        .model
        .container(&visitor, &owner, &repo, &container)
        .await?
        .ok_or(PageError::NotFound)?;
    // The stored spelling of names, not the URL's (owners compare without case).
    let tags = view
        .tags
        .into_iter()
        .map(|tag| TagRow {
            pulls: pulls(&state.site, &view.owner, &view.repo, &view.name, &tag.name),
            download_href: format!(
                "/download/{}/{}/{}:{}",
                view.owner, view.repo, view.name, tag.name
            ),
            tag,
        })
        .collect();
    let page_url = format!(
        "{}/{}/{}/{}",
        state.site.public_url, view.owner, view.repo, view.name
    );
    let page = ContainerPage {
        header: Header::new(&state.site, &visitor),
        badge_markdown: format!("[![build status]({page_url}/badge.svg)]({page_url})"),
        owner: view.owner,
        repo: view.repo,
        name: view.name,
        tags,
        builds: view.builds,
    };
    Ok(super::render(StatusCode::OK, &page))
}
