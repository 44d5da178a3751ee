//! The authentication handshake over a fresh TCP stream, shared by the peer
//! link and the witness: both ends prove knowledge of the pre-shared key
//! without revealing anything a guess could be checked against (see
//! [`super::auth`]) and come out with the session's frame ciphers.

use std::time::Duration;

use tokio::net::TcpStream;

use super::auth::{self, AuthError, DiallerExchange, Psk};
use super::cipher::FrameCipher;
use super::proto::{self, FrameError};

/// The ciphers of an authenticated session: (what this side sends, what it receives).
pub(crate) type Ciphers = (FrameCipher, FrameCipher);

/// How long a handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

fn timed_out() -> FrameError {
    FrameError::HandshakeTimeout
}

fn check_expected(expected: Option<&str>, found: &str) -> Result<(), FrameError> {
    match expected {
        Some(expected) if expected != found => Err(FrameError::Auth(AuthError::UnexpectedNode {
            expected: expected.to_string(),
            found: found.to_string(),
        })),
        _ => Ok(()),
    }
}

/// Dial side: authenticate as `my_id` to a listener that must be
/// `expected` (any authenticated listener when None). Returns its node id.
pub(crate) async fn dial(
    stream: &mut TcpStream,
    psk: &Psk,
    my_id: &str,
    expected: Option<&str>,
) -> Result<(String, Ciphers), FrameError> {
    let _ = stream.set_nodelay(true);
    let run = async {
        let (exchange, hello) = DiallerExchange::start(psk, my_id);
        proto::write_plain(stream, &hello).await?;
        let reply: auth::Reply = proto::read_plain(stream).await?;
        check_expected(expected, &reply.node_id)?;
        let keys = exchange.finish(&reply)?;
        let proof = keys.dialler_proof.to_vec();
        proto::write_plain(stream, &auth::Confirm { proof }).await?;
        let theirs: auth::Confirm = proto::read_plain(stream).await?;
        if theirs.proof.is_empty() {
            return Err(FrameError::Auth(AuthError::ProofRefused));
        }
        if !auth::same(&keys.listener_proof, &theirs.proof) {
            return Err(FrameError::Auth(AuthError::ListenerUnproven));
        }
        Ok((reply.node_id, keys.ciphers(true)?))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| timed_out())?
}

/// Listen side: authenticate as `my_id` a dialler that must be `expected`
/// (any authenticated dialler when None). Returns its node id. Nothing this
/// side sends before the dialler's proof checks out depends on the key
/// other than through the SPAKE2 share.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    psk: &Psk,
    my_id: &str,
    expected: Option<&str>,
) -> Result<(String, Ciphers), FrameError> {
    let _ = stream.set_nodelay(true);
    let run = async {
        let hello: auth::Hello = proto::read_plain(stream).await?;
        check_expected(expected, &hello.node_id)?;
        let (reply, keys) = auth::answer(psk, my_id, &hello)?;
        proto::write_plain(stream, &reply).await?;
        let theirs: auth::Confirm = proto::read_plain(stream).await?;
        if !auth::same(&keys.dialler_proof, &theirs.proof) {
            let refusal = auth::Confirm { proof: Vec::new() };
            let _ = proto::write_plain(stream, &refusal).await;
            return Err(FrameError::Auth(AuthError::DiallerUnproven));
        }
        let proof = keys.listener_proof.to_vec();
        proto::write_plain(stream, &auth::Confirm { proof }).await?;
        Ok((hello.node_id, keys.ciphers(false)?))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run)
        .await
        .map_err(|_| timed_out())?
}

/// Test tool: a stranger who guesses the key, dials the listener and runs
/// the handshake honestly with its guess. What it gets back: the listener's
/// share, its Confirm (empty: a refusal), and whatever follows until the
/// listener closes.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) async fn what_the_listener_answers_a_guess(
    listener: std::net::SocketAddr,
    guess: &Psk,
) -> Vec<Vec<u8>> {
    use super::auth::{Confirm, DiallerExchange, Reply};
    use super::proto::{read_plain, write_plain};
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(listener).await.unwrap();
    let (exchange, hello) = DiallerExchange::start(guess, "a");
    write_plain(&mut s, &hello).await.unwrap();
    let reply: Reply = read_plain(&mut s).await.unwrap();
    let mut answers = vec![reply.spake.clone()];
    let keys = exchange.finish(&reply).unwrap();
    let proof = keys.dialler_proof.to_vec();
    write_plain(&mut s, &Confirm { proof }).await.unwrap();
    let confirm: Confirm = read_plain(&mut s).await.unwrap();
    answers.push(confirm.proof);
    // After that, the listener either runs the session or closes.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut rest)).await;
    answers.push(rest);
    answers
}
