-- The trigram index of 0009 also answers `name = ...`, and the planner, trusting its
-- estimate, used it to look up applications by exact name: 2 ms a lookup at 10,000
-- applications (every name shares the trigrams of "app-"), 20 s for one reconcile pass.
-- Search now goes through lower(name), which an equality on name cannot use; it also
-- makes search case-insensitive.
DROP INDEX IF EXISTS applications_name_trigrams;
CREATE INDEX applications_name_search ON applications USING gin (lower(name) gin_trgm_ops) WHERE deleted_at IS NULL;
-- An application by environment and name, deleted ones included (the runtime observes
-- and removes what a deleted application left): without it that lookup read the table.
CREATE INDEX applications_by_environment_name ON applications (environment_id, name);
