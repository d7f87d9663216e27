//! The broker's account mechanics against a real `nats-server` (Debian's), started by
//! the same script the platform runs it with: a binding's user connects and uses
//! JetStream; unbinding (the account's JWT pushed without the binding's signing key)
//! closes the user's connection and refuses it from then on, across a restart of the
//! server; another account's user sees nothing of the instance.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nkeys::KeyPair;
use queue_broker::client::Connection;
use queue_broker::jwt::{self, InstanceKeys, Storage};
use queue_broker::{ServerSettings, account_jwt, connect_as, now, push_account_jwt, server_env};
use tokio::process::{Child, Command};

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

const STORAGE: Storage = Storage {
    memory: 16 << 20,
    disk: 64 << 20,
};

fn free_port() -> u16 {
    must(std::net::TcpListener::bind("127.0.0.1:0"))
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(14222)
}

/// Starts the server in `dir` as the platform would (the start script, `$PORT`).
async fn start(dir: &Path, keys: &InstanceKeys, port: u16, created: i64) -> Child {
    let env = must(server_env(&ServerSettings {
        name: "nats-test",
        keys,
        storage: STORAGE,
        max_payload: 1 << 20,
        bind: "127.0.0.1",
        created,
    }));
    let child = must(
        Command::new("sh")
            .arg("-c")
            .arg(queue_broker::START)
            .current_dir(dir)
            .envs(env)
            .env("PORT", port.to_string())
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn(),
    );
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = connect_as(&address, &keys.account, "probe").await
            && c.request_json("$JS.API.INFO", b"")
                .await
                .is_ok_and(|i| i.get("error").is_none())
        {
            return child;
        }
        assert!(Instant::now() < deadline, "nats-server never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(mut child: Child) {
    let _ = child.kill().await;
    let _ = child.wait().await;
}

#[tokio::test]
async fn a_binding_user_works_until_unbound_and_stays_refused_after_a_restart() {
    let dir = must(tempfile::tempdir());
    let keys = InstanceKeys::generate();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let created = now() - 10;
    let server = start(dir.path(), &keys, port, created).await;
    let account = keys.account.public_key();

    // Binding: a signing key of its own in the account's JWT, and a bearer user.
    let signer = KeyPair::new_account();
    let other = KeyPair::new_account();
    let listed = [signer.public_key(), other.public_key()];
    let jwt_with = must(account_jwt(
        &keys,
        "nats-test",
        STORAGE,
        &listed,
        created + 1,
    ));
    must(push_account_jwt(&address, &keys, &jwt_with).await);
    let (user, _) = must(jwt::user(&signer, &account, "binding-a", now()));
    let mut app = must(Connection::connect(&address, &user).await);
    // JetStream through the real protocol: a stream, a message stored, read back.
    let created_stream = must(
        app.request_json(
            "$JS.API.STREAM.CREATE.orders",
            br#"{"name":"orders","subjects":["orders.>"],"storage":"file"}"#,
        )
        .await,
    );
    assert!(created_stream.get("error").is_none(), "{created_stream}");
    let ack = must(app.request_json("orders.new", b"order-1").await);
    assert_eq!(ack["stream"], "orders", "{ack}");
    let got = must(
        app.request_json(
            "$JS.API.STREAM.MSG.GET.orders",
            br#"{"last_by_subj":"orders.new"}"#,
        )
        .await,
    );
    assert_eq!(got["message"]["data"], "b3JkZXItMQ==", "{got}");

    // A user of another instance's account (another operator) is refused outright.
    let stranger = InstanceKeys::generate();
    assert!(
        connect_as(&address, &stranger.account, "stranger")
            .await
            .is_err()
    );

    let info = must(app.request_json("$JS.API.INFO", b"").await);
    assert!(info.get("error").is_none(), "{info}");

    // Unbinding: the account's JWT without the key. The connected user is closed...
    let jwt_without = must(account_jwt(
        &keys,
        "nats-test",
        STORAGE,
        &[other.public_key()],
        created + 2,
    ));
    must(push_account_jwt(&address, &keys, &jwt_without).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if app.request_json("$JS.API.INFO", b"").await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unbound user's connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and refused; the other binding still connects.
    let refused = Connection::connect(&address, &user).await;
    assert!(refused.is_err(), "the unbound user connected again");
    let (kept, _) = must(jwt::user(&other, &account, "binding-b", now()));
    must(Connection::connect(&address, &kept).await);

    // A restart keeps the pushed JWT (the start script does not put the first one
    // back) and the stream's message.
    stop(server).await;
    let server = start(dir.path(), &keys, port, created).await;
    assert!(
        Connection::connect(&address, &user).await.is_err(),
        "the unbound user connected after a restart"
    );
    let mut again = must(Connection::connect(&address, &kept).await);
    let got = must(
        again
            .request_json(
                "$JS.API.STREAM.MSG.GET.orders",
                br#"{"last_by_subj":"orders.new"}"#,
            )
            .await,
    );
    assert_eq!(got["message"]["data"], "b3JkZXItMQ==", "{got}");
    stop(server).await;
}
