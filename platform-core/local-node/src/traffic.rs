//! What the router counts of each application's traffic: requests by status class and a
//! latency histogram (time to the response's head). Served on the router's metrics
//! listener, which only a holder of its token may read: as Prometheus text
//! (`/metrics`) and as JSON (`/traffic`) for the control plane's autoscaler, which takes
//! requests per second and the 95th percentile from the difference of two readings.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The histogram's upper bounds, in seconds (and `+Inf` after the last).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The counters of one application.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    /// Answers 5xx (the instance's or the router's own: 502, 503).
    errors: AtomicU64,
    /// Per bucket (non-cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// `tenant/environment/application`.
pub type AppKey = (String, String, String);

/// An application's counters, and its canary release's sides' (`split` once a side
/// was counted).
#[derive(Debug, Default)]
struct AppCounters {
    all: Counters,
    canary: Counters,
    stable: Counters,
    split: std::sync::atomic::AtomicBool,
}

impl Counters {
    fn add(&self, status: u16, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn reading(&self, key: &AppKey, split: Option<Split>) -> AppTraffic {
        AppTraffic {
            tenant: key.0.clone(),
            environment: key.1.clone(),
            application: key.2.clone(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            split: split.map(|s| s.as_str().to_owned()),
        }
    }
}

/// Which side of a canary release a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Canary,
    Stable,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Stable => "stable",
        }
    }
}

/// Every application's counters (and, during a canary release, each side's too).
/// Recording takes a read lock and a few atomic adds; only an application's first
/// request takes the write lock.
#[derive(Debug, Clone)]
pub struct Traffic {
    apps: Arc<RwLock<HashMap<AppKey, Arc<AppCounters>>>>,
    started: std::time::Instant,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            apps: Arc::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// A reading of one application's counters (cumulative since the router started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppTraffic {
    pub tenant: String,
    pub environment: String,
    pub application: String,
    pub requests: u64,
    pub errors: u64,
    /// Non-cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
    /// `canary` or `stable`: the counters of one side of a canary release (the
    /// application's own counters count its requests too); none: the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

/// One side's traffic between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitWindow {
    pub requests: u64,
    pub errors: u64,
    /// Non-cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    pub buckets: Vec<u64>,
}

impl SplitWindow {
    /// Adds another router's window.
    pub fn add(&mut self, other: &SplitWindow) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }
}

/// A reading of every application's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Identifies the router process: counters start over when it changes.
    pub router: String,
    /// When the counters were read, in milliseconds of the router's own monotonic
    /// clock: the span between two readings, whatever their trip to the reader took.
    #[serde(default)]
    pub at_ms: u64,
    pub apps: Vec<AppTraffic>,
}

impl Traffic {
    pub fn record(&self, key: &AppKey, status: u16, took: Duration) {
        self.record_on(key, None, status, took);
    }

    /// Records a request of the application, and of the canary release's side it went
    /// to (`split`) when one was chosen.
    pub fn record_on(&self, key: &AppKey, split: Option<Split>, status: u16, took: Duration) {
        let counters = {
            let known = self.apps.read().ok().and_then(|m| m.get(key).cloned());
            match known {
                Some(c) => c,
                None => match self.apps.write() {
                    Ok(mut m) => m.entry(key.clone()).or_default().clone(),
                    Err(_) => return,
                },
            }
        };
        counters.all.add(status, took);
        match split {
            Some(Split::Canary) => counters.canary.add(status, took),
            Some(Split::Stable) => counters.stable.add(status, took),
            None => return,
        }
        counters.split.store(true, Ordering::Relaxed);
    }

    pub fn read(&self, router: &str) -> Reading {
        let apps = self
            .apps
            .read()
            .map(|m| {
                let mut out = Vec::with_capacity(m.len());
                for (key, c) in m.iter() {
                    out.push(c.all.reading(key, None));
                    if c.split.load(Ordering::Relaxed) {
                        out.push(c.canary.reading(key, Some(Split::Canary)));
                        out.push(c.stable.reading(key, Some(Split::Stable)));
                    }
                }
                out
            })
            .unwrap_or_default();
        Reading {
            router: router.to_owned(),
            at_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            apps,
        }
    }
}

impl Reading {
    /// Prometheus text exposition (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP paas_router_requests_total Requests the router answered, per application.\n",
        );
        out.push_str("# TYPE paas_router_requests_total counter\n");
        let labels = |a: &AppTraffic| {
            format!(
                "tenant=\"{}\",environment=\"{}\",application=\"{}\"",
                a.tenant, a.environment, a.application
            )
        };
        let (apps, splits): (Vec<&AppTraffic>, Vec<&AppTraffic>) =
            self.apps.iter().partition(|a| a.split.is_none());
        for a in &apps {
            out.push_str(&format!(
                "paas_router_requests_total{{{}}} {}\n",
                labels(a),
                a.requests
            ));
        }
        out.push_str(
            "# HELP paas_router_request_errors_total Requests answered 5xx, per application.\n",
        );
        out.push_str("# TYPE paas_router_request_errors_total counter\n");
        for a in &apps {
            out.push_str(&format!(
                "paas_router_request_errors_total{{{}}} {}\n",
                labels(a),
                a.errors
            ));
        }
        out.push_str("# HELP paas_router_request_duration_seconds Time to the response's head, per application.\n");
        out.push_str("# TYPE paas_router_request_duration_seconds histogram\n");
        for a in &apps {
            let l = labels(a);
            let mut cumulative = 0;
            for (i, count) in a.buckets.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                out.push_str(&format!(
                    "paas_router_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}\n"
                ));
            }
            out.push_str(&format!(
                "paas_router_request_duration_seconds_sum{{{l}}} {}\n",
                a.sum_seconds
            ));
            out.push_str(&format!(
                "paas_router_request_duration_seconds_count{{{l}}} {}\n",
                a.requests
            ));
        }
        if !splits.is_empty() {
            out.push_str("# HELP paas_router_split_requests_total Requests per side of a canary release (canary, stable).\n");
            out.push_str("# TYPE paas_router_split_requests_total counter\n");
            for a in &splits {
                let side = a.split.as_deref().unwrap_or_default();
                out.push_str(&format!(
                    "paas_router_split_requests_total{{{},split=\"{side}\"}} {}\n",
                    labels(a),
                    a.requests
                ));
            }
            out.push_str("# HELP paas_router_split_request_errors_total Requests answered 5xx per side of a canary release.\n");
            out.push_str("# TYPE paas_router_split_request_errors_total counter\n");
            for a in &splits {
                let side = a.split.as_deref().unwrap_or_default();
                out.push_str(&format!(
                    "paas_router_split_request_errors_total{{{},split=\"{side}\"}} {}\n",
                    labels(a),
                    a.errors
                ));
            }
        }
        out
    }

    /// One application's canary and stable sides between `earlier` and this reading
    /// (of the same router process); `None` when this reading has no split for it.
    pub fn split_since(
        &self,
        earlier: &Reading,
        key: &AppKey,
    ) -> Option<(SplitWindow, SplitWindow)> {
        if earlier.router != self.router {
            return None;
        }
        let side = |r: &Reading, split: Split| -> Option<SplitWindow> {
            r.apps
                .iter()
                .find(|a| {
                    a.split.as_deref() == Some(split.as_str())
                        && a.tenant == key.0
                        && a.environment == key.1
                        && a.application == key.2
                })
                .map(|a| SplitWindow {
                    requests: a.requests,
                    errors: a.errors,
                    buckets: a.buckets.clone(),
                })
        };
        let minus = |now: SplitWindow, then: Option<SplitWindow>| -> SplitWindow {
            let then = then.unwrap_or_default();
            SplitWindow {
                requests: now.requests.saturating_sub(then.requests),
                errors: now.errors.saturating_sub(then.errors),
                buckets: now
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b.saturating_sub(then.buckets.get(i).copied().unwrap_or(0)))
                    .collect(),
            }
        };
        let canary = side(self, Split::Canary);
        let stable = side(self, Split::Stable);
        if canary.is_none() && stable.is_none() {
            return None;
        }
        Some((
            minus(canary.unwrap_or_default(), side(earlier, Split::Canary)),
            minus(stable.unwrap_or_default(), side(earlier, Split::Stable)),
        ))
    }

    /// How many seconds passed between `earlier` and this reading by the router's
    /// clock (`None` for readings without it, or of another router process).
    pub fn seconds_since(&self, earlier: &Reading) -> Option<f64> {
        (self.router == earlier.router && self.at_ms > earlier.at_ms && earlier.at_ms > 0)
            .then(|| (self.at_ms - earlier.at_ms) as f64 / 1000.0)
    }

    /// Per application, what happened between `earlier` and this reading, over
    /// `seconds`: requests per second and the 95th percentile latency in milliseconds
    /// (`None` when no request came). A reading of another router process (restarted)
    /// is not compared: `None` for all.
    pub fn since(&self, earlier: &Reading, seconds: f64) -> BTreeMap<AppKey, (f64, Option<f64>)> {
        let mut out = BTreeMap::new();
        if earlier.router != self.router || seconds <= 0.0 {
            return out;
        }
        let before: HashMap<(&str, &str, &str), &AppTraffic> = earlier
            .apps
            .iter()
            .filter(|a| a.split.is_none())
            .map(|a| {
                (
                    (
                        a.tenant.as_str(),
                        a.environment.as_str(),
                        a.application.as_str(),
                    ),
                    a,
                )
            })
            .collect();
        for a in self.apps.iter().filter(|a| a.split.is_none()) {
            let prev = before.get(&(
                a.tenant.as_str(),
                a.environment.as_str(),
                a.application.as_str(),
            ));
            let requests = a.requests.saturating_sub(prev.map_or(0, |p| p.requests));
            let buckets: Vec<u64> = a
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    b.saturating_sub(prev.and_then(|p| p.buckets.get(i).copied()).unwrap_or(0))
                })
                .collect();
            out.insert(
                (
                    a.tenant.clone(),
                    a.environment.clone(),
                    a.application.clone(),
                ),
                (
                    requests as f64 / seconds,
                    quantile(&buckets, 0.95).map(|s| s * 1000.0),
                ),
            );
        }
        out
    }
}

/// The `q` quantile of a histogram (non-cumulative counts per bucket of [`BUCKETS`],
/// then `+Inf`), interpolated within its bucket as Prometheus' `histogram_quantile`
/// does; in seconds.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let Some(upper) = BUCKETS.get(i).copied() else {
                // In `+Inf`: the highest finite bound, as Prometheus answers.
                return Some(BUCKETS[BUCKETS.len() - 1]);
            };
            let within = (rank - seen as f64) / *count as f64;
            return Some(lower + (upper - lower) * within);
        }
        seen += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(app: &str) -> AppKey {
        ("acme".into(), "dev".into(), app.into())
    }

    #[test]
    fn rates_and_the_95th_percentile_come_from_two_readings() {
        let t = Traffic::default();
        t.record(&key("web"), 200, Duration::from_millis(3));
        let first = t.read("r1");
        // 100 requests in "10 s": 95 fast (about 3 ms), 5 slow (about 400 ms), one 502.
        for i in 0..100 {
            let took = if i < 95 {
                Duration::from_millis(3)
            } else {
                Duration::from_millis(400)
            };
            t.record(&key("web"), if i == 0 { 502 } else { 200 }, took);
        }
        let second = t.read("r1");
        let window = second.since(&first, 10.0);
        let (rps, p95) = window[&key("web")];
        assert!((rps - 10.0).abs() < 1e-9);
        // The 95th of 100 is the last of the fast bucket (2.5 ms .. 5 ms).
        let p95 = p95.unwrap_or_default();
        assert!((2.5..=5.0).contains(&p95), "{p95}");
        // Another router process: no comparison.
        assert!(second.since(&t.read("r2"), 10.0).is_empty());
        let text = second.prometheus();
        assert!(text.contains("paas_router_requests_total{tenant=\"acme\",environment=\"dev\",application=\"web\"} 101"), "{text}");
        assert!(text.contains("paas_router_request_errors_total{tenant=\"acme\",environment=\"dev\",application=\"web\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 101"));
        assert!(text.contains("le=\"0.5\"} 101"));
        assert!(text.contains("le=\"0.25\"} 96"));
    }

    #[test]
    fn a_quantile_interpolates_within_its_bucket() {
        let mut b = vec![0u64; BUCKETS.len() + 1];
        b[6] = 10; // 0.05 .. 0.1
        let median = quantile(&b, 0.5).unwrap_or_default();
        assert!((median - 0.075).abs() < 1e-12, "{median}");
        assert_eq!(quantile(&[0; 15], 0.95), None);
        let mut inf = vec![0u64; BUCKETS.len() + 1];
        inf[BUCKETS.len()] = 3;
        assert_eq!(quantile(&inf, 0.95), Some(30.0));
    }

    #[test]
    fn each_side_of_a_canary_is_counted_apart_and_the_application_counts_both() {
        let t = Traffic::default();
        t.record_on(
            &key("web"),
            Some(Split::Stable),
            200,
            Duration::from_millis(2),
        );
        let first = t.read("r1");
        for i in 0..100 {
            let (side, status) = if i % 5 == 0 {
                (Split::Canary, if i % 10 == 0 { 500 } else { 200 })
            } else {
                (Split::Stable, 200)
            };
            t.record_on(&key("web"), Some(side), status, Duration::from_millis(2));
        }
        let second = t.read("r1");
        let (canary, stable) = second.split_since(&first, &key("web")).unwrap_or_default();
        assert_eq!((canary.requests, canary.errors), (20, 10));
        assert_eq!((stable.requests, stable.errors), (80, 0));
        // The application's own figures count every request once.
        let (rps, _) = second.since(&first, 1.0)[&key("web")];
        assert!((rps - 100.0).abs() < 1e-9);
        assert_eq!(second.split_since(&first, &key("api")), None);
        let text = second.prometheus();
        assert!(text.contains("paas_router_split_requests_total{tenant=\"acme\",environment=\"dev\",application=\"web\",split=\"canary\"} 20"), "{text}");
        assert!(text.contains("paas_router_requests_total{tenant=\"acme\",environment=\"dev\",application=\"web\"} 101"));
    }
}
