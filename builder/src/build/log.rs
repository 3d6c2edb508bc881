//! The build log: what a build reports as it goes ([`BuildEvent`]), streamed
//! to the caller's callback (the CLI draws progress bars from it, the hub
//! stores it) and written, with timestamps, to the log file.
//!
//! The file gets every line a person needs to understand the build
//! afterwards: the steps, the limits in force, the digests pulled, every
//! command's output, warnings and the final error. Progress events (bytes
//! downloaded, squash percentage) only go to the callback.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::oci::BlobKind;
use crate::sandbox::{LogLine, LogSource};

use super::error::BuildError;

/// Who wrote a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineSource {
    /// The builder itself (what it is doing, what it found).
    Builder,
    /// A user command's standard output or error (`%setup`, `%post`, `%test`).
    Command,
    /// The sandbox about a command, e.g. `killed: memory limit 64 MiB exceeded`.
    Sandbox,
}

/// One thing a build reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A numbered step starts: `[1/7] pulling docker.io/library/busybox:latest`.
    Step {
        number: usize,
        total: usize,
        text: String,
    },
    /// A line of the log.
    Line { source: LineSource, text: String },
    /// Something that did not stop the build but deserves attention.
    Warning(String),
    /// Progress of one blob of a pull. `done` marks the last event of a blob.
    Blob {
        digest: String,
        kind: BlobKind,
        downloaded: u64,
        size: u64,
        cached: bool,
        done: bool,
    },
    /// mksquashfs progress, 0–100.
    Squash { percent: u8 },
    /// The build failed with this message (the last event of a failed build).
    Failed(String),
}

impl BuildEvent {
    /// The line this event puts into the log file, if any.
    pub fn log_text(&self) -> Option<String> {
        match self {
            BuildEvent::Step {
                number,
                total,
                text,
            } => Some(format!("[{number}/{total}] {text}")),
            BuildEvent::Line { source, text } => Some(match source {
                LineSource::Builder | LineSource::Command => text.clone(),
                LineSource::Sandbox => format!("sandbox: {text}"),
            }),
            BuildEvent::Warning(text) => Some(format!("warning: {text}")),
            BuildEvent::Blob {
                digest,
                kind,
                size,
                cached,
                done: true,
                ..
            } => Some(format!(
                "{} {digest} ({}){}",
                match kind {
                    BlobKind::Config => "config",
                    BlobKind::Layer => "layer",
                },
                crate::sandbox::format_bytes(*size),
                if *cached { " from the cache" } else { "" }
            )),
            BuildEvent::Blob { .. } | BuildEvent::Squash { .. } => None,
            BuildEvent::Failed(text) => Some(format!("error: {text}")),
        }
    }
}

/// Numbers steps, writes the log file and forwards events.
pub(crate) struct BuildLog<'a> {
    file: Option<BufWriter<File>>,
    events: &'a mut dyn FnMut(&BuildEvent),
    step: usize,
    total: usize,
    warnings: Vec<String>,
    cancel: Option<Arc<AtomicBool>>,
}

impl<'a> BuildLog<'a> {
    /// A log writing to `file` (created or truncated) when given.
    pub(crate) fn new(
        file: Option<&Path>,
        events: &'a mut dyn FnMut(&BuildEvent),
    ) -> Result<Self, BuildError> {
        let file = match file {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(BuildError::io(
                        "cannot create the folder of the build log",
                        parent,
                    ))?;
                }
                Some(BufWriter::new(File::create(path).map_err(
                    BuildError::io("cannot create the build log", path),
                )?))
            }
            None => None,
        };
        Ok(BuildLog {
            file,
            events,
            step: 0,
            total: 0,
            warnings: Vec::new(),
            cancel: None,
        })
    }

    /// Sets how many steps the build has.
    pub(crate) fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    /// Reports an event: into the file (with a timestamp) and to the callback.
    pub(crate) fn emit(&mut self, event: BuildEvent) {
        if let (Some(file), Some(text)) = (self.file.as_mut(), event.log_text()) {
            let stamp = timestamp_now();
            // A log that cannot be written must not fail the build it describes.
            for line in text.split('\n') {
                let _ = writeln!(file, "{stamp} {line}");
            }
        }
        if let BuildEvent::Warning(text) = &event {
            self.warnings.push(text.clone());
        }
        (self.events)(&event);
    }

    /// Cancels the build at its next step once `flag` is set.
    pub(crate) fn set_cancel(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.cancel = flag;
    }

    /// Starts the next numbered step — or stops the build if it was cancelled.
    pub(crate) fn step(&mut self, text: impl Into<String>) -> Result<(), BuildError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            return Err(BuildError::Cancelled);
        }
        self.step += 1;
        let total = self.total.max(self.step);
        self.emit(BuildEvent::Step {
            number: self.step,
            total,
            text: text.into(),
        });
        Ok(())
    }

    /// A line from the builder.
    pub(crate) fn info(&mut self, text: impl Into<String>) {
        self.emit(BuildEvent::Line {
            source: LineSource::Builder,
            text: text.into(),
        });
    }

    pub(crate) fn warn(&mut self, text: impl Into<String>) {
        self.emit(BuildEvent::Warning(text.into()));
    }

    /// A line of a sandboxed command's log.
    pub(crate) fn command(&mut self, line: LogLine) {
        let source = match line.source {
            LogSource::Command => LineSource::Command,
            LogSource::Sandbox => LineSource::Sandbox,
        };
        self.emit(BuildEvent::Line {
            source,
            text: line.text,
        });
    }

    /// The warnings reported so far.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
    }
}

impl Drop for BuildLog<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `2024-05-01T12:00:00.123Z`, the current time in UTC.
pub(crate) fn timestamp_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let whole = crate::sif::format_unix_time(secs);
    format!(
        "{}.{:03}Z",
        whole.trim_end_matches('Z'),
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_and_logged_with_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let mut seen = Vec::new();
        {
            let mut events = |e: &BuildEvent| seen.push(e.clone());
            let mut log = BuildLog::new(Some(&path), &mut events).unwrap();
            log.set_total(2);
            log.step("pulling x").unwrap();
            log.command(LogLine {
                source: LogSource::Sandbox,
                text: "killed: memory limit 64 MiB exceeded".into(),
            });
            log.warn("careful");
            log.emit(BuildEvent::Squash { percent: 50 });
        }
        assert_eq!(
            seen[0],
            BuildEvent::Step {
                number: 1,
                total: 2,
                text: "pulling x".into()
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" [1/2] pulling x"), "{text}");
        assert!(lines[0].starts_with("20"), "{text}");
        assert!(lines[1].ends_with("sandbox: killed: memory limit 64 MiB exceeded"));
        assert!(lines[2].ends_with("warning: careful"));
    }
}
