//! Following the database's notifications (`LISTEN`), for every part of a control plane
//! that reacts to changes whichever control plane made them: the reconciler
//! (`paas_desired`), the local runtime's waiting agents and routers (`paas_runtime`),
//! and the access cache (`paas_access`).
//!
//! PostgreSQL does not keep notifications for a listener that is not connected, so a
//! follower is told when it starts listening (again) and when it stops: between the
//! two, changes are missed, and what it derived from notifications must be redone.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

/// What a follower hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// Listening, for the first time or again: whatever changed while nobody listened
    /// was not heard.
    Listening,
    /// One notification.
    Notification { channel: &'a str, payload: &'a str },
    /// The connection was lost: nothing is heard until `Listening` again.
    Lost,
}

/// How long to wait before connecting again after a failed attempt.
const RETRY: Duration = Duration::from_secs(1);

/// Listens on `channels` until `shutdown` turns true, connecting again whenever the
/// connection is lost, and hands what it hears to `heard`, in order. `what` names the
/// notifications in the log.
pub async fn follow(
    pool: PgPool,
    channels: &[&str],
    what: &str,
    mut shutdown: watch::Receiver<bool>,
    mut heard: impl FnMut(Heard<'_>),
) {
    let mut warned = false;
    loop {
        let connect = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all(channels.iter().copied()).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            l = connect => match l {
                Ok(l) => l,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot listen for {what}; retrying");
                        warned = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        };
        if warned {
            tracing::info!("listening for {what} again");
            warned = false;
        }
        heard(Heard::Listening);
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => heard(Heard::Notification {
                        channel: n.channel(),
                        payload: n.payload(),
                    }),
                    // The connection was lost. The listener would reconnect on its own,
                    // but a fresh one is made here so that `Listening` is said only
                    // once it listens.
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "{what} interrupted");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
        heard(Heard::Lost);
    }
}
