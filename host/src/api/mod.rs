//! The BlobHub client: authentication, the query/command envelope, typed errors and retries.
//!
//! Everything that talks HTTP to BlobHub goes through [`Client`]; the API key never leaves it.

mod binary;
mod client;
mod error;
mod lean;
mod retry;
mod salvage;

pub use binary::{Download, MAX_FILE_SIZE};
pub use client::{
    Client, FEED_POOL_MAX_IDLE, POOL_MAX_IDLE, PreparedQuery, Read, UNPARSEABLE, UserInfo,
};
pub use error::ApiError;
pub use retry::{RetryPolicy, parse_retry_after};
