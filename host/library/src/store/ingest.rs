//! The store's write transactions: a device's batch, a handshake, the
//! idempotent insert of events, and the contiguous watermark of each
//! device incarnation.

use rusqlite::{params, Connection, OptionalExtension};

use super::{sha256, unix_ms, AccessEvent, IngestOutcome};

/// Store one device's batch and return the outcome with the device
/// incarnation's contiguous watermark after it.
pub(super) fn ingest_device_tx(
    conn: &Connection,
    device_id: u32,
    incarnation: u64,
    events: &[AccessEvent],
    received_by: &str,
) -> rusqlite::Result<(IngestOutcome, u64)> {
    let outcome = ingest_tx(conn, events, received_by)?;
    let mark = watermark_tx(conn, device_id, incarnation)?;
    Ok((outcome, mark))
}

/// Record a device's identity, raise its incarnation's watermark to at
/// least `floor`, and return the watermark.
pub(super) fn handshake_tx(
    tx: &Connection,
    device_id: u32,
    model: &str,
    firmware: &str,
    incarnation: u64,
    floor: u64,
) -> rusqlite::Result<u64> {
    let now = unix_ms();
    tx.prepare_cached(
        "INSERT INTO devices (device_id, model, firmware, incarnation, last_seen) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(device_id) DO UPDATE SET model = ?2, firmware = ?3, incarnation = ?4, last_seen = ?5",
    )?
    .execute(params![device_id, model, firmware, incarnation as i64, now as i64])?;
    if floor > watermark_tx(tx, device_id, incarnation)? {
        tx.prepare_cached(
            "INSERT INTO device_logs (device_id, incarnation, contiguous, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, incarnation) DO UPDATE SET contiguous = ?3, updated_at = ?4",
        )?
        .execute(params![device_id, incarnation as i64, floor as i64, now as i64])?;
        advance_watermark(tx, device_id, incarnation, now)?;
    }
    watermark_tx(tx, device_id, incarnation)
}

/// Insert events and advance the watermarks of the incarnations they belong to.
pub(super) fn ingest_tx(
    tx: &Connection,
    events: &[AccessEvent],
    received_by: &str,
) -> rusqlite::Result<IngestOutcome> {
    let now = unix_ms();
    let mut outcome = IngestOutcome::default();
    let mut touched: Vec<(u32, u64)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO access_events
             (device_id, incarnation, seq, event_code, user_id, occurred_at, payload,
              payload_sha256, received_at, received_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for e in events {
            let n = stmt.execute(params![
                e.device_id,
                e.incarnation as i64,
                e.seq as i64,
                e.event_code,
                e.user_id,
                e.occurred_at_ms as i64,
                e.payload,
                sha256(&e.payload),
                now as i64,
                received_by,
            ])?;
            if n == 1 {
                outcome.inserted += 1;
                if !touched.contains(&(e.device_id, e.incarnation)) {
                    touched.push((e.device_id, e.incarnation));
                }
            } else {
                outcome.duplicates += 1;
            }
        }
    }
    for (device, incarnation) in touched {
        advance_watermark(tx, device, incarnation, now)?;
    }
    Ok(outcome)
}

/// Move a device incarnation's contiguous watermark past every stored sequence.
fn advance_watermark(
    tx: &Connection,
    device: u32,
    incarnation: u64,
    now: u64,
) -> rusqlite::Result<()> {
    let start = watermark_tx(tx, device, incarnation)?;
    let mut mark = start;
    {
        let mut next = tx.prepare_cached(
            "SELECT seq FROM access_events WHERE device_id = ?1 AND incarnation = ?2 AND seq > ?3 ORDER BY seq LIMIT 256",
        )?;
        loop {
            let seqs: Vec<i64> = next
                .query_map(params![device, incarnation as i64, mark as i64], |r| {
                    r.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?;
            let before = mark;
            for s in &seqs {
                if *s as u64 == mark + 1 {
                    mark += 1;
                } else {
                    break;
                }
            }
            if mark == before || seqs.len() < 256 || mark < before + seqs.len() as u64 {
                break;
            }
        }
    }
    if mark != start || start == 0 {
        tx.prepare_cached(
            "INSERT INTO device_logs (device_id, incarnation, contiguous, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, incarnation) DO UPDATE SET contiguous = ?3, updated_at = ?4",
        )?
        .execute(params![device, incarnation as i64, mark as i64, now as i64])?;
    }
    Ok(())
}

pub(super) fn watermark_tx(
    conn: &Connection,
    device: u32,
    incarnation: u64,
) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT contiguous FROM device_logs WHERE device_id = ?1 AND incarnation = ?2",
    )?
    .query_row(params![device, incarnation as i64], |r| r.get::<_, i64>(0))
    .optional()
    .map(|v| v.unwrap_or(0) as u64)
}
