//! The JSON HTTP API the browser package calls (the table is in the crate README). Every POST
//! checks, in this order: the `Origin` header, the user's session, the body's size, its JSON,
//! base64url and message; only then does it touch a flow or the issuer, so a refused request
//! changes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use localcert_proto::message::{
    CorsPolicy, Operation, Response as DeviceResponse, key_authorization_hash,
};
use localcert_proto::name::{DeviceLabel, LocalName};
use localcert_proto::origin::Origin;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::account::AcmeAccount;
use crate::auth::UserAuth;
use crate::config::{Config, Limits};
use crate::error::FlowError;
use crate::flow::{Flow, FlowParams};
use crate::star::Canceled;
use crate::statics;
use crate::table::{FlowTable, TableError};

/// How long a client has to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// An API error: its status, code and detail, sent as `{"error": code, "detail": detail}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    fn device_invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "device_invalid", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "detail": self.detail});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::DeviceInvalid(d) => Self::device_invalid(d),
            FlowError::Issuer(d) => Self::new(StatusCode::BAD_GATEWAY, "issuer", d),
            FlowError::State(d) => Self::new(StatusCode::CONFLICT, "flow_state", d),
        }
    }
}

type SharedFlow = tokio::sync::Mutex<Flow>;

/// The backend: the origin's ACME account, its users, its flows.
#[derive(Debug)]
pub struct Backend {
    origin: Origin,
    base_path: String,
    limits: Limits,
    cors: CorsPolicy,
    static_dir: Option<PathBuf>,
    account: AcmeAccount,
    auth: Arc<dyn UserAuth>,
    table: Mutex<FlowTable<SharedFlow>>,
}

impl Backend {
    /// A backend for `config`, asking `auth` who the user is.
    pub fn new(config: &Config, auth: Arc<dyn UserAuth>) -> Arc<Self> {
        Arc::new(Self {
            origin: config.origin.clone(),
            base_path: config.base_path.clone(),
            limits: config.limits,
            cors: config.cors.clone(),
            static_dir: config.static_dir.clone(),
            account: AcmeAccount::new(config.acme.clone()),
            auth,
            table: Mutex::new(FlowTable::new(config.limits)),
        })
    }

    /// The router: the API under the base path, the static directory elsewhere.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .fallback(dispatch)
            .with_state(self.clone())
    }

    /// Creates the ACME account now rather than at the first flow, so that a wrong directory,
    /// TLS root or EAB credential shows at startup.
    pub async fn account_ready(&self) -> Result<(), FlowError> {
        self.account.get().await.map(|_| ())
    }

    /// Flows held in memory.
    pub fn flows(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, FlowTable<SharedFlow>> {
        // The table's invariants hold between statements: a panic elsewhere cannot break them.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `service` UUID in its text form.
pub fn service_uuid() -> String {
    let hex = format!("{:032x}", localcert_proto::gatt::SERVICE_UUID);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

enum Route<'a> {
    Config,
    Start,
    Attestation(&'a str),
    Installed(&'a str),
    CancelStar,
}

fn route<'a>(rest: &'a str) -> Option<Route<'a>> {
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["", "config"] => Some(Route::Config),
        ["", "flows"] => Some(Route::Start),
        ["", "flows", id, "attestation"] => Some(Route::Attestation(id)),
        ["", "flows", id, "installed"] => Some(Route::Installed(id)),
        ["", "star", "cancel"] => Some(Route::CancelStar),
        _ => None,
    }
}

async fn dispatch(State(backend): State<Arc<Backend>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(backend.base_path.as_str()) else {
        return match (&backend.static_dir, request.method()) {
            (Some(dir), &Method::GET | &Method::HEAD) => statics::serve(dir, &path).await,
            _ => ApiError::not_found(format!("no {path} here")).into_response(),
        };
    };
    let method = request.method().clone();
    let result = match (method, route(rest)) {
        (Method::GET, Some(Route::Config)) => Ok((
            StatusCode::OK,
            axum::Json(json!({"origin": backend.origin.as_str(), "service": service_uuid()})),
        )
            .into_response()),
        (Method::POST, Some(route)) => post(&backend, route, request).await,
        (_, Some(_)) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} takes another method", path),
        )),
        (_, None) => Err(ApiError::not_found(format!("no {path} here"))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn check_origin(backend: &Backend, headers: &HeaderMap) -> Result<(), ApiError> {
    let forbidden =
        |detail: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden_origin", detail);
    let mut origins = headers.get_all(ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(value), None) if value.as_bytes() == backend.origin.as_str().as_bytes() => Ok(()),
        (None, _) => Err(forbidden("the request has no Origin header".into())),
        (Some(_), Some(_)) => Err(forbidden("the request has several Origin headers".into())),
        (Some(value), None) => Err(forbidden(format!(
            "requests from {} are not accepted; this backend serves {}",
            String::from_utf8_lossy(value.as_bytes()),
            backend.origin
        ))),
    }
}

async fn read_body(limits: &Limits, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = limits.max_body_bytes;
    let too_large = || {
        let detail = format!("the body is over the limit of {limit} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", detail)
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            "the body took too long",
        )),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("JSON: {e}")))
}

fn b64(field: &'static str, value: &str) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| ApiError::bad_request(format!("{field} is not base64url without padding")))
}

/// Decodes a device's response message for `operation`; a refusal by the device is the
/// device's answer, not the page's fault.
fn message(
    field: &'static str,
    operation: Operation,
    value: &str,
) -> Result<DeviceResponse, ApiError> {
    let bytes = b64(field, value)?;
    match DeviceResponse::decode(operation, &bytes) {
        Ok(DeviceResponse::Error(code, detail)) => Err(ApiError::device_invalid(format!(
            "{field}: the device refused: {}{}",
            code.name(),
            detail.map(|d| format!(" ({d})")).unwrap_or_default()
        ))),
        Ok(response) => Ok(response),
        Err(e) => Err(ApiError::bad_request(format!("{field}: {e}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    info: String,
    label: Option<String>,
    #[serde(default)]
    star: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestBody {
    attest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelStarBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstalledBody {
    install: String,
}

async fn post(backend: &Backend, route: Route<'_>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    check_origin(backend, &parts.headers)?;
    let user = backend.auth.user_handle(&parts.headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no user session (a bearer token or the localcert_session cookie)",
        )
    })?;
    let body = read_body(&backend.limits, &parts.headers, body).await?;
    match route {
        Route::Start => start(backend, user, &body).await,
        Route::Attestation(id) => attestation(backend, user, id, &body).await,
        Route::Installed(id) => installed(backend, user, id, &body).await,
        Route::CancelStar => cancel_star(backend, user, &body).await,
        Route::Config => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "config takes GET",
        )),
    }
}

fn new_flow_id() -> Result<String, ApiError> {
    use ring::rand::SecureRandom;
    let mut id = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut id).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no randomness",
        )
    })?;
    Ok(URL_SAFE_NO_PAD.encode(id))
}

async fn start(backend: &Backend, user: Vec<u8>, body: &[u8]) -> Result<Response, ApiError> {
    let request: StartBody = parse(body)?;
    let DeviceResponse::Info(info) = message("info", Operation::GetInfo, &request.info)? else {
        return Err(ApiError::bad_request("info: not a GET_INFO answer"));
    };
    // A device this backend cannot serve costs the user none of their flows.
    crate::check::info_device_certificate(&info).map_err(ApiError::device_invalid)?;
    let device_label = request
        .label
        .as_deref()
        .map(DeviceLabel::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("label: {e}")))?;
    let id = new_flow_id()?;
    let reservation = backend
        .table()
        .admit(&user, Instant::now())
        .map_err(|e| match e {
            TableError::UserRate => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} flows per user per minute",
                    backend.limits.flows_per_user_per_minute
                ),
            ),
            TableError::Full | TableError::Unknown => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "the backend holds its maximum of {} flows; try again later",
                    backend.limits.max_flows
                ),
            ),
        })?;
    let params = FlowParams {
        origin: backend.origin.clone(),
        user_handle: user.clone(),
        device_label,
        star: request.star,
        cors: backend.cors.clone(),
    };
    let started = match backend.account.get().await {
        Ok(account) => Flow::start(account, params, info).await,
        Err(e) => Err(e),
    };
    let (flow, attest) = match started {
        Ok(started) => started,
        Err(e) => {
            backend.table().cancel(reservation);
            return Err(e.into());
        }
    };
    let name = flow.name().to_string();
    tracing::info!(%name, "flow started");
    backend.table().insert(
        reservation,
        id.clone(),
        user,
        tokio::sync::Mutex::new(flow),
        Instant::now(),
    );
    let body = json!({
        "flow": id,
        "name": name,
        "attest": {
            "origin": attest.origin.as_str(),
            "user_handle": URL_SAFE_NO_PAD.encode(&attest.user_handle),
            "key_authorization_hash": URL_SAFE_NO_PAD.encode(key_authorization_hash(&attest.key_authorization)),
            "device_label": attest.device_label.as_str(),
        },
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// The flow `id` of `user`, locked for one step; a step already running on it is refused.
fn lock_flow(
    backend: &Backend,
    id: &str,
    user: &[u8],
) -> Result<tokio::sync::OwnedMutexGuard<Flow>, ApiError> {
    let flow = backend
        .table()
        .get(id, user, Instant::now())
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "unknown_flow", "no such flow"))?;
    flow.try_lock_owned().map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "flow_state",
            "another step of this flow is in progress",
        )
    })
}

async fn attestation(
    backend: &Backend,
    user: Vec<u8>,
    id: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request: AttestBody = parse(body)?;
    let DeviceResponse::Attest(attest) = message("attest", Operation::Attest, &request.attest)?
    else {
        return Err(ApiError::bad_request("attest: not an ATTEST answer"));
    };
    let mut flow = lock_flow(backend, id, &user)?;
    let install = flow.attested(&attest).await?;
    let fingerprint = flow.fingerprint().map(hex::encode);
    let body = json!({
        "install": {
            "chain": install.chain.iter().map(|c| URL_SAFE_NO_PAD.encode(c)).collect::<Vec<_>>(),
            "cors": cors_json(&install.cors),
            "star_url": install.star_url,
        },
        "name": flow.name().as_str(),
        "fingerprint": fingerprint,
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn cors_json(cors: &CorsPolicy) -> Value {
    json!({
        "methods": cors.methods,
        "allow_headers": cors.allow_headers,
        "expose_headers": cors.expose_headers,
        "allow_credentials": cors.allow_credentials,
        "max_age": cors.max_age,
    })
}

async fn installed(
    backend: &Backend,
    user: Vec<u8>,
    id: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request: InstalledBody = parse(body)?;
    let DeviceResponse::Install(response) =
        message("install", Operation::Install, &request.install)?
    else {
        return Err(ApiError::bad_request("install: not an INSTALL answer"));
    };
    let mut flow = lock_flow(backend, id, &user)?;
    let done = flow.installed(&response)?;
    tracing::info!(name = %done.name, "flow complete");
    let body = json!({
        "name": done.name.as_str(),
        "url": format!("https://{}:{}/", done.name, done.https_port),
        "fingerprint": hex::encode(done.fingerprint),
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// Cancels the user's STAR delegations for a name: only those whose certificate is bound to
/// this user, so one user cannot end another's.
async fn cancel_star(backend: &Backend, user: Vec<u8>, body: &[u8]) -> Result<Response, ApiError> {
    let request: CancelStarBody = parse(body)?;
    let name =
        LocalName::parse(&request.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let key = backend.account.key().await?;
    let report =
        crate::star::cancel_star(backend.account.settings(), key, &name, Some(&user)).await?;
    if report.canceled.is_empty() {
        return Err(ApiError::not_found(format!(
            "no live STAR delegation of this user for {name}"
        )));
    }
    let canceled: Vec<Value> = report.canceled.iter().map(Canceled::to_json).collect();
    let body = json!({"name": name.as_str(), "canceled": canceled});
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
