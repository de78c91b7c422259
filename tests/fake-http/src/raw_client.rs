//! A bare HTTP/1.1 client for the fakes' own tests: one request per connection, written by hand,
//! so a test sees exactly the bytes the fake sends (a stream's events, a stall, a status) without
//! an HTTP library between.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`call`] waits for a response to end.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sends one request with `auth` (a whole header line, e.g. `x-api-key: dummy`) on a new
/// connection (closed after the response) and returns the stream to read the response from.
pub async fn send(
    addr: SocketAddr,
    auth: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: fake\r\n{auth}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    conn
}

/// [`send`], then the whole response (for requests that finish within [`WAIT`]): its status and
/// its text, head included.
pub async fn call(
    addr: SocketAddr,
    auth: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, String) {
    let mut conn = send(addr, auth, method, path, body).await;
    let mut out = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut out))
        .await
        .expect("the response ends")
        .unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

/// The JSON of every `data:` line of a server-sent-events response.
pub fn data_lines(response: &str) -> Vec<Value> {
    response
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
