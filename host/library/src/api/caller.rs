//! Who is calling the admin endpoint, as the operating system says.

use std::net::SocketAddr;

/// The other end of one admin connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A process on this host, through the owner-only admin socket.
    Local {
        /// Its user id.
        uid: u32,
        /// Its process id, when the kernel gives one.
        pid: Option<i32>,
    },
    /// A client of the TCP listener.
    Tcp {
        /// Its address.
        addr: SocketAddr,
        /// What it may do there.
        access: TcpAccess,
    },
    /// A connection to the socket whose credentials could not be read.
    Unknown,
}

/// What a TCP client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpAccess {
    /// The listener has no token: status only.
    ReadOnly,
    /// It presented the operators' token (over TLS): every call.
    Token,
    /// The listener wants a token and this request had none or a wrong one:
    /// nothing.
    Refused,
}

impl Caller {
    /// Whether this caller may change the node's state: one that came
    /// through the owner-only socket (the OS checked who it is), or over
    /// TLS with the operators' token.
    pub(crate) fn may_change_state(&self) -> bool {
        matches!(
            self,
            Caller::Local { .. }
                | Caller::Tcp {
                    access: TcpAccess::Token,
                    ..
                }
        )
    }

    /// Whether this caller gets nothing at all (401).
    pub(crate) fn unauthenticated(&self) -> bool {
        matches!(
            self,
            Caller::Tcp {
                access: TcpAccess::Refused,
                ..
            }
        )
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Local {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} pid {pid} (admin socket)"),
            Caller::Local { uid, pid: None } => write!(f, "uid {uid} (admin socket)"),
            Caller::Tcp { addr, access } => match access {
                TcpAccess::ReadOnly => write!(f, "{addr} (TCP, read-only)"),
                TcpAccess::Token => write!(f, "{addr} (TCP over TLS, operator token)"),
                TcpAccess::Refused => write!(f, "{addr} (TCP, no valid token)"),
            },
            Caller::Unknown => write!(f, "an unidentified process (admin socket)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Caller, TcpAccess};

    #[test]
    fn only_the_socket_or_a_token_may_change_state() {
        assert!(Caller::Local {
            uid: 0,
            pid: Some(1)
        }
        .may_change_state());
        let tcp = |access| Caller::Tcp {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            access,
        };
        assert!(!tcp(TcpAccess::ReadOnly).may_change_state());
        assert!(!tcp(TcpAccess::ReadOnly).unauthenticated());
        assert!(tcp(TcpAccess::Token).may_change_state());
        assert!(!tcp(TcpAccess::Refused).may_change_state());
        assert!(tcp(TcpAccess::Refused).unauthenticated());
        assert!(!Caller::Unknown.may_change_state());
    }
}
