-- A cordoned node takes no new instances (what runs there stays): a platform
-- administrator's word before maintenance.
ALTER TABLE nodes ADD COLUMN cordoned boolean NOT NULL DEFAULT false;
