//! The live view: a progress line on a terminal (rate, errors, elapsed), nothing otherwise.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::model::Progress;

/// A running progress display; [`Monitor::finish`] clears it.
pub struct Monitor {
    bar: Option<ProgressBar>,
    task: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Shows `label` and live counts from `progress`, if stderr is a terminal.
    pub fn start(label: String, progress: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Monitor {
                bar: None,
                task: None,
            };
        }
        // One set of lines for every bar, so that configurations measured side by side each
        // keep a line of their own.
        static BARS: OnceLock<MultiProgress> = OnceLock::new();
        let bar = BARS
            .get_or_init(MultiProgress::new)
            .add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>3} {prefix} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label);
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let (mut last_calls, mut last_at) = (0u64, tokio::time::Instant::now());
            loop {
                tick.tick().await;
                let calls = progress.calls.load(Relaxed);
                let now = tokio::time::Instant::now();
                let rate = (calls - last_calls) as f64 / (now - last_at).as_secs_f64().max(1e-3);
                (last_calls, last_at) = (calls, now);
                let phase = if progress.measuring.load(Relaxed) {
                    ""
                } else {
                    "warming up, "
                };
                shown.set_message(format!(
                    "{phase}{calls} calls, {rate:.0}/s, {} errors",
                    progress.errors.load(Relaxed)
                ));
                shown.tick();
            }
        });
        Monitor {
            bar: Some(bar),
            task: Some(task),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
