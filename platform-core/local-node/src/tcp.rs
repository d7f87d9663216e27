//! The router's stable TCP addresses: one listener per router port in the route
//! table, forwarding each connection to a ready instance (round-robin, silent nodes'
//! instances last, the next one when a connect fails).
//!
//! # Guarantees
//! - A port stays listened on while the table names it, even with no ready instance
//!   (a connection is then closed at once), so the address never moves.
//! - A port that leaves the table stops accepting; connections already forwarded carry
//!   on until either side closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::proto::TcpRoute;

use crate::router::Backends;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The instances one router port forwards to (the same rotation as HTTP routes).
type Targets = Backends;

#[derive(Debug)]
struct Listening {
    targets: Arc<RwLock<Arc<Targets>>>,
    socket: Arc<TcpListener>,
    task: JoinHandle<()>,
}

/// The router's TCP listeners, by port.
#[derive(Debug, Default)]
pub struct TcpRoutes {
    host: Option<IpAddr>,
    listening: Mutex<HashMap<u16, Listening>>,
    /// Connections being forwarded (shared with the router's own count).
    in_flight: Arc<AtomicUsize>,
}

impl TcpRoutes {
    /// Listeners on `host` (the router's own address), counting forwarded connections
    /// in `in_flight`.
    pub fn on(host: IpAddr, in_flight: Arc<AtomicUsize>) -> Self {
        Self {
            host: Some(host),
            listening: Mutex::default(),
            in_flight,
        }
    }

    /// Takes over a listener a predecessor handed over.
    pub fn adopt(&self, port: u16, socket: std::net::TcpListener) {
        let Ok(socket) = TcpListener::from_std(socket) else {
            return;
        };
        if let Ok(mut listening) = self.listening.lock() {
            listening.insert(port, self.listen(Arc::new(socket), Arc::default()));
        }
    }

    /// Duplicates of the listening sockets, for a successor.
    pub fn sockets(&self) -> Vec<(u16, std::os::fd::OwnedFd)> {
        use std::os::fd::AsFd;
        self.listening
            .lock()
            .map(|listening| {
                listening
                    .iter()
                    .filter_map(|(port, l)| {
                        Some((*port, l.socket.as_fd().try_clone_to_owned().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops accepting on every port (after a handover); forwarded connections go on.
    pub fn stop_accepting(&self) {
        if let Ok(mut listening) = self.listening.lock() {
            for (_, l) in listening.drain() {
                l.task.abort();
            }
        }
    }

    fn listen(&self, socket: Arc<TcpListener>, targets: Arc<Targets>) -> Listening {
        let targets = Arc::new(RwLock::new(targets));
        let task = tokio::spawn(accept(
            socket.clone(),
            targets.clone(),
            self.in_flight.clone(),
        ));
        Listening {
            targets,
            socket,
            task,
        }
    }

    /// Makes the listeners match the table: new ports are opened, gone ones closed,
    /// the others get their new targets.
    pub fn sync(&self, routes: &[TcpRoute]) {
        let Some(host) = self.host else {
            return;
        };
        let Ok(mut listening) = self.listening.lock() else {
            return;
        };
        listening.retain(|port, l| {
            let keep = routes.iter().any(|r| r.port == *port);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for route in routes {
            let targets = Arc::new(Targets {
                addrs: route.backends.clone(),
                fallback: route.fallback.clone(),
                next: AtomicUsize::new(0),
                // A TCP address spreads connections over every revision's instances.
                canary: None,
            });
            if let Some(l) = listening.get(&route.port) {
                if let Ok(mut t) = l.targets.write() {
                    targets
                        .next
                        .store(t.next.load(Ordering::Relaxed), Ordering::Relaxed);
                    *t = targets;
                }
                continue;
            }
            let bound = std::net::TcpListener::bind((host, route.port)).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            });
            match bound {
                Ok(listener) => {
                    tracing::info!(port = route.port, app = %route.key, name = %route.port_name, "forwarding a stable TCP address");
                    let entry = self.listen(Arc::new(listener), targets);
                    listening.insert(route.port, entry);
                }
                // Tried again at the next table.
                Err(e) => {
                    tracing::warn!(port = route.port, app = %route.key, error = %e, "cannot listen on a router port")
                }
            }
        }
    }
}

impl Drop for TcpRoutes {
    fn drop(&mut self) {
        if let Ok(listening) = self.listening.lock() {
            for l in listening.values() {
                l.task.abort();
            }
        }
    }
}

async fn accept(
    listener: Arc<TcpListener>,
    targets: Arc<RwLock<Arc<Targets>>>,
    in_flight: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let order: Vec<String> = targets
            .read()
            .map(|t| t.order().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            forward(client, order).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Connects to the first target that answers and copies both ways until either side
/// closes; with none, the client's connection is closed.
async fn forward(mut client: TcpStream, order: Vec<String>) {
    let _ = client.set_nodelay(true);
    for target in order {
        let connected =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&target)).await;
        if let Ok(Ok(mut upstream)) = connected {
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            return;
        }
        tracing::debug!(target, "a TCP target did not answer; trying the next");
    }
}
