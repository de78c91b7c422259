//! The one error type crossing the emulator's boundaries: a platform failure
//! envelope plus the HTTP status it travels with.

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_body", message)
    }

    pub fn envelope(&self) -> Value {
        json!({"status": "failure", "error": self.code, "message": self.message})
    }
}
