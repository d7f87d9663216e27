-- Canary releases and in-place releases.
--
-- A canary release keeps where it is (its step, since when, its analysis so far) with
-- the release: `releases.canary`, null for other strategies. The canary clock and a
-- person's "continue" change it; a step that changes touches the application so that
-- its control planes reconcile the new shape at once.
ALTER TABLE releases ADD COLUMN canary jsonb;

-- The local runtime's traffic splits: while a canary step gives a revision a weight,
-- the router sends that percent of the application's requests to that revision's
-- instances and the rest to the others'. No row: traffic follows the instances.
CREATE TABLE traffic_splits (
    application_id uuid PRIMARY KEY REFERENCES applications (id) ON DELETE CASCADE,
    revision integer NOT NULL,
    -- Percent of the requests (an instance-count step's is its instances' share).
    weight integer NOT NULL CHECK (weight BETWEEN 0 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER traffic_splits_changed AFTER INSERT OR UPDATE OR DELETE ON traffic_splits
    FOR EACH ROW EXECUTE FUNCTION paas_routes_changed();
