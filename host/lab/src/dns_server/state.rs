//! What the built-in DNS server holds (its zone's records, its key) and how
//! it answers one packet: queries, RFC 2136 updates, TSIG checks and
//! signatures.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::tsig::{
    make_tsig_record, signed_bitmessage_to_buf, TsigAlgorithm, TSIG,
};
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use standby_host::dns::key::{tsig_algorithm, TSIG_FUDGE};
use standby_host::dns::update::parse_name;
use standby_host::dns::{DnsError, TsigKey};

use super::TSIG_ROOM;

/// TSIG error codes (RFC 8945).
const BADSIG: u16 = 16;
const BADKEY: u16 = 17;
pub(super) const BADTIME: u16 = 18;

/// Why a request's MAC does not verify.
#[derive(Debug, thiserror::Error)]
enum MacError {
    /// The signed message could not be taken apart.
    #[error("{0}")]
    Malformed(#[source] hickory_proto::ProtoError),
    /// Its algorithm is not one this server knows.
    #[error("{0}")]
    Algorithm(#[source] hickory_proto::dnssec::DnsSecError),
    /// Its last record is not a TSIG.
    #[error("the last record is not a TSIG")]
    NotTsig,
    /// Its MAC is shorter than the algorithm's.
    #[error("truncated MAC")]
    Truncated,
    /// The MAC is wrong.
    #[error("{0}")]
    Wrong(#[source] hickory_proto::dnssec::DnsSecError),
}

/// One address record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) ip: IpAddr,
    pub(super) ttl: u32,
}

#[derive(Debug)]
pub(super) struct Data {
    pub(super) serial: u32,
    /// Owner name (lowercase, absolute) to its A and AAAA records.
    pub(super) names: HashMap<Name, Vec<Entry>>,
}

pub(super) struct State {
    pub(super) zone: Name,
    pub(super) soa_mname: Name,
    pub(super) soa_rname: Name,
    pub(super) key_name: Name,
    pub(super) algorithm: TsigAlgorithm,
    pub(super) signer: TSigner,
    pub(super) ttl: u32,
    pub(super) data: Mutex<Data>,
    /// The MACs of signed requests accepted, until their time window ends:
    /// the same request sent again inside the window is a replay.
    pub(super) seen: Mutex<HashMap<Vec<u8>, u64>>,
}

/// Why a correctly signed request is refused all the same.
#[derive(Debug, thiserror::Error)]
enum NotFirst {
    /// The same signed message was accepted already inside its window.
    #[error(
        "replayed request: the same signed message was accepted already inside its time window"
    )]
    Replayed,
    /// The remembered requests are at their bound.
    #[error("too many signed requests inside their time window")]
    TooMany,
}

/// Signed requests remembered at most (only a key holder can add one; past
/// this, signed requests are refused until older ones leave their window).
const MAX_SEEN: usize = 100_000;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// One change an update makes, checked before any is applied.
enum Change {
    Add(Name, Entry),
    DeleteRrset(Name, RecordType),
    DeleteOne(Name, IpAddr),
}

/// What a request's TSIG says.
enum Auth {
    Unsigned,
    /// Verified; the request's MAC (the response's signature covers it).
    Signed(Vec<u8>),
    /// Rejected; the encoded NOTAUTH answer.
    Rejected(Vec<u8>),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn lock(data: &Mutex<Data>) -> std::sync::MutexGuard<'_, Data> {
    data.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn family_of(rtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (rtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)) | (RecordType::ANY, _)
    )
}

/// The MAC of a request whose last record is a TSIG that verifies with
/// `signer` (RFC 8945 5.2 step 2; the caller checks key and time). hickory's
/// `TSigner::verify_message_byte` does this too, but computes `time - fudge`,
/// which overflows (a panic with overflow checks) for a time before the fudge.
fn verify_request_mac(signer: &TSigner, packet: &[u8]) -> Result<Vec<u8>, MacError> {
    let (tbv, record) =
        signed_bitmessage_to_buf(None, packet, true).map_err(MacError::Malformed)?;
    let RData::DNSSEC(DNSSECRData::TSIG(tsig)) = record.data() else {
        return Err(MacError::NotTsig);
    };
    // As hickory: no truncated MACs.
    let full = tsig.algorithm().output_len().map_err(MacError::Algorithm)?;
    if tsig.mac().len() < full {
        return Err(MacError::Truncated);
    }
    signer.verify(&tbv, tsig.mac()).map_err(MacError::Wrong)?;
    Ok(tsig.mac().to_vec())
}

/// A bare FORMERR header for a request that could not be parsed.
fn formerr(packet: &[u8]) -> Vec<u8> {
    let opcode = (packet[2] >> 3) & 0x0F;
    vec![
        packet[0],
        packet[1],
        0x80 | (opcode << 3),
        ResponseCode::FormErr.low(),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// An empty response to `request` with `rcode`, echoing its question.
fn error_response(request: &Message, rcode: ResponseCode) -> Message {
    let mut response = Message::error_msg(request.id(), request.op_code(), rcode);
    response.set_recursion_desired(request.recursion_desired());
    response.add_queries(request.queries().iter().cloned());
    response
}

/// Append a TSIG record to an encoded message and count it.
fn append_tsig(body: &mut Vec<u8>, record: &Record) -> Option<()> {
    let mut rec = Vec::new();
    record.emit(&mut BinEncoder::new(&mut rec)).ok()?;
    let count = u16::from_be_bytes([*body.get(10)?, *body.get(11)?]).checked_add(1)?;
    body[10..12].copy_from_slice(&count.to_be_bytes());
    body.extend_from_slice(&rec);
    Some(())
}

impl State {
    /// The state of a server for `zone` (see [`DnsServer::start_with_key`]).
    pub(super) fn new(
        zone: &str,
        key: &TsigKey,
        records: &[(&str, Ipv4Addr)],
        ttl: u32,
    ) -> Result<Self, DnsError> {
        let zone = parse_name(zone)?.to_lowercase();
        let mut names: HashMap<Name, Vec<Entry>> = HashMap::new();
        for (name, ip) in records {
            let owner = owner_in(&zone, name)?;
            let entries = names.entry(owner).or_default();
            let entry = Entry {
                ip: IpAddr::V4(*ip),
                ttl,
            };
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        let in_zone = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&zone))
                .map_err(|e| DnsError::InvalidArgument(format!("zone {zone}: {e}")))
        };
        let signer = key.signer()?;
        let algorithm = tsig_algorithm(&key.algorithm).map_err(|source| DnsError::Key {
            name: key.name.clone(),
            source,
        })?;
        Ok(State {
            soa_mname: in_zone("ns")?,
            soa_rname: in_zone("hostmaster")?,
            key_name: signer.signer_name().to_lowercase(),
            algorithm,
            signer,
            ttl,
            data: Mutex::new(Data { serial: 1, names }),
            seen: Mutex::new(HashMap::new()),
            zone,
        })
    }

    /// [`State::handle`], with a panic (a bug) logged instead of ending the
    /// serving task.
    pub(super) fn handle_guarded(
        &self,
        packet: &[u8],
        peer: SocketAddr,
        udp: bool,
    ) -> Option<Vec<u8>> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.handle(packet, peer, udp)))
            .unwrap_or_else(|_| {
                tracing::error!(%peer, "built-in DNS server: handling a packet panicked; ignored");
                None
            })
    }

    /// The encoded answer to one packet, or None to stay silent.
    pub(super) fn handle(&self, packet: &[u8], peer: SocketAddr, udp: bool) -> Option<Vec<u8>> {
        if packet.len() < 12 {
            tracing::warn!(%peer, len = packet.len(), "built-in DNS server: ignoring a packet shorter than a DNS header");
            return None;
        }
        if packet[2] & 0x80 != 0 {
            tracing::warn!(%peer, "built-in DNS server: ignoring a response sent to it");
            return None;
        }
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "built-in DNS server: malformed message, answering FORMERR");
                return Some(formerr(packet));
            }
        };
        let request_mac = match self.authenticate(&request, packet, peer) {
            Auth::Rejected(answer) => return (!answer.is_empty()).then_some(answer),
            Auth::Unsigned => None,
            Auth::Signed(mac) => Some(mac),
        };
        let mut response = match request.op_code() {
            OpCode::Query => self.answer(&request),
            OpCode::Update => self.update(&request, request_mac.is_some(), peer),
            _ => error_response(&request, ResponseCode::NotImp),
        };
        if request.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232).set_version(0);
            response.set_edns(edns);
        }
        let mut limit = usize::MAX;
        if udp {
            limit = request
                .extensions()
                .as_ref()
                .map(|e| usize::from(e.max_payload()).clamp(512, 4096))
                .unwrap_or(512);
            if request_mac.is_some() {
                limit = limit.saturating_sub(TSIG_ROOM);
            }
        }
        let mut body = match response.to_vec() {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "built-in DNS server: cannot encode an answer");
                Message::error_msg(request.id(), request.op_code(), ResponseCode::ServFail)
                    .to_vec()
                    .ok()?
            }
        };
        if body.len() > limit {
            let mut short = error_response(&request, response.response_code());
            short
                .set_authoritative(response.authoritative())
                .set_truncated(true);
            body = short.to_vec().ok()?;
        }
        match request_mac {
            Some(mac) => self.sign(body, &mac, 0, Vec::new()),
            None => Some(body),
        }
    }

    /// Append a TSIG signed with our key over the request MAC and `body`.
    fn sign(
        &self,
        mut body: Vec<u8>,
        request_mac: &[u8],
        error: u16,
        other: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let id = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
        let pre = TSIG::new(
            self.algorithm.clone(),
            unix_now(),
            TSIG_FUDGE,
            Vec::new(),
            id,
            error,
            other,
        );
        // RFC 8945 4.3.1: request MAC, the response as sent (without TSIG), TSIG variables.
        let mut tbs = Vec::with_capacity(body.len() + request_mac.len() + 64);
        tbs.extend_from_slice(&u16::try_from(request_mac.len()).ok()?.to_be_bytes());
        tbs.extend_from_slice(request_mac);
        tbs.extend_from_slice(&body);
        let mut vars = Vec::new();
        pre.emit_tsig_for_mac(&mut BinEncoder::new(&mut vars), &self.key_name)
            .ok()?;
        tbs.extend_from_slice(&vars);
        let mac = match self.signer.sign(&tbs) {
            Ok(mac) => mac,
            Err(e) => {
                tracing::warn!(error = %e, "built-in DNS server: cannot sign an answer");
                return None;
            }
        };
        append_tsig(
            &mut body,
            &make_tsig_record(self.key_name.clone(), pre.set_mac(mac)),
        )?;
        Some(body)
    }

    fn authenticate(&self, request: &Message, packet: &[u8], peer: SocketAddr) -> Auth {
        let Some((record, tsig)) = request.signature().iter().find_map(|r| match r.data() {
            RData::DNSSEC(DNSSECRData::TSIG(t)) => Some((r, t)),
            _ => None,
        }) else {
            return Auth::Unsigned;
        };
        // RFC 8945 5.2: NOTAUTH with the TSIG error; unsigned for BADKEY and BADSIG.
        let unsigned_reject = |error: u16| {
            let mut body = error_response(request, ResponseCode::NotAuth)
                .to_vec()
                .ok()?;
            let tsig = TSIG::new(
                tsig.algorithm().clone(),
                unix_now(),
                TSIG_FUDGE,
                Vec::new(),
                request.id(),
                error,
                Vec::new(),
            );
            append_tsig(&mut body, &make_tsig_record(record.name().clone(), tsig))?;
            Some(body)
        };
        let reject = |error: u16, why: &str| {
            tracing::warn!(%peer, key = %record.name(), "built-in DNS server: {why}; answering NOTAUTH");
            unsigned_reject(error).map_or(Auth::Rejected(Vec::new()), Auth::Rejected)
        };
        if record.name() != &self.key_name || tsig.algorithm() != &self.algorithm {
            return reject(BADKEY, "request signed with an unknown key (BADKEY)");
        }
        let now = unix_now();
        let fudge = u64::from(tsig.fudge());
        let window = tsig.time().saturating_sub(fudge)..tsig.time() + fudge;
        match verify_request_mac(&self.signer, packet) {
            Err(e) => reject(
                BADSIG,
                &format!("request MAC does not verify ({e}) (BADSIG)"),
            ),
            Ok(mac) if !window.contains(&now) => {
                tracing::warn!(%peer, signed = tsig.time(), now, "built-in DNS server: request signed outside the time window (BADTIME); answering NOTAUTH");
                let body = error_response(request, ResponseCode::NotAuth).to_vec().ok();
                let other = now.to_be_bytes()[2..].to_vec();
                body.and_then(|b| self.sign(b, &mac, BADTIME, other))
                    .map_or(Auth::Rejected(Vec::new()), Auth::Rejected)
            }
            Ok(mac) => match self.first_time(&mac, tsig.time() + fudge, now) {
                Ok(()) => Auth::Signed(mac),
                Err(refused) => reject(BADSIG, &refused.to_string()),
            },
        }
    }

    /// Remember an accepted request's MAC until `until` (unix seconds);
    /// refuse one already seen (a replay) or one over the bound.
    fn first_time(&self, mac: &[u8], until: u64, now: u64) -> Result<(), NotFirst> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, until| *until >= now);
        if seen.contains_key(mac) {
            return Err(NotFirst::Replayed);
        }
        if seen.len() >= MAX_SEEN {
            return Err(NotFirst::TooMany);
        }
        seen.insert(mac.to_vec(), until);
        Ok(())
    }

    fn soa(&self, serial: u32) -> Record {
        let soa = SOA::new(
            self.soa_mname.clone(),
            self.soa_rname.clone(),
            serial,
            60,
            60,
            3600,
            self.ttl,
        );
        Record::from_rdata(self.zone.clone(), self.ttl, RData::SOA(soa))
    }

    fn answer(&self, request: &Message) -> Message {
        let [query] = request.queries() else {
            return error_response(request, ResponseCode::FormErr);
        };
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return error_response(request, ResponseCode::Refused);
        }
        let qname = query.name().to_lowercase();
        if !self.zone.zone_of(&qname) {
            return error_response(request, ResponseCode::Refused);
        }
        let mut response = error_response(request, ResponseCode::NoError);
        response.set_authoritative(true);
        let data = lock(&self.data);
        let qtype = query.query_type();
        if let Some(entries) = data.names.get(&qname) {
            for e in entries.iter().filter(|e| family_of(qtype, &e.ip)) {
                response.add_answer(Record::from_rdata(query.name().clone(), e.ttl, rdata(e.ip)));
            }
        }
        if qname == self.zone && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            response.add_answer(self.soa(data.serial));
        }
        if response.answers().is_empty() {
            let exists = qname == self.zone
                || data
                    .names
                    .iter()
                    .any(|(n, entries)| !entries.is_empty() && qname.zone_of(n));
            if !exists {
                response.set_response_code(ResponseCode::NXDomain);
            }
            response.add_name_server(self.soa(data.serial));
        }
        response
    }

    fn update(&self, request: &Message, signed: bool, peer: SocketAddr) -> Message {
        let [zone] = request.queries() else {
            return error_response(request, ResponseCode::FormErr);
        };
        if zone.query_type() != RecordType::SOA {
            return error_response(request, ResponseCode::FormErr);
        }
        if zone.name() != &self.zone || zone.query_class() != DNSClass::IN {
            tracing::warn!(%peer, zone = %zone.name(), "built-in DNS server: update for a zone it does not serve");
            return error_response(request, ResponseCode::NotAuth);
        }
        if !signed {
            tracing::warn!(%peer, "built-in DNS server: unsigned update refused");
            return error_response(request, ResponseCode::Refused);
        }
        if !request.answers().is_empty() {
            tracing::warn!(%peer, "built-in DNS server: update prerequisites are not supported");
            return error_response(request, ResponseCode::NotImp);
        }
        // RFC 2136 3.4.1: check every change before applying any.
        let mut changes = Vec::new();
        for rr in request.name_servers() {
            let owner = rr.name().to_lowercase();
            if !self.zone.zone_of(&owner) {
                return error_response(request, ResponseCode::NotZone);
            }
            let change = match (rr.dns_class(), rr.data()) {
                (DNSClass::IN, RData::A(a)) => Change::Add(
                    owner,
                    Entry {
                        ip: IpAddr::V4(a.0),
                        ttl: rr.ttl(),
                    },
                ),
                (DNSClass::IN, RData::AAAA(a)) => Change::Add(
                    owner,
                    Entry {
                        ip: IpAddr::V6(a.0),
                        ttl: rr.ttl(),
                    },
                ),
                (DNSClass::IN, _) => {
                    tracing::warn!(%peer, rtype = %rr.record_type(), "built-in DNS server: only A and AAAA records can be added");
                    return error_response(request, ResponseCode::NotImp);
                }
                (DNSClass::ANY, RData::Update0(rtype)) if rr.ttl() == 0 => {
                    Change::DeleteRrset(owner, *rtype)
                }
                (DNSClass::NONE, RData::A(a)) if rr.ttl() == 0 => {
                    Change::DeleteOne(owner, IpAddr::V4(a.0))
                }
                (DNSClass::NONE, RData::AAAA(a)) if rr.ttl() == 0 => {
                    Change::DeleteOne(owner, IpAddr::V6(a.0))
                }
                // Deleting records of types it does not hold changes nothing.
                (DNSClass::NONE, _) if rr.ttl() == 0 => continue,
                _ => return error_response(request, ResponseCode::FormErr),
            };
            if let Change::Add(_, e) = &change {
                if e.ttl > i32::MAX as u32 {
                    return error_response(request, ResponseCode::FormErr);
                }
            }
            changes.push(change);
        }
        let mut data = lock(&self.data);
        let before: Vec<(Name, Vec<Entry>)> = changes
            .iter()
            .map(|c| match c {
                Change::Add(n, _) | Change::DeleteRrset(n, _) | Change::DeleteOne(n, _) => n,
            })
            .map(|n| (n.clone(), data.names.get(n).cloned().unwrap_or_default()))
            .collect();
        for change in changes {
            match change {
                Change::Add(owner, entry) => {
                    let entries = data.names.entry(owner).or_default();
                    let same_family = |e: &Entry| e.ip.is_ipv4() == entry.ip.is_ipv4();
                    // The RRset shares one TTL; an existing record only takes it.
                    for e in entries.iter_mut().filter(|e| same_family(e)) {
                        e.ttl = entry.ttl;
                    }
                    if !entries.iter().any(|e| e.ip == entry.ip) {
                        entries.push(entry);
                    }
                }
                Change::DeleteRrset(owner, rtype) => {
                    if let Some(entries) = data.names.get_mut(&owner) {
                        entries.retain(|e| !family_of(rtype, &e.ip));
                    }
                }
                Change::DeleteOne(owner, ip) => {
                    if let Some(entries) = data.names.get_mut(&owner) {
                        entries.retain(|e| e.ip != ip);
                    }
                }
            }
        }
        data.names.retain(|_, entries| !entries.is_empty());
        let changed = before.iter().any(|(n, old)| {
            data.names.get(n).map(Vec::as_slice).unwrap_or_default() != old.as_slice()
        });
        if changed {
            data.serial = data.serial.wrapping_add(1);
            for (name, _) in &before {
                let now: Vec<String> = data
                    .names
                    .get(name)
                    .map(|es| es.iter().map(|e| e.ip.to_string()).collect())
                    .unwrap_or_default();
                tracing::info!(%peer, %name, addresses = ?now, serial = data.serial, "built-in DNS server: update applied");
            }
        }
        error_response(request, ResponseCode::NoError)
    }
}

/// `name` made absolute within `zone` (see [`DnsServer::start`]).
pub(super) fn owner_in(zone: &Name, name: &str) -> Result<Name, DnsError> {
    let trimmed = name.trim();
    let owner = if trimmed == "@" {
        zone.clone()
    } else {
        let parsed = parse_name(trimmed)?;
        if trimmed.ends_with('.') || zone.zone_of(&parsed) {
            parsed
        } else {
            Name::from_ascii(trimmed.trim_end_matches('.'))
                .and_then(|n| n.append_domain(zone))
                .map_err(|e| DnsError::InvalidArgument(format!("`{name}` in zone {zone}: {e}")))?
        }
    };
    if !zone.zone_of(&owner) {
        return Err(DnsError::InvalidArgument(format!(
            "{owner} is not in zone {zone}"
        )));
    }
    Ok(owner.to_lowercase())
}
