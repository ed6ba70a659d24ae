//! The node's text log line when it goes to a file or a collector: the same layout as
//! tracing-subscriber's default (`<RFC 3339 time>  INFO target: message key=value …`, strings
//! quoted and escaped), written without the default's per-field styling machinery. Every HTTP
//! request logs one access line, so this formatter is on the data path's CPU: integers go
//! through `itoa`, plain strings are copied as they are, and the date is formatted once per
//! second.
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats one event per line (the node opens no spans, so none are printed).
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_time(&mut w, SystemTime::now())?;
        let meta = event.metadata();
        w.write_str(level(*meta.level()))?;
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        let mut fields = Fields { w: &mut w, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

/// The level right-aligned in five columns between single spaces, as the default writes it.
fn level(l: Level) -> &'static str {
    match l {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    }
}

thread_local! {
    /// The second last formatted and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-27T21:24:22.499886Z`.
fn write_time(w: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let (y, m, d) = civil_date(secs.div_euclid(86_400) as i64);
            let s = secs % 86_400;
            cached.1.clear();
            write!(cached.1, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)?;
            cached.0 = secs;
        }
        w.write_str(&cached.1)
    })?;
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    w.write_char('.')?;
    w.write_str(&"000000"[digits.len()..])?;
    w.write_str(digits)?;
    w.write_char('Z')
}

/// Year, month and day of a day count since 1970-01-01 (proleptic Gregorian calendar; Howard
/// Hinnant's days-to-civil).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes the message as it is and every other field as ` name=value`.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(' ')?;
        }
        self.w.write_str(field.name())?;
        self.w.write_char('=')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Quoted like `{:?}` (a path cannot break the line or forge a field); the common plain
        // ASCII string is copied without the escaping walk.
        let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.put(field, |w| {
            if plain {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.first = false;
                self.result = write!(self.w, "{value:?}");
            }
            return;
        }
        self.put(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn dates_across_leap_years_and_centuries() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_513), (2026, 3, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        // 2026-11-27 is day 20_784.
        assert_eq!(civil_date(20_784), (2026, 11, 27));
    }

    #[test]
    fn a_line_has_the_default_layout_with_quoted_escaped_strings() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .event_format(TextLine)
            .with_max_level(Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "weir::access", conn = 7u64, delta = -3i64, ok = true, path = "/a b", evil = "x\"\ny", kind = ?Some(1), "request");
            tracing::warn!(reason = %"plain", "second");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-11-27T21:24:22.499886Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T' && time.as_bytes()[19] == b'.', "{time}");
        assert_eq!(
            rest,
            " INFO weir::access: request conn=7 delta=-3 ok=true path=\"/a b\" evil=\"x\\\"\\ny\" kind=Some(1)"
        );
        assert!(lines[1].ends_with("  WARN weir::logging::text::tests: second reason=plain"), "{}", lines[1]);
    }

    #[test]
    fn time_is_utc_with_microseconds() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || Capture(sink.clone())).event_format(TextLine).finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!("x"));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let stamp = text.split_whitespace().next().unwrap();
        // Round trip: the stamp parses back to within a second of now.
        let then = humantime_secs(stamp);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(now.saturating_sub(Duration::from_secs(then)) < Duration::from_secs(5), "{stamp}");
    }

    /// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS.ffffffZ`, by counting days forward.
    fn humantime_secs(stamp: &str) -> u64 {
        let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7) as u32, n(8..10) as u32);
        let day = (0..40_000).find(|&day| civil_date(day) == (y, m, d)).unwrap();
        (day * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
