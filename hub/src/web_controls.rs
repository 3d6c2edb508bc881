//! The web pages' write side ([`sifhub_web::Controls`]): the connect page
//! asks GitHub, as the signed-in user (the token kept with their session),
//! which repositories the App can see and what the user may do to them;
//! the buttons go through [`crate::actions`].

use std::sync::Arc;

use sifhub_web::model::{
    ConnectAccount, ConnectRepo, ConnectView, ControlError, Controls, ModelError, SettingsChange,
    Visitor,
};

use crate::actions::{self, ActionError, SettingsUpdate};
use crate::config::Secret;
use crate::db::Permission;
use crate::github::oauth::{OAuthClient, UserInstallation, UserRepository};
use crate::serve::AppState;
use crate::web_model::viewer_of;

/// [`Controls`] over the hub's state and GitHub's OAuth client.
#[derive(Clone)]
pub struct WebControls {
    state: AppState,
    oauth: Option<Arc<OAuthClient>>,
}

impl WebControls {
    pub fn new(state: AppState, oauth: Option<Arc<OAuthClient>>) -> Self {
        Self { state, oauth }
    }

    /// The OAuth client and the signed-in visitor's GitHub token.
    async fn as_user(&self, visitor: &Visitor) -> Result<(&OAuthClient, Secret), ControlError> {
        let oauth = self.oauth.as_deref().ok_or_else(|| {
            ControlError::Invalid("signing in is not set up on this hub".to_owned())
        })?;
        let signed_out = || ControlError::Forbidden("sign in with GitHub first".to_owned());
        let token_hash = visitor.session.as_deref().ok_or_else(signed_out)?;
        let session = self
            .state
            .db
            .find_session(token_hash, self.state.queue.now())
            .await
            .map_err(ModelError::read("session"))?
            .ok_or_else(signed_out)?;
        let token = session.github_token.ok_or_else(signed_out)?;
        Ok((oauth, Secret::new(token)))
    }

    /// The installations the user can see, each with its repositories
    /// the user can reach.
    async fn reachable(
        &self,
        oauth: &OAuthClient,
        token: &Secret,
    ) -> Result<Vec<(UserInstallation, Vec<UserRepository>)>, ControlError> {
        let installations = oauth.user_installations(token).await.map_err(upstream)?;
        let mut found = Vec::with_capacity(installations.len());
        for installation in installations {
            let repos = oauth
                .installation_repositories(token, installation.id)
                .await
                .map_err(upstream)?;
            found.push((installation, repos));
        }
        Ok(found)
    }
}

fn upstream(e: crate::github::GitHubError) -> ControlError {
    ControlError::Upstream(e.to_string())
}

impl From<ActionError> for ControlError {
    fn from(err: ActionError) -> Self {
        match err {
            ActionError::NotFound(_) => ControlError::NotFound,
            ActionError::Forbidden(why) => ControlError::Forbidden(why),
            ActionError::Invalid(why) => ControlError::Invalid(why),
            ActionError::GitHub(e) => upstream(e),
            other => ControlError::Failed(ModelError::read("owner action")(other)),
        }
    }
}

#[async_trait::async_trait]
impl Controls for WebControls {
    async fn connect(&self, visitor: &Visitor) -> Result<ConnectView, ControlError> {
        let (oauth, token) = self.as_user(visitor).await?;
        let login = visitor.user.as_ref().map_or("", |u| u.login.as_str());
        let mut accounts = Vec::new();
        let mut own_account_missing = true;
        for (installation, repos) in self.reachable(oauth, &token).await? {
            if installation.account.eq_ignore_ascii_case(login) {
                own_account_missing = false;
            }
            let mut rows = Vec::with_capacity(repos.len());
            for remote in repos {
                let known = self
                    .state
                    .db
                    .find_repository_by_github_id(remote.github_id)
                    .await
                    .map_err(ModelError::read("repository"))?;
                rows.push(ConnectRepo {
                    enabled: known.is_some_and(|r| r.installation_id.is_some() && !r.paused),
                    can_manage: remote.permission >= Some(Permission::Write),
                    owner: remote.owner,
                    name: remote.name,
                    private: remote.private,
                });
            }
            rows.sort_by_key(|r| r.name.to_lowercase());
            accounts.push(ConnectAccount {
                login: installation.account,
                repos: rows,
            });
        }
        let config = &self.state.config;
        Ok(ConnectView {
            accounts,
            install_href: config
                .github_app_slug
                .as_ref()
                .map(|slug| format!("{}/apps/{slug}/installations/new", config.github_web_url)),
            own_account_missing,
        })
    }

    async fn set_enabled(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        enabled: bool,
    ) -> Result<(), ControlError> {
        let (oauth, token) = self.as_user(visitor).await?;
        // Only what GitHub shows this user through the App: nothing else
        // can be enabled from here.
        let found =
            self.reachable(oauth, &token)
                .await?
                .into_iter()
                .find_map(|(installation, repos)| {
                    repos
                        .into_iter()
                        .find(|r| {
                            r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(repo)
                        })
                        .map(|remote| (installation, remote))
                });
        let Some((installation, remote)) = found else {
            return Err(ControlError::NotFound);
        };
        if enabled {
            actions::enable_repository(&self.state, &installation, &remote).await?;
            // A collaborator (not the owner) who enabled a private
            // repository sees it now, not after signing in again.
            if let Some(user) = &visitor.user {
                actions::refresh_memberships(&self.state, oauth, &token, user.id).await?;
            }
        } else {
            actions::disable_repository(&self.state, &remote).await?;
        }
        Ok(())
    }

    async fn update_settings(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        change: &SettingsChange,
    ) -> Result<(), ControlError> {
        let update = SettingsUpdate {
            build_branches: change.build_branches.clone(),
            private: change.private,
            paused: change.paused,
        };
        actions::update_settings(&self.state, &viewer_of(visitor), owner, repo, &update).await?;
        Ok(())
    }

    async fn rebuild(
        &self,
        visitor: &Visitor,
        owner: &str,
        repo: &str,
        recipe_path: &str,
    ) -> Result<i64, ControlError> {
        Ok(
            actions::rebuild_recipe(&self.state, &viewer_of(visitor), owner, repo, recipe_path)
                .await?,
        )
    }
}
