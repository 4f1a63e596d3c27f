//! The one error type of weir: a kind, whether retrying can help, a message and context.
//!
//! Retry decisions are taken from [`Error::is_retryable`], never from message strings.

use std::fmt;

/// What went wrong, as a category callers can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (event, function definition, request) is malformed or invalid.
    InvalidInput,
    /// The thing asked for does not exist.
    NotFound,
    /// Something with the same identity exists already.
    AlreadyExists,
    /// The feature is not supported (yet, or by this driver / build).
    Unsupported,
    /// Configuration is missing or wrong (unknown URL scheme, bad option).
    Config,
    /// An operation ran out of time.
    Timeout,
    /// A backend (state store, broker, step endpoint) is unreachable or overloaded.
    Unavailable,
    /// A step attempt failed (non-zero exit, 5xx, error output).
    StepFailed,
    /// The body or payload is larger than allowed.
    TooLarge,
    /// A bug or an unexpected state inside weir.
    Internal,
}

impl ErrorKind {
    /// Whether errors of this kind are retryable unless told otherwise.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::StepFailed
        )
    }

    /// A short lowercase name of the kind, for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::StepFailed => "step_failed",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Internal => "internal",
        }
    }
}

/// weir's error: kind + retryable status + message + context + optional source.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: String,
    context: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with weir's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; retryable as the kind says by default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            retryable: kind.default_retryable(),
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Config`] error: a setting or a definition is wrong.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Shorthand for an [`ErrorKind::Unavailable`] error (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Marks the error as retryable.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Marks the error as permanent: retrying cannot help.
    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// Adds a key/value pair of context (shown after the message).
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context pairs.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for (i, (k, v)) in self.context.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{k}: {v}")?;
        }
        if !self.context.is_empty() {
            write!(f, ")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("message", &self.message)
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid("invalid JSON").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_sets_default_retryability_and_can_be_overridden() {
        assert!(Error::unavailable("redis down").is_retryable());
        assert!(!Error::invalid("bad").is_retryable());
        assert!(!Error::unavailable("x").permanent().is_retryable());
        assert!(Error::invalid("x").retryable().is_retryable());
    }

    #[test]
    fn display_includes_context_and_source() {
        let io = std::io::Error::other("boom");
        let e = Error::internal("load failed")
            .with_context("file", "a.json")
            .with_context("step", "s1")
            .with_source(io);
        assert_eq!(e.to_string(), "load failed (file: a.json, step: s1): boom");
    }
}
