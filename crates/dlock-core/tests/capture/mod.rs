//! A `tracing` layer that keeps every event, with its fields and the fields of the spans
//! it happened in, for tests to assert on. Installed per thread, so it sees everything a
//! current-thread `#[tokio::test]` runs, spawned tasks included.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured event.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    /// The event's `name:`.
    pub(crate) name: &'static str,
    pub(crate) level: Level,
    pub(crate) target: String,
    /// When it happened, by tokio's (paused) clock.
    pub(crate) at: Instant,
    /// The event's own fields, `message` included.
    pub(crate) fields: Fields,
    /// The enclosing spans, innermost first, with their fields.
    pub(crate) spans: Vec<(&'static str, Fields)>,
}

impl Captured {
    /// The event's field `name`; panics, naming the event, if it has none.
    pub(crate) fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name} in {self:#?}"))
    }

    /// A field of the innermost enclosing span that has it.
    pub(crate) fn span_field(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find_map(|(_, fields)| fields.get(name).map(String::as_str))
    }

    /// The field `name` as a number.
    pub(crate) fn number(&self, name: &str) -> u64 {
        self.field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {self:#?}"))
    }
}

pub(crate) type Fields = BTreeMap<String, String>;

/// The events captured so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Arc<Mutex<Vec<Captured>>>);

impl Events {
    pub(crate) fn all(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    /// The events named `name`, in order.
    pub(crate) fn named(&self, name: &str) -> Vec<Captured> {
        self.all()
            .into_iter()
            .filter(|event| event.name == name)
            .collect()
    }

    /// The one event named `name`; panics if there is not exactly one.
    pub(crate) fn one(&self, name: &str) -> Captured {
        let mut named = self.named(name);
        assert_eq!(named.len(), 1, "{name}: {:#?}", self.all());
        named.remove(0)
    }
}

/// Captures every event of this thread until the guard drops.
pub(crate) fn install() -> (Events, DefaultGuard) {
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(events.clone()));
    (events, tracing::subscriber::set_default(subscriber))
}

struct CaptureLayer(Events);

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let span = ctx.span(id).expect("a new span exists");
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span exists");
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<Fields>() {
            values.record(&mut FieldVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut FieldVisitor(&mut fields));
        let spans = ctx
            .event_scope(event)
            .into_iter()
            .flatten()
            .map(|span| {
                let fields = span.extensions().get::<Fields>().cloned();
                (span.name(), fields.unwrap_or_default())
            })
            .collect();
        let metadata = event.metadata();
        self.0.0.lock().unwrap().push(Captured {
            name: metadata.name(),
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            at: Instant::now(),
            fields,
            spans,
        });
    }
}

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    /// The error and its sources, as `error: source: source`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(error) = source {
            chain = format!("{chain}: {error}");
            source = error.source();
        }
        self.0.insert(field.name().to_owned(), chain);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}
