//! The live view: a progress line on a terminal (calls, rate, errors; in an open loop the
//! offered against the achieved rate, calls outstanding and dropped), and, terminal or not, a
//! warning on stderr the moment an open loop starts dropping calls.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::model::Progress;
use crate::report::thousands;

/// A running progress display; [`Monitor::finish`] clears it.
pub struct Monitor {
    bar: Option<ProgressBar>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Shows `label` and live counts from `progress` (if stderr is a terminal); `rate` is the
    /// offered rate of an open loop.
    pub fn start(label: String, progress: Arc<Progress>, rate: Option<f64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // One set of lines for every bar, so that configurations measured side by side
            // each keep a line of their own.
            static BARS: OnceLock<MultiProgress> = OnceLock::new();
            let bar = BARS
                .get_or_init(MultiProgress::new)
                .add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.clone());
            bar
        });
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let (mut last_calls, mut last_sent, mut last_at) = (0u64, 0u64, Instant::now());
            let mut warned = false;
            loop {
                tick.tick().await;
                let (calls, sent) = (progress.calls.load(Relaxed), progress.sent.load(Relaxed));
                let dropped = progress.dropped.load(Relaxed);
                let now = Instant::now();
                let secs = (now - last_at).as_secs_f64().max(1e-3);
                let achieved = (calls - last_calls) as f64 / secs;
                let sending = (sent - last_sent) as f64 / secs;
                (last_calls, last_sent, last_at) = (calls, sent, now);
                if dropped > 0 && !warned {
                    warned = true;
                    let warning = format!(
                        "{label}: DROPPING CALLS: the calls outstanding reached the cap \
                         (--max-outstanding), so calls falling due are not sent: the target is \
                         slower than the offered rate"
                    );
                    match &shown {
                        Some(bar) => bar.println(warning),
                        None => eprintln!("{warning}"),
                    }
                }
                let Some(bar) = &shown else { continue };
                let phase = if progress.measuring.load(Relaxed) {
                    ""
                } else {
                    "warming up, "
                };
                let errors = progress.errors.load(Relaxed);
                bar.set_message(match rate {
                    Some(rate) => format!(
                        "{phase}offered {}/s, sent {}/s, answered {}/s; {} outstanding, {} \
                         dropped, {errors} errors",
                        thousands(rate, 0),
                        thousands(sending, 0),
                        thousands(achieved, 0),
                        thousands(progress.outstanding.load(Relaxed) as f64, 0),
                        thousands(dropped as f64, 0),
                    ),
                    None => format!("{phase}{calls} calls, {achieved:.0}/s, {errors} errors"),
                });
                bar.tick();
            }
        });
        Monitor { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
