//! DNS for failover: RFC 2136 updates signed with TSIG ([`update`]) and the
//! TSIG key files operators already have ([`key`]).
//!
//! The `dns` capability ([`crate::caps`]) is a thin layer over [`update`]: it
//! checks the plugin's grant, loads the granted key and maps [`DnsError`] to
//! the WIT error variants.

pub mod key;
pub mod update;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use key::TsigKey;
pub use update::{AddressType, DnsClient};

/// What went wrong talking DNS. Every variant about a server names the
/// server and what was asked (`subject`, e.g. `update of www.site.test. A`).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// No answer within the timeout on any attempt.
    #[error(
        "DNS server {server} did not answer the {subject} ({attempts} attempt(s) of {timeout:?})"
    )]
    Timeout {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// Time allowed per attempt.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The server could not be reached (connection refused, no route, ...).
    #[error("DNS server {server} is unreachable for the {subject}: {source}")]
    Unreachable {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused: REFUSED, NOTAUTH (including TSIG errors such as
    /// BADSIG, BADKEY, BADTIME).
    #[error("DNS server {server} refused the {subject}: {rcode}")]
    Refused {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// The response code, with the TSIG error when there was one.
        rcode: String,
    },
    /// The server answered, but the answer's TSIG signature is missing or
    /// does not verify with the key (the update may or may not have applied).
    #[error(
        "the answer of DNS server {server} to the {subject} fails TSIG verification: {source}"
    )]
    BadResponseSignature {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// The server answered with another error code (SERVFAIL, NOTZONE, ...).
    #[error("DNS server {server} answered {rcode} to the {subject}")]
    Rcode {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// The response code.
        rcode: String,
    },
    /// The answer could not be understood.
    #[error("DNS server {server} sent a malformed answer to the {subject}: {source}")]
    Protocol {
        /// The server asked.
        server: SocketAddr,
        /// What was asked.
        subject: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A message could not be encoded.
    #[error("cannot encode the {subject}: {source}")]
    Encode {
        /// What was to be asked.
        subject: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// A name, address, zone or TTL given by the caller is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// A TSIG key file could not be read or understood.
    #[error("TSIG key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: key::KeyFileError,
    },
    /// A TSIG key is not usable (unsupported algorithm, bad name, empty
    /// secret), or a message could not be signed with it.
    #[error("TSIG key `{name}`: {source}")]
    Key {
        /// The key's name.
        name: String,
        /// Why.
        #[source]
        source: key::KeyError,
    },
    /// The built-in server could not open its sockets.
    #[error("DNS server cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}
