//! Errors of the reconcilers. Each keeps its source; none carries a Secret value.

use thiserror::Error;

/// What can go wrong while reconciling.
#[derive(Debug, Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the mapping's finalizer, or its cleanup, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A deleted mapping's users could not be released yet (the message says why);
    /// the next attempt comes after `retry_in`, not sooner.
    #[error("the deleted mapping's users were not released: {message}")]
    Release {
        message: String,
        retry_in: std::time::Duration,
    },
    /// The user store failed.
    #[error("{0}")]
    Store(String),
    /// A status could not be serialised (a programming error).
    #[error("could not serialise status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A short, fixed label for logs and metrics (never built from the error's text).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::Finalizer(_) => "finalizer",
            Error::Release { .. } => "release",
            Error::Store(_) => "store",
        }
    }
}

impl Error {
    /// When the reconcile that failed says itself when to try again (a run's
    /// backoff), that time; else the per-object backoff decides.
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        match self {
            Error::Release { retry_in, .. } => Some(*retry_in),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(inner)
                | kube::runtime::finalizer::Error::ApplyFailed(inner) => inner.retry_in(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The reconcilers' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
