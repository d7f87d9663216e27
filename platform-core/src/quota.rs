//! Tenant quotas: a change that would make the tenant's running applications ask for
//! more instances, CPU or memory than its quota is refused with a message saying how
//! much it needs and how much the quota allows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::AppSpec;

/// Limits on a tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_instances: Option<u32>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_cpu_millis: Option<u32>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_memory_mib: Option<u32>,
    /// Service instances from the catalog, in every environment.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_service_instances: Option<u32>,
}

impl Quota {
    /// The largest limit a quota holds (the store's integer).
    pub const MAX_LIMIT: u32 = i32::MAX as u32;

    /// Refuses a limit the store cannot hold, naming it.
    pub fn check(&self) -> Result<(), crate::FieldError> {
        for (field, value) in [
            ("max_instances", self.max_instances),
            ("max_cpu_millis", self.max_cpu_millis),
            ("max_memory_mib", self.max_memory_mib),
            ("max_service_instances", self.max_service_instances),
        ] {
            if value.is_some_and(|v| v > Self::MAX_LIMIT) {
                return Err(crate::FieldError::new(
                    field,
                    format!("must be at most {}", Self::MAX_LIMIT),
                ));
            }
        }
        Ok(())
    }
}

/// What running applications ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Usage {
    pub instances: u64,
    pub cpu_millis: u64,
    pub memory_mib: u64,
}

impl Usage {
    /// The demand of one application running `replicas` instances of `spec`.
    pub fn of(spec: &AppSpec, replicas: u32) -> Self {
        if spec.kind == crate::spec::WorkloadKind::Cronjob {
            return Self::default();
        }
        let n = u64::from(replicas);
        Self {
            instances: n,
            cpu_millis: n * u64::from(spec.resources.cpu_millis),
            memory_mib: n * u64::from(spec.resources.memory_mib),
        }
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            instances: self.instances + other.instances,
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_mib: self.memory_mib + other.memory_mib,
        }
    }
}

impl Quota {
    /// How many instances costing `each` fit beside `others` (the rest of the tenant);
    /// `None` when no limit bounds them.
    pub fn room(&self, others: Usage, each: Usage) -> Option<u32> {
        [
            (self.max_instances, others.instances, 1),
            (self.max_cpu_millis, others.cpu_millis, each.cpu_millis),
            (self.max_memory_mib, others.memory_mib, each.memory_mib),
        ]
        .into_iter()
        .filter_map(|(limit, used, per)| {
            let left = u64::from(limit?).saturating_sub(used);
            (per > 0).then(|| u32::try_from(left / per).unwrap_or(u32::MAX))
        })
        .min()
    }

    /// The first limit `usage` exceeds, as a sentence.
    pub fn exceeded_by(&self, usage: Usage) -> Option<String> {
        let checks = [
            ("instances", usage.instances, self.max_instances, ""),
            ("CPU", usage.cpu_millis, self.max_cpu_millis, "m"),
            ("memory", usage.memory_mib, self.max_memory_mib, " MiB"),
        ];
        checks.into_iter().find_map(|(what, used, limit, unit)| {
            let limit = u64::from(limit?);
            (used > limit).then(|| {
                format!("this change would bring the tenant to {used}{unit} of {what}; its quota allows {limit}{unit}")
            })
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_schema_states_the_largest_limit_a_quota_holds() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Quota::schema()).unwrap_or_default();
        for field in ["max_instances", "max_cpu_millis", "max_memory_mib"] {
            assert_eq!(
                schema["properties"][field]["maximum"],
                Quota::MAX_LIMIT,
                "{field}"
            );
        }
        let over = Quota {
            max_cpu_millis: Some(Quota::MAX_LIMIT + 1),
            ..Quota::default()
        };
        assert_eq!(
            over.check().err().map(|e| e.field),
            Some("max_cpu_millis".into())
        );
        let at = Quota {
            max_memory_mib: Some(Quota::MAX_LIMIT),
            ..Quota::default()
        };
        assert!(at.check().is_ok());
    }

    use super::*;

    #[test]
    fn the_first_exceeded_limit_is_named_with_figures() {
        let quota = Quota {
            max_instances: Some(4),
            max_cpu_millis: Some(1000),
            max_memory_mib: None,
            max_service_instances: None,
        };
        let usage = |instances, cpu_millis| Usage {
            instances,
            cpu_millis,
            memory_mib: 99_999,
        };
        assert_eq!(quota.exceeded_by(usage(4, 1000)), None);
        assert_eq!(
            quota.exceeded_by(usage(5, 500)).as_deref(),
            Some("this change would bring the tenant to 5 of instances; its quota allows 4")
        );
        assert_eq!(
            quota.exceeded_by(usage(2, 1200)).as_deref(),
            Some("this change would bring the tenant to 1200m of CPU; its quota allows 1000m")
        );
        assert_eq!(Quota::default().exceeded_by(usage(1000, 1_000_000)), None);
    }

    #[test]
    fn the_room_an_application_has_is_set_by_the_tightest_limit() {
        let each = Usage {
            instances: 1,
            cpu_millis: 250,
            memory_mib: 128,
        };
        let others = Usage {
            instances: 3,
            cpu_millis: 500,
            memory_mib: 256,
        };
        assert_eq!(Quota::default().room(others, each), None);
        let quota = Quota {
            max_instances: Some(10),
            max_cpu_millis: Some(2000),
            max_memory_mib: None,
            max_service_instances: None,
        };
        // Instances leave 7, CPU leaves (2000 - 500) / 250 = 6.
        assert_eq!(quota.room(others, each), Some(6));
        let full = Quota {
            max_instances: Some(2),
            ..Quota::default()
        };
        assert_eq!(full.room(others, each), Some(0));
    }
}
