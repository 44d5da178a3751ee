//! The `peer` grant: the link to the other site, with the granted root
//! where files received from the peer land.

use serde::{Deserialize, Serialize};

use super::super::files::grant::FilesGrant;
use super::super::grant_error::GrantError;
use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// The `peer` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGrant {
    /// Name of a granted files root where files received from the peer land.
    pub inbox: String,
}

/// What is wrong with a `peer` grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PeerProblem {
    /// The inbox names no granted root.
    #[error("names root `{0}`, which is not in `files`")]
    UnknownInbox(String),
}

/// Whether the profile grants `peer` at all.
pub(crate) fn granted(grant: &Option<PeerGrant>) -> bool {
    grant.is_some()
}

/// The inbox is one of the granted roots.
pub(crate) fn validate(grant: &Option<PeerGrant>, files: &FilesGrant) -> Result<(), GrantError> {
    match grant {
        Some(peer) if !files.contains_key(&peer.inbox) => Err(GrantError::new(
            "peer.inbox",
            PeerProblem::UnknownInbox(peer.inbox.clone()),
        )),
        _ => Ok(()),
    }
}

/// The call-time check: `plugin` holds the `peer` grant.
pub(crate) fn check(grant: Option<&PeerGrant>, plugin: &str) -> Result<(), WitError> {
    match grant {
        Some(_) => Ok(()),
        None => Err(WitError::AccessDenied(format!(
            "plugin {plugin} has no `peer` grant"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_must_be_a_granted_root() {
        let mut files = FilesGrant::new();
        let g = Some(PeerGrant {
            inbox: "snapshots".into(),
        });
        let e = validate(&g, &files).unwrap_err();
        assert_eq!(e.key, "peer.inbox");
        assert!(e.to_string().contains("not in `files`"));
        files.insert("snapshots".into(), "snaps".into());
        assert!(validate(&g, &files).is_ok());
        assert!(check(g.as_ref(), "p").is_ok());
        assert!(matches!(check(None, "p"), Err(WitError::AccessDenied(_))));
    }
}
