//! What a request is about, resolved once for every handler: the tenant named by the
//! path's `{tenant}` (as the authenticated caller may see it) and, below it, the
//! application named by `{env}` and `{app}`.
//!
//! # Guarantees
//! - A handler that takes one of these extractors runs only for an authenticated caller
//!   who may see the tenant; a tenant the caller may not see answers exactly as one that
//!   does not exist (404), so tenants cannot be discovered.
//! - API extractors answer with the API's JSON errors; page extractors send an
//!   anonymous visitor to the login form and show other errors as console pages.
//!
//! # Assumptions
//! - Routes that use them name their path segments `{tenant}`, `{env}` and `{app}`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use platform_core::CoreError;
use platform_core::authz::TenantAccess;

use crate::error::ApiError;
use crate::pages::{Layout, PageError};
use crate::session::{ApiAuth, Authenticated, PageAuth};
use crate::state::AppState;

/// The segments of the request's path, and the server's state.
struct Named {
    state: Option<Data<AppState>>,
    tenant: Option<String>,
    env: Option<String>,
    app: Option<String>,
}

impl Named {
    fn of(req: &HttpRequest) -> Self {
        let segment = |name: &str| req.match_info().get(name).map(str::to_owned);
        Self {
            state: req.app_data::<Data<AppState>>().cloned(),
            tenant: segment("tenant"),
            env: segment("env"),
            app: segment("app"),
        }
    }
}

/// A route without the segment an extractor needs is a programming error; it is
/// answered as a server error rather than a panic.
fn misrouted(what: &str) -> ApiError {
    tracing::error!(
        what,
        "a scope extractor is used on a route without its path segment"
    );
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the server could not handle this request",
    )
}

/// The tenant as `auth` may see it; the outer error is a misrouted extractor.
async fn resolve(
    auth: &Authenticated,
    state: Option<Data<AppState>>,
    tenant: Option<String>,
) -> Result<Result<TenantAccess, CoreError>, ApiError> {
    let state = state.ok_or_else(|| misrouted("state"))?;
    let tenant = tenant.ok_or_else(|| misrouted("tenant"))?;
    Ok(state.platform.tenant(&auth.principal, &tenant).await)
}

/// API: the tenant of `{tenant}`.
#[derive(Debug)]
pub struct TenantScope {
    pub auth: Authenticated,
    pub access: TenantAccess,
}

impl FromRequest for TenantScope {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = ApiAuth::from_request(req, payload).into_inner();
        let named = Named::of(req);
        Box::pin(async move {
            let ApiAuth(auth) = auth?;
            let access = resolve(&auth, named.state, named.tenant).await??;
            Ok(Self { auth, access })
        })
    }
}

/// API: the application of `{tenant}/{env}/{app}`, within its tenant. Whether the
/// application exists is for the handler's call to tell (it answers 404 then).
#[derive(Debug)]
pub struct AppScope {
    pub auth: Authenticated,
    pub access: TenantAccess,
    pub env: String,
    pub app: String,
}

impl FromRequest for AppScope {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let tenant = TenantScope::from_request(req, payload);
        let named = Named::of(req);
        Box::pin(async move {
            let (Some(env), Some(app)) = (named.env, named.app) else {
                return Err(misrouted("app"));
            };
            let TenantScope { auth, access } = tenant.await?;
            Ok(Self {
                auth,
                access,
                env,
                app,
            })
        })
    }
}

/// API: an environment of the tenant (`{tenant}`, `{env}`); the environment itself is
/// looked up by the core operation that uses it.
#[derive(Debug)]
pub struct EnvScope {
    pub auth: Authenticated,
    pub access: TenantAccess,
    pub env: String,
}

impl FromRequest for EnvScope {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let tenant = TenantScope::from_request(req, payload);
        let named = Named::of(req);
        Box::pin(async move {
            let Some(env) = named.env else {
                return Err(misrouted("env"));
            };
            let TenantScope { auth, access } = tenant.await?;
            Ok(Self { auth, access, env })
        })
    }
}

/// Console: the tenant of `{tenant}`. Its errors are pages in the user's frame.
#[derive(Debug)]
pub struct PageTenant {
    pub auth: PageAuth,
    pub access: TenantAccess,
}

impl FromRequest for PageTenant {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = PageAuth::from_request(req, payload).into_inner();
        let named = Named::of(req);
        Box::pin(async move {
            let auth = auth?;
            match resolve(&auth.0, named.state, named.tenant).await? {
                Ok(access) => Ok(Self { auth, access }),
                Err(e) => Err(PageError::from(e)
                    .within(Layout::for_user(&auth.0, "Not found", ""))
                    .into()),
            }
        })
    }
}

/// Console: the environment of `{tenant}/{env}`, within its tenant.
#[derive(Debug)]
pub struct PageEnv {
    pub auth: PageAuth,
    pub access: TenantAccess,
    pub env: String,
}

impl FromRequest for PageEnv {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let tenant = PageTenant::from_request(req, payload);
        let named = Named::of(req);
        Box::pin(async move {
            let PageTenant { auth, access } = tenant.await?;
            let Some(env) = named.env else {
                return Err(misrouted("environment").into());
            };
            Ok(Self { auth, access, env })
        })
    }
}

/// Console: the application of `{tenant}/{env}/{app}`, within its tenant.
#[derive(Debug)]
pub struct PageApp {
    pub auth: PageAuth,
    pub access: TenantAccess,
    pub env: String,
    pub app: String,
}

impl FromRequest for PageApp {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let env = PageEnv::from_request(req, payload);
        let named = Named::of(req);
        Box::pin(async move {
            let PageEnv { auth, access, env } = env.await?;
            let Some(app) = named.app else {
                return Err(misrouted("app").into());
            };
            Ok(Self {
                auth,
                access,
                env,
                app,
            })
        })
    }
}

/// Path segments below a scope, taken by name (`Path<ActionSegment>` reads `{action}`).
macro_rules! segments {
    ($($name:ident { $field:ident }),* $(,)?) => {$(
        #[derive(Debug, serde::Deserialize)]
        pub struct $name {
            pub $field: String,
        }
    )*};
}

segments! {
    ActionSegment { action },
    ApplicationSegment { application },
    BrokerSegment { broker },
    BundleSegment { bundle },
    PlanSegment { plan },
    ServiceInstanceSegment { service_instance },
    InstanceSegment { instance },
    NameSegment { name },
    SecretSegment { secret },
    UsernameSegment { username },
}
