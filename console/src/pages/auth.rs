//! Signing in and out of the console.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{Data, Form, Query};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use platform_core::CoreError;
use platform_core::auth::tokens::random_token;
use serde::Deserialize;

use super::{Layout, PageError, render_with_status, see_other};
use crate::session::{
    Authenticated, PageAuth, clear_session_cookie, client_address, session_cookie,
};
use crate::state::AppState;

const LOGIN_CSRF_COOKIE: &str = "paas_login_csrf";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    error: Option<String>,
    username: String,
    next: String,
}

/// Only same-site paths are followed after login, never another origin.
fn safe_next(next: Option<&str>) -> String {
    // Resolved the way a browser resolves a `Location` (the WHATWG URL parser drops tabs
    // and newlines, so "/<TAB>/evil.example" is "//evil.example", another host), and
    // kept only if it stays on this origin. Control characters anywhere refuse it.
    let base = url::Url::parse("http://console.invalid/").ok();
    let same_origin = |n: &str| -> Option<String> {
        if !n.starts_with('/') || n.chars().any(char::is_control) {
            return None;
        }
        let base = base.as_ref()?;
        let resolved = base.join(n).ok()?;
        if resolved.origin() != base.origin() || resolved.path().starts_with("/login") {
            return None;
        }
        Some(resolved[url::Position::BeforePath..].to_owned())
    };
    next.and_then(same_origin).unwrap_or_else(|| "/".to_owned())
}

/// `/`: the user's first tenant, the platform pages for an admin without one.
pub async fn home(req: HttpRequest) -> HttpResponse {
    let Some(auth) = req.extensions().get::<Authenticated>().cloned() else {
        return see_other("/login");
    };
    let p = &auth.principal;
    if let Some(first) = p.memberships().first() {
        see_other(&format!("/t/{}", first.slug))
    } else if p.is_platform_admin() {
        see_other("/admin/tenants")
    } else {
        PageError::new(
            StatusCode::OK,
            "No tenant yet",
            "You are not a member of any tenant. Ask a tenant admin to add you.",
        )
        .within(Layout::for_user(&auth, "No tenant", ""))
        .error_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_page(
    status: StatusCode,
    error: Option<String>,
    username: String,
    next: String,
) -> Result<HttpResponse, PageError> {
    let csrf = random_token();
    let page = LoginPage {
        layout: Layout::anonymous("Sign in", csrf.clone()),
        error,
        username,
        next,
    };
    let mut response = render_with_status(&page, status)?;
    let cookie = Cookie::build(LOGIN_CSRF_COOKIE, csrf)
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    response.add_cookie(&cookie).map_err(|_| {
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "cookie",
        )
    })?;
    Ok(response)
}

pub async fn login_form(
    req: HttpRequest,
    query: Query<NextQuery>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(query.next.as_deref());
    if req.extensions().get::<Authenticated>().is_some() {
        return Ok(see_other(&next));
    }
    login_page(StatusCode::OK, None, String::new(), next)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    state: Data<AppState>,
    req: HttpRequest,
    form: Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    let expected = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("Your sign-in form expired. Please try again.".into()),
            form.username,
            next,
        );
    }
    let address = client_address(&req, state.config.trust_proxy);
    if let Err(wait) = state.login_limiter.check(&form.username, &address) {
        let mut response = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many sign-in attempts. Try again in {wait} seconds."
            )),
            form.username,
            next,
        )?;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(response);
    }
    match state
        .platform
        .login(&form.username, &form.password, Some(&address))
        .await
    {
        Ok(session) => {
            let ttl = session.claims.exp - session.claims.iat;
            let mut response = see_other(&next);
            response
                .add_cookie(&session_cookie(
                    session.token,
                    ttl,
                    secure_cookies(&state, &req),
                ))
                .map_err(|_| {
                    PageError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Something went wrong",
                        "cookie",
                    )
                })?;
            let mut removal = Cookie::build(LOGIN_CSRF_COOKIE, "").path("/login").finish();
            removal.make_removal();
            let _ = response.add_cookie(&removal);
            Ok(response)
        }
        Err(CoreError::InvalidCredentials) => login_page(
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password.".into()),
            form.username,
            next,
        ),
        Err(e) => Err(e.into()),
    }
}

pub async fn logout(
    state: Data<AppState>,
    auth: PageAuth,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    state
        .platform
        .logout(&auth.0.principal, &auth.0.claims)
        .await?;
    let mut response = see_other("/login");
    let _ = response.add_cookie(&clear_session_cookie(secure_cookies(&state, &req)));
    Ok(response)
}

/// Cookies are `Secure` when configured so, or when the request came over HTTPS.
fn secure_cookies(state: &AppState, req: &HttpRequest) -> bool {
    state.config.secure_cookies || req.connection_info().scheme() == "https"
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/t/acme")), "/t/acme");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        // What browsers resolve to another host, or a header cannot carry.
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/t/acme\r\nSet-Cookie: x=1")), "/");
        assert_eq!(safe_next(Some("/t/acme\0")), "/");
        assert_eq!(safe_next(Some(" //evil.example")), "/");
        assert_eq!(safe_next(Some("/%2F/evil.example")), "/%2F/evil.example");
        // Normalised: dot segments go, the query stays.
        assert_eq!(safe_next(Some("/t/../login")), "/");
        assert_eq!(
            safe_next(Some("/t/acme/../acme/apps?q=a b")),
            "/t/acme/apps?q=a%20b"
        );
        assert_eq!(safe_next(None), "/");
    }
}
