//! Progress bars on stderr for steps that can take seconds: reading the weights of a large model, uploading them
//! to the GPU, writing a synthetic model. A bar is drawn only when stderr is a terminal (and `TERM` is not
//! `dumb`), and only once its step has run for `HOST_PROGRESS_DELAY_MS` milliseconds (default 500), so that quick
//! steps and redirected output print nothing. The bar is cleared when the step ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// Things such as layers, named in the message.
    Items,
}

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    delay: Duration,
    /// Drawing is possible (stderr is a terminal) and not yet started.
    waiting: bool,
}

impl Progress {
    /// A bar for `len` units of work described by `what` ("reading weights").
    pub fn new(len: u64, what: &str, unit: Unit) -> Progress {
        let template = match unit {
            Unit::Bytes => "{msg} [{wide_bar}] {bytes}/{total_bytes} ({eta})",
            Unit::Items => "{msg} [{wide_bar}] {pos}/{len} ({eta})",
        };
        let style = ProgressStyle::with_template(template).expect("the templates are valid").progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden()).with_style(style);
        bar.set_message(what.to_string());
        let delay = std::env::var("HOST_PROGRESS_DELAY_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
        Progress {
            bar,
            start: Instant::now(),
            delay: Duration::from_millis(delay),
            waiting: std::io::stderr().is_terminal(),
        }
    }

    /// `n` more units done.
    pub fn inc(&mut self, n: u64) {
        if self.waiting && self.start.elapsed() >= self.delay {
            self.waiting = false;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        self.bar.inc(n);
    }

    /// The step is over: clear the bar if it was drawn (dropping it does the same, on error paths too).
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
