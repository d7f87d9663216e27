-- Bindings of service instances to applications. Binding is synchronous (the broker
-- answers with the credentials, which become sealed application secrets of a new
-- revision in the caller's transaction); removing a binding takes the variables out
-- of the application in the caller's transaction and leaves the broker's side to the
-- operations worker (`operation` 'unbind'), as does orphan mitigation of a bind whose
-- outcome is unknown ('mitigate').

CREATE TYPE service_binding_state AS ENUM ('binding', 'bound', 'unbinding', 'failed');
CREATE TYPE service_binding_operation AS ENUM ('unbind', 'mitigate');

CREATE TABLE service_bindings (
    -- Also the binding_id the broker knows it by; never reused.
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    instance_id uuid NOT NULL REFERENCES service_instances (id) ON DELETE CASCADE,
    application_id uuid NOT NULL REFERENCES applications (id),
    -- The variables' prefix: CACHE gives CACHE_URL, CACHE_HOST, ...
    prefix text NOT NULL,
    state service_binding_state NOT NULL,
    -- The variables' names this binding set, for removing them again.
    variables text[] NOT NULL DEFAULT '{}',
    -- The broker's credentials, sealed with the master key (bound to the binding's id).
    credentials_sealed bytea,
    operation service_binding_operation,
    next_attempt_at timestamptz,
    operation_deadline timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    claimed_until timestamptz,
    last_description text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL DEFAULT 1,
    CHECK ((operation IS NULL) = (next_attempt_at IS NULL))
);
CREATE UNIQUE INDEX service_bindings_one_per_app ON service_bindings (instance_id, application_id)
    WHERE state <> 'failed';
CREATE INDEX service_bindings_of_app ON service_bindings (application_id);
CREATE INDEX service_bindings_due ON service_bindings (next_attempt_at) WHERE operation IS NOT NULL;
CREATE TRIGGER service_bindings_version BEFORE UPDATE ON service_bindings
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();
