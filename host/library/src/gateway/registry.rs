//! Connected devices, and the channel to each connection for admin requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::admin::AdminError;
use standby_device::codec::Message;

/// What the registry knows of a connected device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DeviceInfo {
    /// Device id.
    pub device_id: u32,
    /// Remote address of the link.
    pub peer: SocketAddr,
    /// Whether the link is TLS.
    pub tls: bool,
    /// The generation of the credential the device proved (none: admitted
    /// without one, by `devices.auth.mode` "migrate" or "off").
    pub credential_generation: Option<u32>,
    /// When the link came up (Unix ms).
    pub connected_since_ms: u64,
    /// When the last frame arrived (Unix ms).
    pub last_seen_ms: u64,
    /// Index of the endpoint of its server list the device dialled.
    pub endpoint: u8,
    /// Device model.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// Log incarnation.
    pub incarnation: u64,
    /// The highest event sequence number the device has reported (in its
    /// handshake or a batch).
    pub last_seq: u64,
    /// The highest sequence number up to which this node holds every event
    /// of the device's incarnation.
    pub watermark: u64,
}

/// What a connection updates as frames arrive.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// When the last frame arrived (Unix ms).
    pub(crate) last_seen_ms: AtomicU64,
    /// See [`DeviceInfo::last_seq`].
    pub(crate) last_seq: AtomicU64,
    /// See [`DeviceInfo::watermark`].
    pub(crate) watermark: AtomicU64,
}

/// A request to a connection task.
pub(crate) enum ToConn {
    /// Send this request to the device and pass back its response.
    Ask(Message, oneshot::Sender<Message>),
    /// Another connection of the same device replaced this one.
    Replaced,
    /// The credential the device proved is no longer valid.
    Invalid(crate::enrolment::Invalid),
}

struct Entry {
    info: DeviceInfo,
    conn: u64,
    live: Arc<Live>,
    tx: mpsc::Sender<ToConn>,
}

/// Connected devices by id.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<HashMap<u32, Entry>>,
    next_conn: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a connection; an older connection of the same device is told to
    /// close. An authenticated link is never replaced by an unauthenticated
    /// one: then nothing changes and the authenticated link's address comes
    /// back.
    pub(crate) fn register(
        &self,
        info: DeviceInfo,
        live: Arc<Live>,
        tx: mpsc::Sender<ToConn>,
    ) -> Result<u64, SocketAddr> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let device_id = info.device_id;
        let mut map = self.lock();
        if let Some(old) = map.get(&device_id) {
            if old.info.credential_generation.is_some() && info.credential_generation.is_none() {
                return Err(old.info.peer);
            }
        }
        let old = map.insert(
            device_id,
            Entry {
                info,
                conn,
                live,
                tx,
            },
        );
        drop(map);
        if let Some(old) = old {
            let _ = old.tx.try_send(ToConn::Replaced);
        }
        Ok(conn)
    }

    /// The address of device `device_id`'s link, and whether it is
    /// authenticated.
    pub(crate) fn link_of(&self, device_id: u32) -> Option<(SocketAddr, bool)> {
        self.lock()
            .get(&device_id)
            .map(|e| (e.info.peer, e.info.credential_generation.is_some()))
    }

    /// Every authenticated link: device, credential generation, channel.
    pub(crate) fn authenticated(&self) -> Vec<(u32, u32, mpsc::Sender<ToConn>)> {
        self.lock()
            .values()
            .filter_map(|e| {
                e.info
                    .credential_generation
                    .map(|g| (e.info.device_id, g, e.tx.clone()))
            })
            .collect()
    }

    /// Remove a connection, unless a newer one of the same device replaced it.
    pub(crate) fn unregister(&self, device_id: u32, conn: u64) {
        let mut map = self.lock();
        if map.get(&device_id).is_some_and(|e| e.conn == conn) {
            map.remove(&device_id);
        }
    }

    fn info(e: &Entry) -> DeviceInfo {
        let mut info = e.info.clone();
        info.last_seen_ms = e.live.last_seen_ms.load(Ordering::Relaxed);
        info.last_seq = e.live.last_seq.load(Ordering::Relaxed);
        info.watermark = e.live.watermark.load(Ordering::Relaxed);
        info
    }

    pub(crate) fn list(&self) -> Vec<DeviceInfo> {
        let mut v: Vec<DeviceInfo> = self.lock().values().map(Self::info).collect();
        v.sort_by_key(|d| d.device_id);
        v
    }

    pub(crate) fn get(&self, device_id: u32) -> Option<DeviceInfo> {
        self.lock().get(&device_id).map(Self::info)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Send a request through the device's connection and wait for its response.
    pub(crate) async fn request(
        &self,
        device_id: u32,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, AdminError> {
        let tx = self
            .lock()
            .get(&device_id)
            .map(|e| e.tx.clone())
            .ok_or(AdminError::NotConnected(device_id))?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(ToConn::Ask(message, reply_tx))
            .await
            .map_err(|_| AdminError::Disconnected(device_id))?;
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(AdminError::Disconnected(device_id)),
            Err(_) => Err(AdminError::Timeout(device_id, timeout)),
        }
    }
}
