-- A node being drained: cordoned, and its instances move elsewhere one at a time
-- per application within each application's disruption budget. Uncordoning ends it.
ALTER TABLE nodes ADD COLUMN draining_since timestamptz;
ALTER TABLE nodes ADD CONSTRAINT nodes_draining_is_cordoned
    CHECK (draining_since IS NULL OR cordoned);
