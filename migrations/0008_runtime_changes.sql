-- Change notifications for the local runtime's long polls: whichever control plane or
-- code path changes what a node runs or what the router routes, every control plane
-- hears of it (NOTIFY is delivered at commit, once per distinct payload per
-- transaction) and answers the agents and routers waiting for it.

CREATE FUNCTION paas_instances_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('paas_runtime', 'node:' || NEW.node);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('paas_runtime', 'node:' || OLD.node);
        IF OLD.ready THEN
            PERFORM pg_notify('paas_runtime', 'routes');
        END IF;
    ELSE
        IF NEW.desired IS DISTINCT FROM OLD.desired OR NEW.node IS DISTINCT FROM OLD.node THEN
            PERFORM pg_notify('paas_runtime', 'node:' || NEW.node);
            PERFORM pg_notify('paas_runtime', 'node:' || OLD.node);
        END IF;
        IF (NEW.ready, NEW.port, NEW.ports, NEW.desired, NEW.node)
           IS DISTINCT FROM (OLD.ready, OLD.port, OLD.ports, OLD.desired, OLD.node) THEN
            PERFORM pg_notify('paas_runtime', 'routes');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_changed AFTER INSERT OR UPDATE OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION paas_instances_changed();

CREATE FUNCTION paas_routes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_runtime', 'routes');
    RETURN NULL;
END
$$;

-- A node's condition or address decides whether its instances are backends or
-- fallbacks; a router port or an application's deletion changes the table itself.
CREATE TRIGGER nodes_changed AFTER UPDATE ON nodes
    FOR EACH ROW
    WHEN ((OLD.condition, OLD.confirmed_lost_at, OLD.address)
          IS DISTINCT FROM (NEW.condition, NEW.confirmed_lost_at, NEW.address))
    EXECUTE FUNCTION paas_routes_changed();
CREATE TRIGGER router_ports_changed AFTER INSERT OR UPDATE OR DELETE ON router_ports
    FOR EACH ROW EXECUTE FUNCTION paas_routes_changed();
CREATE TRIGGER applications_deleted AFTER UPDATE ON applications
    FOR EACH ROW WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION paas_routes_changed();
