//! Readiness and liveness probes: an HTTP GET that must answer 2xx or 3xx, or a TCP
//! connect, with a period, a timeout and thresholds (Kubernetes' probe semantics).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTarget {
    /// `GET http://127.0.0.1:$PORT<path>`.
    Http { path: String },
    /// A TCP connect to `127.0.0.1:$PORT`.
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub target: ProbeTarget,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    /// Consecutive failures that flip the probe to failing.
    pub failure_threshold: u32,
    /// Consecutive successes that flip it to passing.
    pub success_threshold: u32,
    /// A shorter period used until the probe first passes, so that a starting instance
    /// is ready the moment it serves, without probing that often for its whole life.
    #[serde(default)]
    pub until_ready: Option<Duration>,
}

impl Probe {
    /// A probe with Kubernetes-like defaults, checked often enough to make an instance
    /// ready within a fraction of a second of serving.
    pub fn new(target: ProbeTarget) -> Self {
        Self {
            target,
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(250),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
            until_ready: None,
        }
    }

    /// Runs the probe once against `port`; the error says why it failed.
    pub async fn check(&self, client: &reqwest::Client, port: u16) -> Result<(), String> {
        match &self.target {
            ProbeTarget::Tcp => {
                match tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("tcp connect to port {port}: {e}")),
                    Err(_) => Err(format!(
                        "tcp connect to port {port}: timed out after {:?}",
                        self.timeout
                    )),
                }
            }
            ProbeTarget::Http { path } => {
                let url = format!("http://127.0.0.1:{port}{path}");
                match client.get(&url).timeout(self.timeout).send().await {
                    Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                    Ok(r) => Err(format!("GET {path} answered {}", r.status())),
                    Err(e) if e.is_timeout() => {
                        Err(format!("GET {path}: timed out after {:?}", self.timeout))
                    }
                    Err(e) if e.is_connect() => {
                        Err(format!("GET {path}: nothing listens on port {port}"))
                    }
                    Err(e) => Err(format!("GET {path}: {e}")),
                }
            }
        }
    }
}

/// Consecutive results folded into a verdict with hysteresis.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    passing: bool,
    pub last_error: Option<String>,
}

impl ProbeState {
    /// Records one result; returns whether the verdict changed.
    pub fn record(&mut self, probe: &Probe, result: Result<(), String>) -> bool {
        let before = self.passing;
        match result {
            Ok(()) => {
                self.successes += 1;
                self.failures = 0;
                self.last_error = None;
                if self.successes >= probe.success_threshold.max(1) {
                    self.passing = true;
                }
            }
            Err(e) => {
                self.failures += 1;
                self.successes = 0;
                self.last_error = Some(e);
                if self.failures >= probe.failure_threshold.max(1) {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// Whether the failures so far have reached the threshold (for liveness, which
    /// starts out trusted rather than failing).
    pub fn failed(&self, probe: &Probe) -> bool {
        self.failures >= probe.failure_threshold.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_give_hysteresis() {
        let probe = Probe {
            success_threshold: 2,
            failure_threshold: 3,
            ..Probe::new(ProbeTarget::Tcp)
        };
        let mut state = ProbeState::default();
        let fail = || Err("no".to_owned());
        assert!(!state.record(&probe, Ok(())));
        assert!(state.record(&probe, Ok(())), "two successes make it pass");
        assert!(!state.record(&probe, fail()));
        assert!(!state.record(&probe, fail()));
        assert!(state.passing(), "still passing after two failures");
        assert!(state.record(&probe, fail()), "the third failure flips it");
        assert!(state.failed(&probe));
        assert_eq!(state.last_error.as_deref(), Some("no"));
    }
}
