//! `peer`: the link to the other site. Files and messages go to the peer's
//! strategy instance of the same name; without a peer link on this node the
//! link reports itself disconnected and transfers are `unavailable`.

use crate::peer::{PeerError, PeerLink};
use crate::wit::strategy::standby::plugin::peer::{
    Host, PeerStatus, SentSnapshot, TransferReceipt,
};
use crate::wit::strategy::standby::plugin::types::{Error as WitError, FileRef};

use super::HostState;

pub(crate) mod grant;
mod snapshot;

impl HostState {
    fn peer_link(&self) -> Result<PeerLink, WitError> {
        grant::check(self.grants.granted.peer.as_ref(), &self.plugin)
            .map_err(|e| self.denied("peer", e))?;
        self.services
            .peer()
            .cloned()
            .ok_or_else(|| WitError::Unavailable("no peer link is configured on this node".into()))
    }
}

fn peer_error(e: PeerError) -> WitError {
    match e {
        PeerError::Down | PeerError::Timeout(_) | PeerError::Stalled { .. } => {
            WitError::Unavailable(e.to_string())
        }
        PeerError::Refused(_) => WitError::Conflict(e.to_string()),
        other => WitError::Other(other.to_string()),
    }
}

/// Functions of `peer` the WIT declares but this host does not implement
/// yet (marked so in the WIT): a plugin that imports one is refused at load.
pub(crate) const NOT_IMPLEMENTED: &[&str] = &[];

/// Add `peer`'s host functions to `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    crate::wit::strategy::standby::plugin::peer::add_to_linker::<
        HostState,
        wasmtime::component::HasSelf<HostState>,
    >(linker, |s| s)
}

impl Host for HostState {
    async fn status(&mut self) -> PeerStatus {
        let Some(link) = self.services.peer() else {
            return PeerStatus {
                connected: false,
                node_id: None,
                epoch: 0,
                last_heard: None,
                rtt_ms: None,
            };
        };
        let s = link.state();
        PeerStatus {
            connected: s.connected,
            node_id: s.node_id,
            epoch: s.epoch,
            last_heard: s.last_heard_ms,
            rtt_ms: s.rtt_ms,
        }
    }

    async fn send_file(&mut self, file: FileRef, tag: String) -> Result<TransferReceipt, WitError> {
        let link = self.peer_link()?;
        let (root, rel) = self.file(&file)?;
        let what = format!("{}:{}", file.root, file.path);
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| WitError::InvalidArgument(format!("{what} names no file")))?;
        let (pin, real) = super::db::confined_real_path(&root, &rel, &what)?;
        // A snapshot the host placed, unchanged since: its checksum is known.
        let pin = pin.into_std();
        let known = crate::store::FileStamp::of(&pin)
            .ok()
            .and_then(|stamp| self.services.known_digest(&stamp));
        let receipt = link
            .send_file(&self.plugin, &real, &name, &tag, known.as_ref())
            .await
            .map_err(peer_error)?;
        drop(pin);
        Ok(TransferReceipt {
            bytes: receipt.bytes,
            sha256: receipt.sha256,
            duration_ms: receipt.duration_ms,
        })
    }

    async fn send_snapshot(&mut self, name: String, tag: String) -> Result<SentSnapshot, WitError> {
        self.send_live_snapshot(name, tag).await
    }

    async fn send_batch(&mut self, batch_id: u64) -> Result<(), WitError> {
        let link = self.peer_link()?;
        let batch = self.services.batches.get(batch_id).ok_or_else(|| {
            WitError::NotFound(format!(
                "no change batch {batch_id} is held (released already?)"
            ))
        })?;
        let body = rmp_serde::to_vec_named(&*batch)
            .map_err(|e| WitError::Other(format!("encoding change batch {batch_id}: {e}")))?;
        link.send_batch(&self.plugin, body)
            .await
            .map_err(peer_error)
    }

    async fn send_message(&mut self, kind: String, body: Vec<u8>) -> Result<(), WitError> {
        let link = self.peer_link()?;
        if body.len() > 65_536 {
            return Err(WitError::InvalidArgument(format!(
                "a peer message carries at most 65536 bytes, not {}",
                body.len()
            )));
        }
        link.send_message(&self.plugin, &kind, body)
            .await
            .map_err(peer_error)
    }
}
