//! Admitting a device after its HANDSHAKE: it proves its credential by
//! challenge and response (then every message of the link carries a MAC),
//! or it has none and the policy admits it without one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

use super::credentials::Policy;
use super::link::{refusal, Link};
use super::Shared;
use crate::store::unix_ms;
use standby_device::auth::{self, Transcript, NONCE_LEN};
use standby_device::codec::Message;
use standby_device::frame::{command, status};
use standby_device::messages as msg;

/// A device let in.
pub(super) struct Admitted {
    /// The request the welcome answers: the HANDSHAKE, or the AUTHENTICATE
    /// that followed the challenge.
    pub reply_to: Message,
    /// The generation of the credential the device proved.
    pub generation: Option<u32>,
}

/// Admit the device whose HANDSHAKE is `hello` (payload decoded as `h`), or
/// refuse it (the refusal is sent and logged; `None`).
pub(super) async fn admit<R, W>(
    shared: &Shared,
    link: &mut Link<R, W>,
    hello: &Message,
    h: &msg::Hello,
    peer: SocketAddr,
) -> Option<Admitted>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let device_id = hello.device_id;
    let Some(offer) = &h.auth else {
        return match unauthenticated(shared, device_id) {
            Ok(()) => Some(Admitted {
                reply_to: hello.clone(),
                generation: None,
            }),
            Err(why) => {
                refuse(shared, link, hello, peer, why.to_string()).await;
                None
            }
        };
    };
    let auth = &shared.credentials.auth;
    let Some(key) = &auth.key else {
        let reason = "this server has no device enrolment key (devices.auth.mode = \"off\")";
        refuse(shared, link, hello, peer, reason.into()).await;
        return None;
    };
    let generation = offer.generation;
    if let Err(why) = shared
        .credentials
        .register()
        .check(device_id, generation, unix_ms())
    {
        refuse(shared, link, hello, peer, why.to_string()).await;
        return None;
    }
    if offer.nonce.len() != NONCE_LEN {
        let reason = format!(
            "the handshake's nonce is {} bytes, not {NONCE_LEN}",
            offer.nonce.len()
        );
        refuse(shared, link, hello, peer, reason).await;
        return None;
    }
    let device_key = key.device_key(device_id, generation);
    let server_nonce = auth::nonce();
    let transcript = Transcript::new(
        device_id,
        generation,
        &hello.payload,
        &offer.nonce,
        &server_nonce,
    );
    let challenge = msg::Challenge {
        nonce: server_nonce.to_vec(),
        proof: transcript.server_proof(&device_key).to_vec(),
    };
    link.send(hello.reply(status::CHALLENGE, msg::encode(&challenge)))
        .await
        .ok()?;
    let answer = match tokio::time::timeout(shared.config.handshake_timeout, link.next()).await {
        Ok(Ok(m)) => m,
        Ok(Err(_)) | Err(_) => {
            tracing::info!(%peer, device_id, "no AUTHENTICATE after the challenge; closing");
            shared.stats.auth_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    if answer.command != command::AUTHENTICATE || answer.response || answer.device_id != device_id {
        let reason = format!(
            "expected AUTHENTICATE from device {device_id}, got command {:#06x} for device {}",
            answer.command, answer.device_id
        );
        refuse(shared, link, &answer, peer, reason).await;
        return None;
    }
    let proved = msg::decode::<msg::Authenticate>("authenticate", &answer.payload)
        .is_ok_and(|a| transcript.is_device_proof(&device_key, &a.proof));
    if !proved {
        let reason = format!("wrong proof for device {device_id}'s key (generation {generation})");
        refuse(shared, link, &answer, peer, reason).await;
        return None;
    }
    link.codec.set_mac(transcript.server_mac(&device_key));
    Some(Admitted {
        reply_to: answer,
        generation: Some(generation),
    })
}

/// Why a device without a credential is not admitted.
#[derive(Debug, thiserror::Error)]
enum Unadmitted {
    /// Authentication is required.
    #[error("device {0} must authenticate (devices.auth.mode = \"required\"): enrol it with `standby devices enroll` and install its credential")]
    Required(u32),
    /// The migration period is over.
    #[error(
        "the migration period (devices.auth.migrate_until) is over: device {0} must authenticate"
    )]
    MigrationOver(u32),
    /// The device holds a credential.
    #[error("device {0} is enrolled and must use its credential")]
    Enrolled(u32),
    /// The device is connected and authenticated elsewhere.
    #[error("device {0} is connected and authenticated from {1}")]
    ConnectedElsewhere(u32, SocketAddr),
}

/// Whether device `device_id` may connect without a credential.
fn unauthenticated(shared: &Shared, device_id: u32) -> Result<(), Unadmitted> {
    match shared.credentials.auth.policy {
        Policy::Off => {}
        Policy::Required => return Err(Unadmitted::Required(device_id)),
        Policy::Migrate { until_ms } => {
            if unix_ms() >= until_ms {
                return Err(Unadmitted::MigrationOver(device_id));
            }
            if shared.credentials.register().is_enrolled(device_id) {
                return Err(Unadmitted::Enrolled(device_id));
            }
        }
    }
    if let Some((addr, true)) = shared.registry.link_of(device_id) {
        return Err(Unadmitted::ConnectedElsewhere(device_id, addr));
    }
    if let Policy::Migrate { .. } = shared.credentials.auth.policy {
        tracing::warn!(
            device_id,
            "device admitted without a credential (devices.auth.mode = \"migrate\"): enrol it before devices.auth.migrate_until"
        );
    }
    Ok(())
}

/// Answer `to` with NOT_AUTHENTICATED and log it with the address of the
/// link the device has now, if any.
async fn refuse<R, W>(
    shared: &Shared,
    link: &mut Link<R, W>,
    to: &Message,
    peer: SocketAddr,
    reason: String,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    shared.stats.auth_refused.fetch_add(1, Ordering::Relaxed);
    let connected_from = shared.registry.link_of(to.device_id).map(|(a, _)| a);
    tracing::warn!(
        %peer,
        device_id = to.device_id,
        connected_from = ?connected_from,
        %reason,
        "device not authenticated; closing"
    );
    let _ = link
        .send(to.reply(status::NOT_AUTHENTICATED, refusal(reason)))
        .await;
}
