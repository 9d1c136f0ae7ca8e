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
    /// A deleted mapping's users could not be released yet (the message says why).
    #[error("the deleted mapping's users were not released: {0}")]
    Release(String),
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
            Error::Release(_) => "release",
            Error::Store(_) => "store",
        }
    }
}

/// The reconcilers' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
