-- A tenant's applications listed page by page in name order (console and API), so
-- that the first page of a tenant with 10,000 applications reads 50 rows, not 10,000;
-- and searched by a part of their name through a trigram index (pg_trgm is a trusted
-- extension: the database's owner may create it).
CREATE INDEX applications_by_tenant_name ON applications (tenant_id, name) WHERE deleted_at IS NULL;
DROP INDEX IF EXISTS applications_by_tenant;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX applications_name_trigrams ON applications USING gin (name gin_trgm_ops) WHERE deleted_at IS NULL;
