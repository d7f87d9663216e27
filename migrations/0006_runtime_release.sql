-- A deleted application stays in the reconciler's view until its runtime confirms
-- that nothing of it runs any more (on Kubernetes, its objects are pruned).
ALTER TABLE applications ADD COLUMN released_at timestamptz;

-- Deleted applications before this migration ran on the local runtime, whose
-- instances table already tracks what remains.
UPDATE applications SET released_at = deleted_at WHERE deleted_at IS NOT NULL;
