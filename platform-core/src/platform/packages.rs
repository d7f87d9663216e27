//! Package archives: uploaded once, named by digest, run by revisions.

use serde_json::json;

use super::{Audit, Platform, record};
use crate::authz::{Permission, TenantAccess};
use crate::model::Package;
use crate::package::{self, MAX_ARCHIVE_BYTES};
use crate::spec::AppSpec;
use crate::{CoreError, FieldError, store};

impl Platform {
    /// Checks and stores an archive. Uploading the same bytes twice is one package.
    pub async fn upload_package(
        &self,
        access: &TenantAccess,
        filename: &str,
        bytes: &[u8],
    ) -> Result<Package, CoreError> {
        access.require(
            Permission::ChangeApps {
                protected_environment: false,
            },
            "upload packages",
        )?;
        let filename = filename.trim();
        if filename.is_empty() || filename.len() > 255 || filename.chars().any(char::is_control) {
            return Err(
                FieldError::new("filename", "must be 1 to 255 printable characters").into(),
            );
        }
        if bytes.len() > MAX_ARCHIVE_BYTES {
            return Err(FieldError::new(
                "package",
                format!("must be at most {} MiB", MAX_ARCHIVE_BYTES / 1024 / 1024),
            )
            .into());
        }
        let summary = package::inspect(bytes).map_err(|e| FieldError::new("package", e.0))?;
        let digest = package::digest_of(bytes);
        let tenant_id = access.tenant().id;
        let mut tx = self.pool.begin().await?;
        let new = store::packages::insert(
            &mut tx,
            store::packages::NewPackage {
                tenant_id,
                digest: &digest,
                filename,
                files: i32::try_from(summary.files).unwrap_or(i32::MAX),
                content: bytes,
                uploaded_by: access.principal().user_id,
            },
        )
        .await?;
        if new {
            record(
                &mut tx,
                access.principal(),
                Audit {
                    tenant_id: Some(tenant_id),
                    action: "package.upload",
                    target_kind: "package",
                    target: &digest,
                    details: json!({"filename": filename, "size_bytes": bytes.len(), "files": summary.files}),
                },
            )
            .await?;
        }
        let stored = store::packages::find(&mut *tx, tenant_id, &digest)
            .await?
            .ok_or_else(|| CoreError::Internal("package vanished after insert".into()))?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn packages(&self, access: &TenantAccess) -> Result<Vec<Package>, CoreError> {
        access.require(Permission::View, "view packages")?;
        Ok(store::packages::list(&self.pool, access.tenant().id).await?)
    }

    /// Refuses a spec that names a package this tenant never uploaded.
    pub(crate) async fn check_package(
        &self,
        access: &TenantAccess,
        spec: &AppSpec,
    ) -> Result<(), CoreError> {
        let Some(digest) = &spec.package else {
            return Ok(());
        };
        match store::packages::find(&self.pool, access.tenant().id, digest).await? {
            Some(_) => Ok(()),
            None => Err(FieldError::new(
                "spec.package",
                format!("no package {digest} was uploaded to this tenant"),
            )
            .into()),
        }
    }
}
