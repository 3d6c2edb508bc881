//! GitHub App authentication: the App's JWT (RS256, signed with its private
//! key) and installation tokens cached per installation until shortly before
//! they expire.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::GitHubError;

/// GitHub accepts App JWTs for at most 10 minutes; 9 leaves room for clock
/// drift, as does dating `iat` a minute back.
const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
const JWT_BACKDATE: Duration = Duration::from_secs(60);

/// A cached installation token is replaced this long before it expires, so
/// a build never starts with a token about to die.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The App's identity: its id and private key.
pub struct AppKey {
    app_id: u64,
    key: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("app_id", &self.app_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl AppKey {
    /// Reads the App's PEM private key (PKCS#1, as GitHub hands it out, or
    /// PKCS#8).
    pub fn load(app_id: u64, path: &Path) -> Result<Self, GitHubError> {
        let what = format!("app {app_id} key {}", path.display());
        let pem = std::fs::read(path).map_err(|e| GitHubError::NotConfigured {
            what: what.clone(),
            message: format!("cannot read the private key file: {e}"),
        })?;
        Self::from_pem(app_id, &pem).map_err(|message| GitHubError::NotConfigured { what, message })
    }

    fn from_pem(app_id: u64, pem: &[u8]) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| format!("not a PEM private key ({e})"))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err("not an RSA private key (GitHub App keys are RSA)".to_owned()),
        }
        .map_err(|e| format!("invalid RSA private key: {e}"))?;
        Ok(Self { app_id, key })
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// A JWT authenticating as the App, valid for [`JWT_LIFETIME`].
    pub fn jwt(&self, now: SystemTime) -> Result<String, GitHubError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|e| GitHubError::NotConfigured {
                what: format!("app {} token", self.app_id),
                message: format!("system clock before 1970: {e}"),
            })?;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iat": now.saturating_sub(JWT_BACKDATE).as_secs(),
            "exp": (now + JWT_LIFETIME).as_secs(),
            "iss": self.app_id.to_string(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|e| GitHubError::NotConfigured {
                what: format!("app {} token", self.app_id),
                message: format!("cannot sign the App's JWT: {e}"),
            })?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// An installation token and when GitHub will stop accepting it.
#[derive(Clone)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl InstallationToken {
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        let margin = chrono::Duration::from_std(TOKEN_REFRESH_MARGIN).unwrap_or_default();
        now + margin < self.expires_at
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<InstallationToken>>>;

/// Installation tokens by installation id. Each installation has its own
/// async lock, held across a refresh, so concurrent callers wait for one
/// refresh instead of minting a token each.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<i64, Slot>>,
}

impl TokenCache {
    fn slot(&self, installation_id: i64) -> Slot {
        // A poisoned map only means another thread panicked mid-insert; the
        // map itself is still consistent.
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(installation_id).or_default().clone()
    }

    /// The cached token if it is fresh, else the one `mint` makes (cached).
    pub async fn get<F, Fut>(&self, installation_id: i64, mint: F) -> Result<String, GitHubError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<InstallationToken, GitHubError>>,
    {
        let slot = self.slot(installation_id);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.fresh(Utc::now())) {
            return Ok(token.token.clone());
        }
        let token = mint().await?;
        let value = token.token.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token (GitHub refused it: revoked, or the
    /// installation changed), so the next call mints a new one.
    pub async fn forget(&self, installation_id: i64) {
        let slot = self.slot(installation_id);
        *slot.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_key() {
        let err = AppKey::from_pem(1, b"hello").unwrap_err();
        assert!(err.contains("PEM"), "{err}");
    }

    #[test]
    fn tokens_are_fresh_until_the_margin() {
        let now = Utc::now();
        let token = |secs| InstallationToken {
            token: "t".to_owned(),
            expires_at: now + chrono::Duration::seconds(secs),
        };
        assert!(token(3600).fresh(now));
        assert!(!token(299).fresh(now));
        assert!(!token(-1).fresh(now));
    }
}
