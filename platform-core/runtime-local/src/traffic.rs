//! The routers' traffic counters, read for the autoscaler: each router serves them on
//! its metrics listener (`/traffic`, with a token); two readings a window apart give an
//! application's requests per second and 95th percentile latency.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use local_node::traffic::{Reading, SplitWindow, quantile};
use platform_core::releases::canary::Sample;
use platform_core::runtime::{CanaryTraffic, Traffic, WorkloadKey};
use tokio::sync::Mutex;

/// How often the routers are read at most, and how long readings are kept.
const EVERY: Duration = Duration::from_secs(1);
const KEEP: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Default)]
pub struct RouterTraffic {
    urls: Vec<String>,
    token: Option<String>,
    http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    readings: HashMap<String, VecDeque<(Instant, Reading)>>,
}

impl RouterTraffic {
    pub fn new(urls: Vec<String>, token: Option<String>) -> Self {
        Self {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            state: Mutex::default(),
        }
    }

    /// The readings kept, with a new one of every router when the last is a second old.
    async fn refreshed(&self) -> tokio::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if state.last.is_none_or(|t| now.duration_since(t) >= EVERY) {
            state.last = Some(now);
            for url in &self.urls {
                let mut request = self.http.get(format!("{url}/traffic"));
                if let Some(token) = &self.token {
                    request = request.bearer_auth(token);
                }
                let reading = match request.send().await {
                    Ok(r) if r.status().is_success() => r.json::<Reading>().await.ok(),
                    Ok(r) => {
                        tracing::warn!(router = %url, status = %r.status(), "the router's traffic counters were refused");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(router = %url, error = %e, "the router's traffic counters did not answer");
                        None
                    }
                };
                let kept = state.readings.entry(url.clone()).or_default();
                if let Some(reading) = reading {
                    kept.push_back((now, reading));
                }
                while kept
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > KEEP)
                {
                    kept.pop_front();
                }
            }
        }
        state
    }

    /// A canary release's two sides over about `window`, summed over the routers, with
    /// each side's 99th percentile; `None` until some router has two readings that far
    /// apart with a split for the workload.
    pub async fn canary_of(&self, key: &WorkloadKey, window: Duration) -> Option<CanaryTraffic> {
        if self.urls.is_empty() {
            return None;
        }
        let state = self.refreshed().await;
        let window = window.max(EVERY);
        let wanted = (key.tenant.clone(), key.environment.clone(), key.app.clone());
        let mut total: Option<(SplitWindow, SplitWindow)> = None;
        for kept in state.readings.values() {
            let Some((newest_at, newest)) = kept.back() else {
                continue;
            };
            // The newest reading at least `window` older, of the same router process:
            // the check covers the whole interval or is not made from this router.
            let Some((_, earlier)) = kept
                .iter()
                .rev()
                .find(|(t, r)| newest_at.duration_since(*t) >= window && r.router == newest.router)
            else {
                continue;
            };
            let Some((canary, stable)) = newest.split_since(earlier, &wanted) else {
                continue;
            };
            let sum = total.get_or_insert_with(Default::default);
            sum.0.add(&canary);
            sum.1.add(&stable);
        }
        let sample = |w: &SplitWindow| Sample {
            requests: w.requests,
            errors: w.errors,
            p99_ms: quantile(&w.buckets, 0.99).map(|s| s * 1000.0),
        };
        total.map(|(canary, stable)| CanaryTraffic {
            canary: sample(&canary),
            stable: sample(&stable),
        })
    }

    /// The workload's traffic over about `window` (at least a second), summed over the
    /// routers; the highest of their 95th percentiles. `None` until two readings of one
    /// router are far enough apart, or when no router is configured.
    pub async fn of(&self, key: &WorkloadKey, window: Duration) -> Option<Traffic> {
        if self.urls.is_empty() {
            return None;
        }
        let state = self.refreshed().await;
        let window = window.max(EVERY);
        let wanted = (key.tenant.clone(), key.environment.clone(), key.app.clone());
        let mut total: Option<(f64, Option<f64>, Duration)> = None;
        for kept in state.readings.values() {
            let Some((newest_at, newest)) = kept.back() else {
                continue;
            };
            // The newest reading at least `window` older than the newest, else the
            // oldest there is (when at least a second older), of the same router process.
            let earlier = kept
                .iter()
                .rev()
                .find(|(t, r)| newest_at.duration_since(*t) >= window && r.router == newest.router)
                .or_else(|| {
                    kept.iter().find(|(t, r)| {
                        newest_at.duration_since(*t) >= EVERY && r.router == newest.router
                    })
                });
            let Some((earlier_at, earlier)) = earlier else {
                continue;
            };
            // The router's own clock, when it says: the reader's clock also counts how
            // long each reading took to arrive.
            let span = newest.seconds_since(earlier).map_or_else(
                || newest_at.duration_since(*earlier_at),
                Duration::from_secs_f64,
            );
            let per_app = newest.since(earlier, span.as_secs_f64());
            let (rps, p95) = per_app.get(&wanted).copied().unwrap_or((0.0, None));
            total = Some(match total {
                None => (rps, p95, span),
                Some((r, p, s)) => (
                    r + rps,
                    match (p, p95) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                    s.min(span),
                ),
            });
        }
        total.map(|(requests_per_second, p95_ms, window)| Traffic {
            requests_per_second,
            p95_ms,
            window,
        })
    }
}
