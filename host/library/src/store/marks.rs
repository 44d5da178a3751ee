//! What a database holds for each device: the per-device watermarks a
//! copy carries, so that once the other site confirms the copy, those
//! events are durable there.

use rusqlite::Connection;

/// What a database holds for one device incarnation: every event up to
/// `contiguous` is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct DeviceMark {
    /// The device.
    pub device_id: u32,
    /// Its log incarnation.
    pub incarnation: u64,
    /// The contiguous watermark.
    pub contiguous: u64,
}

/// The per-device contiguous watermarks `conn` sees.
pub(super) fn read_device_marks(conn: &Connection) -> rusqlite::Result<Vec<DeviceMark>> {
    let mut stmt = conn.prepare("SELECT device_id, incarnation, contiguous FROM device_logs")?;
    let rows = stmt.query_map([], |r| {
        Ok(DeviceMark {
            device_id: r.get(0)?,
            incarnation: r.get::<_, i64>(1)? as u64,
            contiguous: r.get::<_, i64>(2)? as u64,
        })
    })?;
    rows.collect()
}
