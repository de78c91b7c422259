//! The event feed's own HTTP/1.1 exchange: a prepared `POST` written on a keep-alive connection
//! the feed thread owns, and the answer read back with nothing between the socket and the bytes.
//!
//! Why: an idle worker does little but poll, and on a VM an idle poll's CPU is mostly the length
//! of the path its request runs through with cold caches. Through reqwest (its pool, hyper-util's
//! client and connector stack, hyper's dispatch task and channel) a lone poll cost 320–370 µs of
//! CPU where the same exchange written on a tokio socket cost 160–200 µs and a blocking
//! `std::net` client 100–140 µs (docs/benchmarks.md, "Scale and idle cost", session 10). Only the feed's client
//! ([`super::Client::with_own_connections`]) exchanges this way; every other request, and every
//! feed request when a proxy is configured, goes through reqwest.
//!
//! What it does as reqwest does: the same headers (`X-API-Key`, `content-type`, `accept`), the
//! same timeouts (connect 10 s, the whole exchange 30 s), TLS through rustls with the platform's
//! verifier (ALPN `http/1.1`), at most [`super::FEED_POOL_MAX_IDLE`] idle connections kept for
//! [`IDLE_TIMEOUT`]. A response is framed by `Content-Length`, chunked transfer coding or the
//! connection's end. A kept connection the server has meanwhile closed is the one failure retried
//! here, once, on a new connection (before any byte of an answer came back, so the request may
//! have reached the server only when it closed without answering; the feed only reads). The
//! answer's status and body are then classified exactly as reqwest's are.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ApiError;

/// How long an idle connection is kept (reqwest's pool keeps one 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Headers a response head may carry.
const MAX_HEADERS: usize = 64;
/// What a connection's read buffer starts with; an idle poll's answer fits.
const BUFFER: usize = 4 * 1024;
/// The largest buffer an idle connection keeps; a larger one (a long page was read into it)
/// is replaced by a new one of [`BUFFER`].
const KEPT_BUFFER_MAX: usize = 64 * 1024;

/// The exchange for one API base URL. Connections are served by the runtime that opened them,
/// so one [`Lean`] belongs to one runtime (the feed thread's).
pub(super) struct Lean {
    /// `host:port` to connect to.
    connect_to: String,
    /// The TLS client and the server's name, for `https`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The request's headers up to the body's length (they carry the API key).
    head: Vec<u8>,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// A response as [`Lean::post_with`] hands it to its reader: what [`super::client`] classifies.
/// The body is borrowed from the connection's buffer (or, chunked, from its decoding).
#[derive(Debug)]
pub(super) struct Answer<'a> {
    pub status: StatusCode,
    pub retry_after: Option<&'a str>,
    pub body: &'a [u8],
}

struct Conn {
    stream: Stream,
    /// The connection's read buffer, kept with it from answer to answer: an idle poll's answer
    /// is read, parsed and dropped without allocating. A new buffer per answer was, being over
    /// 1 KiB, a request glibc serves only after consolidating its fast bins (the allocator,
    /// consolidation included, was about a tenth of the feed thread's CPU). A buffer a large
    /// answer grew is given back ([`KEPT_BUFFER_MAX`]).
    buf: Vec<u8>,
    since: Instant,
}

/// An answer copied out of its connection (tests).
#[cfg(test)]
#[derive(Debug)]
struct OwnedAnswer {
    status: StatusCode,
    body: Vec<u8>,
}

/// Where a read answer's body is.
enum Body {
    /// The connection's buffer, whole.
    InBuffer,
    /// Decoded from chunks.
    Decoded(Vec<u8>),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// How an exchange on one connection failed.
struct Failed {
    /// Nothing of an answer came back: on a kept connection, the server had closed it.
    nothing_back: bool,
    detail: String,
}

impl Failed {
    fn io(nothing_back: bool, e: std::io::Error) -> Failed {
        Failed {
            nothing_back,
            detail: e.to_string(),
        }
    }
}

impl Lean {
    /// The exchange for `base` (`http(s)://host[:port][/path]`), authenticating with `key`;
    /// `None` when reqwest must carry these requests: another scheme, or a proxy configured in
    /// the environment (reqwest honours it, this exchange does not).
    pub(super) fn for_base(
        base: &str,
        key: &reqwest::header::HeaderValue,
        tls: impl FnOnce() -> Option<Arc<rustls::ClientConfig>>,
    ) -> Option<Lean> {
        let url = reqwest::Url::parse(base).ok()?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        if proxy_configured(secure, |name| std::env::var_os(name)) {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let tls = match secure {
            false => None,
            true => {
                // An IPv6 literal is named without its brackets.
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(name.to_owned()).ok()?;
                Some((TlsConnector::from(tls()?), name))
            }
        };
        let mut head = b"host: ".to_vec();
        head.extend_from_slice(authority.as_bytes());
        head.extend_from_slice(b"\r\nx-api-key: ");
        head.extend_from_slice(key.as_bytes());
        head.extend_from_slice(b"\r\ncontent-type: application/json\r\naccept: */*\r\n");
        head.extend_from_slice(b"content-length: ");
        Some(Lean {
            connect_to: format!("{host}:{port}"),
            tls,
            head,
            idle: Mutex::new(Vec::new()),
            max_idle: super::FEED_POOL_MAX_IDLE,
            connect_timeout: super::client::CONNECT_TIMEOUT,
            request_timeout: super::client::REQUEST_TIMEOUT,
        })
    }

    /// `POST {target}` with a JSON `body`, `target` being the request's path and query as the URL
    /// parser wrote them ([`super::Client`] passes its parsed URL's): `read` of the answer, or the
    /// network failure as reqwest's would be classified (a failure to connect never ran). A
    /// target with a byte a request line cannot carry (a control character, a space) is refused
    /// before anything is sent: it could only end the request line early and add headers of its
    /// own.
    pub(super) async fn post_with<T>(
        &self,
        target: &str,
        body: &[u8],
        read: impl FnOnce(&Answer<'_>) -> T,
    ) -> Result<T, ApiError> {
        if !target.starts_with('/') || target.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(ApiError::Network {
                never_ran: true,
                detail: format!("request target {target:?} cannot be sent"),
            });
        }
        let request = self.request(target, body);
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let network = |never_ran, detail: String| ApiError::Network { never_ran, detail };
        // A kept connection first; when the server had closed it, once more on a new one.
        let mut kept = true;
        let (mut conn, head, body, keep) = loop {
            let mut conn = match kept.then(|| self.take_idle()).flatten() {
                Some(conn) => conn,
                None if kept => {
                    kept = false;
                    continue;
                }
                None => {
                    // Boxed: connecting (TLS handshake and all) is rare, and would otherwise make
                    // every exchange's future as large as its own.
                    let connecting =
                        crate::shared_timer::timeout_at(deadline, Box::pin(self.connect()));
                    match connecting.await {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(detail)) => return Err(network(true, detail)),
                        Err(_) => return Err(network(true, "timed out connecting".into())),
                    }
                }
            };
            match crate::shared_timer::timeout_at(deadline, exchange(&mut conn, &request)).await {
                Err(_) => return Err(network(false, "operation timed out".into())),
                Ok(Ok((head, body, keep))) => break (conn, head, body, keep),
                Ok(Err(failed)) if kept && failed.nothing_back => {
                    tracing::trace!(detail = %failed.detail, "kept connection closed; reconnecting");
                    kept = false;
                }
                Ok(Err(failed)) => return Err(network(false, failed.detail)),
            }
        };
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after.as_deref(),
            body: match &body {
                Body::InBuffer => &conn.buf,
                Body::Decoded(bytes) => bytes,
            },
        };
        let out = read(&answer);
        if keep {
            if conn.buf.capacity() > KEPT_BUFFER_MAX {
                conn.buf = Vec::with_capacity(BUFFER);
            }
            self.put_idle(conn);
        }
        Ok(out)
    }

    /// [`Lean::post_with`], the answer copied out (tests).
    #[cfg(test)]
    async fn post(&self, target: &str, body: &[u8]) -> Result<OwnedAnswer, ApiError> {
        self.post_with(target, body, |answer| OwnedAnswer {
            status: answer.status,
            body: answer.body.to_vec(),
        })
        .await
    }

    /// The request's bytes: line, headers, body.
    fn request(&self, target: &str, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::with_capacity(64 + target.len() + self.head.len() + body.len());
        r.extend_from_slice(b"POST ");
        r.extend_from_slice(target.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\n");
        r.extend_from_slice(&self.head);
        r.extend_from_slice(body.len().to_string().as_bytes());
        r.extend_from_slice(b"\r\n\r\n");
        r.extend_from_slice(body);
        r
    }

    async fn connect(&self) -> Result<Conn, String> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.connect_to))
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| format!("error connecting to {}: {e}", self.connect_to))?;
        // As reqwest's connector: a small request is not held back for Nagle.
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", self.connect_to))?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(BUFFER),
            since: Instant::now(),
        })
    }

    /// The most recently used idle connection still within [`IDLE_TIMEOUT`].
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Oldest first: expired ones are dropped from the front.
        let expired = idle
            .iter()
            .position(|c| c.since.elapsed() < IDLE_TIMEOUT)
            .unwrap_or(idle.len());
        idle.drain(..expired);
        idle.pop()
    }

    fn put_idle(&self, mut conn: Conn) {
        conn.since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(conn);
    }
}

/// Whether reqwest would send a request to a URL of this scheme through a proxy named in the
/// environment (`ALL_PROXY`, `HTTP(S)_PROXY`, upper or lower case). `NO_PROXY` is not read: with
/// a proxy named anywhere, every request goes through reqwest, which knows the rules.
fn proxy_configured(secure: bool, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let scheme = if secure { "https_proxy" } else { "http_proxy" };
    [scheme, "all_proxy"].iter().any(|name| {
        [name.to_string(), name.to_uppercase()]
            .iter()
            .any(|n| var(n).is_some_and(|v| !v.is_empty()))
    })
}

/// Writes `request` on `conn` and reads one response: its head, where its body is, and whether
/// the connection may carry another request.
async fn exchange(conn: &mut Conn, request: &[u8]) -> Result<(Head, Body, bool), Failed> {
    match &mut conn.stream {
        Stream::Plain(s) => write(s, request).await,
        Stream::Tls(s) => write(s.as_mut(), request).await,
    }
    .map_err(|e| Failed::io(true, e))?;
    let Conn { stream, buf, .. } = conn;
    match stream {
        Stream::Plain(s) => read_answer(s, buf).await,
        Stream::Tls(s) => read_answer(s.as_mut(), buf).await,
    }
}

async fn write(s: &mut (impl AsyncWrite + Unpin), request: &[u8]) -> std::io::Result<()> {
    s.write_all(request).await?;
    s.flush().await
}

/// Reads one response into `buf` (cleared first): its head, where its body is (a body framed by
/// length or by the connection's end is left alone in `buf`), and whether the connection may
/// carry another request.
async fn read_answer(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<(Head, Body, bool), Failed> {
    buf.clear();
    let malformed = |detail: String| Failed {
        nothing_back: false,
        detail,
    };
    // The head.
    let head = loop {
        if let Some(head) = parse_head(buf).map_err(malformed)? {
            if head.status.is_informational() {
                // `100 Continue` and the like precede the answer.
                buf.drain(..head.len);
                continue;
            }
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(malformed("response head too large".into()));
        }
        if fill(s, buf)
            .await
            .map_err(|e| Failed::io(buf.is_empty(), e))?
            == 0
        {
            return Err(Failed {
                nothing_back: buf.is_empty(),
                detail: "connection closed before the response head".into(),
            });
        }
    };
    buf.drain(..head.len);
    let no_body = head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    let io = |e| Failed::io(false, e);
    let (body, keep) = match head.framing {
        _ if no_body => {
            let keep = head.keep_alive && buf.is_empty();
            buf.clear();
            (Body::InBuffer, keep)
        }
        Framing::Length(n) => {
            while buf.len() < n {
                if fill(s, buf).await.map_err(io)? == 0 {
                    return Err(malformed("connection closed inside the body".into()));
                }
            }
            // Bytes past the body would be a pipelined answer nobody asked for: they are not the
            // body, and the connection goes with them.
            let keep = head.keep_alive && buf.len() == n;
            buf.truncate(n);
            (Body::InBuffer, keep)
        }
        Framing::Chunked => {
            let mut chunks = Dechunk::default();
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                at += chunks.feed(&buf[at..], &mut body).map_err(malformed)?;
                if chunks.done() {
                    break;
                }
                if fill(s, buf).await.map_err(io)? == 0 {
                    return Err(malformed("connection closed inside the body".into()));
                }
            }
            let keep = head.keep_alive && at == buf.len();
            buf.clear();
            (Body::Decoded(body), keep)
        }
        Framing::Close => {
            while fill(s, buf).await.map_err(io)? > 0 {}
            (Body::InBuffer, false)
        }
    };
    Ok((head, body, keep))
}

/// Reads what has arrived onto the end of `buf`; 0 at the end of the stream.
async fn fill(s: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < BUFFER / 2 {
        buf.reserve(BUFFER.max(buf.len()));
    }
    s.read_buf(buf).await
}

/// A response head, as [`parse_head`] reads it.
#[derive(Debug, PartialEq)]
struct Head {
    /// Its length in bytes, blank line included.
    len: usize,
    status: StatusCode,
    framing: Framing,
    keep_alive: bool,
    retry_after: Option<String>,
}

/// How a response's body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The response head at the start of `bytes`, `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status code {code}"))?;
    let http11 = response.version == Some(1);
    let mut keep_alive = http11;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut retry_after = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("bad content-length `{value}`"))?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting content-length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding; anything else ends with the connection.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                length = None;
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(value.to_owned());
        }
    }
    // Transfer-Encoding overrides Content-Length (HTTP/1.1's rules for a message's length).
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => {
            keep_alive = false;
            Framing::Close
        }
    };
    Ok(Some(Head {
        len,
        status,
        framing,
        keep_alive,
        retry_after,
    }))
}

/// A decoder of chunked transfer coding fed as bytes arrive.
#[derive(Debug, Default)]
struct Dechunk {
    state: Chunk,
}

#[derive(Debug, Default, PartialEq)]
enum Chunk {
    /// Reading a size line.
    #[default]
    Size,
    /// This many data bytes to go.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailer,
    Done,
}

/// The longest size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Dechunk {
    fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes what it can of `input` onto `body`; how many bytes of `input` it used. Unused
    /// bytes (an incomplete line) are given again with more after them.
    fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                Chunk::Done => return Ok(at),
                Chunk::Data(n) => {
                    let take = n.min(rest.len());
                    body.extend_from_slice(&rest[..take]);
                    at += take;
                    if take < n {
                        self.state = Chunk::Data(n - take);
                        return Ok(at);
                    }
                    self.state = Chunk::DataEnd;
                }
                Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err("chunk line too long".into());
                        }
                        return Ok(at);
                    };
                    let line = &rest[..end];
                    at += end + 2;
                    self.state = match self.state {
                        Chunk::DataEnd if line.is_empty() => Chunk::Size,
                        Chunk::DataEnd => return Err("chunk data longer than its size".into()),
                        Chunk::Trailer if line.is_empty() => Chunk::Done,
                        Chunk::Trailer => Chunk::Trailer,
                        _ => match chunk_size(line)? {
                            0 => Chunk::Trailer,
                            n => Chunk::Data(n),
                        },
                    };
                }
            }
        }
    }
}

/// A size line: hex digits, optionally followed by `;extensions`.
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let text = std::str::from_utf8(digits).unwrap_or_default().trim();
    if text.is_empty() || text.len() > 15 {
        return Err("bad chunk size".into());
    }
    usize::from_str_radix(text, 16).map_err(|_| "bad chunk size".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_head_is_framed_by_length_chunks_or_the_end() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{}");
        assert_eq!(
            (h.framing, h.keep_alive, h.len),
            (Framing::Length(12), true, 39)
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 2\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            (h.status.as_u16(), h.retry_after.as_deref()),
            (429, Some("7"))
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 99 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxies_in_the_environment_leave_requests_to_reqwest() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!proxy_configured(false, env(&[])));
        assert!(!proxy_configured(
            false,
            env(&[("HTTPS_PROXY", "http://p:1")])
        ));
        assert!(proxy_configured(
            true,
            env(&[("HTTPS_PROXY", "http://p:1")])
        ));
        assert!(proxy_configured(
            false,
            env(&[("http_proxy", "http://p:1")])
        ));
        assert!(proxy_configured(
            true,
            env(&[("ALL_PROXY", "socks5://p:1")])
        ));
        assert!(!proxy_configured(true, env(&[("all_proxy", "")])));
    }

    #[test]
    fn chunks_with_extensions_and_trailers_decode() {
        let mut d = Dechunk::default();
        let mut body = Vec::new();
        let input = b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n";
        assert_eq!(d.feed(input, &mut body), Ok(input.len()));
        assert!(d.done());
        assert_eq!(body, b"Wikipedia");
        for bad in [&b"zz\r\n"[..], b"3\r\nabcd\r\n", b"\r\n"] {
            let mut d = Dechunk::default();
            assert!(d.feed(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
    }

    /// `body` in chunked coding, one chunk per `sizes` entry (cycled) and a final empty one.
    fn encode(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].clamp(1, rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            k += 1;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        /// However the coded body arrives in pieces, the decoder gives back the body and uses
        /// exactly the coded bytes.
        #[test]
        fn chunked_bodies_decode_whatever_the_arrival(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..80, 1..6),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            let coded = encode(&body, &sizes);
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let (mut arrived, mut used, mut k) = (0, 0, 0);
            while !d.done() {
                prop_assert!(arrived < coded.len(), "ran out of input");
                arrived = (arrived + cuts[k % cuts.len()]).min(coded.len());
                k += 1;
                used += d.feed(&coded[used..arrived], &mut out).unwrap();
            }
            prop_assert_eq!(used, coded.len());
            prop_assert_eq!(out, body);
        }

        /// The head parser never panics, whatever the bytes.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_head(&bytes);
        }
    }

    /// Sockets: a scripted HTTP/1.1 server on 127.0.0.1 that reads each request whole and
    /// writes the next scripted reply, in the pieces given (each flushed on its own).
    mod wire {
        use super::super::*;
        use std::collections::VecDeque;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::net::TcpListener;

        trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
        impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

        /// A reply: its pieces, and whether the server closes the connection after it.
        type Reply = (Vec<&'static [u8]>, bool);

        #[derive(Default)]
        struct Script {
            replies: Mutex<VecDeque<Reply>>,
            requests: Mutex<Vec<String>>,
            connections: AtomicUsize,
        }

        async fn server(
            replies: Vec<Reply>,
            tls: Option<tokio_rustls::TlsAcceptor>,
        ) -> (String, Arc<Script>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let script = Arc::new(Script {
                replies: Mutex::new(replies.into()),
                ..Default::default()
            });
            let shared = Arc::clone(&script);
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let script = Arc::clone(&shared);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let io: Box<dyn Io> = match tls {
                            None => Box::new(tcp),
                            Some(acceptor) => Box::new(acceptor.accept(tcp).await.unwrap()),
                        };
                        serve(io, &script).await;
                    });
                }
            });
            (format!("127.0.0.1:{port}"), script)
        }

        async fn serve(mut io: Box<dyn Io>, script: &Script) {
            let mut buf = Vec::new();
            loop {
                // A request: the head, then `content-length` bytes.
                let (head_end, length) = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let n = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        break (i + 4, n);
                    }
                    if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                };
                while buf.len() < head_end + length {
                    if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let request: Vec<u8> = buf.drain(..head_end + length).collect();
                script
                    .requests
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(request).unwrap());
                let Some((pieces, close)) = script.replies.lock().unwrap().pop_front() else {
                    return;
                };
                for piece in pieces {
                    io.write_all(piece).await.unwrap();
                    io.flush().await.unwrap();
                }
                if close {
                    let _ = io.shutdown().await;
                    return;
                }
            }
        }

        /// `err` is a network failure that says the request `never_ran` (or may have run).
        #[track_caller]
        fn assert_network(err: &ApiError, never_ran: bool) {
            assert!(
                matches!(err, ApiError::Network { never_ran: n, .. } if *n == never_ran),
                "{err:?}"
            );
        }

        fn lean(base: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Lean {
            let key = reqwest::header::HeaderValue::from_static("bhk_test");
            Lean::for_base(base, &key, || tls).expect("a lean exchange for this URL")
        }

        const QUERY: &str = "/v1/revisions/r1/data/query";

        #[tokio::test]
        async fn answers_framed_every_way_share_one_kept_connection() {
            let replies = vec![
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"[..]],
                    false,
                ),
                (
                    vec![
                        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nsec"[..],
                        b"\r\n3\r\nond\r\n",
                        b"0\r\n\r\n",
                    ],
                    false,
                ),
                (
                    vec![
                        &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthird",
                    ],
                    false,
                ),
                // No length: the body ends with the connection.
                (vec![&b"HTTP/1.1 200 OK\r\n\r\nfourth"[..]], true),
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfifth"[..]],
                    false,
                ),
            ];
            let (authority, script) = server(replies, None).await;
            let lean = lean(&format!("http://{authority}/v1/"), None);
            let mut bodies = Vec::new();
            for _ in 0..5 {
                let answer = lean.post(QUERY, br#"{"command":"x"}"#).await.unwrap();
                assert_eq!(answer.status, StatusCode::OK);
                bodies.push(String::from_utf8(answer.body).unwrap());
            }
            assert_eq!(bodies, ["first", "second", "third", "fourth", "fifth"]);
            // The first four on one connection; the fourth's end closed it.
            assert_eq!(script.connections.load(Ordering::SeqCst), 2);
            let requests = script.requests.lock().unwrap();
            assert_eq!(
                requests[0],
                format!(
                    "POST /v1/revisions/r1/data/query HTTP/1.1\r\nhost: {authority}\r\n\
                     x-api-key: bhk_test\r\ncontent-type: application/json\r\naccept: */*\r\n\
                     content-length: 15\r\n\r\n{{\"command\":\"x\"}}"
                )
            );
        }

        #[tokio::test]
        async fn bytes_past_the_body_are_dropped_with_the_connection() {
            let replies = vec![
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK"[..]],
                    false,
                ),
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"[..]],
                    false,
                ),
            ];
            let (authority, script) = server(replies, None).await;
            let lean = lean(&format!("http://{authority}"), None);
            assert_eq!(lean.post(QUERY, b"{}").await.unwrap().body, b"{}");
            assert_eq!(lean.post(QUERY, b"{}").await.unwrap().body, b"next");
            assert_eq!(script.connections.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn a_kept_connection_the_server_closed_is_replaced_once() {
            // The first answer promises keep-alive, and then the server closes anyway.
            let ok = &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"[..];
            let (authority, script) = server(vec![(vec![ok], true), (vec![ok], false)], None).await;
            let lean = lean(&format!("http://{authority}"), None);
            lean.post(QUERY, b"{}").await.unwrap();
            let answer = lean.post(QUERY, b"{}").await.unwrap();
            assert_eq!(answer.body, b"{}");
            assert_eq!(script.connections.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn failures_say_whether_the_request_may_have_run() {
            // Nobody listens: never ran.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let err = lean(&format!("http://127.0.0.1:{port}"), None)
                .post(QUERY, b"{}")
                .await
                .unwrap_err();
            assert_network(&err, true);
            // Half an answer, then the end: it ran.
            let half = &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"[..];
            let (authority, _) = server(vec![(vec![half], true)], None).await;
            let err = lean(&format!("http://{authority}"), None)
                .post(QUERY, b"{}")
                .await
                .unwrap_err();
            assert_network(&err, false);
            // No answer at all within the timeout (the server holds the connection): it may have run.
            let (authority, _) = server(vec![(Vec::new(), false)], None).await;
            let mut silent = lean(&format!("http://{authority}"), None);
            silent.request_timeout = Duration::from_millis(200);
            let err = silent.post(QUERY, b"{}").await.unwrap_err();
            assert_network(&err, false);
        }

        #[tokio::test]
        async fn the_feed_client_classifies_lean_answers_as_reqwest_ones() {
            let replies = vec![
                (
                    vec![&b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n"[..]],
                    false,
                ),
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 46\r\n\r\n{\"status\":\"success\",\"session_events\":[],\"n\":1}"[..]],
                    false,
                ),
                (
                    vec![&b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"status\":\"success\"}"[..]],
                    false,
                ),
            ];
            let (authority, script) = server(replies, None).await;
            let retry = crate::api::RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            };
            let client = crate::api::Client::new(&format!("http://{authority}/v1"), "bhk_k", retry)
                .unwrap()
                .with_own_connections()
                .unwrap();
            assert!(client.inner.lean.is_some());
            let err = client
                .query("r1", "list_session_events", Default::default())
                .await
                .unwrap_err();
            assert_eq!(
                err,
                ApiError::RateLimited {
                    retry_after: Some(Duration::from_secs(7))
                }
            );
            let page = client
                .query("r1", "list_session_events", Default::default())
                .await
                .unwrap();
            assert_eq!(page["n"], 1);
            assert!(
                script.requests.lock().unwrap()[1]
                    .ends_with(r#"{"command":"list_session_events"}"#)
            );
            // Both queries on the exchange's one kept connection; a write is not the exchange's
            // (it would re-send on a closed kept connection) and goes through reqwest's own.
            assert_eq!(script.connections.load(Ordering::SeqCst), 1);
            client
                .command("r1", "upload_session_object", Default::default())
                .await
                .unwrap();
            assert_eq!(script.connections.load(Ordering::SeqCst), 2);
        }

        /// An answer with `status` and a JSON `body`, framed by length.
        fn reply(status: &str, body: &str) -> Reply {
            let text = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            (vec![Box::leak(text.into_bytes().into_boxed_slice())], false)
        }

        #[tokio::test]
        async fn prepared_queries_send_what_query_sends_and_are_read_in_place() {
            use crate::api::{Client, Read, RetryPolicy};
            let page = r#"{"status":"success","session_events":[],"cursor":null}"#;
            let replies = vec![
                reply("200 OK", page),
                reply("200 OK", r#"{"status":"success","n":1}"#),
                reply(
                    "200 OK",
                    r#"{"status":"error","error":"not_found","message":"gone"}"#,
                ),
                reply("503 Service Unavailable", "{}"),
                reply("200 OK", page),
            ];
            let (authority, script) = server(replies, None).await;
            let once = RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            };
            let base = format!("http://{authority}/v1");
            let client = Client::new(&base, "bhk_k", once)
                .unwrap()
                .with_own_connections()
                .unwrap();
            let mut args = serde_json::Map::new();
            args.insert("session_id".into(), "ses_1".into());
            args.insert("limit".into(), 1000.into());
            let query = client.prepare_query("r1", "list_session_events", args.clone());
            // The reader sees the body; one that declines gets the envelope, or the failure.
            let text = |b: &[u8]| Some(String::from_utf8(b.to_vec()).unwrap());
            let declines = |_: &[u8]| None::<()>;
            assert_eq!(
                client.query_prepared(&query, text).await.unwrap(),
                Read::Typed(page.to_owned())
            );
            assert_eq!(
                client.query_prepared(&query, declines).await.unwrap(),
                Read::Envelope(serde_json::json!({"status": "success", "n": 1}))
            );
            // A reader checks `status` itself (it is given every 2xx body); one that declines
            // leaves a failure's body to the classification.
            let failed = client.query_prepared(&query, declines).await.unwrap_err();
            assert!(
                matches!(&failed, ApiError::CommandFailed { error, .. } if error == "not_found"),
                "{failed:?}"
            );
            let failed = client.query_prepared(&query, text).await.unwrap_err();
            assert!(
                matches!(
                    failed,
                    ApiError::Transient {
                        status: Some(503),
                        ..
                    }
                ),
                "{failed:?}"
            );
            // The same request as the unprepared query's, every time, on one connection.
            client
                .query("r1", "list_session_events", args.clone())
                .await
                .unwrap();
            let requests = script.requests.lock().unwrap().clone();
            assert_eq!(requests.len(), 5);
            assert!(requests.iter().all(|r| *r == requests[4]), "{requests:?}");
            assert_eq!(script.connections.load(Ordering::SeqCst), 1);
            // Through reqwest (a client without the exchange) the reader reads the same.
            let (authority, _) = server(vec![reply("200 OK", page)], None).await;
            let plain = Client::new(&format!("http://{authority}/v1"), "bhk_k", once).unwrap();
            assert!(plain.inner.lean.is_none());
            let query = plain.prepare_query("r1", "list_session_events", args);
            assert_eq!(
                plain.query_prepared(&query, text).await.unwrap(),
                Read::Typed(page.to_owned())
            );
        }

        #[tokio::test]
        async fn a_large_answers_buffer_is_not_kept_with_its_connection() {
            let big = format!(
                r#"{{"status":"success","pad":"{}"}}"#,
                "x".repeat(KEPT_BUFFER_MAX * 2)
            );
            let replies = vec![reply("200 OK", &big), reply("200 OK", "{}")];
            let (authority, script) = server(replies, None).await;
            let lean = lean(&format!("http://{authority}"), None);
            let body = lean.post(QUERY, b"{}").await.unwrap().body;
            assert_eq!(body.len(), big.len());
            let kept = lean.idle.lock().unwrap()[0].buf.capacity();
            assert!(kept <= KEPT_BUFFER_MAX, "{kept}");
            assert_eq!(lean.post(QUERY, b"{}").await.unwrap().body, b"{}");
            assert_eq!(script.connections.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn an_id_cannot_add_lines_to_the_request() {
            let ok = &b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"status\":\"success\"}"[..];
            let (authority, script) = server(vec![(vec![ok], false)], None).await;
            let client = crate::api::Client::new(
                &format!("http://{authority}/v1"),
                "bhk_k",
                crate::api::RetryPolicy {
                    max_attempts: 1,
                    ..Default::default()
                },
            )
            .unwrap()
            .with_own_connections()
            .unwrap();
            // A revision id from a hostile session, interpolated raw into the path.
            let hostile = "r1 HTTP/1.1\r\nx-evil: 1\r\n\r\nGET /x";
            client
                .query(hostile, "list_session_events", Default::default())
                .await
                .unwrap();
            let sent = script.requests.lock().unwrap()[0].clone();
            assert_eq!(
                sent.lines().next().unwrap(),
                "POST /v1/revisions/r1%20HTTP/1.1x-evil:%201GET%20/x/data/query HTTP/1.1"
            );
            assert!(!sent.to_lowercase().contains("\r\nx-evil"));
            // The exchange itself refuses a target it cannot send as it is.
            let lean = lean(&format!("http://{authority}"), None);
            for bad in ["/a\r\nb", "/a b", "no-slash", "/caf\u{e9}"] {
                let err = lean.post(bad, b"{}").await.unwrap_err();
                assert_network(&err, true);
            }
        }

        #[tokio::test]
        async fn tls_is_verified_against_the_given_roots() {
            let ca =
                rustls::pki_types::CertificateDer::from(&include_bytes!("testdata/ca.der")[..]);
            let leaf =
                rustls::pki_types::CertificateDer::from(&include_bytes!("testdata/leaf.der")[..]);
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
                include_bytes!("testdata/leaf.key.der").to_vec().into(),
            );
            // Installs the process's crypto provider, which the server's config needs too.
            let platform = crate::api::client::lean_tls().unwrap();
            let server_config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![leaf], key)
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
            let ok = &b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsecured"[..];
            let (authority, _) = server(vec![(vec![ok], false)], Some(acceptor.clone())).await;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let trusting = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let port = authority.rsplit(':').next().unwrap();
            let lean_tls = lean(
                &format!("https://localhost:{port}/v1"),
                Some(Arc::new(trusting)),
            );
            let answer = lean_tls.post(QUERY, b"{}").await.unwrap();
            assert_eq!(answer.body, b"secured");
            // The platform's roots do not know the test CA: the handshake fails, never ran.
            let (authority, _) = server(vec![(vec![ok], false)], Some(acceptor)).await;
            let port = authority.rsplit(':').next().unwrap();
            let strict = lean(&format!("https://localhost:{port}/v1"), Some(platform));
            let err = strict.post(QUERY, b"{}").await.unwrap_err();
            assert_network(&err, true);
        }
    }
}
