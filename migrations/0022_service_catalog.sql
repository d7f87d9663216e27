-- The service catalog: brokers (Open Service Broker API v2.17) that platform
-- administrators register, the plans tenants may use, and the service instances and
-- bindings tenants make through them. The platform is the source of truth for
-- instances and bindings: a row exists from the moment a user asks, and the operations
-- worker (any control plane, one claim at a time) carries each change to the broker,
-- polls it, and cleans up what the broker may have half made (orphan mitigation).

CREATE TABLE service_brokers (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    url text NOT NULL,
    username text NOT NULL,
    -- Sealed with the master key, bound to the broker's id; never returned.
    password_sealed bytea NOT NULL,
    -- The last catalog fetched and validated, as the platform re-serialized it.
    catalog jsonb NOT NULL,
    catalog_fetched_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL DEFAULT 1
);
CREATE TRIGGER service_brokers_version BEFORE UPDATE ON service_brokers
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

-- A plan with rows here is visible to those tenants only; a plan without rows is
-- visible to every tenant.
CREATE TABLE service_plan_access (
    broker_id uuid NOT NULL REFERENCES service_brokers (id) ON DELETE CASCADE,
    plan_id text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (broker_id, plan_id, tenant_id)
);

CREATE TYPE service_instance_state AS ENUM (
    'provisioning', 'ready', 'updating', 'deprovisioning', 'failed'
);

-- What the worker has to do next for an instance.
CREATE TYPE service_operation AS ENUM ('provision', 'update', 'deprovision', 'mitigate');

CREATE TABLE service_instances (
    -- Also the instance_id the broker knows it by; never reused.
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    environment_id uuid NOT NULL REFERENCES environments (id),
    name text NOT NULL,
    broker_id uuid NOT NULL REFERENCES service_brokers (id),
    service_id text NOT NULL,
    plan_id text NOT NULL,
    parameters jsonb NOT NULL DEFAULT '{}',
    state service_instance_state NOT NULL,
    dashboard_url text,
    -- An update waiting for the broker: the plan and parameters it asks for.
    pending jsonb,
    -- The worker's next step: the operation, whether it already got a 202 and polls
    -- (with the broker's operation token), and when to act.
    operation service_operation,
    polling boolean NOT NULL DEFAULT false,
    operation_token text,
    operation_started_at timestamptz,
    -- Past this, polling stops and the operation failed (the plan's
    -- maximum_polling_duration, or the platform's).
    operation_deadline timestamptz,
    next_attempt_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    -- A control plane working on the row holds it until then.
    claimed_until timestamptz,
    -- What the user is told: the last operation and its outcome.
    last_operation text,
    last_state text,
    last_description text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL DEFAULT 1,
    CHECK ((operation IS NULL) = (next_attempt_at IS NULL))
);
CREATE UNIQUE INDEX service_instances_name ON service_instances (environment_id, name);
CREATE INDEX service_instances_by_tenant ON service_instances (tenant_id);
CREATE INDEX service_instances_due ON service_instances (next_attempt_at) WHERE operation IS NOT NULL;
CREATE TRIGGER service_instances_version BEFORE UPDATE ON service_instances
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

-- Tenant quotas count service instances too (NULL: no limit).
ALTER TABLE tenants ADD COLUMN max_service_instances integer CHECK (max_service_instances >= 0);
