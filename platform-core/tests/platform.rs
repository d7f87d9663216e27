//! The core against a real PostgreSQL: one fresh database per test (`sqlx::test`
//! creates it from `DATABASE_URL` and applies the migrations).

use std::time::Duration;

use platform_core::auth::TokenConfig;
use platform_core::authz::Principal;
use platform_core::model::{AuditFilter, Role};
use platform_core::names::{AppName, DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::platform::{
    AuthFailure, NewApplication, NewEnvironment, NewTenant, NewUser, Session,
};
use platform_core::spec::AppSpec;
use platform_core::{CoreError, Platform};
use sqlx::PgPool;

const PASSWORD: &str = "a long enough password";

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn master() -> platform_core::sealing::MasterKey {
    must(platform_core::sealing::MasterKey::generate()).0
}

fn spec(command: &str) -> AppSpec {
    must(serde_json::from_value(
        serde_json::json!({"command": command}),
    ))
}

/// A platform with an admin, tenants `acme` and `globex`, and `alice` (developer in
/// acme), `olga` (ops in acme), `tom` (tenant admin in acme), `gary` (admin of globex).
struct World {
    platform: Platform,
    admin: Principal,
}

impl World {
    async fn new(pool: PgPool) -> Self {
        let platform = must(Platform::start(pool, TokenConfig::default(), master()).await);
        let password = must(Password::parse_new(PASSWORD));
        assert!(must(platform.bootstrap_admin("root", &password).await));
        let admin = must(platform.login("root", PASSWORD, Some("127.0.0.1")).await).principal;
        let world = Self { platform, admin };
        for user in ["alice", "olga", "tom", "gary"] {
            world.create_user(user).await;
        }
        world.create_tenant("acme", "tom").await;
        world.create_tenant("globex", "gary").await;
        let tom = world.login("tom").await;
        let acme = must(world.platform.tenant(&tom, "acme").await);
        must(
            world
                .platform
                .set_member_role(&acme, "alice", Role::Developer, None)
                .await,
        );
        must(
            world
                .platform
                .set_member_role(&acme, "olga", Role::Ops, None)
                .await,
        );
        world
    }

    async fn create_user(&self, name: &str) {
        let input = NewUser {
            username: must(Username::parse(name)),
            display_name: must(DisplayName::parse(name)),
            password: must(Password::parse_new(PASSWORD)),
            platform_admin: false,
        };
        must(self.platform.create_user(&self.admin, input).await);
    }

    async fn create_tenant(&self, slug: &str, admin: &str) {
        let input = NewTenant {
            slug: must(TenantSlug::parse(slug)),
            display_name: must(DisplayName::parse(slug)),
            admin: Some(must(Username::parse(admin))),
        };
        must(self.platform.create_tenant(&self.admin, input).await);
    }

    async fn session(&self, user: &str) -> Session {
        must(self.platform.login(user, PASSWORD, Some("10.1.2.3")).await)
    }

    async fn login(&self, user: &str) -> Principal {
        self.session(user).await.principal
    }

    async fn create_app(
        &self,
        user: &str,
        tenant: &str,
        env: &str,
        name: &str,
    ) -> Result<(), CoreError> {
        let who = self.login(user).await;
        let access = self.platform.tenant(&who, tenant).await?;
        let input = NewApplication {
            environment: must(EnvName::parse(env)),
            name: must(AppName::parse(name)),
            description: String::new(),
            spec: spec("web"),
        };
        self.platform
            .create_application(&access, input)
            .await
            .map(|_| ())
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_new_tenant_gets_dev_test_and_prod_with_prod_protected(pool: PgPool) {
    let world = World::new(pool).await;
    let tom = world.login("tom").await;
    let acme = must(world.platform.tenant(&tom, "acme").await);
    let envs = must(world.platform.environments(&acme).await);
    let shape: Vec<(&str, bool)> = envs
        .iter()
        .map(|e| (e.name.as_str(), e.protected))
        .collect();
    assert_eq!(shape, [("dev", false), ("test", false), ("prod", true)]);
}

#[sqlx::test(migrations = "../migrations")]
async fn another_tenants_objects_are_not_found(pool: PgPool) {
    let world = World::new(pool).await;
    must(
        world
            .create_app("gary", "globex", "dev", "secret-app")
            .await,
    );
    let alice = world.login("alice").await;
    // Not a member of globex: the tenant itself is "not found", like one that does not exist.
    let err = world.platform.tenant(&alice, "globex").await.err();
    assert!(
        matches!(err, Some(CoreError::NotFound { kind: "tenant", .. })),
        "{err:?}"
    );
    // Within her own tenant, the other tenant's app name does not resolve either.
    let acme = must(world.platform.tenant(&alice, "acme").await);
    let err = world
        .platform
        .application(&acme, "dev", "secret-app")
        .await
        .err();
    assert!(matches!(err, Some(CoreError::NotFound { .. })), "{err:?}");
    // A principal's memberships and platform role cannot be set outside the core (the
    // fields are private), so one cannot be forged to open another tenant.
}

#[sqlx::test(migrations = "../migrations")]
async fn developers_cannot_change_protected_environments_but_ops_can(pool: PgPool) {
    let world = World::new(pool).await;
    must(world.create_app("alice", "acme", "dev", "web").await);
    let err = world.create_app("alice", "acme", "prod", "web").await.err();
    assert!(matches!(err, Some(CoreError::Forbidden { .. })), "{err:?}");
    must(world.create_app("olga", "acme", "prod", "web").await);
    // Developers cannot manage members or read the audit log; ops can read it.
    let alice = world.login("alice").await;
    let acme = must(world.platform.tenant(&alice, "acme").await);
    assert!(matches!(
        world
            .platform
            .set_member_role(&acme, "alice", Role::TenantAdmin, None)
            .await,
        Err(CoreError::Forbidden { .. })
    ));
    assert!(matches!(
        world
            .platform
            .tenant_audit(&acme, &AuditFilter::default())
            .await,
        Err(CoreError::Forbidden { .. })
    ));
    let olga = world.login("olga").await;
    let acme = must(world.platform.tenant(&olga, "acme").await);
    assert!(
        world
            .platform
            .tenant_audit(&acme, &AuditFilter::default())
            .await
            .is_ok()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn every_spec_change_is_a_new_revision_and_the_same_spec_is_a_no_op(pool: PgPool) {
    let world = World::new(pool).await;
    must(world.create_app("alice", "acme", "dev", "web").await);
    let alice = world.login("alice").await;
    let acme = must(world.platform.tenant(&alice, "acme").await);
    let mut changed = spec("web");
    changed.replicas = 3;
    let detail = must(
        world
            .platform
            .update_application(&acme, "dev", "web", changed.clone(), None, None)
            .await,
    );
    assert_eq!(detail.application.current_revision, 2);
    let again = must(
        world
            .platform
            .update_application(&acme, "dev", "web", changed, None, None)
            .await,
    );
    assert_eq!(
        again.application.current_revision, 2,
        "applying the same spec twice is idempotent"
    );
    let revisions = must(world.platform.revisions(&acme, "dev", "web").await);
    let shape: Vec<(i32, u32)> = revisions
        .iter()
        .map(|r| (r.number, r.spec.replicas))
        .collect();
    assert_eq!(shape, [(2, 3), (1, 1)]);
}

#[sqlx::test(migrations = "../migrations")]
async fn revisions_and_the_audit_log_refuse_updates_and_deletes(pool: PgPool) {
    let world = World::new(pool.clone()).await;
    must(world.create_app("alice", "acme", "dev", "web").await);
    for sql in [
        "UPDATE revisions SET spec = '{}'",
        "DELETE FROM revisions",
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("append-only")),
            "{sql} was allowed"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refused_change_leaves_no_audit_record_and_an_accepted_one_leaves_exactly_one(
    pool: PgPool,
) {
    let world = World::new(pool.clone()).await;
    let count = |action: &'static str| {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = must(
                sqlx::query_as("SELECT count(*) FROM audit_log WHERE action = $1")
                    .bind(action)
                    .fetch_one(&pool)
                    .await,
            );
            n
        }
    };
    must(world.create_app("alice", "acme", "dev", "web").await);
    assert_eq!(count("application.create").await, 1);
    // A duplicate name is a conflict, and its transaction (app row and audit) rolls back.
    let err = world.create_app("alice", "acme", "dev", "web").await.err();
    assert!(
        matches!(err, Some(CoreError::Conflict { field: "name", .. })),
        "{err:?}"
    );
    assert_eq!(count("application.create").await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_last_tenant_admin_cannot_be_removed_or_demoted(pool: PgPool) {
    let world = World::new(pool).await;
    let tom = world.login("tom").await;
    let acme = must(world.platform.tenant(&tom, "acme").await);
    let err = world
        .platform
        .set_member_role(&acme, "tom", Role::Developer, None)
        .await
        .err();
    assert!(
        matches!(&err, Some(CoreError::Invalid(e)) if e.field == "role"),
        "{err:?}"
    );
    assert!(
        world
            .platform
            .remove_member(&acme, "tom", None)
            .await
            .is_err()
    );
    // With a second admin, the first may step down.
    must(
        world
            .platform
            .set_member_role(&acme, "olga", Role::TenantAdmin, None)
            .await,
    );
    must(
        world
            .platform
            .set_member_role(&acme, "tom", Role::Developer, None)
            .await,
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn removing_a_member_closes_the_tenant_to_them_at_once(pool: PgPool) {
    let world = World::new(pool).await;
    let alice = world.session("alice").await;
    let tom = world.login("tom").await;
    let acme = must(world.platform.tenant(&tom, "acme").await);
    must(world.platform.remove_member(&acme, "alice", None).await);
    // The sessions she had end with the membership (their tokens name her roles).
    assert!(matches!(
        world.platform.authenticate(&alice.token, None).await,
        Err(AuthFailure::Superseded)
    ));
    // Signed in again, her principal no longer holds acme.
    let alice = world.login("alice").await;
    assert!(alice.membership("acme").is_none());
    assert!(matches!(
        world.platform.tenant(&alice, "acme").await,
        Err(CoreError::NotFound { .. })
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn login_fails_alike_for_unknown_users_wrong_passwords_and_disabled_accounts(pool: PgPool) {
    let world = World::new(pool).await;
    let p = &world.platform;
    assert!(matches!(
        p.login("nobody", PASSWORD, None).await,
        Err(CoreError::InvalidCredentials)
    ));
    assert!(matches!(
        p.login("alice", "wrong password!", None).await,
        Err(CoreError::InvalidCredentials)
    ));
    let session = world.session("alice").await;
    must(p.set_user_disabled(&world.admin, "alice", true, None).await);
    assert!(matches!(
        p.login("alice", PASSWORD, None).await,
        Err(CoreError::InvalidCredentials)
    ));
    // The disabled user's existing token stops working too, and re-enabling the account
    // does not bring it back; a new login works.
    assert!(p.authenticate(&session.token, None).await.is_err());
    must(
        p.set_user_disabled(&world.admin, "alice", false, None)
            .await,
    );
    assert!(matches!(
        p.authenticate(&session.token, None).await,
        Err(AuthFailure::Superseded)
    ));
    let again = world.session("alice").await;
    assert!(p.authenticate(&again.token, None).await.is_ok());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rotated_key_keeps_verifying_old_tokens_for_the_overlap_only(pool: PgPool) {
    let config = TokenConfig {
        ttl: Duration::from_secs(60),
        key_overlap: Duration::from_secs(60),
        ..TokenConfig::default()
    };
    let platform = must(Platform::start(pool.clone(), config, master()).await);
    let password = must(Password::parse_new(PASSWORD));
    must(platform.bootstrap_admin("root", &password).await);
    let old = must(platform.login("root", PASSWORD, None).await);
    let old_kid = platform.tokens().current_kid();
    let admin = old.principal.clone();
    let new_kid = must(platform.rotate_signing_key(&admin).await);
    assert_ne!(Some(new_kid.clone()), old_kid);
    assert_eq!(platform.tokens().current_kid(), Some(new_kid));
    assert!(
        platform.authenticate(&old.token, None).await.is_ok(),
        "old token verifies during the overlap"
    );
    // Move the retirement into the past beyond the overlap: the old key stops verifying.
    must(sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '2 minutes' WHERE retired_at IS NOT NULL").execute(&pool).await);
    must(platform.tokens().refresh().await);
    assert!(
        platform.authenticate(&old.token, None).await.is_err(),
        "old token refused after the overlap"
    );
    let fresh = must(platform.login("root", PASSWORD, None).await);
    assert!(platform.authenticate(&fresh.token, None).await.is_ok());
}

#[sqlx::test(migrations = "../migrations")]
async fn environments_are_unique_per_tenant_but_names_repeat_across_tenants(pool: PgPool) {
    let world = World::new(pool).await;
    for (user, tenant) in [("tom", "acme"), ("gary", "globex")] {
        let who = world.login(user).await;
        let access = must(world.platform.tenant(&who, tenant).await);
        let input = NewEnvironment {
            name: must(EnvName::parse("staging")),
            description: String::new(),
            protected: true,
            runtime: None,
        };
        must(
            world
                .platform
                .create_environment(&access, input.clone())
                .await,
        );
        let err = world
            .platform
            .create_environment(&access, input)
            .await
            .err();
        assert!(
            matches!(err, Some(CoreError::Conflict { field: "name", .. })),
            "{err:?}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_demo_bootstrap_runs_once(pool: PgPool) {
    let platform = must(Platform::start(pool, TokenConfig::default(), master()).await);
    let accounts = must(platform.bootstrap_demo().await);
    let names: Vec<&str> = accounts.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, ["admin", "dev", "ops", "tadmin"]);
    assert!(
        must(platform.bootstrap_demo().await).is_empty(),
        "second start creates nothing"
    );
    for a in &accounts {
        let session = must(platform.login(&a.username, a.password.expose(), None).await);
        assert_eq!(
            session.principal.is_platform_admin(),
            a.role == "platform_admin"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_application_in_a_missing_environment_is_a_field_error(pool: PgPool) {
    let world = World::new(pool).await;
    let err = world
        .create_app("alice", "acme", "nowhere", "web")
        .await
        .err();
    assert!(
        matches!(&err, Some(CoreError::Invalid(e)) if e.field == "environment"),
        "{err:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_logged_out_session_is_refused_even_before_it_expires(pool: PgPool) {
    let world = World::new(pool).await;
    let first = world.session("alice").await;
    let second = world.session("alice").await;
    must(world.platform.logout(&first.principal, &first.claims).await);
    assert!(
        world
            .platform
            .authenticate(&first.token, None)
            .await
            .is_err()
    );
    // Only that session ended; another one of the same user goes on.
    assert!(
        world
            .platform
            .authenticate(&second.token, None)
            .await
            .is_ok()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_secret_is_write_only_sealed_and_makes_a_revision_that_runs_with_it(pool: PgPool) {
    use platform_core::sealing::SecretValue;
    let world = World::new(pool.clone()).await;
    must(world.create_app("alice", "acme", "dev", "web").await);
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    let value = "s3cr3t-value-that-must-never-leak";
    let info = must(
        world
            .platform
            .set_secret(
                &access,
                "dev",
                "web",
                "DB_PASSWORD",
                SecretValue::new(value.into()),
                None,
            )
            .await,
    );
    assert_eq!((info.name.as_str(), info.version), ("DB_PASSWORD", 1));
    // A new revision runs with it; the spec is the same.
    let revisions = must(world.platform.revisions(&access, "dev", "web").await);
    assert_eq!(revisions[0].number, 2);
    assert_eq!(revisions[0].secrets, ["DB_PASSWORD"]);
    assert_eq!(revisions[0].spec, revisions[1].spec);
    // Changing it is a new version and a new revision; the old revision keeps v1.
    must(
        world
            .platform
            .set_secret(
                &access,
                "dev",
                "web",
                "DB_PASSWORD",
                SecretValue::new("v2".into()),
                None,
            )
            .await,
    );
    let app_id: (uuid::Uuid,) = must(
        sqlx::query_as("SELECT id FROM applications WHERE name = 'web'")
            .fetch_one(&pool)
            .await,
    );
    let of = |revision: i32| {
        let (pool, master) = (pool.clone(), world.platform.master_key().clone());
        async move {
            let versions: (serde_json::Value,) = must(
                sqlx::query_as(
                    "SELECT secrets FROM revisions WHERE application_id = $1 AND number = $2",
                )
                .bind(app_id.0)
                .bind(revision)
                .fetch_one(&pool)
                .await,
            );
            must(
                platform_core::platform::secrets::of_revision(
                    &pool,
                    &master,
                    app_id.0,
                    &versions.0,
                )
                .await,
            )
        }
    };
    assert_eq!(of(2).await["DB_PASSWORD"].expose(), value);
    assert_eq!(of(3).await["DB_PASSWORD"].expose(), "v2");
    // Nowhere in the database in clear: not in secrets, revisions or the audit log.
    let leaked: (i64,) = must(
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM app_secrets WHERE position($1::bytea IN sealed) > 0)
                  + (SELECT count(*) FROM revisions WHERE secrets::text LIKE '%' || $2 || '%' OR spec::text LIKE '%' || $2 || '%')
                  + (SELECT count(*) FROM audit_log WHERE details::text LIKE '%' || $2 || '%')",
        )
        .bind(value.as_bytes())
        .bind(value)
        .fetch_one(&pool)
        .await,
    );
    assert_eq!(leaked.0, 0);
    let audit: Vec<(String, serde_json::Value)> = must(
        sqlx::query_as("SELECT action, details FROM audit_log WHERE action LIKE 'application.secret%' ORDER BY id")
            .fetch_all(&pool)
            .await,
    );
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].1["secret"], "DB_PASSWORD");
    // A plain variable cannot share the name, either way round.
    let mut with_env = spec("web");
    with_env.env.insert("DB_PASSWORD".into(), "plain".into());
    let refused = world
        .platform
        .update_application(&access, "dev", "web", with_env, None, None)
        .await;
    assert!(
        matches!(refused, Err(CoreError::Invalid(ref f)) if f.field == "spec.env.DB_PASSWORD"),
        "{refused:?}"
    );
    // Removing it is a revision without it; removing it again is not found.
    must(
        world
            .platform
            .delete_secret(&access, "dev", "web", "DB_PASSWORD", None)
            .await,
    );
    assert!(must(world.platform.secrets(&access, "dev", "web").await).is_empty());
    let again = world
        .platform
        .delete_secret(&access, "dev", "web", "DB_PASSWORD", None)
        .await;
    assert!(
        matches!(again, Err(CoreError::NotFound { .. })),
        "{again:?}"
    );
    // Bad names and values name the field.
    let bad = world
        .platform
        .set_secret(
            &access,
            "dev",
            "web",
            "1BAD",
            SecretValue::new("x".into()),
            None,
        )
        .await;
    assert!(
        matches!(bad, Err(CoreError::Invalid(ref f)) if f.field == "name"),
        "{bad:?}"
    );
    let nul = world
        .platform
        .set_secret(
            &access,
            "dev",
            "web",
            "OK",
            SecretValue::new("a\0b".into()),
            None,
        )
        .await;
    assert!(
        matches!(nul, Err(CoreError::Invalid(ref f)) if f.field == "value"),
        "{nul:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn signing_keys_are_sealed_at_rest_and_a_plaintext_key_of_an_earlier_release_is_sealed_at_start(
    pool: PgPool,
) {
    must(
        sqlx::query("INSERT INTO signing_keys (kid, secret) VALUES ('old', '\\x0102030405060708090a0b0c0d0e0f10'::bytea)")
            .execute(&pool)
            .await,
    );
    let key = master();
    let platform = must(Platform::start(pool.clone(), TokenConfig::default(), key.clone()).await);
    let plaintext: (i64,) = must(
        sqlx::query_as(
            "SELECT count(*) FROM signing_keys WHERE secret IS NOT NULL OR sealed IS NULL",
        )
        .fetch_one(&pool)
        .await,
    );
    assert_eq!(plaintext.0, 0);
    drop(platform);
    // The same key opens them again; another does not, and says so.
    must(Platform::start(pool.clone(), TokenConfig::default(), key).await);
    let wrong = Platform::start(pool, TokenConfig::default(), master()).await;
    let message = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("does not open with this master key"),
        "{message}"
    );
}
