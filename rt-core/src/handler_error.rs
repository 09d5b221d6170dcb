//! [`HandlerError`]: what a request handler returns on failure, so that `?`
//! works on any error inside it.

use std::error::Error as StdError;
use std::fmt;

use jsonlink_proto::RemoteError;

/// The error a request handler returns: an answer for the peer (a
/// [`RemoteError`]) and, for failures the handler did not describe itself,
/// the error behind it.
///
/// Every `std::error::Error + Send + Sync + 'static` converts into it, so
/// `?` works on I/O, serde, database errors and your own: such an error is
/// answered with code [`internal`](RemoteError::INTERNAL) and the generic
/// message `"internal error"`; its text stays on this side (it is logged at
/// `warn` under the target `jsonlink::handler`) unless
/// [`Handlers::expose_internal_errors`](crate::Handlers::expose_internal_errors)
/// is set. A
/// [`RemoteError`] converted with `?` is answered as it is (its code and
/// message are meant for the peer).
///
/// For the common answers there are constructors:
/// [`bad_request`](Self::bad_request), [`not_found`](Self::not_found),
/// [`unauthorized`](Self::unauthorized), [`forbidden`](Self::forbidden),
/// [`conflict`](Self::conflict), [`unavailable`](Self::unavailable), and
/// [`new`](Self::new) for an application code.
///
/// `HandlerError` itself does not implement `std::error::Error` (as
/// `anyhow::Error` does not): that is what lets every error convert into
/// it.
///
/// ```
/// use jsonlink_rt::HandlerError;
/// fn read_job(path: &str) -> Result<String, HandlerError> {
///     if path.is_empty() {
///         return Err(HandlerError::bad_request("empty path"));
///     }
///     Ok(std::fs::read_to_string(path)?) // an io::Error: answered `internal`
/// }
/// let err = read_job("/no/such/file").unwrap_err();
/// assert_eq!(err.answer(false).code, "internal");
/// assert_eq!(err.answer(false).message, "internal error");
/// ```
pub struct HandlerError {
    answer: RemoteError,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl HandlerError {
    /// An answer with an application-defined `code`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        RemoteError::new(code, message).into()
    }

    /// The request's arguments are invalid
    /// ([`bad_request`](RemoteError::BAD_REQUEST)).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(RemoteError::BAD_REQUEST, message)
    }

    /// What the request names does not exist
    /// ([`not_found`](RemoteError::NOT_FOUND)).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(RemoteError::NOT_FOUND, message)
    }

    /// The caller is not authenticated for this
    /// ([`unauthorized`](RemoteError::UNAUTHORIZED)).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(RemoteError::UNAUTHORIZED, message)
    }

    /// The caller may not do this ([`forbidden`](RemoteError::FORBIDDEN)).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(RemoteError::FORBIDDEN, message)
    }

    /// The request conflicts with the current state
    /// ([`conflict`](RemoteError::CONFLICT)).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(RemoteError::CONFLICT, message)
    }

    /// The service cannot serve it now; the caller may retry later
    /// ([`unavailable`](RemoteError::UNAVAILABLE)).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(RemoteError::UNAVAILABLE, message)
    }

    /// An [`internal`](RemoteError::INTERNAL) failure caused by `source`.
    pub fn internal(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self {
            answer: RemoteError::new(RemoteError::INTERNAL, INTERNAL_MESSAGE),
            source: Some(source.into()),
        }
    }

    /// Attaches JSON `data` to the answer (sent as the error's `data`
    /// member). A value that does not serialize is left out.
    #[must_use]
    pub fn with_data<T: serde::Serialize + ?Sized>(mut self, data: &T) -> Self {
        self.answer.data = serde_json::to_string(data).ok();
        self
    }

    /// The error behind an `internal` answer, if any.
    pub fn source(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The answer the peer gets. With `expose` the message of an internal
    /// failure is its source's text; without it, `"internal error"`.
    pub fn answer(&self, expose: bool) -> RemoteError {
        let mut answer = self.answer.clone();
        if let (true, Some(source)) = (expose, &self.source) {
            answer.message = source.to_string();
        }
        answer
    }

    /// [`answer`](Self::answer), logging the source of an internal failure
    /// (once, at `warn`, target `jsonlink::handler`) with the request's op.
    pub(crate) fn into_answer(self, op: &str, expose: bool) -> RemoteError {
        if let Some(source) = &self.source {
            tracing::warn!(
                target: "jsonlink::handler",
                op,
                error = %source,
                "request handler failed; answered `internal`"
            );
        }
        self.answer(expose)
    }
}

/// The message of an `internal` answer whose detail is kept back.
const INTERNAL_MESSAGE: &str = "internal error";

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let boxed: Box<dyn StdError + Send + Sync + 'static> = Box::new(e);
        match boxed.downcast::<RemoteError>() {
            // A RemoteError is already an answer for the peer.
            Ok(remote) => Self {
                answer: *remote,
                source: None,
            },
            Err(other) => Self::internal(other),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("code", &self.answer.code)
            .field("message", &self.answer.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.answer.code),
            None => write!(f, "{}", self.answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_failure() -> Result<(), HandlerError> {
        Err(std::io::Error::other("disk /dev/sda1 on fire"))?;
        Ok(())
    }

    fn remote_failure() -> Result<(), HandlerError> {
        Err(RemoteError::new("quota", "over quota"))?;
        Ok(())
    }

    #[test]
    fn question_mark_on_an_io_error_answers_internal_without_its_text() {
        let err = io_failure().unwrap_err();
        let answer = err.answer(false);
        assert_eq!(answer.code, RemoteError::INTERNAL);
        assert_eq!(answer.message, "internal error");
        assert!(!format!("{answer:?}").contains("on fire"));
        assert_eq!(err.answer(true).message, "disk /dev/sda1 on fire");
        assert!(err.source().is_some());
    }

    #[test]
    fn question_mark_on_a_remote_error_keeps_it() {
        let err = remote_failure().unwrap_err();
        assert_eq!(err.answer(false), RemoteError::new("quota", "over quota"));
        assert!(err.source().is_none());
    }

    #[test]
    fn constructors_use_the_standard_codes() {
        for (e, code) in [
            (HandlerError::bad_request("x"), "bad_request"),
            (HandlerError::not_found("x"), "not_found"),
            (HandlerError::unauthorized("x"), "unauthorized"),
            (HandlerError::forbidden("x"), "forbidden"),
            (HandlerError::conflict("x"), "conflict"),
            (HandlerError::unavailable("x"), "unavailable"),
            (HandlerError::new("mine", "x"), "mine"),
        ] {
            let a = e.answer(true);
            assert_eq!((a.code.as_str(), a.message.as_str()), (code, "x"));
        }
        let a = HandlerError::not_found("job").with_data(&serde_json::json!({"id": 7}));
        assert_eq!(a.answer(false).data.as_deref(), Some(r#"{"id":7}"#));
    }
}
