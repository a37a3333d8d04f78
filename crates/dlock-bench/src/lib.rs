//! What the benchmark shares with the torture suite (`dlock-torture`): which adapters and
//! dialects there are, how each adapter's pool is built (see [`backend`]), and how an
//! error is reported.

pub mod backend;

/// An error and its sources, on one line: dlock's messages say what to do, the
/// driver's source says what happened.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
