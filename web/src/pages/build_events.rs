//! `/builds/{id}/events`: a build's log as server-sent events, for the
//! build page's script. It sends the log so far, then new chunks as they
//! arrive, a `status` event on each status change and an `end` event once
//! the build finished. The stream polls the read model rather than
//! listening in-process, so it follows builds whose chunks reach another
//! hub. Log event ids are `<attempt>.<seq>` of the chunk: a reconnect
//! with `Last-Event-ID` resumes after the last chunk seen. A retried build
//! starts its log over; a `reset` event tells the page to clear it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt as _};

use crate::model::{LogTail, ReadModel, Visitor};
use crate::WebState;

use super::{error_chain, PageError};

/// How often a stream asks the read model for new chunks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where one viewer's stream stands.
struct Viewer {
    model: Arc<dyn ReadModel>,
    /// Who follows: the build stays visible only while they may see it.
    visitor: Visitor,
    build_id: i64,
    /// The attempt whose chunks are being sent; `None` before the first poll.
    attempt: Option<i64>,
    /// The last chunk of it sent; -1 before any.
    last_seq: i64,
    /// The last status sent.
    status: Option<String>,
    ended: bool,
}

impl Viewer {
    /// The events that take the viewer from where it stands to `tail`.
    fn advance(&mut self, tail: LogTail) -> Vec<Result<Event, axum::Error>> {
        let mut events = Vec::with_capacity(tail.chunks.len() + 3);
        if self.attempt != Some(tail.attempt) {
            // A fresh viewer has nothing to clear; the page replaces its
            // rendered log on the first chunk.
            if self.attempt.is_some() {
                events.push(Ok(Event::default()
                    .event("reset")
                    .data(tail.attempt.to_string())));
            }
            self.attempt = Some(tail.attempt);
            self.last_seq = -1;
        }
        for (seq, text) in tail.chunks {
            // JSON keeps newlines and carriage returns of the log intact in
            // one `data:` line.
            events.push(
                Event::default()
                    .event("log")
                    .id(format!("{}.{seq}", tail.attempt))
                    .json_data(text),
            );
            self.last_seq = seq;
        }
        if self.status.as_deref() != Some(tail.status.as_str()) {
            events.push(Ok(Event::default().event("status").data(&tail.status)));
        }
        if !matches!(tail.status.as_str(), "queued" | "running") {
            events.push(Ok(Event::default().event("end").data(&tail.status)));
            self.ended = true;
        }
        self.status = Some(tail.status);
        events
    }

    /// Waits a poll interval, then the events since the last poll; `None`
    /// ends the stream (build ended, vanished, or the read model failed;
    /// the browser reconnects after a failure).
    async fn poll(mut self) -> Option<(Vec<Result<Event, axum::Error>>, Viewer)> {
        if self.ended {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        match self
            .model
            .log_since(&self.visitor, self.build_id, self.attempt, self.last_seq)
            .await
        {
            Ok(Some(tail)) => {
                let events = self.advance(tail);
                Some((events, self))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("build {} events failed: {}", self.build_id, error_chain(&e));
                None
            }
        }
    }
}

/// The `(attempt, seq)` of the chunk a reconnecting browser saw last.
fn last_event_id(headers: &HeaderMap) -> Option<(i64, i64)> {
    let value = headers.get("last-event-id")?.to_str().ok()?;
    let (attempt, seq) = value.trim().split_once('.')?;
    Some((attempt.parse().ok()?, seq.parse().ok()?))
}

pub(crate) async fn stream(
    State(state): State<WebState>,
    visitor: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let build_id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    let seen = last_event_id(&headers);
    let mut viewer = Viewer {
        model: state.model.clone(),
        visitor: visitor.clone(),
        build_id,
        attempt: seen.map(|(attempt, _)| attempt),
        last_seq: seen.map_or(-1, |(_, seq)| seq),
        status: None,
        ended: false,
    };
    let tail = state
        .model
        .log_since(&visitor, build_id, viewer.attempt, viewer.last_seq)
        .await?
        .ok_or(PageError::NotFound)?;
    let first = viewer.advance(tail);
    let events =
        stream::iter(first).chain(stream::unfold(viewer, Viewer::poll).flat_map(stream::iter));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
