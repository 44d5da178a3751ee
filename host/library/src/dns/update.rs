//! A DNS client for one server: RFC 2136 updates signed with TSIG, and plain
//! queries. UDP first (each attempt bounded by a timeout), TCP when the
//! answer is truncated.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::{DNSSECRData, TSIG};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{DnsError, TsigKey};

/// How long one attempt may take, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP attempts before giving up, by default.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// The address record types the client reads and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// IPv4 (`A`).
    A,
    /// IPv6 (`AAAA`).
    Aaaa,
}

impl AddressType {
    /// The DNS record type.
    pub fn record_type(self) -> RecordType {
        match self {
            Self::A => RecordType::A,
            Self::Aaaa => RecordType::AAAA,
        }
    }

    /// Whether `ip` belongs in a record of this type.
    pub fn fits(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Self::A, IpAddr::V4(_)) | (Self::Aaaa, IpAddr::V6(_))
        )
    }
}

impl std::fmt::Display for AddressType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
        })
    }
}

/// Parse `name` as an absolute DNS name (a trailing dot is optional).
pub fn parse_name(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(DnsError::InvalidArgument(format!(
            "`{name}` is not a DNS name"
        )));
    }
    let mut parsed = Name::from_ascii(trimmed)
        .map_err(|e| DnsError::InvalidArgument(format!("`{name}` is not a valid DNS name: {e}")))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// An unsigned RFC 2136 update for `zone`: delete the `rtype` RRset at
/// `name`, then add one record per address with `ttl` (no addresses: delete
/// only). `name` must be in `zone` and every address of the record's family.
pub fn replace_message(
    zone: &str,
    name: &str,
    rtype: AddressType,
    addresses: &[IpAddr],
    ttl: u32,
) -> Result<Message, DnsError> {
    let zone_name = parse_name(zone)?;
    let owner = parse_name(name)?;
    if !zone_name.zone_of(&owner) {
        return Err(DnsError::InvalidArgument(format!(
            "{owner} is not in zone {zone_name}"
        )));
    }
    if let Some(bad) = addresses.iter().find(|ip| !rtype.fits(ip)) {
        return Err(DnsError::InvalidArgument(format!(
            "{bad} cannot go in an {rtype} record (name {owner})"
        )));
    }
    if ttl > i32::MAX as u32 {
        return Err(DnsError::InvalidArgument(format!(
            "TTL {ttl} for {owner} is out of range (at most {})",
            i32::MAX
        )));
    }
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    let mut zone_query = Query::new();
    zone_query
        .set_name(zone_name)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    message.add_query(zone_query);
    // RFC 2136 2.5.2: delete an RRset (class ANY, TTL 0, no RDATA).
    let mut delete = Record::update0(owner.clone(), 0, rtype.record_type());
    delete.set_dns_class(DNSClass::ANY);
    message.add_name_server(delete);
    // 2.5.1: add to an RRset.
    for ip in addresses {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        message.add_name_server(Record::from_rdata(owner.clone(), ttl, data));
    }
    Ok(message)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The error field of a TSIG record (BADSIG, BADKEY, BADTIME...), which
/// hickory does not expose: read back from the record's wire form.
pub fn tsig_error(tsig: &TSIG) -> Option<u16> {
    let mut buf = Vec::new();
    tsig.emit(&mut BinEncoder::new(&mut buf)).ok()?;
    let mut i = 0usize;
    loop {
        let len = *buf.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            // A compression pointer ends the name (not expected in a fresh encoder).
            i += 1;
            break;
        }
        i += len;
    }
    i += 6 + 2; // time signed, fudge
    let mac_len = u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]) as usize;
    i += 2 + mac_len + 2; // MAC, original id
    Some(u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]))
}

/// The name of a TSIG error code.
pub(crate) fn tsig_error_name(code: u16) -> String {
    match code {
        16 => "BADSIG (the key's secret does not match)".into(),
        17 => "BADKEY (the server does not know this key name/algorithm)".into(),
        18 => "BADTIME (clocks differ by more than the fudge)".into(),
        22 => "BADTRUNC".into(),
        other => format!("TSIG error {other}"),
    }
}

fn rcode_text(response: &Message) -> String {
    let rcode = response.response_code();
    let mut text = rcode_name(rcode);
    let tsig_err = response.signature().iter().find_map(|r| match r.data() {
        RData::DNSSEC(DNSSECRData::TSIG(t)) => tsig_error(t).filter(|e| *e != 0),
        _ => None,
    });
    if let Some(code) = tsig_err {
        text.push_str(&format!(", TSIG {}", tsig_error_name(code)));
    }
    text
}

fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("{other:?} ({})", u16::from(other)),
    }
}

/// The error for a response whose code is not NOERROR.
fn rcode_error(server: SocketAddr, subject: &str, response: &Message) -> DnsError {
    let rcode = rcode_text(response);
    match response.response_code() {
        ResponseCode::Refused
        | ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => DnsError::Refused {
            server,
            subject: subject.to_string(),
            rcode,
        },
        _ => DnsError::Rcode {
            server,
            subject: subject.to_string(),
            rcode,
        },
    }
}

/// A client for one DNS server.
#[derive(Debug, Clone, Copy)]
pub struct DnsClient {
    server: SocketAddr,
    timeout: Duration,
    attempts: u32,
}

enum Attempt {
    Answer(Vec<u8>),
    TimedOut,
}

impl DnsClient {
    /// A client for `server` with [`DEFAULT_TIMEOUT`] per attempt and
    /// [`DEFAULT_ATTEMPTS`] UDP attempts.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The same client with another timeout per attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client with another number of UDP attempts (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The server this client asks.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Replace every `rtype` record at `name` with `addresses` (TTL `ttl`)
    /// in one update for `zone`, signed with `key`. Succeeds only on NOERROR
    /// with a response signature that verifies.
    pub async fn replace(
        &self,
        key: &TsigKey,
        zone: &str,
        name: &str,
        rtype: AddressType,
        addresses: &[IpAddr],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let message = replace_message(zone, name, rtype, addresses, ttl)?;
        self.send_update(message, Some(key)).await
    }

    /// Send an update message (e.g. from [`replace_message`]), signed with
    /// `key` when given, and check the answer: NOERROR, and when signed, a
    /// response TSIG that verifies.
    pub async fn send_update(
        &self,
        mut message: Message,
        key: Option<&TsigKey>,
    ) -> Result<(), DnsError> {
        let subject = update_subject(&message);
        let verifier = match key {
            Some(key) => {
                let signer = key.signer()?;
                let now = u32::try_from(unix_now()).unwrap_or(u32::MAX);
                message.finalize(&signer, now).map_err(|e| DnsError::Key {
                    name: key.name.clone(),
                    source: super::key::KeyError::Sign {
                        subject: subject.clone(),
                        source: e,
                    },
                })?
            }
            None => None,
        };
        // Which key signed it: a refusal (BADSIG, BADKEY, a policy that does
        // not grant this key) is about that key.
        let subject = match key {
            Some(key) => format!("{subject} signed with TSIG key `{}`", key.name),
            None => subject,
        };
        let (raw, response) = self.round_trip(&message, &subject).await?;
        if response.response_code() != ResponseCode::NoError {
            return Err(rcode_error(self.server, &subject, &response));
        }
        if let Some(mut verify) = verifier {
            verify(&raw).map_err(|source| DnsError::BadResponseSignature {
                server: self.server,
                subject: subject.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The `rtype` addresses at `name`, asked of the server directly (no
    /// recursion). NXDOMAIN and no-data answers are an empty list.
    pub async fn query(&self, name: &str, rtype: AddressType) -> Result<Vec<IpAddr>, DnsError> {
        let owner = parse_name(name)?;
        let subject = format!("query for {owner} {rtype}");
        let mut message = Message::new();
        message
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        message.add_query(Query::query(owner, rtype.record_type()));
        let (_, response) = self.round_trip(&message, &subject).await?;
        match response.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            _ => return Err(rcode_error(self.server, &subject, &response)),
        }
        Ok(response
            .answers()
            .iter()
            .filter_map(|r| match (rtype, r.data()) {
                (AddressType::A, RData::A(a)) => Some(IpAddr::V4(a.0)),
                (AddressType::Aaaa, RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }

    /// Encode `message`, send it, and return the answer raw and decoded.
    async fn round_trip(
        &self,
        message: &Message,
        subject: &str,
    ) -> Result<(Vec<u8>, Message), DnsError> {
        let request = message.to_vec().map_err(|source| DnsError::Encode {
            subject: subject.to_string(),
            source,
        })?;
        let raw = self.exchange(&request, message.id(), subject).await?;
        let response = Message::from_vec(&raw).map_err(|source| DnsError::Protocol {
            server: self.server,
            subject: subject.to_string(),
            source,
        })?;
        Ok((raw, response))
    }

    /// Send `request` (whose id is `id`) and return the raw answer: UDP with
    /// retries, then TCP if the UDP answer was truncated.
    async fn exchange(&self, request: &[u8], id: u16, subject: &str) -> Result<Vec<u8>, DnsError> {
        let unreachable = |source: std::io::Error| DnsError::Unreachable {
            server: self.server,
            subject: subject.to_string(),
            source,
        };
        for _ in 0..self.attempts {
            match self.udp_once(request, id).await.map_err(unreachable)? {
                Attempt::TimedOut => continue,
                Attempt::Answer(raw) => {
                    let truncated = raw.get(2).is_some_and(|b| b & 0x02 != 0);
                    if !truncated {
                        return Ok(raw);
                    }
                    tracing::debug!(server = %self.server, "{subject}: truncated over UDP, retrying over TCP");
                    return match self.tcp_once(request, id).await.map_err(unreachable)? {
                        Attempt::Answer(raw) => Ok(raw),
                        Attempt::TimedOut => Err(DnsError::Timeout {
                            server: self.server,
                            subject: format!("{subject} (over TCP)"),
                            timeout: self.timeout,
                            attempts: 1,
                        }),
                    };
                }
            }
        }
        Err(DnsError::Timeout {
            server: self.server,
            subject: subject.to_string(),
            timeout: self.timeout,
            attempts: self.attempts,
        })
    }

    async fn udp_once(&self, request: &[u8], id: u16) -> std::io::Result<Attempt> {
        let local: SocketAddr = if self.server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(self.server).await?;
        let exchange = async {
            socket.send(request).await?;
            let mut buf = vec![0u8; 65_535];
            loop {
                let n = socket.recv(&mut buf).await?;
                let answer = &buf[..n];
                // Our id and QR set; anything else is stale or stray.
                if n >= 12 && answer[..2] == id.to_be_bytes() && answer[2] & 0x80 != 0 {
                    return Ok::<_, std::io::Error>(answer.to_vec());
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(raw)) => Ok(Attempt::Answer(raw)),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Attempt::TimedOut),
        }
    }

    async fn tcp_once(&self, request: &[u8], id: u16) -> std::io::Result<Attempt> {
        let len = u16::try_from(request.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long")
        })?;
        let exchange = async {
            let mut stream = TcpStream::connect(self.server).await?;
            let mut framed = Vec::with_capacity(request.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(request);
            stream.write_all(&framed).await?;
            loop {
                let n = stream.read_u16().await? as usize;
                let mut answer = vec![0u8; n];
                stream.read_exact(&mut answer).await?;
                if n >= 12 && answer[..2] == id.to_be_bytes() {
                    return Ok::<_, std::io::Error>(answer);
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(raw)) => Ok(Attempt::Answer(raw)),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Attempt::TimedOut),
        }
    }
}

/// `update of <names> <types> in <zone>` for messages.
fn update_subject(message: &Message) -> String {
    let zone = message
        .queries()
        .first()
        .map(|q| q.name().to_string())
        .unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for r in message.name_servers() {
        let s = format!("{} {}", r.name(), r.record_type());
        if !names.contains(&s) {
            names.push(s);
        }
    }
    format!("update of {} in zone {zone}", names.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replace_message_checks_its_arguments() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let m = replace_message("site.test", "www.site.test", AddressType::A, &[v4], 30).unwrap();
        assert_eq!(m.op_code(), OpCode::Update);
        assert_eq!(m.name_servers().len(), 2);
        assert_eq!(m.name_servers()[0].dns_class(), DNSClass::ANY);
        assert!(matches!(
            replace_message("site.test", "www.other.test", AddressType::A, &[v4], 30),
            Err(DnsError::InvalidArgument(_))
        ));
        assert!(matches!(
            replace_message("site.test", "www.site.test", AddressType::A, &[v6], 30),
            Err(DnsError::InvalidArgument(_))
        ));
        assert!(matches!(
            replace_message("site.test", "bad..name", AddressType::A, &[v4], 30),
            Err(DnsError::InvalidArgument(_))
        ));
    }

    #[test]
    fn tsig_error_reads_the_error_field() {
        use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
        let t = TSIG::new(
            TsigAlgorithm::HmacSha256,
            1,
            300,
            vec![1, 2, 3],
            7,
            16,
            vec![],
        );
        assert_eq!(tsig_error(&t), Some(16));
        let t = TSIG::new(TsigAlgorithm::HmacSha512, 1, 300, vec![], 7, 0, vec![]);
        assert_eq!(tsig_error(&t), Some(0));
    }
}
