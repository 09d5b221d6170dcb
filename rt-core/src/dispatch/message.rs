//! What handlers and the event stream get from the peer: a [`Message`],
//! or a [`Request`] to answer through its [`Responder`].

use jsonlink_proto::{Op, RawJson, RemoteError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::dispatch::Responder;
use crate::error::Error;
use crate::link::Link;

/// A fire-and-forget message from the peer.
#[derive(Debug, Clone)]
pub struct Message {
    /// The link it came on.
    pub link: Link,
    /// The body's top-level `op`, if any.
    pub op: Option<Op>,
    /// The body.
    pub body: RawJson,
}

impl Message {
    /// Deserializes the body.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if it does not fit `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.body.parse().map_err(Error::Decode)
    }
}

/// A request from the peer. It must be answered exactly once, through
/// [`respond`](Self::respond), [`respond_error`](Self::respond_error) or
/// its [`Responder`]; dropping it unanswered sends
/// [`handler_dropped`](RemoteError::HANDLER_DROPPED) at once.
#[derive(Debug)]
pub struct Request {
    /// The link it came on.
    pub link: Link,
    /// The body's top-level `op`, if any.
    pub op: Option<Op>,
    /// The body.
    pub body: RawJson,
    /// Answers the request.
    pub responder: Responder,
}

impl Request {
    /// Deserializes the body.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if it does not fit `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.body.parse().map_err(Error::Decode)
    }

    /// Answers with a value.
    ///
    /// # Errors
    ///
    /// As [`Responder::respond`].
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.responder.respond(value)
    }

    /// Answers with an error object.
    ///
    /// # Errors
    ///
    /// As [`Responder::respond_error`].
    pub fn respond_error(self, error: RemoteError) -> Result<(), Error> {
        self.responder.respond_error(error)
    }
}
