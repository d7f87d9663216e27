-- The runtime's view of the world: nodes, the instances placed on them, and the events
-- an application's page shows.

-- Whether an application should run at all (stop/start keep its replicas and revision).
ALTER TABLE applications ADD COLUMN run_state text NOT NULL DEFAULT 'running'
    CHECK (run_state IN ('running', 'stopped'));
-- Replicas set by scaling (manual now, autoscaling later); NULL means the spec's.
ALTER TABLE applications ADD COLUMN replicas integer CHECK (replicas >= 0);

-- Nodes register themselves and heartbeat; a node silent for long is unhealthy.
CREATE TABLE nodes (
    name           text PRIMARY KEY,
    labels         jsonb NOT NULL DEFAULT '{}'::jsonb,
    cpu_millis     integer NOT NULL,
    memory_mib     integer NOT NULL,
    address        text NOT NULL,
    api_port       integer NOT NULL DEFAULT 0,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);

-- One row per instance the core wants, placed on a node. `desired` is the core's
-- decision; the observed columns are the agent's last report.
CREATE TABLE instances (
    id             uuid PRIMARY KEY,
    application_id uuid NOT NULL REFERENCES applications (id),
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    revision       integer NOT NULL,
    ordinal        integer,
    name           text NOT NULL,
    node           text NOT NULL REFERENCES nodes (name),
    desired        text NOT NULL DEFAULT 'run' CHECK (desired IN ('run', 'stop')),
    cpu_request    integer NOT NULL,
    memory_request integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    phase          text NOT NULL DEFAULT 'pending',
    ready          boolean NOT NULL DEFAULT false,
    restarts       integer NOT NULL DEFAULT 0,
    port           integer,
    message        text,
    cpu_millis     integer,
    memory_mib     integer,
    observed_at    timestamptz
);
CREATE INDEX instances_by_application ON instances (application_id);
CREATE INDEX instances_by_node ON instances (node);
CREATE UNIQUE INDEX instances_one_per_ordinal ON instances (application_id, ordinal) WHERE ordinal IS NOT NULL AND desired = 'run';

-- What happened to an application's instances, newest last.
CREATE TABLE app_events (
    id             bigserial PRIMARY KEY,
    application_id uuid NOT NULL REFERENCES applications (id),
    at             timestamptz NOT NULL DEFAULT now(),
    instance       text,
    reason         text NOT NULL,
    message        text NOT NULL
);
CREATE INDEX app_events_by_application ON app_events (application_id, id DESC);
