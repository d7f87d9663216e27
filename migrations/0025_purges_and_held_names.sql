-- A deleted application's files on the nodes of the local runtime (a stateful
-- ordinal's data directory, its logs, the ports it kept) are removed by each node's
-- agent: one row per node and deleted application, sent with the node's assignments
-- until its agent acknowledges it, then deleted.
CREATE TABLE local_purges (
    node text NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    application_id uuid NOT NULL REFERENCES applications (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, application_id)
);

CREATE FUNCTION paas_purges_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_runtime', 'node:' || NEW.node);
    RETURN NULL;
END
$$;

CREATE TRIGGER local_purges_added AFTER INSERT ON local_purges
    FOR EACH ROW EXECUTE FUNCTION paas_purges_added();

-- A deleted application's name stays taken until its runtime has released it: the
-- drivers find a workload by its names, so the removal of the deleted one must not
-- meet a new one of the same name. Where that already happened (it could before
-- this migration), the newer application keeps the name and the older ones count as
-- released, which lets the index be built.
UPDATE applications SET released_at = now()
 WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (
            PARTITION BY environment_id, name ORDER BY deleted_at DESC NULLS FIRST) AS n
        FROM applications WHERE released_at IS NULL) ranked
    WHERE n > 1);

CREATE UNIQUE INDEX applications_held_name ON applications (environment_id, name)
    WHERE released_at IS NULL;
DROP INDEX applications_live_name;
