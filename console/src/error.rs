//! HTTP errors: every failure becomes `{"error": "snake_case_code", "message": "..."}`
//! with a 4xx status for the client's mistakes and 5xx only for the platform's.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use platform_core::{CoreError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

/// The one error body of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `not_found`, `invalid_field`, `csrf_failed`.
    pub error: String,
    /// A sentence for humans.
    pub message: String,
    /// The request field to correct, when one is at fault (e.g. `spec.replicas`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid session or bearer token is required",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} was not found"),
        )
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after: None,
        }
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many attempts; try again later",
            )
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"paas\""),
            ));
        }
        response.json(ErrorBody {
            error: self.code.to_owned(),
            message: self.message.clone(),
            field: self.field.clone(),
        })
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::field(e.field, e.message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            CoreError::Invalid(_)
            | CoreError::BrokerUnavailable(_)
            | CoreError::QuotaExceeded { .. }
            | CoreError::Infeasible { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            CoreError::Conflict { .. } | CoreError::WrongState(_) => StatusCode::CONFLICT,
            CoreError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            CoreError::Forbidden { .. }
            | CoreError::PlatformAdminOnly { .. }
            | CoreError::NotPermitted(_) => StatusCode::FORBIDDEN,
            CoreError::InvalidCredentials | CoreError::Unauthenticated => StatusCode::UNAUTHORIZED,
            CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Store(_) if e.is_store_unreachable() => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Store(_) | CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Retry a dependency that is down a moment later.
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS);
        let message = if e.is_store_unreachable() {
            tracing::warn!(error = %e, "the database cannot be reached");
            "the platform's database cannot be reached just now; retry in a few seconds".to_owned()
        } else if status.is_server_error() {
            // The detail goes to the log, not to the client.
            tracing::error!(error = %e, detail = ?e, "request failed inside the platform");
            "the platform could not complete the request; it has been logged".to_owned()
        } else {
            e.to_string()
        };
        Self {
            status,
            code: e.code(),
            message,
            field: e.field().map(str::to_owned),
            retry_after,
        }
    }
}

/// What a 503 tells a client to wait before retrying, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;
