//! What nearly every request reads and hardly anything changes: a session's user with
//! their memberships, and a tenant's environments. Held in memory so that a console
//! page costs one database statement (its own) rather than three.
//!
//! # Guarantees
//! - **Nothing stale is served once the change is heard.** Triggers on `users`,
//!   `memberships`, `tenants`, `revoked_sessions` and `environments` (migration 0026)
//!   notify `paas_access` when their transaction commits, whichever control plane made
//!   the change; every control plane forgets everything it holds when it hears one. The
//!   control plane that made a change forgets at once, after its commit, so its own next
//!   request sees it (a logout refuses the token on the very next request).
//! - **Without the notifications, no cache.** Until [`Platform::follow_access_changes`]
//!   listens, and whenever its connection is lost, every read goes to the database; on
//!   listening again everything read before is forgotten.
//! - **A read that overlaps a change is not kept.** A read records the cache's epoch
//!   before it asks the database and is kept only if nothing was forgotten meanwhile.
//! - **Bounded.** Entries expire after [`TTL`] whatever happens, and a map that grows
//!   past [`CAPACITY`] is emptied.
//!
//! [`Platform::follow_access_changes`]: crate::platform::Platform::follow_access_changes

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::model::Environment;
use crate::store::users::SessionUser;

/// The channel the triggers notify.
pub(crate) const CHANNEL: &str = "paas_access";

/// How long an entry serves at most, even if no change is heard.
pub const TTL: Duration = Duration::from_secs(30);

/// How many entries a map holds at most.
pub const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct AccessCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Whether changes are heard; while not, nothing is kept.
    live: bool,
    /// Bumped by every forgetting: a read begun at another epoch is not kept.
    epoch: u64,
    sessions: Entries<(Uuid, String), SessionUser>,
    environments: Entries<Uuid, Vec<Environment>>,
}

#[derive(Debug)]
struct Entries<K, V>(HashMap<K, (Instant, V)>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Eq + Hash, V: Clone> Entries<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        self.0
            .get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&mut self, key: K, value: V) {
        if self.0.len() >= CAPACITY {
            self.0.clear();
        }
        self.0.insert(key, (Instant::now(), value));
    }
}

impl Inner {
    fn forget(&mut self) {
        self.epoch += 1;
        self.sessions.0.clear();
        self.environments.0.clear();
    }
}

/// A read about to go to the database: where its answer may be kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(Option<u64>);

impl AccessCache {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock cannot leave the maps inconsistent (each
        // change is one map operation), so a poisoned lock is used as it is.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    /// A session's user, if held; otherwise the ticket to keep what the database says.
    pub(crate) fn session(&self, user: Uuid, jti: &str) -> Result<SessionUser, Ticket> {
        self.with(|i| {
            if !i.live {
                return Err(Ticket(None));
            }
            i.sessions
                .get(&(user, jti.to_owned()))
                .ok_or(Ticket(Some(i.epoch)))
        })
    }

    pub(crate) fn keep_session(&self, ticket: Ticket, user: Uuid, jti: &str, found: &SessionUser) {
        self.with(|i| {
            if i.live && ticket.0 == Some(i.epoch) {
                i.sessions.put((user, jti.to_owned()), found.clone());
            }
        });
    }

    /// A tenant's environments, if held; otherwise the ticket to keep what the
    /// database says.
    pub(crate) fn environments(&self, tenant: Uuid) -> Result<Vec<Environment>, Ticket> {
        self.with(|i| {
            if !i.live {
                return Err(Ticket(None));
            }
            i.environments.get(&tenant).ok_or(Ticket(Some(i.epoch)))
        })
    }

    pub(crate) fn keep_environments(&self, ticket: Ticket, tenant: Uuid, found: &[Environment]) {
        self.with(|i| {
            if i.live && ticket.0 == Some(i.epoch) {
                i.environments.put(tenant, found.to_vec());
            }
        });
    }

    pub(crate) fn is_live(&self) -> bool {
        self.with(|i| i.live)
    }

    /// Forgets everything held (a change was made or heard).
    pub(crate) fn forget(&self) {
        self.with(Inner::forget);
    }

    /// Changes are heard (`true`) or no longer are; either way, what is held is
    /// forgotten.
    pub(crate) fn set_live(&self, live: bool) {
        self.with(|i| {
            i.live = live;
            i.forget();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(name: &str) -> SessionUser {
        SessionUser {
            user: crate::model::User {
                id: Uuid::nil(),
                username: name.to_owned(),
                display_name: name.to_owned(),
                platform_admin: false,
                disabled: false,
                created_at: chrono::Utc::now(),
                version: 1,
            },
            revoked: false,
            generation: 0,
            memberships: Vec::new(),
        }
    }

    fn held(cache: &AccessCache) -> Option<String> {
        cache
            .session(Uuid::nil(), "j")
            .ok()
            .map(|s| s.user.username)
    }

    #[test]
    fn nothing_is_kept_until_changes_are_heard() {
        let cache = AccessCache::default();
        let ticket = cache.session(Uuid::nil(), "j").expect_err("not held");
        cache.keep_session(ticket, Uuid::nil(), "j", &session("ann"));
        assert_eq!(held(&cache), None);

        cache.set_live(true);
        let ticket = cache.session(Uuid::nil(), "j").expect_err("not held");
        cache.keep_session(ticket, Uuid::nil(), "j", &session("ann"));
        assert_eq!(held(&cache).as_deref(), Some("ann"));

        // Losing the notifications forgets, and keeps nothing more.
        cache.set_live(false);
        assert_eq!(held(&cache), None);
        let ticket = cache.session(Uuid::nil(), "j").expect_err("not held");
        cache.keep_session(ticket, Uuid::nil(), "j", &session("ann"));
        assert_eq!(held(&cache), None);
    }

    #[test]
    fn a_read_that_overlaps_a_change_is_not_kept() {
        let cache = AccessCache::default();
        cache.set_live(true);
        let ticket = cache.session(Uuid::nil(), "j").expect_err("not held");
        // The change lands (and is heard) while the read is in flight.
        cache.forget();
        cache.keep_session(ticket, Uuid::nil(), "j", &session("stale"));
        assert_eq!(held(&cache), None);

        // A read after the change is kept, until the next change.
        let ticket = cache.environments(Uuid::nil()).expect_err("not held");
        cache.keep_environments(ticket, Uuid::nil(), &[]);
        assert_eq!(cache.environments(Uuid::nil()).ok(), Some(Vec::new()));
        cache.forget();
        assert!(cache.environments(Uuid::nil()).is_err());
    }

    #[test]
    fn a_session_is_held_per_token() {
        let cache = AccessCache::default();
        cache.set_live(true);
        let ticket = cache.session(Uuid::nil(), "j").expect_err("not held");
        cache.keep_session(ticket, Uuid::nil(), "j", &session("ann"));
        // Another token of the same user may be revoked: it is read on its own.
        assert!(cache.session(Uuid::nil(), "other").is_err());
    }
}
