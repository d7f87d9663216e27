-- Optimistic concurrency: an application carries a version that moves on with every
-- transaction that changes it (spec, description, scale, run state, deletion). Clients
-- send it back in `If-Match` (or the body's `version`) and are refused with 412 when
-- someone else changed the application since they read it.
--
-- The trigger moves the version on when `updated_at` or `deleted_at` changes. Every
-- statement that changes what a client sees sets `updated_at = now()`, and `now()` is
-- the transaction's start, so a transaction that updates the row twice moves the
-- version once. A trigger rather than each statement doing it, so that no change can
-- forget to.
ALTER TABLE applications ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- One trigger function for every versioned table (0014 uses it too).
CREATE FUNCTION paas_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER applications_version
    BEFORE UPDATE ON applications
    FOR EACH ROW
    WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION paas_next_version();
