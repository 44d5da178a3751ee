//! The authentication handshake over a fresh TCP stream, shared by the peer
//! link and the witness: both ends prove knowledge of the pre-shared key
//! (see [`super::auth`]) and come out with the session's frame MACs.

use std::time::Duration;

use tokio::net::TcpStream;

use super::auth::{self, AuthError, FrameMac, Psk};
use super::proto::{self, FrameError};

/// The MACs of an authenticated session: (what this side sends, what it receives).
pub(crate) type Macs = (FrameMac, FrameMac);

/// How long a handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

fn timed_out() -> FrameError {
    FrameError::HandshakeTimeout
}

/// Dial side: authenticate as `my_id` to a listener that must be
/// `expected` (any authenticated listener when None). Returns its node id.
pub(crate) async fn dial(
    stream: &mut TcpStream,
    psk: &Psk,
    my_id: &str,
    expected: Option<&str>,
) -> Result<(String, Macs), FrameError> {
    let _ = stream.set_nodelay(true);
    let nonce_d = auth::nonce();
    let hello = auth::Hello {
        node_id: my_id.to_string(),
        nonce: nonce_d.to_vec(),
    };
    let run = async {
        proto::write_plain(stream, &hello).await?;
        let challenge: auth::Challenge = proto::read_plain(stream).await?;
        let want = auth::listener_proof(psk, &hello, &challenge.nonce, &challenge.node_id);
        if !auth::same(&want, &challenge.proof) {
            return Err(FrameError::Auth(AuthError::ListenerUnproven));
        }
        if let Some(expected) = expected {
            if challenge.node_id != expected {
                return Err(FrameError::Auth(AuthError::UnexpectedNode {
                    expected: expected.to_string(),
                    found: challenge.node_id.clone(),
                }));
            }
        }
        let proof = auth::dialler_proof(psk, &nonce_d, &challenge, my_id);
        proto::write_plain(stream, &auth::Proof { proof }).await?;
        Ok((
            challenge.node_id.clone(),
            FrameMac::session(psk, &nonce_d, &challenge.nonce, true),
        ))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| timed_out())?
}

/// Listen side: authenticate as `my_id` a dialler that must be `expected`
/// (any authenticated dialler when None). Returns its node id.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    psk: &Psk,
    my_id: &str,
    expected: Option<&str>,
) -> Result<(String, Macs), FrameError> {
    let _ = stream.set_nodelay(true);
    let run = async {
        let hello: auth::Hello = proto::read_plain(stream).await?;
        if let Some(expected) = expected {
            if hello.node_id != expected {
                return Err(FrameError::Auth(AuthError::UnexpectedNode {
                    expected: expected.to_string(),
                    found: hello.node_id.clone(),
                }));
            }
        }
        let nonce_l = auth::nonce();
        let proof = auth::listener_proof(psk, &hello, &nonce_l, my_id);
        let challenge = auth::Challenge {
            node_id: my_id.to_string(),
            nonce: nonce_l.to_vec(),
            proof,
        };
        proto::write_plain(stream, &challenge).await?;
        let answer: auth::Proof = proto::read_plain(stream).await?;
        let want = auth::dialler_proof(psk, &hello.nonce, &challenge, &hello.node_id);
        if !auth::same(&want, &answer.proof) {
            return Err(FrameError::Auth(AuthError::DiallerUnproven));
        }
        Ok((
            hello.node_id.clone(),
            FrameMac::session(psk, &hello.nonce, &nonce_l, false),
        ))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| timed_out())?
}
