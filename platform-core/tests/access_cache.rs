//! The access cache against a real PostgreSQL: sessions and environments served from
//! memory stay exactly as fresh as the database for the control plane that changes
//! them, and become so for every other control plane as soon as it hears the change.

use std::time::Duration;

use platform_core::Platform;
use platform_core::auth::TokenConfig;
use platform_core::authz::Principal;
use platform_core::model::Role;
use platform_core::names::{DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::platform::{AuthFailure, NewEnvironment, NewTenant, NewUser, Session};
use sqlx::PgPool;
use tokio::sync::watch;

const PASSWORD: &str = "a long enough password";

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

/// Two control planes on one database, each following the access notifications:
/// `root` is a platform admin, `alice` a developer and `tom` the admin of `acme`.
struct Planes {
    a: Platform,
    b: Platform,
    root: Principal,
    _stop: watch::Sender<bool>,
}

impl Planes {
    async fn new(pool: PgPool) -> Self {
        let master = must(platform_core::sealing::MasterKey::generate()).0;
        let a = must(Platform::start(pool.clone(), TokenConfig::default(), master.clone()).await);
        let b = must(Platform::start(pool, TokenConfig::default(), master).await);
        let (stop, stopped) = watch::channel(false);
        for p in [&a, &b] {
            let (p, stopped) = (p.clone(), stopped.clone());
            tokio::spawn(async move { p.follow_access_changes(stopped).await });
        }
        for p in [&a, &b] {
            eventually("the access notifications are heard", || async {
                p.serves_access_from_memory()
            })
            .await;
        }
        let password = must(Password::parse_new(PASSWORD));
        assert!(must(a.bootstrap_admin("root", &password).await));
        let root = must(a.login("root", PASSWORD, None).await).principal;
        for user in ["alice", "tom"] {
            let input = NewUser {
                username: must(Username::parse(user)),
                display_name: must(DisplayName::parse(user)),
                password: must(Password::parse_new(PASSWORD)),
                platform_admin: false,
            };
            must(a.create_user(&root, input).await);
        }
        let input = NewTenant {
            slug: must(TenantSlug::parse("acme")),
            display_name: must(DisplayName::parse("Acme")),
            admin: Some(must(Username::parse("tom"))),
        };
        must(a.create_tenant(&root, input).await);
        let planes = Self {
            a,
            b,
            root,
            _stop: stop,
        };
        let acme = planes.acme_as("tom").await;
        must(
            planes
                .a
                .set_member_role(&acme, "alice", Role::Developer, None)
                .await,
        );
        planes
    }

    async fn session(&self, user: &str) -> Session {
        must(self.a.login(user, PASSWORD, None).await)
    }

    async fn acme_as(&self, user: &str) -> platform_core::authz::TenantAccess {
        let who = self.session(user).await.principal;
        must(self.a.tenant(&who, "acme").await)
    }
}

/// Waits up to five seconds for `check` to hold.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 5 s");
}

/// Authenticates `token` on `p` twice, so that the second answer comes from memory
/// when the first was kept.
async fn warm(p: &Platform, token: &str) -> Principal {
    must(p.authenticate(token, None).await);
    must(p.authenticate(token, None).await).0
}

#[sqlx::test(migrations = "../migrations")]
async fn the_control_plane_that_ends_a_session_refuses_it_on_the_very_next_request(pool: PgPool) {
    let planes = Planes::new(pool).await;
    let p = &planes.a;

    // Logged out.
    let first = planes.session("alice").await;
    warm(p, &first.token).await;
    must(p.logout(&first.principal, &first.claims).await);
    assert!(matches!(
        p.authenticate(&first.token, None).await,
        Err(AuthFailure::LoggedOut)
    ));

    // Removed from the tenant.
    let second = planes.session("alice").await;
    assert!(warm(p, &second.token).await.membership("acme").is_some());
    let acme = planes.acme_as("tom").await;
    must(p.remove_member(&acme, "alice", None).await);
    assert!(matches!(
        p.authenticate(&second.token, None).await,
        Err(AuthFailure::Superseded)
    ));

    // A new environment is listed at once.
    let acme = planes.acme_as("tom").await;
    let before = must(p.environments(&acme).await);
    let input = NewEnvironment {
        name: must(EnvName::parse("staging")),
        description: String::new(),
        protected: false,
        runtime: None,
    };
    must(p.create_environment(&acme, input).await);
    let after = must(p.environments(&acme).await);
    assert_eq!(after.len(), before.len() + 1);
    assert!(after.iter().any(|e| e.name == "staging"));

    // Disabled.
    let third = planes.session("tom").await;
    warm(p, &third.token).await;
    must(p.set_user_disabled(&planes.root, "tom", true, None).await);
    assert!(p.authenticate(&third.token, None).await.is_err());
}

#[sqlx::test(migrations = "../migrations")]
async fn another_control_plane_refuses_a_session_ended_elsewhere_once_it_hears_of_it(pool: PgPool) {
    let planes = Planes::new(pool).await;
    let alice = planes.session("alice").await;
    assert!(
        warm(&planes.b, &alice.token)
            .await
            .membership("acme")
            .is_some()
    );
    let tom = planes.session("tom").await.principal;
    let acme_b = must(planes.b.tenant(&tom, "acme").await);
    let listed = must(planes.b.environments(&acme_b).await).len();

    // Through the other control plane: alice leaves acme, and acme gets an environment.
    let acme = planes.acme_as("tom").await;
    must(planes.a.remove_member(&acme, "alice", None).await);
    let input = NewEnvironment {
        name: must(EnvName::parse("staging")),
        description: String::new(),
        protected: false,
        runtime: None,
    };
    must(planes.a.create_environment(&acme, input).await);

    eventually("alice's session is refused on the other plane", || async {
        planes.b.authenticate(&alice.token, None).await.is_err()
    })
    .await;
    eventually(
        "the new environment is listed on the other plane",
        || async { must(planes.b.environments(&acme_b).await).len() == listed + 1 },
    )
    .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cached_session_is_forgotten_when_the_notifications_are_lost(pool: PgPool) {
    let planes = Planes::new(pool.clone()).await;
    let alice = planes.session("alice").await;
    assert_eq!(warm(&planes.b, &alice.token).await.display_name, "alice");

    // A change no notification tells of (triggers off for this connection): the
    // session is served from memory, so the old name stands.
    let mut conn = must(pool.acquire().await);
    must(
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut *conn)
            .await,
    );
    must(
        sqlx::query("UPDATE users SET display_name = 'Alice A.' WHERE username = 'alice'")
            .execute(&mut *conn)
            .await,
    );
    must(
        sqlx::query("SET session_replication_role = origin")
            .execute(&mut *conn)
            .await,
    );
    drop(conn);
    assert_eq!(warm(&planes.b, &alice.token).await.display_name, "alice");

    // Every listening connection is cut (PostgreSQL restarted, a proxy dropped them):
    // what was held is forgotten, and the database answers again.
    let cut: Vec<i32> = must(
        sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .fetch_all(&pool)
        .await,
    );
    assert!(cut.len() >= 2, "both planes listen: {cut:?}");
    eventually(
        "the new name is read once the notifications were lost",
        || async {
            must(planes.b.authenticate(&alice.token, None).await)
                .0
                .display_name
                == "Alice A."
        },
    )
    .await;
    eventually("the notifications are heard again", || async {
        planes.b.serves_access_from_memory()
    })
    .await;
}
