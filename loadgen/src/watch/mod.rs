//! `loadgen watch`: a running aggregator, live, from its Prometheus metrics (its
//! `--metrics-listen`). Every interval it scrapes `/metrics` ([`scrape`]), works out what
//! changed since the scrape before ([`rates`]: rates, error shares, quantiles from histogram
//! buckets, replica shares) and prints it ([`view`]). Every figure is a change, so the first
//! snapshot comes one interval after the first scrape.
//!
//! The first scrape failing stops the watch with the reason (a wrong URL is better said at
//! once); a later one prints a line and the watch keeps trying, the next snapshot then covering
//! the time since the last good scrape.

pub mod rates;
pub mod scrape;
pub mod view;

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

pub use scrape::metrics_url;

use crate::cli::WatchArgs;

/// Clears a terminal and puts the cursor at its top.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Watches until `--count` snapshots are printed or `stop` turns true (Ctrl-C).
pub async fn watch(args: WatchArgs, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let scraper = scrape::Scraper::new(args.target.clone(), scrape_timeout(args.interval));
    let mut prev = scraper.scrape().await.map_err(|e| anyhow!(e))?;
    let terminal = std::io::stdout().is_terminal();
    let interval = humantime::format_duration(args.interval);
    if terminal {
        println!(
            "watching {} every {interval}: the first snapshot in {interval}",
            scraper.url()
        );
    }
    let mut tick = tokio::time::interval_at(Instant::now() + args.interval, args.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shown = 0u64;
    loop {
        let scraped = tokio::select! {
            Ok(_) = stop.wait_for(|stop| *stop) => return Ok(()),
            scraped = async {
                tick.tick().await;
                scraper.scrape().await
            } => scraped,
        };
        let now = match scraped {
            Ok(now) => now,
            Err(e) => {
                let at = humantime::format_rfc3339_seconds(SystemTime::now());
                eprintln!("{at}  {e}; trying again in {interval}");
                continue;
            }
        };
        let secs = now.taken.duration_since(prev.taken).as_secs_f64();
        let text = view::render(SystemTime::now(), &rates::snapshot(&prev, &now, secs));
        let mut out = std::io::stdout().lock();
        let gap = match (terminal, shown) {
            (true, _) => CLEAR,
            (false, 0) => "",
            (false, _) => "\n",
        };
        write!(out, "{gap}{text}")?;
        out.flush()?;
        drop(out);
        prev = now;
        shown += 1;
        if args.count.is_some_and(|count| shown >= count) {
            return Ok(());
        }
    }
}

/// A scrape waits at most an interval, though at least 2 s and at most 10 s.
fn scrape_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(2), Duration::from_secs(10))
}
