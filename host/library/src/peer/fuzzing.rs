//! The peer link's decoders driven by arbitrary bytes, for the fuzzer: what
//! a stranger can send before any key (the handshake's plain messages and
//! the SPAKE2 shares in them), and what an authenticated peer's frames
//! decode to after they open. Each gives a value or an error; a panic is a
//! bug.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::auth::{self, Confirm, DiallerExchange, Hello, Psk, Reply};
use super::cipher::FrameCipher;
use super::proto::{self, Frame};

/// Run a future that never waits (reads from a byte slice) to its end.
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Feed `data` to every decoder of the peer link, as the fuzzer's input:
/// the first byte picks which.
pub fn peer_decoders(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let psk = Psk::new(vec![7u8; 32]).unwrap_or_else(|_| unreachable!("32 bytes is long enough"));
    let mut r = rest;
    match pick % 4 {
        // A listener reading a dialler's hello, and answering it.
        0 => {
            if let Some(Ok(hello)) = now(proto::read_plain::<_, Hello>(&mut r)) {
                let _ = auth::answer(&psk, "listener", &hello);
            }
        }
        // A dialler reading the listener's reply, and finishing with it.
        1 => {
            if let Some(Ok(reply)) = now(proto::read_plain::<_, Reply>(&mut r)) {
                let (exchange, _) = DiallerExchange::start(&psk, "dialler");
                let _ = exchange.finish(&reply);
            }
        }
        // A proof.
        2 => {
            let _ = now(proto::read_plain::<_, Confirm>(&mut r));
        }
        // A frame from an authenticated peer: the bytes sealed as its body
        // (so they open), then read back.
        _ => {
            let key = [9u8; 32];
            let (Ok(mut seal), Ok(mut open)) = (FrameCipher::new(&key), FrameCipher::new(&key))
            else {
                return;
            };
            let mut body = rest.to_vec();
            let Ok(tag) = seal.seal(&mut body) else {
                return;
            };
            let mut wire = ((body.len() + tag.len()) as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(&body);
            wire.extend_from_slice(&tag);
            let _ = now(proto::read_frame::<_, Frame>(&mut &wire[..], &mut open));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_long_and_nonsense_inputs_give_errors() {
        peer_decoders(&[]);
        for pick in 0..4u8 {
            peer_decoders(&[pick]);
            peer_decoders(&[pick, 0xff, 0xff, 0xff, 0xff]);
            peer_decoders(&[pick, 3, 0, 0, 0, 0x93, 0xa1, 0x61]);
            let mut big = vec![pick];
            big.extend_from_slice(&(1u32 << 20).to_le_bytes());
            big.extend(std::iter::repeat_n(0xc1, 4096));
            peer_decoders(&big);
        }
    }
}
