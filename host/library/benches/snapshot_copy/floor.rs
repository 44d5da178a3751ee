//! The floor under any encrypted whole-file copy between two nodes on this
//! machine: the least work a copy with an encrypted link can do, written as
//! plainly as it can be, to show how much of the pipeline's time is the
//! machine's and how much is standby's.
//!
//! Two threads, one per node, and a TCP connection on loopback between
//! them. The sender reads the file in 256 KiB chunks (the link's chunk)
//! into one buffer, seals each in place with AES-256-GCM (ring, as the peer
//! link does) and writes it with a 4-byte length; the receiver reads each
//! frame into one buffer, opens it in place, writes it at its offset and
//! syncs the file at the end. No end-to-end checksum, no framing beyond the
//! length, no async runtime, no copy a chunk does not need. Whatever a real
//! copy adds (a checksum, the integrity check, its protocol) comes on top.
//!
//! Measured twice per run: alone, and with the SQLite integrity check of
//! the source running in a third thread beside it (the best a copy could do
//! if the check moved to the sender and overlapped the transfer entirely).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::machine::{cpu_used, Timed};

/// The link's chunk.
const CHUNK: usize = 256 * 1024;

/// A fixed key: the floor measures work, not secrecy.
fn key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x5a; 32]).unwrap())
}

/// The nonce of frame `n` (a counter, as the link's).
fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// What one floor measurement took, wall and CPU.
pub(crate) struct Floor {
    pub(crate) timed: Timed,
    pub(crate) cpu: Duration,
}

/// Copy `src` to `dest` over an encrypted loopback connection, the check
/// of `check` (a database) beside it when given; `dest` is removed after.
pub(crate) fn encrypted_stream(src: &Path, dest: &Path, check: Option<&Path>) -> Floor {
    let len = std::fs::metadata(src).unwrap().len();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cpu_before = cpu_used();
    let started = Instant::now();
    std::thread::scope(|s| {
        let checker = check.map(|db| {
            s.spawn(move || {
                let report = standby_host::store::integrity_check(db).unwrap();
                assert!(report.ok, "integrity check: {:?}", report.problems);
            })
        });
        let receiver = s.spawn(|| receive(&listener, dest, len));
        send(src, port, len);
        receiver.join().unwrap();
        if let Some(c) = checker {
            c.join().unwrap();
        }
    });
    let took = started.elapsed();
    let cpu = cpu_used().saturating_sub(cpu_before);
    assert_eq!(std::fs::metadata(dest).unwrap().len(), len);
    std::fs::remove_file(dest).unwrap();
    Floor {
        timed: Timed { bytes: len, took },
        cpu,
    }
}

fn send(src: &Path, port: u16, len: u64) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_nodelay(true).unwrap();
    let file = std::fs::File::open(src).unwrap();
    let key = key();
    let mut frame = vec![0u8; 4 + CHUNK + AES_256_GCM.tag_len()];
    let (mut offset, mut n) = (0u64, 0u64);
    while offset < len {
        let want = ((len - offset) as usize).min(CHUNK);
        let (head, body) = frame.split_at_mut(4);
        file.read_exact_at(&mut body[..want], offset).unwrap();
        let (data, tag) = body.split_at_mut(want);
        let sealed = key
            .seal_in_place_separate_tag(nonce(n), Aad::empty(), data)
            .unwrap();
        tag[..sealed.as_ref().len()].copy_from_slice(sealed.as_ref());
        let sealed_len = want + sealed.as_ref().len();
        head.copy_from_slice(&(sealed_len as u32).to_be_bytes());
        socket.write_all(&frame[..4 + sealed_len]).unwrap();
        offset += want as u64;
        n += 1;
    }
}

fn receive(listener: &TcpListener, dest: &Path, len: u64) {
    let (mut socket, _) = listener.accept().unwrap();
    let out = std::fs::File::create(dest).unwrap();
    let key = key();
    let mut frame = vec![0u8; CHUNK + AES_256_GCM.tag_len()];
    let (mut offset, mut n) = (0u64, 0u64);
    while offset < len {
        let mut head = [0u8; 4];
        socket.read_exact(&mut head).unwrap();
        let sealed_len = u32::from_be_bytes(head) as usize;
        let sealed = &mut frame[..sealed_len];
        socket.read_exact(sealed).unwrap();
        let data = key.open_in_place(nonce(n), Aad::empty(), sealed).unwrap();
        out.write_all_at(data, offset).unwrap();
        offset += data.len() as u64;
        n += 1;
    }
    out.sync_all().unwrap();
}
