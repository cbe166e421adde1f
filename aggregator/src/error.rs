//! Failures, and the one place each kind becomes what the caller sees.
//!
//! - [`CallError`]: why one backend produced no reply. It becomes that backend's `Failure`
//!   (never the whole call's status).
//! - [`RequestError`]: why a request was refused. It becomes the call's `Status`.

use std::time::Duration;

use fanout_proto::code_name;
use fanout_proto::v1::Failure;
use tonic::{Code, Status};

/// Why one backend call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("attempt {attempt} timed out after {}", fmt(*.after))]
    AttemptTimeout { attempt: u32, after: Duration },
    #[error("the call's deadline passed {}", .when)]
    Deadline { when: &'static str },
    #[error("no free slot within the deadline (--backend-concurrency {limit} reached)")]
    NoSlot { limit: usize },
    /// The backend's answer, or the client's (`fanout_common::grpc`), whose message says
    /// what failed ("tcp connect error: Connection refused").
    #[error("{}", .0.message())]
    Status(Status),
}

fn fmt(d: Duration) -> String {
    fanout_proto::cli::fmt_duration(d)
}

impl CallError {
    /// The gRPC code reported in the backend's `Failure`.
    pub fn code(&self) -> Code {
        match self {
            CallError::AttemptTimeout { .. }
            | CallError::Deadline { .. }
            | CallError::NoSlot { .. } => Code::DeadlineExceeded,
            CallError::Status(s) => s.code(),
        }
    }

    /// Whether another attempt could succeed: the backend was unreachable or refused for now
    /// (`UNAVAILABLE`), or one attempt ran out of its own time while the call has more.
    pub fn retryable(&self) -> bool {
        match self {
            CallError::AttemptTimeout { .. } => true,
            CallError::Status(s) => s.code() == Code::Unavailable,
            CallError::Deadline { .. } | CallError::NoSlot { .. } => false,
        }
    }

    /// The backend's `Failure`, with why retrying stopped when it did.
    pub fn to_failure(&self, backend: &str, retries_stopped: Option<&str>) -> Failure {
        let code = self.code();
        let mut message = format!("backend {backend}: {self}");
        if let Some(why) = retries_stopped {
            message.push_str("; ");
            message.push_str(why);
        }
        Failure {
            code: code as i32,
            message,
            code_name: code_name(code).to_owned(),
        }
    }
}

/// Why a request was refused as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "per-request overrides ({0}) are disabled; start the aggregator with --allow-overrides to use them"
    )]
    OverridesDisabled(&'static str),
    #[error(
        "the aggregator is at its limit of {0} calls in flight (--max-in-flight); try again shortly"
    )]
    Overloaded(usize),
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        let message = e.to_string();
        match e {
            RequestError::Invalid(_) => Status::invalid_argument(message),
            RequestError::OverridesDisabled(_) => Status::permission_denied(message),
            RequestError::Overloaded(_) => Status::resource_exhausted(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_code_name_and_reason() {
        let e = CallError::AttemptTimeout {
            attempt: 2,
            after: Duration::from_millis(150),
        };
        let f = e.to_failure("beta", Some("gave up after 2 attempts"));
        assert_eq!((f.code, f.code_name.as_str()), (4, "DEADLINE_EXCEEDED"));
        assert_eq!(
            f.message,
            "backend beta: attempt 2 timed out after 150.0ms; gave up after 2 attempts"
        );
        assert!(e.retryable());
        assert!(!CallError::Deadline { when: "" }.retryable());
        assert!(CallError::Status(Status::unavailable("down")).retryable());
        assert!(!CallError::Status(Status::internal("bug")).retryable());
    }
}
