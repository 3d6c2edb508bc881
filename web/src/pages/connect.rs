//! `/connect`: the signed-in visitor's repositories the App can see, each
//! with an enable or disable button (`POST /connect/{owner}/{repo}/enable`
//! and `…/disable`, with the session's CSRF token), and the link to
//! install the App where it is missing. Signed out, it sends the visitor
//! to sign in first.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use crate::model::{ConnectView, Visitor};
use crate::WebState;

use super::{check_csrf, Header, PageError};

#[derive(Template)]
#[template(path = "connect.html")]
struct ConnectPage {
    header: Header,
    login: String,
    view: ConnectView,
}

pub(crate) async fn page(
    State(state): State<WebState>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    let Some(user) = &visitor.user else {
        return Ok(Redirect::to("/login?next=/connect").into_response());
    };
    let view = state.controls.connect(&visitor).await?;
    Ok(super::render(
        StatusCode::OK,
        &ConnectPage {
            header: Header::new(&state.site, &visitor),
            login: user.login.clone(),
            view,
        },
    ))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
}

async fn set_enabled(
    state: WebState,
    visitor: Visitor,
    owner: String,
    repo: String,
    form: ActionForm,
    enabled: bool,
) -> Result<Response, PageError> {
    check_csrf(&visitor, &form.csrf)?;
    state
        .controls
        .set_enabled(&visitor, &owner, &repo, enabled)
        .await?;
    Ok(Redirect::to("/connect").into_response())
}

pub(crate) async fn enable(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    set_enabled(state, visitor, owner, repo, form, true).await
}

pub(crate) async fn disable(
    State(state): State<WebState>,
    visitor: Visitor,
    Path((owner, repo)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    set_enabled(state, visitor, owner, repo, form, false).await
}
