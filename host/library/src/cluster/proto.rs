//! Messages between a node and the witness (MessagePack, in authenticated
//! frames of the peer protocol; the node id comes from the handshake).

use serde::{Deserialize, Serialize};

/// What a node asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Take the lease for `ttl_ms` with a new epoch (granted only when no
    /// other node holds an unexpired lease).
    Acquire {
        /// Requested lease length.
        ttl_ms: u64,
    },
    /// Extend the lease held at `epoch` by `ttl_ms` from now.
    Renew {
        /// The epoch the lease was granted with.
        epoch: u64,
        /// Requested lease length.
        ttl_ms: u64,
    },
    /// Give the lease up now (a clean hand-over).
    Release {
        /// The epoch the lease was granted with.
        epoch: u64,
    },
    /// The witness's state (epoch, holder), changing nothing.
    Query,
}

/// What the witness answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The lease is the asker's at `epoch` for `ttl_ms` from when the
    /// witness received the request. The epoch is on the witness's disk.
    Granted {
        /// The lease's epoch.
        epoch: u64,
        /// Its length.
        ttl_ms: u64,
    },
    /// Not granted or not renewed.
    Denied {
        /// Why, for people.
        reason: String,
        /// Who holds the lease, if anyone.
        holder: Option<String>,
        /// The current epoch.
        epoch: u64,
        /// How long the holder's lease still runs on the witness's clock.
        remaining_ms: u64,
    },
    /// The lease was released.
    Released {
        /// The current epoch.
        epoch: u64,
    },
    /// The witness's state.
    State {
        /// The current (highest granted) epoch.
        epoch: u64,
        /// Who holds an unexpired lease, if anyone.
        holder: Option<String>,
        /// How long it still runs.
        remaining_ms: u64,
    },
}
