-- Autoscaling: one policy per application (versioned like the application itself), and
-- the decision ledger, append-only like the audit log: every evaluation that changed
-- the count, or that something held away from what the metrics asked, with its inputs
-- and every clamp in order.

CREATE TABLE autoscaling_policies (
    application_id uuid PRIMARY KEY REFERENCES applications (id),
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    policy jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX autoscaling_policies_tenant ON autoscaling_policies (tenant_id);
CREATE TRIGGER autoscaling_policies_version BEFORE UPDATE ON autoscaling_policies
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION paas_next_version();

CREATE TABLE autoscaling_decisions (
    id bigserial PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    application_id uuid NOT NULL REFERENCES applications (id),
    at timestamptz NOT NULL,
    previous integer NOT NULL,
    desired integer NOT NULL,
    -- Whether the count was written (false: held, or the application changed under the
    -- evaluator and the decision was dropped).
    applied boolean NOT NULL,
    reason text NOT NULL,
    decision jsonb NOT NULL
);
CREATE INDEX autoscaling_decisions_application ON autoscaling_decisions (application_id, id DESC);
CREATE TRIGGER autoscaling_decisions_append_only BEFORE UPDATE OR DELETE ON autoscaling_decisions
    FOR EACH ROW EXECUTE FUNCTION paas_refuse_change();
CREATE TRIGGER autoscaling_decisions_no_truncate BEFORE TRUNCATE ON autoscaling_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION paas_refuse_change();

-- When someone last set the count by hand: autoscaling leaves it alone for the policy's
-- cooldown after that.
ALTER TABLE applications ADD COLUMN scaled_by_hand_at timestamptz;
