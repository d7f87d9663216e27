-- What the instances that should run on each node request, kept as they change, so
-- that placing an instance reads 500 rows instead of summing every instance.
-- Every change takes the placement lock (the advisory lock placement holds while it
-- decides), which serializes the writers of these rows: placement already holds it,
-- and a path that stops instances takes it after its application's lock, the order
-- placement takes them in.
CREATE TABLE node_requests (
    node text PRIMARY KEY,
    cpu_millis bigint NOT NULL DEFAULT 0,
    memory_mib bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION paas_node_requests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_run boolean := TG_OP <> 'INSERT' AND OLD.desired = 'run';
    is_run boolean := TG_OP <> 'DELETE' AND NEW.desired = 'run';
BEGIN
    IF TG_OP = 'UPDATE' AND was_run = is_run
       AND (NOT is_run OR (OLD.node, OLD.cpu_request, OLD.memory_request)
                      IS NOT DISTINCT FROM (NEW.node, NEW.cpu_request, NEW.memory_request)) THEN
        RETURN NULL;
    END IF;
    IF NOT was_run AND NOT is_run THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(727001);
    IF was_run THEN
        UPDATE node_requests SET cpu_millis = cpu_millis - OLD.cpu_request,
                                 memory_mib = memory_mib - OLD.memory_request
         WHERE node = OLD.node;
    END IF;
    IF is_run THEN
        INSERT INTO node_requests AS r (node, cpu_millis, memory_mib)
             VALUES (NEW.node, NEW.cpu_request, NEW.memory_request)
        ON CONFLICT (node) DO UPDATE SET cpu_millis = r.cpu_millis + EXCLUDED.cpu_millis,
                                         memory_mib = r.memory_mib + EXCLUDED.memory_mib;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_requests AFTER INSERT OR UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION paas_node_requests();

-- What runs already (the trigger's table lock holds writers off until this commits).
INSERT INTO node_requests (node, cpu_millis, memory_mib)
SELECT node, sum(cpu_request), sum(memory_request)
  FROM instances WHERE desired = 'run' GROUP BY node;
