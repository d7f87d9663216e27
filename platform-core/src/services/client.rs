//! The platform's side of the Open Service Broker API: one HTTP call per method, each
//! answer read into what [`osb::outcome`] needs (status, parsed body, `Retry-After`),
//! and a call that got no answer told apart from one that never left (a timeout after
//! the request was sent can leave an orphan; a refused connection cannot).

use std::time::Duration;

use osb::catalog::Catalog;
use osb::outcome::Answer;
use osb::wire::{
    ErrorBody, LastOperation, OperationResponse, ProvisionRequest, ProvisionResponse, UpdateRequest,
};
use serde::de::DeserializeOwned;

use crate::sealing::SecretValue;

/// Where a broker is and how to sign in to it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Without a trailing `/`.
    pub url: String,
    pub username: String,
    pub password: SecretValue,
}

impl Endpoint {
    /// A registered broker's endpoint, its password opened with the master key.
    pub fn of(
        master: &crate::sealing::MasterKey,
        broker: &crate::store::services::BrokerRow,
    ) -> Result<Self, crate::sealing::SealError> {
        let password = master.open(&broker.password_sealed, &password_context(broker.id))?;
        Ok(Self {
            url: broker.url.trim_end_matches('/').to_owned(),
            username: broker.username.clone(),
            password: SecretValue::new(String::from_utf8(password).unwrap_or_default()),
        })
    }
}

/// What a broker's password is sealed for.
pub(crate) fn password_context(broker_id: uuid::Uuid) -> String {
    format!("broker:{broker_id}:password")
}

/// A broker's answer to a call that changes something.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub answer: Answer,
    /// The body, when the status is a success and it parsed.
    pub body: Option<T>,
    /// The error body of a 4xx or 5xx, when it parsed.
    pub error: Option<ErrorBody>,
    /// How long the broker asks the platform to wait before polling.
    pub retry_after: Option<Duration>,
    /// What went wrong on the wire (for the user's last-operation description).
    pub transport: Option<String>,
}

impl<T> Reply<T> {
    /// The status code, when an answer came.
    pub fn code(&self) -> Option<u16> {
        match self.answer {
            Answer::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether a 422's error code was `ConcurrencyError` (never mitigated).
    pub fn concurrency(&self) -> bool {
        self.error
            .as_ref()
            .and_then(|e| e.error.as_deref())
            .is_some_and(|c| c == osb::wire::codes::CONCURRENCY_ERROR)
    }

    /// A sentence for the user: the broker's description, or what the wire said.
    pub fn describe(&self) -> String {
        if let Some(d) = self.error.as_ref().and_then(|e| e.description.as_deref()) {
            return format!("the broker answered {}: {d}", self.code().unwrap_or(0));
        }
        match (&self.answer, &self.transport) {
            (Answer::Status { code, well_formed }, _) => {
                if *well_formed {
                    format!("the broker answered {code}")
                } else {
                    format!(
                        "the broker answered {code} with a body the specification does not allow"
                    )
                }
            }
            (Answer::Timeout, Some(t)) => format!("no answer from the broker: {t}"),
            (Answer::Timeout, None) => "no answer from the broker in time".to_owned(),
            (Answer::NotSent, Some(t)) => format!("the broker could not be reached: {t}"),
            (Answer::NotSent, None) => "the broker could not be reached".to_owned(),
        }
    }
}

/// Why a catalog could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFetchError {
    #[error("the broker could not be reached: {0}")]
    Unreachable(String),
    #[error("the broker refused the credentials (401)")]
    Unauthorized,
    #[error("the broker answered {0} to GET /v2/catalog")]
    Status(u16),
    #[error("the catalog is not valid JSON of the specification's shape: {0}")]
    Malformed(String),
}

/// An HTTP client for brokers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    http: reqwest::Client,
}

/// How long a call may take: the specification's platforms typically wait 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl BrokerClient {
    /// A client whose calls give up after `timeout` (connecting: 5 s at most).
    pub fn new(timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", endpoint.url))
            .basic_auth(&endpoint.username, Some(endpoint.password.expose()))
            .header(osb::VERSION_HEADER, osb::API_VERSION)
            .header(
                "X-Broker-API-Request-Identity",
                uuid::Uuid::new_v4().to_string(),
            )
    }

    /// `GET /v2/catalog`, validated.
    pub async fn catalog(&self, endpoint: &Endpoint) -> Result<Catalog, CatalogFetchError> {
        let response = self
            .request(reqwest::Method::GET, endpoint, "/v2/catalog")
            .send()
            .await
            .map_err(|e| CatalogFetchError::Unreachable(transport_error(&e)))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(CatalogFetchError::Unauthorized),
            code => return Err(CatalogFetchError::Status(code)),
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CatalogFetchError::Unreachable(transport_error(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| CatalogFetchError::Malformed(e.to_string()))
    }

    /// `PUT /v2/service_instances/:id?accepts_incomplete=true`.
    pub async fn provision(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        body: &ProvisionRequest,
    ) -> Reply<ProvisionResponse> {
        let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
        let sent = self
            .request(reqwest::Method::PUT, endpoint, &path)
            .json(body)
            .send()
            .await;
        read(sent, &[200, 201, 202]).await
    }

    /// `PATCH /v2/service_instances/:id?accepts_incomplete=true`.
    pub async fn update(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        body: &UpdateRequest,
    ) -> Reply<ProvisionResponse> {
        let path = format!("/v2/service_instances/{instance}?accepts_incomplete=true");
        let sent = self
            .request(reqwest::Method::PATCH, endpoint, &path)
            .json(body)
            .send()
            .await;
        read(sent, &[200, 202]).await
    }

    /// `DELETE /v2/service_instances/:id?service_id=..&plan_id=..&accepts_incomplete=true`.
    pub async fn deprovision(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        service_id: &str,
        plan_id: &str,
    ) -> Reply<OperationResponse> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("service_id", service_id)
            .append_pair("plan_id", plan_id)
            .append_pair("accepts_incomplete", "true")
            .finish();
        let path = format!("/v2/service_instances/{instance}?{query}");
        let sent = self
            .request(reqwest::Method::DELETE, endpoint, &path)
            .send()
            .await;
        read(sent, &[200, 202]).await
    }

    /// `PUT /v2/service_instances/:id/service_bindings/:binding_id`, synchronous (no
    /// `accepts_incomplete`: a broker that can only bind asynchronously answers 422).
    pub async fn bind(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        binding: &str,
        body: &osb::wire::BindRequest,
    ) -> Reply<osb::wire::BindResponse> {
        let path = format!("/v2/service_instances/{instance}/service_bindings/{binding}");
        let sent = self
            .request(reqwest::Method::PUT, endpoint, &path)
            .json(body)
            .send()
            .await;
        read(sent, &[200, 201]).await
    }

    /// `DELETE /v2/service_instances/:id/service_bindings/:binding_id`, synchronous.
    pub async fn unbind(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        binding: &str,
        service_id: &str,
        plan_id: &str,
    ) -> Reply<OperationResponse> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("service_id", service_id)
            .append_pair("plan_id", plan_id)
            .finish();
        let path = format!("/v2/service_instances/{instance}/service_bindings/{binding}?{query}");
        let sent = self
            .request(reqwest::Method::DELETE, endpoint, &path)
            .send()
            .await;
        read(sent, &[200]).await
    }

    /// `GET /v2/service_instances/:id/last_operation`.
    pub async fn last_operation(
        &self,
        endpoint: &Endpoint,
        instance: &str,
        service_id: &str,
        plan_id: &str,
        operation: Option<&str>,
    ) -> Reply<LastOperation> {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query
                .append_pair("service_id", service_id)
                .append_pair("plan_id", plan_id);
            if let Some(op) = operation {
                query.append_pair("operation", op);
            }
            query.finish()
        };
        let path = format!("/v2/service_instances/{instance}/last_operation?{query}");
        let sent = self
            .request(reqwest::Method::GET, endpoint, &path)
            .send()
            .await;
        read(sent, &[200]).await
    }
}

/// Reads an answer: the body of a status in `success` must parse as `T` to be well
/// formed; an error status's body is read as the specification's error body.
async fn read<T: DeserializeOwned>(
    sent: Result<reqwest::Response, reqwest::Error>,
    success: &[u16],
) -> Reply<T> {
    let response = match sent {
        Ok(r) => r,
        Err(e) => return unanswered(&e),
    };
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    let bytes = match response.bytes().await {
        Ok(b) => b,
        // The status came but the body broke off: the broker did answer, badly.
        Err(e) => {
            return Reply {
                answer: Answer::Status {
                    code,
                    well_formed: false,
                },
                body: None,
                error: None,
                retry_after,
                transport: Some(transport_error(&e)),
            };
        }
    };
    if success.contains(&code) {
        // Every body of this API is a JSON object (serde would also read a struct
        // from an array).
        let body = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(serde_json::Value::is_object)
            .and_then(|v| serde_json::from_value::<T>(v).ok());
        Reply {
            answer: Answer::Status {
                code,
                well_formed: body.is_some(),
            },
            body,
            error: None,
            retry_after,
            transport: None,
        }
    } else {
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        Reply {
            answer: Answer::Status {
                code,
                well_formed: (200..300).contains(&code) || error.is_some(),
            },
            body: None,
            error,
            retry_after,
            transport: None,
        }
    }
}

/// A call with no answer: never sent (nothing can have happened) or sent and not
/// answered in time or cut off (something may have happened).
fn unanswered<T>(e: &reqwest::Error) -> Reply<T> {
    let answer = if e.is_connect() || e.is_builder() {
        Answer::NotSent
    } else {
        Answer::Timeout
    };
    Reply {
        answer,
        body: None,
        error: None,
        retry_after: None,
        transport: Some(transport_error(e)),
    }
}

/// The error's chain of causes, without the URL (it may carry credentials in a
/// user's paste; the broker's name says which broker).
fn transport_error(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "the connection broke".to_owned()
    };
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
