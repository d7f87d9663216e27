-- Releases: moving an application from the revision that runs to a new one, by a
-- strategy, behind the environment's approval policy and freeze windows.
--
-- `applications.current_revision` stays the newest spec anyone asked for;
-- `applications.released_revision` is the revision that runs when no release is
-- moving the application (the last one a release finished on). While a release
-- progresses, the reconciler runs its `to_revision` beside `from_revision` by the
-- release's strategy; when it succeeds `released_revision` becomes `to_revision`, and
-- when it is aborted or rolled back the reconciler converges back on
-- `released_revision`.

ALTER TABLE applications ADD COLUMN released_revision integer;
UPDATE applications SET released_revision = current_revision;
ALTER TABLE applications ALTER COLUMN released_revision SET NOT NULL;

-- Per environment: who approves, freeze windows and the default strategy. An
-- environment without a row has the default (protected: one ops approval; others:
-- none).
CREATE TABLE release_policies (
    environment_id uuid PRIMARY KEY REFERENCES environments (id),
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    policy jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER release_policies_version BEFORE UPDATE ON release_policies
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

CREATE TYPE release_state AS ENUM (
    'pending_approval', 'approved', 'progressing', 'paused',
    'succeeded', 'aborted', 'rolled_back', 'failed', 'rejected', 'expired'
);

CREATE TABLE releases (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    application_id uuid NOT NULL REFERENCES applications (id),
    from_revision integer NOT NULL,
    to_revision integer NOT NULL,
    -- change, restart, secrets, rollback, promotion
    cause text NOT NULL,
    strategy jsonb NOT NULL,
    state release_state NOT NULL,
    -- Why the release is where it is (waits for a freeze, rolled back because ...).
    reason text NOT NULL DEFAULT '',
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- Distinct usernames that approved it.
    approvals text[] NOT NULL DEFAULT '{}',
    started_at timestamptz,
    ended_at timestamptz,
    -- The last shape the reconciler asked for: instances of each revision.
    progress jsonb NOT NULL DEFAULT '{}',
    version bigint NOT NULL DEFAULT 1,
    CHECK (from_revision <> to_revision)
);
-- At most one release moves an application at a time.
CREATE UNIQUE INDEX releases_one_open ON releases (application_id)
    WHERE state IN ('pending_approval', 'approved', 'progressing', 'paused');
CREATE INDEX releases_by_application ON releases (application_id, id DESC);
CREATE INDEX releases_by_tenant_state ON releases (tenant_id, state, id DESC);
CREATE TRIGGER releases_version BEFORE UPDATE ON releases
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.approvals IS DISTINCT FROM NEW.approvals)
    EXECUTE FUNCTION paas_next_version();

-- A release that starts, stops or moves changes what the application should run: its
-- control planes reconcile it at once.
CREATE FUNCTION paas_release_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_desired', NEW.application_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER releases_desired_changed AFTER INSERT OR UPDATE OF state ON releases
    FOR EACH ROW EXECUTE FUNCTION paas_release_changed();

-- Each release's timeline: every action with who and why, every step the reconciler
-- took. Append-only like the audit log.
CREATE TABLE release_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    release_id bigint NOT NULL REFERENCES releases (id),
    at timestamptz NOT NULL DEFAULT now(),
    -- The person, or NULL for the platform.
    actor text,
    kind text NOT NULL,
    message text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX release_events_by_release ON release_events (release_id, id);
CREATE TRIGGER release_events_append_only BEFORE UPDATE OR DELETE ON release_events
    FOR EACH ROW EXECUTE FUNCTION paas_refuse_change();
CREATE TRIGGER release_events_no_truncate BEFORE TRUNCATE ON release_events
    FOR EACH STATEMENT EXECUTE FUNCTION paas_refuse_change();
