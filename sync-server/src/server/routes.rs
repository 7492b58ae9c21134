//! The router of the one port, and the one authentication layer every API route sits behind.
//!
//! - `/sync` (WebSocket upgrade; the token is checked in the `join`, see `conn`),
//!   `/healthz` (open), `/metrics` (open unless `metrics_need_token`).
//! - `/api/v1/**`: every route, and the fallback for paths that match none, runs behind
//!   [`authenticate`]: once any user exists, no token means 401, before any handler runs
//!   (so an unknown path is 401 too, and reveals nothing). Every route with a `{room}` in its path also runs [`authorize_room`], which
//!   checks that the token opens that room and hands the handler a [`RoomGrant`] (the
//!   user and role every decision and every server-made change uses). A handler cannot
//!   reach a room without one: [`RoomGrant`] is only made here.
//!
//! Open development mode (no users configured, loopback only unless `--insecure`): every
//! caller is an admin, as on `/sync`, named by the `X-Tandem-User` header or `server`. Once
//! users exist the header is refused: the author of a change is the token's user.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde::Serialize;
use tandem_core::wire::ErrorCode;
use tandem_core::{Forbidden, Role};

use super::{Shared, api, conn, history_api};
use crate::history::HistoryError;
use crate::store::{AuthFailure, TokenGrant};

/// Largest request body the API reads (history POSTs are small JSON objects); larger is 413.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// The header that names the caller in open development mode only.
pub(crate) const USER_HEADER: &str = "x-tandem-user";

/// An API route: method, path template, handler.
type ApiRoute = (&'static str, &'static str, MethodRouter<Arc<Shared>>);

/// Every route of the API. The router is built from this table and [`api_routes`] lists it,
/// so the test that probes every route without a token (and with the wrong ones) probes
/// exactly the routes that are served.
fn api_table() -> Vec<ApiRoute> {
    vec![
        ("GET", "/api/v1/rooms", get(api::list_rooms)),
        ("GET", "/api/v1/rooms/{room}", get(api::room)),
        ("GET", "/api/v1/rooms/{room}/documents", get(api::documents)),
        ("GET", "/api/v1/rooms/{room}/peers", get(api::peers)),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/log",
            get(history_api::log),
        ),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/scene",
            get(history_api::scene),
        ),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/node/{node}",
            get(history_api::node),
        ),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/diff",
            get(history_api::diff),
        ),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/blame",
            get(history_api::blame),
        ),
        (
            "GET",
            "/api/v1/rooms/{room}/documents/{doc}/checkpoints",
            get(history_api::checkpoints),
        ),
        (
            "POST",
            "/api/v1/rooms/{room}/documents/{doc}/checkpoints",
            post(history_api::create_checkpoint),
        ),
        (
            "POST",
            "/api/v1/rooms/{room}/documents/{doc}/restore",
            post(history_api::restore),
        ),
    ]
}

/// Every route of the API, as (method, path template), in the router's own table.
pub fn api_routes() -> Vec<(&'static str, &'static str)> {
    api_table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The whole router: `/sync`, `/healthz`, `/metrics` and the API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut api = Router::new();
    for (_, path, handler) in api_table() {
        // Two methods on one path merge into one method router.
        api = api.route(path, handler);
    }
    let api = api
        // Runs after routing, for every route: the room check.
        .route_layer(middleware::from_fn(authorize_room))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Wraps every route and the fallbacks: runs before any handler of this router.
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared.clone());
    // Only these few routes are outside the authentication layer; every other path, known
    // or not, is the API router's.
    Router::new()
        .route("/sync", get(conn::upgrade))
        .route("/sync/", get(conn::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback_service(api)
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    if shared.config.metrics_need_token {
        let token = token_of(&headers, &uri);
        if let Err(e) = identify(&shared, token.as_deref(), &headers) {
            return e.into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadMessage,
        "this method is not allowed on this route",
    )
}

/// Who is calling, as established by [`authenticate`].
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// Open development mode: everyone is an admin under the name they claim.
    Open { user: String },
    /// A valid token.
    Token(TokenGrant),
}

impl Caller {
    /// Whether the caller may see `room` at all.
    pub(crate) fn opens(&self, room: &str) -> bool {
        match self {
            Caller::Open { .. } => true,
            Caller::Token(t) => t.opens(room),
        }
    }

    fn in_room(&self, room: &str) -> Result<RoomGrant, AuthFailure> {
        match self {
            Caller::Open { user } => Ok(RoomGrant {
                room: room.to_owned(),
                user: user.clone(),
                role: Role::Admin,
            }),
            Caller::Token(t) => t.clone().in_room(room).map(|g| RoomGrant {
                room: room.to_owned(),
                user: g.user,
                role: g.role,
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route outside the authentication layer"))
    }
}

/// A caller's standing in one room: made only by [`authorize_room`].
#[derive(Clone, Debug)]
pub(crate) struct RoomGrant {
    /// The room (a valid room name).
    pub(crate) room: String,
    /// Who: the token's user (the author of any change made for this request).
    pub(crate) user: String,
    /// Their role in the room.
    pub(crate) role: Role,
}

impl<S: Send + Sync> FromRequestParts<S> for RoomGrant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RoomGrant>()
            .cloned()
            .ok_or_else(|| ApiError::internal("room route without a room check"))
    }
}

/// A token from `Authorization: Bearer …` or, for links a browser opens, `?token=`.
fn token_of(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let h = h.trim();
        if let Some(t) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        {
            return Some(t.trim().to_owned());
        }
    }
    #[derive(serde::Deserialize)]
    struct TokenParam {
        token: Option<String>,
    }
    Query::<TokenParam>::try_from_uri(uri)
        .ok()
        .and_then(|Query(q)| q.token)
}

fn identify(shared: &Shared, token: Option<&str>, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match shared.auth.has_users() {
        Ok(false) => {
            let user = match headers.get(USER_HEADER) {
                None => crate::history::DEFAULT_USER.to_owned(),
                Some(v) => v
                    .to_str()
                    .ok()
                    .filter(|u| crate::store::auth::valid_user_name(u))
                    .ok_or_else(|| {
                        ApiError::bad("X-Tandem-User must be 1-64 of A-Z a-z 0-9 . _ - @")
                    })?
                    .to_owned(),
            };
            Ok(Caller::Open { user })
        }
        Ok(true) => {
            let grant = shared
                .auth
                .identify(token)
                .map_err(ApiError::unauthorized)?;
            if headers.contains_key(USER_HEADER) {
                return Err(ApiError::bad(
                    "X-Tandem-User is honoured only in open development mode; changes are attributed to the token's user",
                ));
            }
            Ok(Caller::Token(grant))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading users failed");
            Err(ApiError::unauthorized(AuthFailure::Internal))
        }
    }
}

/// The authentication layer: a [`Caller`] for every API request, or 401.
async fn authenticate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let token = token_of(req.headers(), req.uri());
    // The lookup is a SQLite query: keep it off the async workers.
    let headers = req.headers().clone();
    let identified =
        tokio::task::spawn_blocking(move || identify(&shared, token.as_deref(), &headers)).await;
    let identified = identified.unwrap_or_else(|e| {
        Err(ApiError::internal(format!(
            "authentication task failed: {e}"
        )))
    });
    match identified {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The room check, after routing: the `{room}` of the matched route must be a valid name
/// the caller's token opens.
async fn authorize_room(
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let Ok(params) = params else {
        return ApiError::bad("the path is not valid UTF-8").into_response();
    };
    let room = params
        .iter()
        .find(|(k, _)| *k == "room")
        .map(|(_, v)| v.to_owned());
    if let Some(room) = room {
        if !tandem_core::valid_room_name(&room) {
            return ApiError::bad("room names are 1-128 of A-Z a-z 0-9 . _ -").into_response();
        }
        let Some(caller) = req.extensions().get::<Caller>() else {
            return ApiError::internal("route outside the authentication layer").into_response();
        };
        match caller.in_room(&room) {
            Ok(grant) => {
                req.extensions_mut().insert(grant);
            }
            Err(e) => return ApiError::unauthorized(e).into_response(),
        }
    }
    next.run(req).await
}

/// Every API error, as JSON: `{"error": text, "code": code, ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Box<ErrorBody>,
}

/// The JSON body of an API error.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    /// For people.
    error: String,
    /// For programs.
    code: ErrorCode,
    /// For `unauthorized`: `missing`, `invalid`, `expired`, `wrong_room`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// For `forbidden`: the node the refused change touched.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// For `forbidden`: the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// For `forbidden`: the rule, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: message.into(),
                code,
                reason: None,
                node: None,
                field: None,
                rule: None,
            }),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadMessage, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }

    pub(crate) fn unauthorized(failure: AuthFailure) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            failure.to_string(),
        );
        e.body.reason = Some(failure.as_str());
        e
    }

    pub(crate) fn forbidden(f: Forbidden) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, f.to_string());
        e.body.node = f.node.map(|n| n.to_string());
        e.body.field = f.field;
        e.body.rule = Some(f.rule);
        e
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        if let Some(f) = e.refusal {
            return Self::forbidden(f);
        }
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match e.status {
            400 | 405 => ErrorCode::BadMessage,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            503 => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        if status.is_server_error() {
            tracing::error!(status = e.status, error = %e.message, "API request failed");
        }
        Self::new(status, code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(*self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tandem\""),
            );
        }
        r
    }
}

/// A JSON body whose every failure (not JSON, wrong shape, unknown field, too large) is a
/// JSON [`ApiError`].
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the body is over the limit of {MAX_BODY_BYTES} bytes"),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::BadMessage,
                "send the body as Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::bad(format!("bad JSON body: {}", e.body_text()))),
        }
    }
}

/// Query parameters whose failures are JSON [`ApiError`]s.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e: QueryRejection| ApiError::bad(e.body_text()))
    }
}

/// Path parameters whose failures are JSON [`ApiError`]s.
pub(crate) struct PathArgs<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathArgs(v))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}
