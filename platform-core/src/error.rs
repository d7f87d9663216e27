//! The core's error type and the field error that every parse failure produces.

pub use platform_spec::FieldError;

/// Why a core operation refused or failed.
///
/// Every variant but [`CoreError::Store`] and [`CoreError::Internal`] is the caller's
/// doing and maps to a 4xx status; those two are the platform's and map to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The object does not exist, or exists in a tenant the caller cannot see: the two
    /// are indistinguishable on purpose.
    #[error("{kind} '{name}' was not found")]
    NotFound { kind: &'static str, name: String },
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("{message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    #[error("your role in this tenant does not allow you to {action}")]
    Forbidden { action: &'static str },
    #[error("only a platform administrator may {action}")]
    PlatformAdminOnly { action: &'static str },
    /// The caller's role or name does not allow this (the message says who may).
    #[error("{0}")]
    NotPermitted(String),
    /// The object is not in a state where this makes sense (a release already ended).
    #[error("{0}")]
    WrongState(String),
    #[error("{message}")]
    QuotaExceeded { message: String },
    /// The change's instances cannot all be placed (the placement pre-flight).
    #[error("{message}")]
    Infeasible { message: String },
    /// The version the caller read is no longer the object's: someone changed it (or
    /// removed it) since. The message says who, when the audit log knows.
    #[error("{message}")]
    VersionMismatch {
        /// The object's version now; `None` when it no longer exists.
        current: Option<i64>,
        message: String,
    },
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("authentication is required")]
    Unauthenticated,
    #[error("storage failure")]
    Store(#[from] sqlx::Error),
    /// What runs the applications cannot be reached now (an apiserver, the agents).
    #[error("the runtime is unavailable: {0}")]
    Unavailable(String),
    /// A service broker could not be reached, refused the platform's credentials, or
    /// answered with something the Open Service Broker API does not allow.
    #[error("{0}")]
    BrokerUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// The stable snake_case code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Invalid(_) => "invalid_field",
            Self::Conflict { .. } => "already_exists",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Infeasible { .. } => "infeasible",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::Forbidden { .. } | Self::PlatformAdminOnly { .. } | Self::NotPermitted(_) => {
                "forbidden"
            }
            Self::WrongState(_) => "invalid_state",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable(_) => "runtime_unavailable",
            Self::BrokerUnavailable(_) => "broker_unavailable",
            Self::Store(_) if self.is_store_unreachable() => "database_unavailable",
            Self::Store(_) | Self::Internal(_) => "internal",
        }
    }

    /// Whether the database could not be reached (down, restarting, refusing
    /// connections, or every pooled connection busy past the wait): a condition to
    /// retry after, not a fault of the request.
    pub fn is_store_unreachable(&self) -> bool {
        let Self::Store(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 (connection exception) and 57P01-57P03 (the server is
            // shutting down, crashed or not yet accepting connections).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }

    /// The field a client should correct, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid(e) => Some(&e.field),
            Self::BrokerUnavailable(_) => Some("url"),
            Self::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Maps a unique-constraint violation to a conflict on `field`; anything else stays a
/// storage failure.
pub(crate) fn conflict_on_unique(
    err: sqlx::Error,
    field: &'static str,
    message: String,
) -> CoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            CoreError::Conflict { field, message }
        }
        _ => CoreError::Store(err),
    }
}
