//! The build page's live log stream, `/builds/{id}/events`, through the
//! hub's real router on a real TCP listener, on SQLite and PostgreSQL:
//! the log so far then each new chunk in order as server-sent events, a
//! reconnect with `Last-Event-ID` resuming without duplicates, a retried
//! attempt resetting the log, `status` and `end` events when the build
//! finishes and the stream closing then, and 404 for private and unknown
//! builds.

use std::future::IntoFuture as _;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sifhub::config::Config;
use sifhub::db::{NewRepository, RepositorySettings, Timestamp};
use sifhub::queue::{Lease, NewBuild, Trigger};
use sifhub::serve::{router, AppState};
use sifhub_tests::postgres::both_backends;

const LEASE: Duration = Duration::from_secs(600);
/// Far longer than the stream's poll interval.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One server-sent event.
#[derive(Debug, PartialEq, Eq)]
struct ServerEvent {
    event: String,
    id: Option<String>,
    data: String,
}

impl ServerEvent {
    /// The log text a `log` event carries (a JSON string).
    fn log_text(&self) -> String {
        assert_eq!(self.event, "log", "{self:?}");
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open event stream, parsed as it arrives.
struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    async fn open(base: &str, build_id: i64, last_event_id: Option<&str>) -> EventStream {
        let mut request = reqwest::Client::new().get(format!("{base}/builds/{build_id}/events"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, skipping keep-alive comments; `None` once the
    /// server closed the stream.
    async fn next(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = ServerEvent {
                    event: "message".to_owned(),
                    id: None,
                    data: String::new(),
                };
                let mut fields = 0;
                for line in block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                {
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    fields += 1;
                    match name {
                        "event" => event.event = value,
                        "id" => event.id = Some(value),
                        "data" if event.data.is_empty() => event.data = value,
                        "data" => event.data = format!("{}\n{value}", event.data),
                        other => panic!("unexpected field {other:?} in {block:?}"),
                    }
                }
                if fields > 0 {
                    return Some(event);
                }
                continue;
            }
            match tokio::time::timeout(EVENT_TIMEOUT, self.body.next())
                .await
                .expect("no event in time")
            {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap()),
                None => {
                    assert!(self.buffer.trim().is_empty(), "{:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// The next event, which must be the log chunk `id` (`attempt.seq`)
    /// with `text`.
    async fn expect_log(&mut self, id: &str, text: &str) {
        let event = self.next().await.expect("stream ended before a log event");
        assert_eq!(event.id.as_deref(), Some(id), "{event:?}");
        assert_eq!(event.log_text(), text);
    }

    async fn expect(&mut self, name: &str, data: &str) {
        let event = self.next().await.expect("stream ended early");
        assert_eq!(
            event,
            ServerEvent {
                event: name.to_owned(),
                id: None,
                data: data.to_owned(),
            }
        );
    }
}

async fn running_build(state: &AppState, private: bool, name: &str) -> Lease {
    let db = &state.db;
    let now = Timestamp::now();
    let repository = db
        .insert_repository(
            &NewRepository {
                github_id: None,
                owner: "events".to_owned(),
                name: name.to_owned(),
                default_branch: "main".to_owned(),
                installation_id: None,
                settings: RepositorySettings {
                    private,
                    ..RepositorySettings::default()
                },
            },
            now,
        )
        .await
        .unwrap();
    let recipe = db
        .upsert_recipe(repository.id, "Singularity", name, "latest", now)
        .await
        .unwrap();
    let enqueued = state
        .queue
        .enqueue(&NewBuild {
            recipe_id: recipe.id,
            commit_sha: "1234567890abcdef1234567890abcdef12345678".to_owned(),
            branch: "main".to_owned(),
            trigger: Trigger::Push,
            max_attempts: 3,
        })
        .await
        .unwrap();
    let claimed = state
        .queue
        .claim("events-test", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.build.id, enqueued.build.id);
    claimed.lease
}

#[tokio::test]
async fn the_events_stream_follows_a_build_log_live() {
    for database in both_backends("web_events") {
        eprintln!("--- on {database:?}");
        let data_dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(database.url.clone()),
            ..Config::default()
        };
        let state = AppState::open(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(axum::serve(listener, router(state.clone())).into_future());

        let lease = running_build(&state, false, "public").await;
        let hidden = running_build(&state, true, "hidden").await;
        let id = lease.build_id;
        let db = &state.db;
        assert_eq!(lease.attempt, 1);
        let append = |attempt: i64, seq: i64, text: &'static str| {
            let db = db.clone();
            async move {
                assert!(db
                    .append_log_chunk(id, attempt, seq, text, Timestamp::now())
                    .await
                    .unwrap());
            }
        };

        // The log so far, then the status, then chunks as they arrive;
        // newlines and carriage returns survive.
        append(1, 0, "step 1\n").await;
        let mut first = EventStream::open(&base, id, None).await;
        first.expect_log("1.0", "step 1\n").await;
        first.expect("status", "running").await;
        append(1, 1, "step 2 \r<ok>\n").await;
        first.expect_log("1.1", "step 2 \r<ok>\n").await;
        append(1, 2, "step 3\n\n").await;
        append(1, 3, "step 4\n").await;
        first.expect_log("1.2", "step 3\n\n").await;
        first.expect_log("1.3", "step 4\n").await;
        drop(first);

        // A reconnect resumes after the last chunk it saw.
        let mut resumed = EventStream::open(&base, id, Some("1.2")).await;
        resumed.expect_log("1.3", "step 4\n").await;
        resumed.expect("status", "running").await;
        append(1, 4, "step 5\n").await;
        resumed.expect_log("1.4", "step 5\n").await;

        // The lease runs out and the build is retried: the stream tells the
        // page to start the log over, then follows the new attempt.
        state.queue.heartbeat(&lease, Duration::ZERO).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let retried = state
            .queue
            .claim("events-test", LEASE)
            .await
            .unwrap()
            .unwrap()
            .lease;
        assert_eq!((retried.build_id, retried.attempt), (id, 2));
        append(2, 0, "again\n").await;
        // The poll may have caught the build between attempts, queued.
        let reset = loop {
            let event = resumed.next().await.unwrap();
            if event.event != "status" {
                break event;
            }
        };
        assert_eq!(reset.event, "reset", "{reset:?}");
        resumed.expect_log("2.0", "again\n").await;

        // Finishing sends the status and `end`, then the stream closes.
        state.queue.complete(&retried, None, None).await.unwrap();
        resumed.expect("status", "succeeded").await;
        resumed.expect("end", "succeeded").await;
        assert_eq!(resumed.next().await, None);

        // A finished build's stream ends at once; a viewer still on the
        // first attempt is told to start over.
        let mut stale = EventStream::open(&base, id, Some("1.4")).await;
        stale.expect("reset", "2").await;
        stale.expect_log("2.0", "again\n").await;
        stale.expect("status", "succeeded").await;
        stale.expect("end", "succeeded").await;
        assert_eq!(stale.next().await, None);
        let mut late = EventStream::open(&base, id, Some("2.0")).await;
        late.expect("status", "succeeded").await;
        late.expect("end", "succeeded").await;
        assert_eq!(late.next().await, None);

        // Private and unknown builds are not found.
        let client = reqwest::Client::new();
        for path in [
            format!("/builds/{}/events", hidden.build_id),
            "/builds/999999/events".to_owned(),
            "/builds/not-a-number/events".to_owned(),
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND, "{path}");
        }

        server.abort();
    }
}
