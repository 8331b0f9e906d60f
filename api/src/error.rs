//! The API's one error type: a status and a safe message as a JSON body.

use auth_core::ports::PortError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl From<PortError> for ApiError {
    fn from(err: PortError) -> Self {
        tracing::error!(error = %err, "serving store failed");
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "the serving store is unavailable".into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}
