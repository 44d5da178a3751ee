//! Why the link to a server failed, or a request to it got no answer.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::CodecError;
use crate::messages::PayloadError;

/// Why the link to a server failed, or a request to it got no answer. Cheap
/// to clone: one failure is reported both to the request waiting on it and to
/// the session that ends with it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LinkError {
    /// The server's bytes are not a valid packet.
    #[error("{0}")]
    Codec(#[source] Arc<CodecError>),
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(#[source] Arc<std::io::Error>),
    /// An answer's payload did not decode.
    #[error("{0}")]
    Payload(#[source] Arc<PayloadError>),
    /// The server closed the link.
    #[error("the server closed the link")]
    Closed,
    /// No server is connected.
    #[error("no server connected")]
    NotConnected,
    /// The agent is stopping.
    #[error("agent stopped")]
    Stopped,
    /// The link closed before the answer came.
    #[error("the link closed")]
    ClosedBeforeAnswer,
    /// No answer came in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server answered a request with a status other than OK.
    #[error("server status {0}")]
    Status(u16),
    /// The server refused a batch of events.
    #[error("server refused events (status {0})")]
    EventsRefused(u16),
    /// The server sent a request devices do not serve.
    #[error("the server sent request {0:#06x}, which devices do not serve")]
    UnknownRequest(u16),
}

impl From<CodecError> for LinkError {
    fn from(e: CodecError) -> Self {
        Self::Codec(Arc::new(e))
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

impl From<PayloadError> for LinkError {
    fn from(e: PayloadError) -> Self {
        Self::Payload(Arc::new(e))
    }
}
