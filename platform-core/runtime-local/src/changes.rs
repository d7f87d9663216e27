//! Change notification for agents and routers that wait for their share to change
//! (long polls) instead of asking on a fixed period.
//!
//! PostgreSQL triggers (migration `0008`) `NOTIFY paas_runtime` whenever a node's
//! assignments (`node:<name>`) or the route table (`routes`) may have changed,
//! whichever control plane or code path made the change. Every control plane listens
//! and wakes the requests waiting on that node or on the routes; a woken request
//! recomputes its answer and compares versions, so a spurious wake sends nothing and a
//! missed one is caught by the request's deadline.
//!
//! # Guarantees
//! - A waiter subscribes before it computes what it compares against, so a change that
//!   lands in between still wakes it.
//! - When the listening connection is lost (PostgreSQL restarted), every waiter is
//!   woken once it is back, since notifications sent meanwhile are lost.

use platform_core::store::notifications::{self, Heard};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The channel the triggers notify.
pub const CHANNEL: &str = "paas_runtime";

/// What waiting requests subscribe to. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: Mutex<HashMap<String, watch::Sender<u64>>>,
    routes: watch::Sender<u64>,
}

impl Changes {
    /// Wakes on each possible change of a node's assignments.
    pub fn node(&self, name: &str) -> watch::Receiver<u64> {
        let Ok(mut nodes) = self.inner.nodes.lock() else {
            return watch::channel(0).1;
        };
        // Senders nobody waits on are dropped here, so the map stays as large as the
        // set of nodes with a request in flight.
        nodes.retain(|_, tx| tx.receiver_count() > 0);
        nodes
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes on each possible change of the route table.
    pub fn routes(&self) -> watch::Receiver<u64> {
        self.inner.routes.subscribe()
    }

    /// Takes one notification's payload.
    pub fn changed(&self, payload: &str) {
        match payload.strip_prefix("node:") {
            Some(node) => {
                if let Some(tx) = self
                    .inner
                    .nodes
                    .lock()
                    .ok()
                    .as_ref()
                    .and_then(|n| n.get(node))
                {
                    tx.send_modify(|v| *v += 1);
                }
            }
            None => self.inner.routes.send_modify(|v| *v += 1),
        }
    }

    /// Wakes every waiter (after notifications may have been lost).
    pub fn all_changed(&self) {
        if let Ok(nodes) = self.inner.nodes.lock() {
            for tx in nodes.values() {
                tx.send_modify(|v| *v += 1);
            }
        }
        self.inner.routes.send_modify(|v| *v += 1);
    }

    /// Listens for notifications until `shutdown` turns true, reconnecting when the
    /// connection is lost.
    pub async fn listen(self, pool: PgPool, shutdown: watch::Receiver<bool>) {
        notifications::follow(
            pool,
            &[CHANNEL],
            "change notifications",
            shutdown,
            |heard| {
                match heard {
                    // Whatever changed while nobody listened.
                    Heard::Listening => self.all_changed(),
                    Heard::Notification { payload, .. } => self.changed(payload),
                    Heard::Lost => {}
                }
            },
        )
        .await;
    }
}

/// A short, stable version of a value: what a waiter compares to know whether its
/// answer changed.
pub fn version_of<T: serde::Serialize>(value: &T) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&bytes)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_waiter_wakes_for_its_node_only_and_everyone_after_a_loss() {
        let changes = Changes::default();
        let mut one = changes.node("node-1");
        let mut two = changes.node("node-2");
        let mut routes = changes.routes();
        changes.changed("node:node-1");
        assert!(one.has_changed().unwrap_or(false));
        assert!(!two.has_changed().unwrap_or(true));
        assert!(!routes.has_changed().unwrap_or(true));
        one.mark_unchanged();
        changes.changed("routes");
        assert!(routes.has_changed().unwrap_or(false));
        routes.mark_unchanged();
        changes.all_changed();
        for rx in [&mut one, &mut two, &mut routes] {
            assert!(rx.has_changed().unwrap_or(false));
        }
    }

    #[test]
    fn versions_follow_content() {
        assert_eq!(version_of(&[1, 2]), version_of(&[1, 2]));
        assert_ne!(version_of(&[1, 2]), version_of(&[2, 1]));
    }
}
