//! `ApiError`: every way a request can fail, and the one place that maps it to HTTP.
//!
//! Handlers return `Result<_, ApiError>`; core refusals (`CoreError`) and node failures
//! (`NodeError`, outcome unknown) convert into it. The response is always API.md's JSON body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lockserver_core::CoreError;
use lockserver_node::NodeError;
use lockserver_proto::{ErrorBody, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The body is larger than `--max-body-bytes` (413 with `invalid_argument`).
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A known route with another method (405 with `invalid_argument`).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("this node is not the leader")]
    NotLeader { leader: Option<String> },
    #[error("{0}")]
    Unavailable(String),
    /// A bug. The message is fixed: internals go to the log, never to the client.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidArgument(_) | ApiError::BodyTooLarge { .. } => {
                ErrorCode::InvalidArgument
            }
            ApiError::MethodNotAllowed => ErrorCode::InvalidArgument,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Locked(_) => ErrorCode::Locked,
            ApiError::Timeout(_) => ErrorCode::Timeout,
            ApiError::Cancelled(_) => ErrorCode::Cancelled,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            ApiError::NotLeader { .. } => ErrorCode::NotLeader,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            other => StatusCode::from_u16(other.code().http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }

    /// The body of this error, as sent.
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        if let ApiError::NotLeader { leader } = self {
            body.error.leader = leader.clone();
        }
        body
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> ApiError {
        match err {
            CoreError::InvalidArgument(m) => ApiError::InvalidArgument(m),
            CoreError::NotFound(m) => ApiError::NotFound(m),
            CoreError::Locked(m) => ApiError::Locked(m),
            CoreError::Conflict(m) => ApiError::Conflict(m),
            CoreError::LimitExceeded(m) => ApiError::LimitExceeded(m),
            CoreError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(err: NodeError) -> ApiError {
        match err {
            NodeError::NotLeader { leader } => ApiError::NotLeader { leader },
            NodeError::Unavailable(message) => ApiError::Unavailable(message),
            // The detail (a path, an OS error) is for the log, not the client.
            NodeError::Storage(detail) => {
                tracing::error!(%detail, "storage failure; answering unavailable");
                ApiError::Unavailable("storage is unavailable; the outcome is unknown".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal) {
            tracing::error!("answering an internal error");
        }
        json_error_response(self.status(), &self.body())
    }
}

/// Serialises an error body by hand-free means that cannot fail at run time.
pub(crate) fn json_error_response(status: StatusCode, body: &ErrorBody) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
    });
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_api_md() {
        assert_eq!(ApiError::invalid("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::BodyTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::BodyTooLarge { limit: 1 }.code(), ErrorCode::InvalidArgument);
        assert_eq!(ApiError::MethodNotAllowed.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(ApiError::Timeout("t".into()).status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::LimitExceeded("l".into()).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ApiError::NotLeader { leader: None }.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn storage_failures_hide_their_detail() {
        let err = ApiError::from(NodeError::Storage("/secret/path: EIO".into()));
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(!err.to_string().contains("/secret"));
    }
}
