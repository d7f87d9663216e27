//! Tokens for API clients, and who am I.

use actix_web::web::{Data, Json};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, TimeZone, Utc};
use platform_core::model::TenantMembership;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiJson;
use crate::error::{ApiError, ErrorBody};
use crate::session::{ApiAuth, client_address};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
}

/// Exchanges a username and password for a bearer token.
#[utoipa::path(
    post, path = "/api/v1/auth/token", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Token issued", body = TokenResponse),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn issue_token(
    state: Data<AppState>,
    req: HttpRequest,
    body: ApiJson<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { username, password } = body.0;
    let address = client_address(&req, state.config.trust_proxy);
    state
        .login_limiter
        .check(&username, &address)
        .map_err(ApiError::too_many_requests)?;
    let session = state
        .platform
        .login(&username, &password, Some(&address))
        .await?;
    let expires_at = Utc
        .timestamp_opt(session.claims.exp, 0)
        .single()
        .unwrap_or_else(Utc::now);
    Ok(HttpResponse::Ok().json(TokenResponse {
        token: session.token,
        token_type: "Bearer",
        expires_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub platform_admin: bool,
    pub tenants: Vec<TenantMembership>,
}

/// The caller and the tenants they belong to.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn me(auth: ApiAuth) -> Json<Me> {
    let p = auth.0.principal;
    Json(Me {
        platform_admin: p.is_platform_admin(),
        tenants: p.memberships().to_vec(),
        id: p.user_id,
        username: p.username,
        display_name: p.display_name,
    })
}
