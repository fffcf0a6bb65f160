//! The live tail of plugin log lines: the last lines in a bounded ring for
//! the page, and a server-sent event stream per browser. Both read the
//! runtime's log broadcast, which never waits for a reader: a browser that
//! falls behind by more than the broadcast holds is dropped (its
//! `EventSource` reconnects), and a plugin never waits for a browser.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::capabilities::log::{LogRecord, level_name};

/// Lines the page starts with.
pub const RECENT_LINES: usize = 200;
/// Browsers tailing at once; more are refused, so the tail cannot use up
/// the admin listener's connections.
pub const MAX_TAILS: usize = 8;

/// One line as the console shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TailLine {
    /// The plugin.
    pub plugin: String,
    /// `trace` … `error`.
    pub level: &'static str,
    /// The line, as the log capability escaped and cut it.
    pub message: String,
}

impl From<LogRecord> for TailLine {
    fn from(r: LogRecord) -> Self {
        TailLine {
            plugin: r.plugin,
            level: level_name(r.level),
            message: r.message,
        }
    }
}

/// The recent lines and the browsers following them.
pub struct LogTail {
    lines: broadcast::Sender<LogRecord>,
    recent: Mutex<VecDeque<TailLine>>,
    tailing: Arc<AtomicUsize>,
}

/// Frees a tail's place when its stream ends.
struct TailSlot(Arc<AtomicUsize>);

impl Drop for TailSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LogTail {
    /// A tail of the lines `lines` carries.
    pub fn new(lines: broadcast::Sender<LogRecord>) -> LogTail {
        LogTail {
            lines,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_LINES)),
            tailing: Arc::default(),
        }
    }

    /// The last [`RECENT_LINES`] lines, oldest first.
    pub fn recent(&self) -> Vec<TailLine> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().cloned().collect()
    }

    /// Keeps the last lines until `stop`.
    pub async fn keep_recent(self: Arc<Self>, stop: CancellationToken) {
        let mut rx = self.lines.subscribe();
        loop {
            let line = tokio::select! {
                _ = stop.cancelled() => return,
                line = rx.recv() => line,
            };
            match line {
                Ok(record) => {
                    let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                    if recent.len() == RECENT_LINES {
                        recent.pop_front();
                    }
                    recent.push_back(record.into());
                }
                // Missed lines are simply not in the page's start.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// An event stream of the lines from now on, as JSON `TailLine`s, until
    /// the client falls behind or `stop`; `None` when [`MAX_TAILS`] browsers
    /// are tailing already.
    pub fn stream(
        &self,
        stop: CancellationToken,
    ) -> Option<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
        if self.tailing.fetch_add(1, Ordering::Relaxed) >= MAX_TAILS {
            self.tailing.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let slot = TailSlot(self.tailing.clone());
        let rx = self.lines.subscribe();
        let stream =
            futures_util::stream::unfold((rx, stop, slot), |(mut rx, stop, slot)| async move {
                let line = tokio::select! {
                    _ = stop.cancelled() => return None,
                    line = rx.recv() => line,
                };
                match line {
                    Ok(record) => {
                        let json = serde_json::to_string(&TailLine::from(record)).ok()?;
                        Some((Ok(Event::default().data(json)), (rx, stop, slot)))
                    }
                    // Behind by more than the broadcast holds: dropped.
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!("console: a log tail fell {n} lines behind; closed it");
                        None
                    }
                    Err(RecvError::Closed) => None,
                }
            });
        Some(Sse::new(stream).keep_alive(KeepAlive::default()))
    }
}
