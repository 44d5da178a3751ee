//! Fuzz the peer link's decoders: the handshake's plain messages a stranger
//! can send before any key (and the SPAKE2 processing of the shares in
//! them), and the frames an authenticated peer's bytes decode to once they
//! open. The first byte picks the decoder; the rest is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use standby_host::internals::peer_decoders;

fuzz_target!(|data: &[u8]| {
    peer_decoders(data);
});
