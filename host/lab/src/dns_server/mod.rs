//! A small authoritative DNS server for demos and tests: one zone held in
//! memory, A and AAAA records, plain queries over UDP and TCP, and RFC 2136
//! updates accepted only when signed with its TSIG key.
//!
//! It answers queries inside its zone authoritatively (AA, NXDOMAIN or an
//! empty NOERROR with the zone's SOA when there is nothing), refuses queries
//! outside it, and answers updates that are unsigned with REFUSED and those
//! signed with another key or a bad MAC with NOTAUTH (TSIG BADKEY / BADSIG /
//! BADTIME). Responses to signed requests are signed. Malformed packets get
//! FORMERR (or nothing, when not even the header is readable) and a warning;
//! nothing a client sends stops the server. A signed request seen again
//! inside its time window is a replay and is refused (NOTAUTH). TCP
//! connections are bounded (64, 8 per address) and must send each message
//! within 2 s, so silent connections cannot hold the slots.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

mod state;

use state::{lock, owner_in, State};

use standby_host::dns::{DnsError, TsigKey};

/// Concurrent TCP connections served; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// Concurrent TCP connections served from one address; more are closed at
/// once, so one client cannot take every slot.
const MAX_TCP_PER_ADDRESS: usize = 8;
/// How long a TCP client has to send a whole message: its first one after
/// connecting, or the rest of one it has begun.
const TCP_MESSAGE: Duration = Duration::from_secs(2);
/// A TCP connection idle this long between messages is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Room left in a UDP answer for the TSIG record.
const TSIG_ROOM: usize = 128;

/// A running server. Stops when dropped or with [`DnsServer::shutdown`].
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serve `zone` on `listen` (UDP and TCP; port 0 picks a free port, see
    /// [`DnsServer::local_addr`]) with `records` at `ttl`, accepting updates
    /// signed with the hmac-sha256 key `key_name`/`secret`. A record's name is
    /// absolute when it ends in a dot or in the zone's name, else relative to
    /// the zone (`@` is the zone itself).
    pub async fn start(
        listen: SocketAddr,
        zone: &str,
        key_name: &str,
        secret: &[u8],
        records: &[(&str, Ipv4Addr)],
        ttl: u32,
    ) -> Result<Self, DnsError> {
        let key = TsigKey::new(key_name, "hmac-sha256", secret.to_vec())?;
        Self::start_with_key(listen, zone, &key, records, ttl).await
    }

    /// [`DnsServer::start`] with any supported TSIG key.
    pub async fn start_with_key(
        listen: SocketAddr,
        zone: &str,
        key: &TsigKey,
        records: &[(&str, Ipv4Addr)],
        ttl: u32,
    ) -> Result<Self, DnsError> {
        let state = Arc::new(State::new(zone, key, records, ttl)?);
        let (udp, tcp) = bind(listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Listen {
            addr: listen,
            source,
        })?;
        let tasks = vec![
            tokio::spawn(serve_udp(udp, state.clone())),
            tokio::spawn(serve_tcp(tcp, state.clone())),
        ];
        tracing::info!(addr = %local_addr, zone = %state.zone, "built-in DNS server listening");
        Ok(Self {
            local_addr,
            state,
            tasks,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The zone it serves (absolute, lowercase).
    pub fn zone(&self) -> String {
        self.state.zone.to_ascii()
    }

    /// The addresses it holds for `name` now (named as for
    /// [`DnsServer::start`]); empty for unknown or out-of-zone names.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let Ok(owner) = owner_in(&self.state.zone, name) else {
            return Vec::new();
        };
        lock(&self.state.data)
            .names
            .get(&owner)
            .map(|entries| entries.iter().map(|e| e.ip).collect())
            .unwrap_or_default()
    }

    /// Stop serving and wait until the sockets are closed.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Answer `packets` in turn, without sockets, as a server started with
/// [`DnsServer::start_with_key`]`(_, zone, key, records, ttl)` would: one
/// entry per packet, the encoded answer or `None` where the server stays
/// silent. Updates made by a packet are seen by the ones after it. With
/// `udp`, answers keep to UDP's size limits (else TCP's, before framing).
///
/// For fuzzing and tests: unlike the server, which logs a panic while
/// handling a packet and carries on, this lets it through.
pub fn answer_packets(
    zone: &str,
    key: &TsigKey,
    records: &[(&str, Ipv4Addr)],
    ttl: u32,
    packets: &[&[u8]],
    udp: bool,
) -> Result<Vec<Option<Vec<u8>>>, DnsError> {
    let state = State::new(zone, key, records, ttl)?;
    let peer = SocketAddr::from(([192, 0, 2, 53], 53));
    Ok(packets
        .iter()
        .map(|packet| state.handle(packet, peer, udp))
        .collect())
}

async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let err = |source| DnsError::Listen {
        addr: listen,
        source,
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let udp = UdpSocket::bind(listen).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The UDP port picked for port 0 is taken over TCP: pick another.
            Err(e)
                if listen.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tries < 20 => {}
            Err(e) => return Err(err(e)),
        }
    }
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "built-in DNS server: UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(answer) = state.handle_guarded(&buf[..n], peer, true) else {
            continue;
        };
        if let Err(e) = socket.send_to(&answer, peer).await {
            tracing::debug!(%peer, error = %e, "built-in DNS server: UDP send failed");
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    // Dropping the set (when this task is aborted) ends every connection.
    let mut connections = JoinSet::new();
    let mut per_address: HashMap<IpAddr, usize> = HashMap::new();
    loop {
        while let Some(done) = connections.try_join_next() {
            if let Ok(ip) = done {
                release(&mut per_address, ip);
            }
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                let from_peer = per_address.get(&peer.ip()).copied().unwrap_or(0);
                if connections.len() >= MAX_TCP_CONNECTIONS || from_peer >= MAX_TCP_PER_ADDRESS {
                    tracing::warn!(%peer, "built-in DNS server: too many TCP connections, closing");
                    continue;
                }
                *per_address.entry(peer.ip()).or_insert(0) += 1;
                let state = state.clone();
                connections.spawn(async move {
                    serve_connection(stream, peer, state).await;
                    peer.ip()
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "built-in DNS server: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn release(per_address: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_address.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_address.remove(&ip);
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let mut wait = TCP_MESSAGE;
    loop {
        let len = match tokio::time::timeout(wait, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            _ => return,
        };
        wait = TCP_IDLE;
        let mut packet = vec![0u8; len];
        match tokio::time::timeout(TCP_MESSAGE, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(answer) = state.handle_guarded(&packet, peer, false) else {
            continue;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            tracing::warn!(%peer, "built-in DNS server: answer too long for TCP");
            continue;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
