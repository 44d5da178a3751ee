//! `db.freeze` and `db.thaw`: the node's one freeze of its database, thawed
//! by the plugin or, at the latest, after the time it asked for (at most
//! [`MAX_FREEZE`]): a plugin cannot hold the application's writes back for
//! longer, whatever it does afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::Frozen;

/// The longest a plugin may freeze the database in one call.
pub(crate) const MAX_FREEZE: Duration = Duration::from_secs(60);

/// The freeze held now, if any, with its generation (a later freeze or a
/// thaw ends an earlier one's automatic thaw).
#[derive(Debug, Default)]
pub(crate) struct FreezeHold {
    held: Mutex<Option<(u64, Frozen)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl FreezeHold {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, Frozen)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the database is frozen now.
    pub(crate) fn is_frozen(&self) -> bool {
        self.lock().is_some()
    }

    /// Hold `frozen` until [`FreezeHold::thaw`] or `max` from now.
    pub(crate) fn hold(self: &Arc<Self>, frozen: Frozen, max: Duration, plugin: &str) {
        let generation = self.next_generation();
        let old = self.lock().replace((generation, frozen));
        drop(old);
        tracing::info!(plugin, max_ms = max.as_millis() as u64, "database frozen");
        self.thaw_after(generation, max, plugin);
    }

    /// A freeze is held already: it now ends `max` from now at the latest
    /// (a second freeze would wait for the first); false when none is held.
    pub(crate) fn extend(self: &Arc<Self>, max: Duration, plugin: &str) -> bool {
        let generation = self.next_generation();
        {
            let mut held = self.lock();
            let Some((g, _)) = held.as_mut() else {
                return false;
            };
            *g = generation;
        }
        tracing::info!(
            plugin,
            max_ms = max.as_millis() as u64,
            "database freeze extended"
        );
        self.thaw_after(generation, max, plugin);
        true
    }

    fn next_generation(&self) -> u64 {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Thaw after `max` unless a later freeze or extension, or a thaw,
    /// came first.
    fn thaw_after(self: &Arc<Self>, generation: u64, max: Duration, plugin: &str) {
        let me = Arc::downgrade(self);
        let plugin = plugin.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            let Some(me) = me.upgrade() else { return };
            let mut held = me.lock();
            if held.as_ref().is_some_and(|(g, _)| *g == generation) {
                if let Some((_, frozen)) = held.take() {
                    let for_ms = frozen.thaw().as_millis() as u64;
                    tracing::warn!(
                        plugin,
                        for_ms,
                        "the database thawed by itself: the plugin did not thaw it in time"
                    );
                }
            }
        });
    }

    /// Let writes go on (nothing to do when not frozen).
    pub(crate) fn thaw(&self, plugin: &str) {
        if let Some((_, frozen)) = self.lock().take() {
            let for_ms = frozen.thaw().as_millis() as u64;
            tracing::info!(plugin, for_ms, "database thawed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn write(db: &std::path::Path, id: &str) -> bool {
        let c = rusqlite::Connection::open(db).unwrap();
        c.busy_timeout(Duration::from_millis(50)).unwrap();
        c.execute(
            "INSERT INTO users (user_id, name, updated_at) VALUES (?1, 'x', 1)",
            [id],
        )
        .is_ok()
    }

    #[tokio::test]
    async fn a_freeze_ends_when_thawed_or_by_itself_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
        let hold = Arc::new(FreezeHold::default());
        hold.hold(store.freeze().unwrap(), Duration::from_secs(60), "p");
        assert!(hold.is_frozen() && !write(store.path(), "a"));
        hold.thaw("p");
        assert!(!hold.is_frozen() && write(store.path(), "b"));
        // Not thawed: it ends by itself.
        hold.hold(store.freeze().unwrap(), Duration::from_millis(200), "p");
        assert!(!write(store.path(), "c"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!hold.is_frozen() && write(store.path(), "d"));
        // Freezing again extends the freeze; the earlier limit does not
        // end it.
        hold.hold(store.freeze().unwrap(), Duration::from_millis(100), "p");
        assert!(hold.extend(Duration::from_secs(60), "p"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(hold.is_frozen() && !write(store.path(), "e"));
        hold.thaw("p");
    }
}
