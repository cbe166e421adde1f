//! Why one backend call failed: [`CallError`] for one attempt, [`Failed`] for the call (the
//! last attempt's error, the attempts made and why retrying stopped). A `Failed` becomes that
//! backend's `Failure`, never the whole aggregate call's status.

use std::fmt;
use std::time::Duration;

use fanout_proto::cli::fmt_duration;
use fanout_proto::code_name;
use fanout_proto::v1::Failure;
use tonic::{Code, Status};

/// Why one attempt produced no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("attempt {attempt} timed out after {}", fmt_duration(*.after))]
    AttemptTimeout { attempt: u32, after: Duration },
    #[error("the call's deadline passed {0}")]
    Deadline(Phase),
    #[error("no free slot within the deadline (--backend-concurrency {limit} reached)")]
    NoSlot { limit: usize },
    #[error(
        "not sent: over its concurrency limit of {limit}{} for {} (--queue-timeout)",
        if *.adaptive { " (adaptive, --backend-concurrency auto)" } else { " (--backend-concurrency)" },
        fmt_duration(*.waited)
    )]
    OverLimit {
        limit: usize,
        adaptive: bool,
        waited: Duration,
    },
    /// The backend's answer, or tonic's for a call the backend turned away.
    #[error("{}", .0.message())]
    Status(Status),
    /// No connection to the backend, or the one there was broke: the status says what failed
    /// ("tcp connect error: Connection refused"), always UNAVAILABLE.
    #[error("{}", .0.message())]
    Unreachable(Status),
    /// Not sent: every endpoint of the backend is known down (unreachable or silent), and says
    /// why. UNAVAILABLE, at once, and not retried (a retry would find them down too).
    #[error("not sent: {0}")]
    Down(String),
}

/// Where a call was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the backend was called at all (a sequential fan-out spent the time on others).
    BeforeTurn,
    /// Between attempts.
    BeforeAttempt,
    /// Queued for a `--backend-concurrency` slot.
    WaitingForSlot,
    /// With the attempt at the backend.
    DuringAttempt,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::BeforeTurn => "before this backend's turn came",
            Phase::BeforeAttempt => "before this attempt could start",
            Phase::WaitingForSlot => "while waiting for a concurrency slot",
            Phase::DuringAttempt => "during the attempt",
        })
    }
}

impl CallError {
    /// The gRPC code reported in the backend's `Failure`.
    pub fn code(&self) -> Code {
        match self {
            CallError::AttemptTimeout { .. }
            | CallError::Deadline(_)
            | CallError::NoSlot { .. } => Code::DeadlineExceeded,
            CallError::OverLimit { .. } => Code::ResourceExhausted,
            CallError::Down(_) => Code::Unavailable,
            CallError::Status(s) | CallError::Unreachable(s) => s.code(),
        }
    }

    /// Whether another attempt could succeed: the backend was unreachable or refused for now
    /// (`UNAVAILABLE`), or one attempt ran out of its own time while the call has more.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::AttemptTimeout { .. } | CallError::Unreachable(_) => true,
            CallError::Status(s) => s.code() == Code::Unavailable,
            // Shed on purpose: a retry would join the same line (or find the same endpoints
            // down).
            CallError::Deadline(_)
            | CallError::NoSlot { .. }
            | CallError::OverLimit { .. }
            | CallError::Down(_) => false,
        }
    }

    /// A status from tonic's client. A call that failed below gRPC (no connection, a broken
    /// one) carries the cause in its source chain, which the message then spells out ("tcp
    /// connect error: Connection refused"). tonic reports a connection that broke under the call
    /// as UNKNOWN, or as CANCELLED when it closed before the request left, and a call the server
    /// turned away with GOAWAY or a reset stream (REFUSED_STREAM) by the server's reason; the
    /// gRPC spec calls all three UNAVAILABLE, and so do we (so they are retried). tonic's own client-side timer
    /// (`TimeoutExpired`, from the grpc-timeout we send) stays CANCELLED: the attempt timeout
    /// layer above knows it for what it is.
    pub fn from_status(status: Status) -> Self {
        let Some(source) = std::error::Error::source(&status) else {
            return CallError::Status(status);
        };
        let mut message = status.message().to_owned();
        let (mut timer, mut turned_away) = (false, false);
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = next {
            timer |= e.is::<tonic::TimeoutExpired>();
            // The server turned the call away, by GOAWAY or by resetting its stream (a
            // REFUSED_STREAM past its stream limit): it is there, and answered.
            turned_away |= e
                .downcast_ref::<h2::Error>()
                .is_some_and(|h2| (h2.is_go_away() || h2.is_reset()) && h2.is_remote());
            let part = e.to_string();
            // tonic's own label says nothing the rest of the chain does not.
            if part != "transport error" && !message.contains(&part) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&part);
            }
            next = e.source();
        }
        match status.code() {
            // h2 fails a stream with the server's GOAWAY only when the server did not take it,
            // and with the server's RST_STREAM when the server reset it: either way the server
            // is there, and turned the call away (UNAVAILABLE, retried, not a lost connection).
            _ if turned_away => CallError::Status(Status::unavailable(message)),
            // tonic's own timer for the grpc-timeout we sent: the timeout layer above sees it.
            Code::Cancelled if timer => CallError::Status(Status::new(Code::Cancelled, message)),
            Code::Unknown | Code::Cancelled | Code::Unavailable => {
                CallError::Unreachable(Status::unavailable(message))
            }
            code => CallError::Status(Status::new(code, message)),
        }
    }
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `--max-attempts` were made.
    MaxAttempts(u32),
    /// The backoff before the next attempt would not leave it time before the deadline.
    NoTimeLeft { next: u32 },
    /// The backend's retry budget refused.
    BudgetSpent,
    /// The attempt ran out of time at an overloaded backend: a retry would join its line.
    Overloaded,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::MaxAttempts(n) => write!(f, "gave up after {n} attempts (--max-attempts)"),
            Stop::NoTimeLeft { next } => {
                write!(f, "no time left for attempt {next} before the deadline")
            }
            Stop::BudgetSpent => {
                f.write_str("not retried: the retry budget is spent (--retry-budget)")
            }
            Stop::Overloaded => f.write_str(
                "not retried: the backend is overloaded (a retry would wait in its line)",
            ),
        }
    }
}

/// A backend call that produced no reply: its last attempt's error, the attempts made, and, when
/// a retry was possible in principle, why none followed.
#[derive(Debug, Clone)]
pub struct Failed {
    pub error: CallError,
    pub attempts: u32,
    pub stopped: Option<Stop>,
    /// Whether a hedge was sent.
    pub hedged: bool,
}

impl Failed {
    /// The backend's `Failure`: its code, and a message naming the backend, what failed and why
    /// retrying stopped.
    pub fn to_failure(&self, backend: &str) -> Failure {
        let code = self.error.code();
        let prefix = format!("backend {backend}: ");
        let error = self.error.to_string();
        // Our backends name themselves in their own messages already.
        let mut message = if error.starts_with(&prefix) {
            error
        } else {
            prefix + &error
        };
        if let Some(why) = self.stopped {
            message.push_str(&format!("; {why}"));
        }
        Failure {
            code: code as i32,
            message,
            code_name: code_name(code).to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_code_name_and_reason() {
        let failed = Failed {
            error: CallError::AttemptTimeout {
                attempt: 2,
                after: Duration::from_millis(150),
            },
            attempts: 2,
            stopped: Some(Stop::MaxAttempts(2)),
            hedged: false,
        };
        let f = failed.to_failure("beta");
        assert_eq!((f.code, f.code_name.as_str()), (4, "DEADLINE_EXCEEDED"));
        assert_eq!(
            f.message,
            "backend beta: attempt 2 timed out after 150.0ms; gave up after 2 attempts (--max-attempts)"
        );
        assert!(failed.error.retryable());
        assert!(!CallError::Deadline(Phase::DuringAttempt).retryable());
        assert!(CallError::Status(Status::unavailable("down")).retryable());
        assert!(!CallError::Status(Status::internal("bug")).retryable());
        assert_eq!(
            CallError::Deadline(Phase::WaitingForSlot).to_string(),
            "the call's deadline passed while waiting for a concurrency slot"
        );
    }
}
