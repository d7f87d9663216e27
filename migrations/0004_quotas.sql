-- Per-tenant quotas on what its running applications may ask for. NULL is unlimited.
ALTER TABLE tenants ADD COLUMN max_instances integer CHECK (max_instances >= 0);
ALTER TABLE tenants ADD COLUMN max_cpu_millis integer CHECK (max_cpu_millis >= 0);
ALTER TABLE tenants ADD COLUMN max_memory_mib integer CHECK (max_memory_mib >= 0);
