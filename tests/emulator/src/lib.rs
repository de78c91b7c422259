//! A local BlobHub emulator: the session API subset the worker uses
//! (REST reads, the data channel, files and lifecycle; docs/emulator.md), an admin API, a request log and
//! fault injection. Used by the integration tests, by `blobhub-worker demo`
//! (embedded in-process) and by people without a BlobHub account.

mod admin;
mod admin_http;
mod commands;
mod error;
mod faults;
mod http;
mod paging;
mod shared;
mod store;

pub use admin::{Admin, CreateSession, SessionIds};
pub use error::ApiError;
pub use faults::Faults;
pub use shared::RequestRecord;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};

/// A BlobHub user and the API key that authenticates as them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub api_key: String,
}

impl User {
    /// The user every default emulator knows, so `demo` and newcomers need no setup.
    pub fn demo() -> User {
        User {
            id: "usr_demo".into(),
            name: "Demo User".into(),
            email: "demo@example.com".into(),
            api_key: "bhk_demo_key".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub users: Vec<User>,
    /// When set, all state is loaded from here on start and rewritten atomically on every change.
    pub state_file: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            users: vec![User::demo()],
            state_file: None,
        }
    }
}

/// A running emulator. Dropping it stops the server too; `shutdown` does so explicitly.
pub struct Emulator {
    addr: SocketAddr,
    admin: Admin,
    server: Option<JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

impl Emulator {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Emulator> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(config: EmulatorConfig, addr: SocketAddr) -> anyhow::Result<Emulator> {
        let shared = Arc::new(shared::Shared::new(config.users, config.state_file)?);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(Emulator {
            addr,
            admin: Admin { shared },
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn api_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/admin`
    pub fn admin_url(&self) -> String {
        format!("http://{}/admin", self.addr)
    }

    pub fn admin(&self) -> Admin {
        self.admin.clone()
    }

    /// Stops accepting and ends every open connection; returns once the server task is gone,
    /// so the port and the state file are free for a successor.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}
