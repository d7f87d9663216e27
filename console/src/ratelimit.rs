//! Login rate limiting, per username and per client address (GCRA from `governor`).
//!
//! Limits are per process: behind several replicas an attacker gets each replica's
//! budget, which still bounds guessing to a small multiple.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

#[derive(Debug)]
pub struct LoginLimiter {
    per_user: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl LoginLimiter {
    pub fn new(per_user_per_minute: u32, per_address_per_minute: u32) -> Self {
        let quota =
            |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        Self {
            per_user: RateLimiter::keyed(quota(per_user_per_minute)),
            per_address: RateLimiter::keyed(quota(per_address_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one attempt from both budgets; on refusal, the seconds to wait.
    pub fn check(&self, username: &str, address: &str) -> Result<(), u64> {
        self.forget_idle_keys();
        let wait = |not_until: governor::NotUntil<_>| {
            not_until.wait_time_from(self.clock.now()).as_secs() + 1
        };
        self.per_address
            .check_key(&address.to_owned())
            .map_err(wait)?;
        self.per_user
            .check_key(&username.to_lowercase())
            .map_err(wait)?;
        Ok(())
    }

    /// Keeps memory bounded under a flood of distinct usernames.
    fn forget_idle_keys(&self) {
        if self.per_user.len() > 10_000 {
            self.per_user.retain_recent();
        }
        if self.per_address.len() > 10_000 {
            self.per_address.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_limited_independently_of_others() {
        let limiter = LoginLimiter::new(3, 100);
        for _ in 0..3 {
            assert!(limiter.check("alice", "10.0.0.1").is_ok());
        }
        let wait = limiter.check("alice", "10.0.0.2");
        assert!(
            matches!(wait, Err(secs) if (1..=61).contains(&secs)),
            "{wait:?}"
        );
        assert!(limiter.check("bob", "10.0.0.1").is_ok());
        // Case does not give a fresh budget.
        assert!(limiter.check("ALICE", "10.0.0.3").is_err());
    }

    #[test]
    fn an_address_is_limited_across_usernames() {
        let limiter = LoginLimiter::new(100, 2);
        assert!(limiter.check("a", "10.0.0.9").is_ok());
        assert!(limiter.check("b", "10.0.0.9").is_ok());
        assert!(limiter.check("c", "10.0.0.9").is_err());
        assert!(limiter.check("c", "10.0.0.8").is_ok());
    }
}
