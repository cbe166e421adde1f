//! Why a request was refused as a whole ([`RequestError`]), and the one place that becomes the
//! call's `Status`. Why one backend produced no reply is that backend's `Failure` instead, never
//! the whole call's status: see [`crate::client::error`].

use tonic::Status;

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
        "the aggregator is at its limit of {limit} calls in flight (--max-in-flight{}); try again shortly",
        if *.auto { " auto" } else { "" }
    )]
    Full { limit: usize, auto: bool },
    #[error(
        "backend {backend} is overloaded and already has as many calls as its adaptive limit \
         allows ({limit}; --backend-concurrency auto, --max-in-flight auto); try again shortly"
    )]
    Overloaded { backend: String, limit: usize },
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Status {
        let message = e.to_string();
        match e {
            RequestError::Invalid(_) => Status::invalid_argument(message),
            RequestError::OverridesDisabled(_) => Status::permission_denied(message),
            RequestError::Full { .. } | RequestError::Overloaded { .. } => {
                Status::resource_exhausted(message)
            }
        }
    }
}
