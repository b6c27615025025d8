//! Logs are JSON lines on stdout, the format App Runner and CloudWatch index without parsing rules.
//!
//! Lines carry the keys of tracing-subscriber's `json().flatten_event(true)` format — `timestamp`,
//! `level`, the event's fields (`message` first), `target` — but are written by [`JsonLines`]
//! straight into the line buffer. tracing-subscriber's JSON formatter goes through serde_json and
//! an io→fmt adaptor that re-validates UTF-8 on every write; profiled with callgrind under load
//! on `GET /`, it cost ~17,000 instructions per request line, a quarter of all the frontend did.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global JSON subscriber; `RUST_LOG` overrides `default_filter`.
///
/// Writes go through a background thread so a slow stdout never stalls a request; keep the guard
/// alive until exit so buffered lines are flushed.
pub fn init(default_filter: &str) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    tracing_subscriber::fmt()
        .event_format(JsonLines)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(writer)
        .init();
    guard
}

/// One JSON object per event: `{"timestamp":"…Z","level":"INFO","message":"…",<fields>,"target":"…"}`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events forwarded from the `log` crate carry their real target in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// RFC 3339 UTC with microseconds; the part up to the second is formatted once per second.
fn write_timestamp(out: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let time = i64::try_from(seconds)
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .unwrap_or_default();
            cached.1.clear();
            write!(cached.1, "{}", time.format("%Y-%m-%dT%H:%M:%S"))?;
            cached.0 = seconds;
        }
        out.write_str(&cached.1)
    })?;
    write!(out, ".{:06}Z", now.subsec_micros())
}

/// Appends `,"name":value` for each field, as tracing-subscriber's flattened JSON does.
struct JsonFields<'a, W> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .out
            .write_char(',')
            .and_then(|()| write_json_string(self.out, name))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_json_string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| out.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // `{:?}` keeps the fraction (20.0), as serde_json does; JSON has no NaN or infinity.
        self.entry(field, |out| {
            if value.is_finite() {
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }
}

fn write_json_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, text)?;
    out.write_char('"')
}

/// `text` with the characters JSON strings must escape escaped (as serde_json does).
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `byte` is ASCII, so `index` is a character boundary.
        out.write_str(&text[start..index])?;
        if escape.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escape)?;
        }
        start = index + 1;
    }
    out.write_str(&text[start..])
}

/// A writer that escapes what is written through it, for `Debug` and `Display` values.
struct Escaped<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
            String::from_utf8(bytes)
                .expect("UTF-8 output")
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    fn emit_samples() {
        let method = "GET";
        tracing::info!(
            method = %method,
            path = "/a \"quoted\"\\path\n\u{1}é",
            status = 200_u16,
            latency_us = 42_u64,
            delta = -7_i64,
            ok = true,
            ratio = 0.5_f64,
            whole = 20.0_f64,
            error = ?std::io::Error::other("disk \"full\"\ttab"),
            "request"
        );
        tracing::warn!(r#type = "raw", "a {} message", "formatted");
        tracing::error!("only a message");
    }

    /// Our lines and tracing-subscriber's own JSON format, for the same events.
    fn both_formats() -> (Vec<String>, Vec<String>) {
        let ours = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit_samples);
        let reference = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(reference.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit_samples);
        (ours.lines(), reference.lines())
    }

    fn without_timestamp(line: &str) -> (Value, String) {
        let mut value: Value = serde_json::from_str(line).expect("each line is one JSON object");
        let timestamp = value
            .as_object_mut()
            .and_then(|object| object.remove("timestamp"))
            .and_then(|timestamp| timestamp.as_str().map(str::to_owned))
            .expect("a timestamp");
        (value, timestamp)
    }

    #[test]
    fn lines_match_tracing_subscribers_json_format() {
        let (ours, reference) = both_formats();
        assert_eq!(ours.len(), 3);
        assert_eq!(ours.len(), reference.len());
        for (ours, reference) in ours.iter().zip(&reference) {
            let (our_value, our_time) = without_timestamp(ours);
            let (reference_value, _) = without_timestamp(reference);
            assert_eq!(
                our_value, reference_value,
                "\nours:      {ours}\nreference: {reference}"
            );
            chrono::DateTime::parse_from_rfc3339(&our_time).expect("RFC 3339 timestamp");
            assert!(our_time.ends_with('Z') && our_time.len() == "2026-01-01T00:00:00.000000Z".len());
        }
    }

    #[test]
    fn keys_keep_tracing_subscribers_order() {
        let (ours, _) = both_formats();
        let keys = |line: &str| -> Vec<String> {
            // Object keys in the order written: each `"key":` at the top level.
            let value: Value = serde_json::from_str(line).expect("JSON");
            let mut keys: Vec<(usize, String)> = value
                .as_object()
                .expect("object")
                .keys()
                .map(|key| {
                    (
                        line.find(&format!("\"{key}\":")).expect("key present"),
                        key.clone(),
                    )
                })
                .collect();
            keys.sort();
            keys.into_iter().map(|(_, key)| key).collect()
        };
        assert_eq!(
            keys(&ours[0]),
            [
                "timestamp",
                "level",
                "message",
                "method",
                "path",
                "status",
                "latency_us",
                "delta",
                "ok",
                "ratio",
                "whole",
                "error",
                "target"
            ]
        );
        assert!(ours[0].contains("\"whole\":20.0"), "{}", ours[0]);
    }
}
