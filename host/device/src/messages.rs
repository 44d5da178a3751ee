//! Structured payloads of the device link, encoded as MessagePack maps
//! (field names included, so fields can be added compatibly).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A payload that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad {what} payload: {source}")]
pub struct PayloadError {
    /// Which message.
    pub what: &'static str,
    /// What the decoder found.
    #[source]
    pub source: rmp_serde::decode::Error,
}

/// Encode a payload.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs to a Vec cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decode a payload; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, PayloadError> {
    rmp_serde::from_slice(bytes).map_err(|source| PayloadError { what, source })
}

/// A server's role as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    /// Receives replicated data; does not serve devices.
    Standby,
    /// Trying to become active.
    Candidate,
    /// Serves devices.
    Active,
    /// Has seen a higher epoch; serves nothing.
    Fenced,
}

/// HANDSHAKE request: the device introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Device model.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// The device's current log incarnation.
    pub incarnation: u64,
    /// Highest sequence the device has logged in this incarnation.
    pub last_seq: u64,
    /// Index in the device's server list of the endpoint it dialled.
    pub endpoint: u8,
    /// Highest server epoch the device has seen.
    pub max_epoch: u64,
    /// The device's DR-durable watermark: events up to it were confirmed safe
    /// by an earlier server and are no longer kept, so they will not be sent.
    pub durable: u64,
    /// The key the device will prove it holds (absent: the device has no
    /// credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HelloAuth>,
}

/// The authentication a device offers in its HANDSHAKE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAuth {
    /// The generation of the device's key.
    pub generation: u32,
    /// The device's fresh nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// The payload of a HANDSHAKE response with status CHALLENGE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The server's fresh nonce.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The server's proof that it knows the device's key.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// AUTHENTICATE request: the device's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticate {
    /// The device's proof that it knows its key.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
}

/// HANDSHAKE response: who the server is and what it holds for the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's node id.
    pub node_id: String,
    /// The server's role.
    pub role: ServerRole,
    /// The server's epoch (fencing token).
    pub epoch: u64,
    /// Highest sequence up to which the server holds every event of the
    /// device's current incarnation; the device re-sends everything after it.
    pub watermark: u64,
    /// Highest sequence known safe at the other site.
    pub durable: u64,
    /// Keep-alive interval the server expects, in milliseconds.
    pub keepalive_ms: u32,
    /// After this long without a frame the server drops the link, in milliseconds.
    pub dead_link_ms: u32,
}

/// One access event, as the device logs it and as it travels in a
/// NOTIFY_EVENT batch (the same bytes on disk and on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence within the incarnation.
    pub seq: u64,
    /// Event code.
    pub code: u16,
    /// User, if any.
    pub user_id: Option<String>,
    /// Device time, Unix milliseconds.
    pub occurred_at_ms: u64,
    /// The event as the device logged it (hashed for independent checks).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// NOTIFY_EVENT request: a batch of events of one incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    /// The incarnation the sequences belong to.
    pub incarnation: u64,
    /// The events, in sequence order.
    pub events: Vec<Event>,
}

/// NOTIFY_EVENT response, sent only after the batch is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// The incarnation.
    pub incarnation: u64,
    /// Contiguous watermark after the commit.
    pub watermark: u64,
    /// DR-durable watermark: the device may forget events up to here.
    pub durable: u64,
    /// Newly stored events of the batch.
    pub inserted: u32,
    /// Events of the batch the server already had.
    pub duplicates: u32,
}

/// One server address in a device's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireEndpoint {
    /// IP address or domain name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
    /// Lower is tried first.
    pub priority: u8,
}

/// GET_SERVER_LIST response and SET_SERVER_LIST request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerList {
    /// The endpoints in priority order.
    pub endpoints: Vec<WireEndpoint>,
    /// Index of the endpoint the device is connected through (responses only).
    pub current: Option<u8>,
}

/// SERVER_VERIFY request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    /// The user claimed.
    pub user_id: String,
    /// The credential presented (card number).
    pub credential: String,
}

/// SERVER_IDENTIFY request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identify {
    /// The credential presented (card number).
    pub credential: String,
}

/// SERVER_VERIFY / SERVER_IDENTIFY response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchResult {
    /// Whether the credential matched an enabled user.
    pub matched: bool,
    /// The user.
    pub user_id: Option<String>,
    /// The user's name.
    pub name: Option<String>,
}

/// Direction of a pass through an anti-passback zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Entering the zone.
    In,
    /// Leaving the zone.
    Out,
}

/// CHECK_APB_VIOLATION request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApbCheck {
    /// The user passing.
    pub user_id: String,
    /// The anti-passback zone.
    pub zone: String,
    /// Entering or leaving.
    pub direction: Direction,
}

/// CHECK_APB_VIOLATION response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApbResult {
    /// True when the pass violates anti-passback (entering twice, leaving twice).
    pub violation: bool,
}

/// A refusal, carried by a response with a non-zero status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why.
    pub reason: String,
}
