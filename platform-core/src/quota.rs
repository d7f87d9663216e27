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
    pub max_instances: Option<u32>,
    pub max_cpu_millis: Option<u32>,
    pub max_memory_mib: Option<u32>,
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
    use super::*;

    #[test]
    fn the_first_exceeded_limit_is_named_with_figures() {
        let quota = Quota {
            max_instances: Some(4),
            max_cpu_millis: Some(1000),
            max_memory_mib: None,
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
}
