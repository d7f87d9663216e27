//! The live panel of an application page: its instances, URL and events, refreshed
//! by htmx.

use askama::Template;
use platform_core::CoreError;
use platform_core::authz::TenantAccess;
use platform_core::model::AppEvent;
use platform_core::runtime::{Instance, Phase};
use platform_core::spec::PortProtocol;

use crate::state::AppState;

/// An instance as the console shows it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub name: String,
    pub revision: i32,
    pub node: Option<String>,
    pub address: Option<String>,
    pub phase: &'static str,
    pub phase_class: &'static str,
    pub ready: bool,
    pub restarts: u32,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
    pub message: Option<String>,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        let (phase, phase_class) = match i.phase {
            Phase::Pending => ("pending", ""),
            Phase::Starting => ("starting", "warn"),
            Phase::Running => ("running", "ok"),
            Phase::BackOff => ("crash-loop back-off", "off"),
            Phase::Stopping => ("stopping", ""),
            Phase::Succeeded => ("succeeded", "ok"),
            Phase::Failed => ("failed", "off"),
            Phase::Unknown => ("unknown", "warn"),
        };
        Self {
            name: i.name,
            revision: i.revision,
            node: i.node,
            address: i.address,
            phase,
            phase_class,
            ready: i.ready,
            restarts: i.restarts,
            cpu_millis: i.cpu_millis,
            memory_mib: i.memory_mib,
            message: i.message,
        }
    }
}

/// The live part of an application page, refreshed every two seconds by htmx.
#[derive(Debug, Clone)]
pub struct LivePanel {
    pub running: bool,
    pub desired: u32,
    pub ready: usize,
    pub serves_http: bool,
    pub url: Option<String>,
    pub path_url: Option<String>,
    pub instances: Vec<InstanceView>,
    pub events: Vec<AppEvent>,
    /// Stable addresses (TCP ports, per ordinal of a stateful application).
    pub endpoints: Vec<platform_core::runtime::Endpoint>,
    /// `Available`, `Progressing`, `Degraded`.
    pub conditions: Vec<platform_core::conditions::Condition>,
}

pub async fn live_panel(
    state: &AppState,
    access: &TenantAccess,
    env: &str,
    name: &str,
) -> Result<LivePanel, CoreError> {
    let detail = state.platform.application(access, env, name).await?;
    let instances = state.platform.instances(access, env, name).await?;
    let events = state.platform.events(access, env, name, 30).await?;
    let endpoints = state.platform.endpoints(access, env, name).await?;
    let conditions = platform_core::Platform::conditions_of(&detail, &instances, &events);
    let app = &detail.application;
    let running = app.run_state == platform_core::model::RunState::Running;
    let desired =
        platform_core::model::desired_replicas(app.run_state, app.scaled_replicas, &detail.spec);
    let ready = instances.iter().filter(|i| i.ready).count();
    let serves_http = detail
        .spec
        .ports
        .iter()
        .any(|p| p.protocol == PortProtocol::Http);
    let router = state
        .config
        .router_url
        .as_deref()
        .filter(|_| serves_http && ready > 0);
    let tenant = &access.tenant().slug;
    let url = router.map(|r| {
        let port = r
            .rsplit_once(':')
            .map_or("80", |(_, p)| p.trim_end_matches('/'));
        format!(
            "http://{}.{}.{}.localhost:{port}/",
            app.name, app.environment, tenant
        )
    });
    let path_url = router.map(|r| {
        format!(
            "{}/apps/{tenant}/{}/{}/",
            r.trim_end_matches('/'),
            app.environment,
            app.name
        )
    });
    Ok(LivePanel {
        running,
        desired,
        ready,
        serves_http,
        url,
        path_url,
        instances: instances.into_iter().map(InstanceView::from).collect(),
        events,
        endpoints,
        conditions,
    })
}

#[derive(Template)]
#[template(path = "_live.html")]
pub(super) struct LiveFragment {
    pub(super) live: LivePanel,
    pub(super) base: String,
}
