//! Steady HTTP traffic for the length of an episode, counting what failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

/// Requests at a fixed rate against one URL, from several connections, until stopped.
pub struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    internal: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What an episode of load saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    /// Of the failed, those the application itself answered 500 (the router's own
    /// answers are 502 and 503).
    pub internal_errors: usize,
}

impl Load {
    /// About `per_second` GETs of `url` a second, spread over four clients; anything
    /// but a 200 within 5 s counts as failed.
    pub fn start(url: &str, per_second: u32) -> Self {
        let (ok, failed, internal, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let clients = 4;
        let period = Duration::from_secs_f64(f64::from(clients) / f64::from(per_second.max(1)));
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failed, internal, stop, url) = (
                    ok.clone(),
                    failed.clone(),
                    internal.clone(),
                    stop.clone(),
                    url.to_owned(),
                );
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap_or_default();
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        match http.get(&url).send().await {
                            Ok(r) if r.status() == StatusCode::OK => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(r) if r.status() == StatusCode::INTERNAL_SERVER_ERROR => {
                                internal.fetch_add(1, Ordering::Relaxed);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            internal,
            stop,
            tasks,
        }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        Tally {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            internal_errors: self.internal.load(Ordering::Relaxed),
        }
    }

    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.tally()
    }
}
