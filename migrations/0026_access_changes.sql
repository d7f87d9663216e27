-- The access cache: each control plane holds sessions' users (with their memberships
-- and tenants) and tenants' environments in memory while it hears of every change to
-- them, whichever control plane or code path made it. A row changed in one of these
-- tables notifies `paas_access` at commit (one notification per transaction: PostgreSQL
-- folds identical ones), and every control plane forgets what it holds.

CREATE FUNCTION paas_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paas_access', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_access_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION paas_access_changed();
CREATE TRIGGER memberships_access_changed AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION paas_access_changed();
CREATE TRIGGER tenants_access_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION paas_access_changed();
CREATE TRIGGER revoked_sessions_access_changed AFTER INSERT OR UPDATE OR DELETE ON revoked_sessions
    FOR EACH ROW EXECUTE FUNCTION paas_access_changed();
CREATE TRIGGER environments_access_changed AFTER INSERT OR UPDATE OR DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION paas_access_changed();
