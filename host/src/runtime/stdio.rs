//! A guest's stdout and stderr, turned into log lines.
//!
//! JS and Python guests print through WASI. Each line becomes one log record
//! tagged with the plugin's name, escaped, cut at a maximum length and
//! counted against the plugin's log rate, exactly like `log.log` calls.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::capabilities::log::{LogSink, StdStream};
use crate::sanitize::MAX_LOG_LINE_CHARS;

/// One of a plugin's two output streams.
pub struct GuestOutput {
    sink: Arc<LogSink>,
    stream: StdStream,
}

impl GuestOutput {
    /// The stream `stream` of a guest, written to `sink`.
    pub fn new(sink: Arc<LogSink>, stream: StdStream) -> GuestOutput {
        GuestOutput { sink, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            sink: self.sink.clone(),
            stream: self.stream,
            pending: Vec::new(),
        })
    }
}

/// Splits bytes into lines. A line longer than the maximum is emitted in
/// pieces, so a guest that never writes a newline cannot grow this buffer.
struct LineWriter {
    sink: Arc<LogSink>,
    stream: StdStream,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line_end: usize) {
        let line: Vec<u8> = self.pending.drain(..line_end).collect();
        let text = String::from_utf8_lossy(&line);
        self.sink
            .stdio_line(self.stream, text.trim_end_matches(['\n', '\r']));
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.pending.extend_from_slice(buf);
        while let Some(pos) = this.pending.iter().position(|b| *b == b'\n') {
            this.emit(pos + 1);
        }
        // Bytes, not chars: a cut in the middle of a UTF-8 sequence shows as
        // U+FFFD, which is fine for a line that was too long anyway.
        while this.pending.len() > MAX_LOG_LINE_CHARS * 4 {
            this.emit(MAX_LOG_LINE_CHARS * 4);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let end = self.pending.len();
            self.emit(end);
        }
    }
}
