//! `peer`: the link to the other site. This host version has no peer link, so
//! the link reports itself disconnected and transfers are `unavailable`.

use crate::plugin::bindings::strategy::standby::plugin::peer::{Host, PeerStatus, TransferReceipt};
use crate::plugin::bindings::strategy::standby::plugin::types::{Error as WitError, FileRef};

use super::HostState;

impl HostState {
    fn peer_link(&self) -> Result<(), WitError> {
        if self.grants.peer.is_none() {
            return Err(WitError::AccessDenied(format!(
                "plugin {} has no `peer` grant",
                self.plugin
            )));
        }
        Err(WitError::Unavailable(
            "no peer link is configured on this node".into(),
        ))
    }
}

impl Host for HostState {
    async fn status(&mut self) -> PeerStatus {
        PeerStatus {
            connected: false,
            node_id: None,
            epoch: 0,
            last_heard: None,
            rtt_ms: None,
        }
    }

    async fn send_file(
        &mut self,
        _file: FileRef,
        _tag: String,
    ) -> Result<TransferReceipt, WitError> {
        self.peer_link().map(|()| unreachable_receipt())
    }

    async fn send_batch(&mut self, _batch_id: u64) -> Result<(), WitError> {
        self.peer_link()
    }

    async fn send_message(&mut self, _kind: String, _body: Vec<u8>) -> Result<(), WitError> {
        self.peer_link()
    }
}

fn unreachable_receipt() -> TransferReceipt {
    TransferReceipt {
        bytes: 0,
        sha256: String::new(),
        duration_ms: 0,
    }
}
