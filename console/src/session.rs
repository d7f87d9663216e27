//! Who is calling: the session cookie (browsers) or a bearer token (API clients),
//! resolved once per request by [`authenticate`], and the CSRF check on every
//! state-changing request made with a cookie.
//!
//! Bearer requests need no CSRF token: a browser never attaches an `Authorization`
//! header on its own, so a cross-site page cannot forge one.

use std::future::{Ready, ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use platform_core::auth::Claims;
use platform_core::authz::Principal;
use platform_core::platform::AuthFailure;

use crate::error::ApiError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "paas_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "_csrf";
/// Form bodies are read in full for the CSRF check; nothing the console posts is larger.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// An authenticated caller, placed in the request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub claims: Claims,
    pub via: Via,
}

/// A bearer token was presented and refused; the extractor answers 401 with this.
#[derive(Debug, Clone)]
struct RefusedBearer;

/// The client's address as the platform records it.
pub fn client_address(req: &HttpRequest, trust_proxy: bool) -> String {
    if trust_proxy && let Some(addr) = req.connection_info().realip_remote_addr() {
        return addr.to_owned();
    }
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn bearer_token(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn needs_no_caller(path: &str) -> bool {
    path.starts_with("/internal/")
        || path.starts_with("/static/")
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Resolves the caller and enforces CSRF on cookie sessions.
pub async fn authenticate(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = req.app_data::<Data<AppState>>().cloned() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "application state missing",
        )
        .into());
    };
    // The internal API authenticates agents with its own token; probes, metrics and
    // static assets serve everyone alike, so a session cookie sent along with them is
    // not looked up.
    if needs_no_caller(req.path()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let address = client_address(req.request(), state.config.trust_proxy);
    let (token, via) = match bearer_token(&req) {
        Some(token) => (Some(token), Via::Bearer),
        None => (
            req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()),
            Via::Cookie,
        ),
    };
    if let Some(token) = token {
        match state.platform.authenticate(&token, Some(&address)).await {
            Ok((principal, claims)) => {
                if via == Via::Cookie
                    && !is_safe(req.method())
                    && !csrf_matches(&mut req, &claims.csrf).await?
                {
                    let err = ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf_failed",
                        "the request lacks a valid CSRF token; reload the page and try again",
                    );
                    return Ok(req
                        .into_response(err.error_response())
                        .map_into_right_body());
                }
                req.extensions_mut().insert(Authenticated {
                    principal,
                    claims,
                    via,
                });
            }
            Err(AuthFailure::Core(e)) => {
                // A page gets the console's error page, the API its JSON body.
                let response = if req.path().starts_with("/api/") {
                    ApiError::from(e).error_response()
                } else {
                    crate::pages::PageError::from(e).error_response()
                };
                return Ok(req.into_response(response).map_into_right_body());
            }
            Err(reason) => {
                tracing::info!(%reason, via = ?via, address, "credentials refused");
                if via == Via::Bearer {
                    req.extensions_mut().insert(RefusedBearer);
                }
                // A stale cookie just makes the visitor anonymous: pages send them to the
                // login form.
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Compares the request's CSRF token (header, or `_csrf` in a form body) with the
/// session's, in constant time. Reads and restores a form body to find the field.
async fn csrf_matches(req: &mut ServiceRequest, expected: &str) -> Result<bool, Error> {
    if let Some(given) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return Ok(constant_time_eq(given.as_bytes(), expected.as_bytes()));
    }
    let is_form = req.content_type() == "application/x-www-form-urlencoded";
    if !is_form {
        return Ok(false);
    }
    let mut payload = req.take_payload();
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the form is too large",
            )
            .into());
        }
        body.extend_from_slice(&chunk);
    }
    let found = form_urlencoded_value(&body, CSRF_FIELD);
    req.set_payload(Payload::from(Bytes::from(body)));
    Ok(found.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())))
}

fn form_urlencoded_value(body: &[u8], key: &str) -> Option<String> {
    serde_urlencoded_pairs(body)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

/// Compares two secrets in a time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie holding `token` for `max_age_secs`.
pub fn session_cookie(token: String, max_age_secs: i64, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(CookieDuration::seconds(max_age_secs))
        .finish()
}

/// A cookie that deletes the session cookie.
pub fn clear_session_cookie(secure: bool) -> Cookie<'static> {
    let mut cookie = session_cookie(String::new(), 0, secure);
    cookie.make_removal();
    cookie
}

/// Extracts the authenticated caller for API handlers: 401 when there is none.
#[derive(Debug, Clone)]
pub struct ApiAuth(pub Authenticated);

impl FromRequest for ApiAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ext = req.extensions();
        ready(match ext.get::<Authenticated>() {
            Some(auth) => Ok(ApiAuth(auth.clone())),
            None if ext.get::<RefusedBearer>().is_some() => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token was refused",
            )),
            None => Err(ApiError::unauthenticated()),
        })
    }
}

/// Extracts the authenticated caller for console pages: a redirect to the login form
/// when there is none.
#[derive(Debug, Clone)]
pub struct PageAuth(pub Authenticated);

/// Sends an anonymous visitor to the login page, remembering where they were going.
#[derive(Debug)]
pub struct LoginRedirect(String);

impl std::fmt::Display for LoginRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "login required")
    }
}

impl ResponseError for LoginRedirect {
    fn status_code(&self) -> StatusCode {
        StatusCode::SEE_OTHER
    }

    fn error_response(&self) -> HttpResponse {
        let target = format!("/login?next={}", urlencode(&self.0));
        // htmx follows HX-Redirect with a full page load instead of swapping the login
        // page into a fragment.
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, target.clone()))
            .insert_header(("HX-Redirect", target))
            .finish()
    }
}

impl FromRequest for PageAuth {
    type Error = LoginRedirect;
    type Future = Ready<Result<Self, LoginRedirect>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.extensions().get::<Authenticated>() {
            Some(auth) => Ok(PageAuth(auth.clone())),
            None => {
                let next = if req.method() == Method::GET {
                    req.uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned()
                } else {
                    "/".to_owned()
                };
                Err(LoginRedirect(next))
            }
        })
    }
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn form_fields_are_found_and_decoded() {
        assert_eq!(
            form_urlencoded_value(b"a=1&_csrf=x%2By&b=2", "_csrf"),
            Some("x+y".to_owned())
        );
        assert_eq!(form_urlencoded_value(b"a=1", "_csrf"), None);
        assert_eq!(urlencode("/t/acme?x=1&y"), "%2Ft%2Facme%3Fx%3D1%26y");
    }
}
