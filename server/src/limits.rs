//! What a server grants one connection, so that one hostile or broken client costs the others
//! nothing: HTTP/2's own limits (streams, header size, reset streams), keepalive, and bounds on
//! the time a connection may take to finish its TLS handshake and to send its first call.
//!
//! The limits on reset streams are tuned for a caller that cancels calls legitimately. h2 counts
//! the streams a client opened and reset before the server took them up ("pending accept"), and
//! past the limit answers with GOAWAY `ENHANCE_YOUR_CALM`: that is the guard against the rapid
//! reset attack (CVE-2023-44487), a flood of streams opened and cancelled at once. But a server
//! that was stopped for a few seconds (SIGSTOP, a long GC-like pause, a VM migration) finds on
//! resuming every call its callers gave up on meanwhile, each opened and then cancelled, all in
//! its socket buffer: with h2's default of 20 it took a stalled aggregator's cancellations for
//! an attack and failed every call on that connection. The default here is
//! [`ConnLimits::max_concurrent_streams`]: a caller may cancel every call it may have open at
//! once; a flood of more is still cut off (`tests/tests/it/stall_cancellation.rs` shows both).

use std::time::Duration;

use clap::Args;
use fanout_proto::cli::{HumanDuration, human_positive_duration};

/// The per-connection limits of a server; plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// HTTP/2 streams (calls) one connection may have open at once; a client that opens more
    /// has the extra ones refused (well-behaved ones, tonic's and h2's, wait instead).
    pub max_concurrent_streams: u32,
    /// Largest header list (all of a request's headers, decoded) accepted, in bytes.
    pub max_header_list_size: u32,
    /// Streams a client may open and reset before the server took them up, at once, before its
    /// connection is closed with GOAWAY `ENHANCE_YOUR_CALM` (see the module docs).
    pub max_pending_resets: usize,
    /// Ping a client after this long without a frame from it...
    pub ping_interval: Duration,
    /// ...and close its connection when the ping goes unanswered this long.
    pub ping_timeout: Duration,
    /// A connection that has sent no call this long after it was accepted is closed: it holds
    /// a socket and memory for nothing.
    pub first_request_timeout: Duration,
    /// A TLS handshake not finished by then is abandoned.
    pub handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_concurrent_streams: 1024,
            // hyper's default, made explicit: gRPC metadata is small.
            max_header_list_size: 16 * 1024,
            max_pending_resets: 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The flags of [`ConnLimits`], shared by both servers.
#[derive(Debug, Clone, Args)]
pub struct ConnLimitsArgs {
    /// Most calls (HTTP/2 streams) one connection may have open at once.
    #[arg(long, env = "SERVER_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT.max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_streams: u32,

    /// Largest request header list accepted, in bytes; a call with more is refused.
    #[arg(long, env = "SERVER_MAX_HEADER_LIST_SIZE", default_value_t = DEFAULT.max_header_list_size, value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub max_header_list_size: u32,

    /// Calls a client may open and cancel before the server took them up, at once, before its
    /// connection is closed with GOAWAY ENHANCE_YOUR_CALM (the rapid-reset guard). Keep it at
    /// least --max-concurrent-streams: a client stalled behind a paused server cancels every
    /// call it had open.
    #[arg(long, env = "SERVER_MAX_PENDING_RESETS", default_value_t = DEFAULT.max_pending_resets as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_resets: u32,

    /// Ping a client after this long without a frame from it.
    #[arg(long, env = "SERVER_PING_INTERVAL", default_value_t = DEFAULT.ping_interval.into(), value_parser = human_positive_duration)]
    pub ping_interval: HumanDuration,

    /// Close a client's connection when a ping goes unanswered this long.
    #[arg(long, env = "SERVER_PING_TIMEOUT", default_value_t = DEFAULT.ping_timeout.into(), value_parser = human_positive_duration)]
    pub ping_timeout: HumanDuration,

    /// Close a connection that has sent no call this long after it was accepted.
    #[arg(long, env = "SERVER_FIRST_REQUEST_TIMEOUT", default_value_t = DEFAULT.first_request_timeout.into(), value_parser = human_positive_duration)]
    pub first_request_timeout: HumanDuration,

    /// Abandon a TLS handshake not finished within this.
    #[arg(long, env = "SERVER_TLS_HANDSHAKE_TIMEOUT", default_value_t = DEFAULT.handshake_timeout.into(), value_parser = human_positive_duration)]
    pub tls_handshake_timeout: HumanDuration,
}

/// The defaults every flag shows and falls back to.
static DEFAULT: std::sync::LazyLock<ConnLimits> = std::sync::LazyLock::new(ConnLimits::default);

impl ConnLimitsArgs {
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_list_size: self.max_header_list_size,
            max_pending_resets: self.max_pending_resets as usize,
            ping_interval: self.ping_interval.into(),
            ping_timeout: self.ping_timeout.into(),
            first_request_timeout: self.first_request_timeout.into(),
            handshake_timeout: self.tls_handshake_timeout.into(),
        }
    }
}
