-- Targeted reconciles: whichever control plane or code path changes what an
-- application should run (its revision, replicas, run state, deletion), or how its
-- instances are doing (readiness and phase, which a rollout waits on), every control
-- plane hears the application's id at commit and reconciles that application at once,
-- without waiting for the next full pass.

CREATE FUNCTION paas_desired_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_desired', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER applications_desired_changed
    AFTER INSERT OR UPDATE OF current_revision, replicas, run_state, deleted_at ON applications
    FOR EACH ROW EXECUTE FUNCTION paas_desired_changed();

CREATE FUNCTION paas_instance_progressed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('paas_desired', OLD.application_id::text);
    ELSIF (NEW.ready, NEW.phase) IS DISTINCT FROM (OLD.ready, OLD.phase) THEN
        PERFORM pg_notify('paas_desired', NEW.application_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_progressed AFTER UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION paas_instance_progressed();

-- A node that joins or changes condition (ready, not ready, lost) may make room for
-- what could not be placed, or call for moves: every runtime gets a full pass.
CREATE FUNCTION paas_nodes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_desired', 'nodes');
    RETURN NULL;
END
$$;

CREATE TRIGGER nodes_joined AFTER INSERT ON nodes
    FOR EACH ROW EXECUTE FUNCTION paas_nodes_changed();

CREATE TRIGGER nodes_condition_changed AFTER UPDATE OF condition ON nodes
    FOR EACH ROW WHEN (OLD.condition IS DISTINCT FROM NEW.condition)
    EXECUTE FUNCTION paas_nodes_changed();
