-- A tenant's applications listed page by page in name order (console and API), so
-- that the first page of a tenant with 10,000 applications reads 50 rows, not 10,000.
CREATE INDEX applications_by_tenant_name ON applications (tenant_id, name) WHERE deleted_at IS NULL;
