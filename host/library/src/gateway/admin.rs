//! The operators' device operations: read a device's server list, push a
//! new one, ask it to upload its log again. They travel as requests through
//! the device's own connection. The admin endpoint does not expose them yet;
//! the gateway's tests use them.

use std::time::Duration;

use standby_device::codec::Message;
use standby_device::frame::{command, status};
use standby_device::messages::{self, ServerList, WireEndpoint};

use super::{DeviceInfo, Gateway};

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
    /// active server at its current epoch).
    pub(crate) async fn push_server_list(
        &self,
        device_id: u32,
        endpoints: Vec<WireEndpoint>,
    ) -> Result<(), AdminError> {
        let list = ServerList {
            endpoints,
            current: None,
        };
        self.ask(
            device_id,
            Message::request(
                device_id,
                command::SET_SERVER_LIST,
                0,
                messages::encode(&list),
            ),
        )
        .await?;
        Ok(())
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
