-- Foundation: tenants, users, memberships, environments, applications, revisions,
-- signing keys and the append-only audit log.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    slug         text NOT NULL UNIQUE,
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    username       text NOT NULL UNIQUE,
    display_name   text NOT NULL,
    password_hash  text NOT NULL,
    platform_admin boolean NOT NULL DEFAULT false,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    role       text NOT NULL CHECK (role IN ('developer', 'ops', 'tenant_admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

CREATE TABLE environments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    protected   boolean NOT NULL DEFAULT false,
    runtime     text NOT NULL DEFAULT 'local',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE applications (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    environment_id   uuid NOT NULL REFERENCES environments (id),
    name             text NOT NULL,
    description      text NOT NULL DEFAULT '',
    current_revision integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
-- A name is unique among the live applications of an environment; a deleted
-- application keeps its rows (revisions and audit records point at it).
CREATE UNIQUE INDEX applications_live_name ON applications (environment_id, name) WHERE deleted_at IS NULL;
CREATE INDEX applications_by_tenant ON applications (tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE revisions (
    application_id uuid NOT NULL REFERENCES applications (id),
    number         integer NOT NULL CHECK (number >= 1),
    spec           jsonb NOT NULL,
    created_by     uuid REFERENCES users (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, number)
);

-- HS256 signing keys for session tokens. Exactly one key is current (retired_at IS NULL);
-- a retired key still verifies tokens for a bounded overlap after its retirement.
CREATE TABLE signing_keys (
    kid        text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL)) WHERE retired_at IS NULL;

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid REFERENCES tenants (id),
    actor_id    uuid REFERENCES users (id),
    actor       text NOT NULL,
    action      text NOT NULL,
    target_kind text NOT NULL,
    target      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_ip   text
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id DESC);

-- Immutability is enforced by the database itself, not only by the code that writes.
CREATE FUNCTION paas_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION paas_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION paas_refuse_change();
CREATE TRIGGER revisions_immutable BEFORE UPDATE OR DELETE ON revisions
    FOR EACH ROW EXECUTE FUNCTION paas_refuse_change();
CREATE TRIGGER revisions_no_truncate BEFORE TRUNCATE ON revisions
    FOR EACH STATEMENT EXECUTE FUNCTION paas_refuse_change();
