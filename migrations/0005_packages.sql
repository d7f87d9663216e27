-- Uploaded package archives, named by the SHA-256 of their bytes. Immutable: a
-- revision that names a package always runs the same files.
CREATE TABLE packages (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    filename text NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    files integer NOT NULL CHECK (files >= 0),
    content bytea NOT NULL,
    uploaded_by uuid REFERENCES users (id),
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);

CREATE INDEX packages_digest ON packages (digest);

CREATE TRIGGER packages_immutable BEFORE UPDATE ON packages
    FOR EACH ROW EXECUTE FUNCTION paas_refuse_change();
