-- Optimistic concurrency for the other objects clients change: users (enabled,
-- password), tenant memberships (role) and tenants (quota). Each row carries a version
-- that moves on whenever the row changes; a change that names the version it was
-- decided on (`If-Match`) is refused with 412 when it moved. A membership removed and
-- added again starts over at version 1. The trigger function is 0013's.

ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1;
CREATE TRIGGER users_version BEFORE UPDATE ON users
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

ALTER TABLE memberships ADD COLUMN version bigint NOT NULL DEFAULT 1;
CREATE TRIGGER memberships_version BEFORE UPDATE ON memberships
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

ALTER TABLE tenants ADD COLUMN version bigint NOT NULL DEFAULT 1;
CREATE TRIGGER tenants_version BEFORE UPDATE ON tenants
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();
