-- Domain bundles installed into environments. A row is the desired state (a bundle
-- at a version); the bundles worker on every control plane converges the environment
-- to it (provisions, onboards, binds; on an upgrade also removes what the new version
-- no longer has) as the user who asked, and removes everything on uninstall.

CREATE TYPE bundle_state AS ENUM ('installing', 'ready', 'uninstalling', 'failed');

CREATE TABLE bundle_installations (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    environment_id uuid NOT NULL REFERENCES environments (id),
    bundle text NOT NULL,
    version text NOT NULL,
    -- The version an upgrade started from (what it removes is what that one had and
    -- this one has not).
    previous_version text,
    state bundle_state NOT NULL,
    -- Why the last pass could not finish, if it could not.
    message text,
    -- Whose rights the worker acts with.
    installed_by uuid NOT NULL REFERENCES users (id),
    claimed_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, bundle)
);

CREATE INDEX bundle_installations_pending ON bundle_installations (state)
    WHERE state IN ('installing', 'uninstalling');
