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
    /// A client of the read-only TCP listener.
    Tcp(SocketAddr),
    /// A connection to the socket whose credentials could not be read.
    Unknown,
}

impl Caller {
    /// Whether this caller may change the node's state: only one that came
    /// through the owner-only socket (the OS checked who it is).
    pub(crate) fn may_change_state(&self) -> bool {
        matches!(self, Caller::Local { .. })
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
            Caller::Tcp(addr) => write!(f, "{addr} (TCP, read-only)"),
            Caller::Unknown => write!(f, "an unidentified process (admin socket)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Caller;

    #[test]
    fn only_a_caller_through_the_socket_may_change_state() {
        assert!(Caller::Local {
            uid: 0,
            pid: Some(1)
        }
        .may_change_state());
        assert!(
            !Caller::Tcp("127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()))
                .may_change_state()
        );
        assert!(!Caller::Unknown.may_change_state());
    }
}
