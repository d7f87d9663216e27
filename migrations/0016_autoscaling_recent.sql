-- The tenant dashboard asks which applications the autoscaler moved lately: the
-- ledger's rows of one tenant by time.
CREATE INDEX autoscaling_decisions_tenant_at ON autoscaling_decisions (tenant_id, at DESC);
