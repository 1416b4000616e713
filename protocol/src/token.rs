//! Submitter tokens: `POST/GET /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` (admin only).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Millis;

/// Longest name of a submitter token.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// Who or what the token is for (shown in listings).
    pub name: String,
}

/// A submitter token as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub created_at: Millis,
    /// Set once revoked; a revoked token authenticates nothing.
    #[serde(default)]
    pub revoked_at: Option<Millis>,
}

/// Answer to `POST /api/v1/tokens`: the only time the secret is shown; the coordinator keeps
/// its hash. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("view", &self.view)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}
