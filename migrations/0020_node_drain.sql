-- A node being drained: its instances move elsewhere one at a time per application,
-- within each application's disruption budget. A drain cordons the node, and only a
-- cordoned node drains (reads take `draining_since` only while `cordoned`): a control
-- plane of the previous release, which uncordons without knowing this column, ends a
-- drain too.
ALTER TABLE nodes ADD COLUMN draining_since timestamptz;
