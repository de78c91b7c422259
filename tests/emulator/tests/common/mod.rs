//! Shared helpers for the emulator's HTTP tests.
#![allow(dead_code)]

use blobhub_emulator::{Emulator, EmulatorConfig, SessionIds, User};
use serde_json::{Value, json};

pub const KEY: &str = "bhk_demo_key";

pub struct Ctx {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub ids: SessionIds,
}

pub fn alice() -> User {
    User {
        id: "usr_alice".into(),
        name: "Alice".into(),
        email: "alice@example.com".into(),
        api_key: "bhk_alice".into(),
    }
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain http still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn start_with(config: EmulatorConfig) -> Ctx {
    let emu = Emulator::start(config).await.expect("emulator starts");
    let ids = emu
        .admin()
        .create_session(blobhub_emulator::CreateSession {
            alias: Some("main".into()),
            ..Default::default()
        })
        .expect("session");
    Ctx {
        emu,
        http: client(),
        ids,
    }
}

pub async fn start() -> Ctx {
    let mut config = EmulatorConfig::default();
    config.users.push(alice());
    start_with(config).await
}

pub fn thread(name: &str) -> Value {
    json!({"type": "thread", "thread": {"attributes": {"name": name}, "metadata": {"instance": {"state": "pending"}}}})
}

impl Ctx {
    pub fn sid(&self) -> String {
        self.ids.session_id.clone()
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.emu.api_url()));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null),
        )
    }

    /// POSTs to data/{channel} of the session's revision with the demo key.
    pub async fn data(&self, channel: &str, body: Value) -> (u16, Value) {
        self.data_as(KEY, channel, body).await
    }

    pub async fn data_as(&self, key: &str, channel: &str, body: Value) -> (u16, Value) {
        let resp = self.data_raw(key, channel, body).await.expect("request");
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null),
        )
    }

    pub async fn data_raw(
        &self,
        key: &str,
        channel: &str,
        body: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!(
            "{}/revisions/{}/data/{channel}",
            self.emu.api_url(),
            self.ids.revision_id
        );
        self.http
            .post(url)
            .header("X-API-Key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
    }

    pub async fn query(&self, body: Value) -> (u16, Value) {
        self.data("query", body).await
    }

    pub async fn command(&self, body: Value) -> (u16, Value) {
        self.data("command", body).await
    }

    pub async fn upload(&self, alias: &str, value: Value) -> (u16, Value) {
        self.command(json!({"command": "upload_session_object", "session_id": self.sid(), "alias": alias, "value": value}))
            .await
    }

    pub async fn post(&self, alias: &str, text: &str) -> (u16, Value) {
        self.command(
            json!({"command": "post_session_thread_item", "session_id": self.sid(), "alias": alias,
                            "content": [{"type": "text", "text": text}]}),
        )
        .await
    }

    pub async fn admin_req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.admin_url()));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null),
        )
    }
}
