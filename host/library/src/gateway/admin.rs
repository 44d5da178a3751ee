//! The operators' device operations: list the connected devices with their
//! server lists, push a new list, ask a device to upload its log again. They
//! travel as requests through the device's own connection; the admin
//! endpoint exposes the first two (`GET /devices`, `POST /devices/servers`).

use std::time::Duration;

use standby_device::codec::Message;
use standby_device::frame::{command, status};
use standby_device::messages::{self, ServerList, WireEndpoint};

use super::{DeviceInfo, Gateway};

/// One connected device as `standby devices list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DeviceReport {
    /// What the gateway knows of the link.
    #[serde(flatten)]
    pub device: DeviceInfo,
    /// The server entry the device dialled to reach this node.
    pub dialled: Option<String>,
    /// Its server list, in priority order (`host:port[/tls]`).
    pub servers: Vec<String>,
    /// Events it reported that this node has not yet confirmed durable (it
    /// keeps them until then).
    pub events_held: u64,
    /// Why its server list could not be read.
    pub error: Option<String>,
}

/// What one device answered to a new server list.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SetServersResult {
    /// The device.
    pub device_id: u32,
    /// The list it says it stored (`host:port[/tls]`), empty on error.
    pub stored: Vec<String>,
    /// Why not.
    pub error: Option<String>,
}

/// `host:port[/tls]`, the syntax of `--endpoints`.
fn endpoint_text(e: &WireEndpoint) -> String {
    let host = if e.host.contains(':') {
        format!("[{}]", e.host)
    } else {
        e.host.clone()
    };
    format!("{host}:{}{}", e.port, if e.tls { "/tls" } else { "" })
}

/// An admin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AdminError {
    /// The device is not connected here.
    #[error("device {0} is not connected")]
    NotConnected(u32),
    /// The device did not answer in time.
    #[error("device {0} did not answer within {1:?}")]
    Timeout(u32, Duration),
    /// The link closed before the answer.
    #[error("device {0} disconnected before answering")]
    Disconnected(u32),
    /// The device refused (non-zero status).
    #[error("device {device} refused: {reason}")]
    Refused {
        /// The device.
        device: u32,
        /// Its reason.
        reason: String,
    },
    /// The answer could not be decoded.
    #[error(transparent)]
    Payload(#[from] messages::PayloadError),
}

impl Gateway {
    /// One connected device.
    pub(crate) fn device(&self, device_id: u32) -> Option<DeviceInfo> {
        self.shared.registry.get(device_id)
    }

    async fn ask(&self, device_id: u32, request: Message) -> Result<Message, AdminError> {
        let reply = self
            .shared
            .registry
            .request(device_id, request, self.shared.config.admin_timeout)
            .await?;
        if reply.code != status::OK {
            let reason = messages::decode::<messages::Refusal>("refusal", &reply.payload)
                .map(|r| r.reason)
                .unwrap_or_else(|_| format!("status {}", reply.code));
            return Err(AdminError::Refused {
                device: device_id,
                reason,
            });
        }
        Ok(reply)
    }

    /// A device's server list and the index of the endpoint it is connected through.
    pub(crate) async fn server_list(&self, device_id: u32) -> Result<ServerList, AdminError> {
        let reply = self
            .ask(
                device_id,
                Message::request(device_id, command::GET_SERVER_LIST, 0, Vec::new()),
            )
            .await?;
        Ok(messages::decode("server list", &reply.payload)?)
    }

    /// Replace a device's server list (the device accepts it only from an
    /// active server at its current epoch); what the device says it stored.
    pub(crate) async fn push_server_list(
        &self,
        device_id: u32,
        endpoints: Vec<WireEndpoint>,
    ) -> Result<ServerList, AdminError> {
        let list = ServerList {
            endpoints,
            current: None,
        };
        let reply = self
            .ask(
                device_id,
                Message::request(
                    device_id,
                    command::SET_SERVER_LIST,
                    0,
                    messages::encode(&list),
                ),
            )
            .await?;
        Ok(messages::decode("stored server list", &reply.payload)?)
    }

    /// Every connected device with its server list (asked of each device at
    /// once) and the events it still holds.
    pub(crate) async fn device_reports(self: &std::sync::Arc<Self>) -> Vec<DeviceReport> {
        let mut asks = tokio::task::JoinSet::new();
        for info in self.shared.registry.list() {
            let gateway = self.clone();
            asks.spawn(async move {
                let list = gateway.server_list(info.device_id).await;
                gateway.report(info, list)
            });
        }
        let mut reports = asks.join_all().await;
        reports.sort_by_key(|r| r.device.device_id);
        reports
    }

    fn report(&self, device: DeviceInfo, list: Result<ServerList, AdminError>) -> DeviceReport {
        let durable =
            self.shared
                .durability
                .durable(device.device_id, device.incarnation, device.watermark);
        let (servers, dialled, error) = match list {
            Ok(l) => {
                let dialled = l
                    .current
                    .and_then(|i| l.endpoints.get(usize::from(i)))
                    .map(endpoint_text);
                (
                    l.endpoints.iter().map(endpoint_text).collect(),
                    dialled,
                    None,
                )
            }
            Err(e) => (Vec::new(), None, Some(e.to_string())),
        };
        DeviceReport {
            events_held: device.last_seq.saturating_sub(durable),
            device,
            dialled,
            servers,
            error,
        }
    }

    /// Push `endpoints` to each of `devices` (every connected device when
    /// None); one result per device.
    pub(crate) async fn set_servers(
        self: &std::sync::Arc<Self>,
        devices: Option<Vec<u32>>,
        endpoints: Vec<WireEndpoint>,
    ) -> Vec<SetServersResult> {
        let ids = devices.unwrap_or_else(|| {
            self.shared
                .registry
                .list()
                .iter()
                .map(|d| d.device_id)
                .collect()
        });
        let mut pushes = tokio::task::JoinSet::new();
        for device_id in ids {
            let (gateway, endpoints) = (self.clone(), endpoints.clone());
            pushes.spawn(async move {
                match gateway.push_server_list(device_id, endpoints).await {
                    Ok(stored) => SetServersResult {
                        device_id,
                        stored: stored.endpoints.iter().map(endpoint_text).collect(),
                        error: None,
                    },
                    Err(e) => SetServersResult {
                        device_id,
                        stored: Vec::new(),
                        error: Some(e.to_string()),
                    },
                }
            });
        }
        let mut results = pushes.join_all().await;
        results.sort_by_key(|r| r.device_id);
        results
    }

    /// Ask a device to upload again every event after `after` (GET_LOG; `count` 0 = all).
    pub(crate) async fn request_log(
        &self,
        device_id: u32,
        after: u32,
        count: u32,
    ) -> Result<(), AdminError> {
        self.ask(
            device_id,
            Message::request(device_id, command::GET_LOG, 0, Vec::new()).with_params(after, count),
        )
        .await?;
        Ok(())
    }
}
