//! A job type's stderr (a Rust panic message, `eprintln!`): the section's tagged log lines.
//!
//! Passed through raw, a guest's stderr would be indistinguishable from the worker's own log and
//! could forge lines of it (a newline, then text shaped like a worker event). Here every line is
//! logged as the event `guest_stderr` of its section, its text quoted with control characters
//! escaped, cut to a bounded length, and within the section's log-line quota.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::capabilities::SectionContext;
use super::quotas::{LogAdmission, MAX_FIELD_BYTES, clip};

/// The stderr of one section's guest.
#[derive(Clone)]
pub struct GuestStderr(pub Arc<SectionContext>);

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines {
            section: Arc::clone(&self.0),
            partial: Vec::new(),
        })
    }
}

struct Lines {
    section: Arc<SectionContext>,
    partial: Vec<u8>,
}

impl Lines {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let s = &self.section;
        match s.quotas.admit_log_line(std::time::Instant::now()) {
            LogAdmission::Drop => return,
            LogAdmission::Write { dropped_before } if dropped_before > 0 => {
                tracing::warn!(section = %s.label(), job_type = %s.job_type, dropped = dropped_before, "log_lines_dropped");
            }
            LogAdmission::Write { .. } => {}
        }
        let line = format!("{:?}", clip(text));
        tracing::warn!(section = %s.label(), job_type = %s.job_type, line = %line, "guest_stderr");
    }
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else {
                self.partial.push(byte);
                // A line without end is logged in pieces rather than held without bound.
                if self.partial.len() >= MAX_FIELD_BYTES {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.partial.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}
