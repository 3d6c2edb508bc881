//! `/builds/{id}/events`: a build's log as server-sent events, for the
//! build page's script. It sends the log so far, then new chunks as they
//! arrive, a `status` event on each status change and an `end` event once
//! the build finished. The stream polls the read model rather than
//! listening in-process, so it follows builds whose chunks reach another
//! hub. Log event ids are chunk sequence numbers: a reconnect with
//! `Last-Event-ID` resumes after the last chunk seen.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt as _};

use crate::model::{LogTail, ReadModel};
use crate::WebState;

use super::{error_chain, PageError};

/// How often a stream asks the read model for new chunks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where one viewer's stream stands.
struct Viewer {
    model: Arc<dyn ReadModel>,
    build_id: i64,
    /// The last chunk sent; -1 before any.
    last_seq: i64,
    /// The last status sent.
    status: Option<String>,
    ended: bool,
}

impl Viewer {
    /// The events that take the viewer from where it stands to `tail`.
    fn advance(&mut self, tail: LogTail) -> Vec<Result<Event, axum::Error>> {
        let mut events = Vec::with_capacity(tail.chunks.len() + 2);
        for (seq, text) in tail.chunks {
            // JSON keeps newlines and carriage returns of the log intact in
            // one `data:` line.
            events.push(
                Event::default()
                    .event("log")
                    .id(seq.to_string())
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
        match self.model.log_since(self.build_id, self.last_seq).await {
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

/// The chunk sequence number a reconnecting browser saw last; -1 (from
/// the start) without a usable one.
fn last_event_id(headers: &HeaderMap) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(-1)
}

pub(crate) async fn stream(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let build_id: i64 = id.parse().map_err(|_| PageError::NotFound)?;
    let mut viewer = Viewer {
        model: state.model.clone(),
        build_id,
        last_seq: last_event_id(&headers),
        status: None,
        ended: false,
    };
    let tail = state
        .model
        .log_since(build_id, viewer.last_seq)
        .await?
        .ok_or(PageError::NotFound)?;
    let first = viewer.advance(tail);
    let events =
        stream::iter(first).chain(stream::unfold(viewer, Viewer::poll).flat_map(stream::iter));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
