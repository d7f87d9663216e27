//! Platform administration pages: tenants, users, the platform audit log.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::FieldError;
use platform_core::drain::How;
use platform_core::model::{AuditFilter, Tenant, User};
use platform_core::names::{DisplayName, Password, TenantSlug, Username};
use platform_core::platform::{NewTenant, NewUser};
use serde::Deserialize;

use super::AuditPage;
use super::{FormErrors, Layout, PageError, form_errors, render, render_with_status, see_other};
use crate::session::PageAuth;
use crate::state::AppState;

fn fail(auth: &PageAuth, title: &str) -> impl Fn(platform_core::CoreError) -> PageError {
    let layout = Layout::for_user(&auth.0, title.to_owned(), "");
    move |e| PageError::from(e).within(layout.clone())
}

#[derive(Debug, Default, Deserialize)]
pub struct TenantForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    admin: String,
}

#[derive(Template)]
#[template(path = "admin_tenants.html")]
struct TenantsPage {
    layout: Layout,
    tenants: Vec<Tenant>,
    form: TenantForm,
    errors: FormErrors,
}

async fn tenants_page(
    state: &AppState,
    auth: &PageAuth,
    form: TenantForm,
    errors: FormErrors,
) -> Result<TenantsPage, PageError> {
    Ok(TenantsPage {
        layout: Layout::for_user(&auth.0, "Tenants", "admin-tenants"),
        tenants: state
            .platform
            .all_tenants(&auth.0.principal)
            .await
            .map_err(fail(auth, "Tenants"))?,
        form,
        errors,
    })
}

#[derive(Template)]
#[template(path = "admin_runtimes.html")]
struct RuntimesPage {
    layout: Layout,
    runtimes: Vec<platform_core::platform::RuntimeOverview>,
    /// Each runtime's placement map, by its name.
    maps: std::collections::BTreeMap<String, PlacementMap>,
    notice: Option<String>,
    error: Option<String>,
}

impl RuntimesPage {
    /// How many live instances a node of a runtime still has (a drained node is done
    /// when none is left but its daemons').
    fn on_node(&self, runtime: &str, node: &str) -> usize {
        self.runtimes
            .iter()
            .filter(|r| r.name == runtime)
            .flat_map(|r| &r.placed)
            .filter(|p| p.node == node)
            .count()
    }
}

/// A runtime's placement map as SVG shapes: nodes grouped by zone (a column each), each
/// with its CPU in use as a bar and its instances as cells coloured by application.
/// Coordinates only; names go in as text, escaped by the template.
#[derive(Debug)]
struct PlacementMap {
    width: u32,
    height: u32,
    zones: Vec<(u32, String)>,
    nodes: Vec<NodeBox>,
}

#[derive(Debug)]
struct NodeBox {
    x: u32,
    y: u32,
    height: u32,
    name: String,
    /// `ready`, `cordoned` or the condition: the box's outline.
    state: String,
    /// Width of the CPU bar, and the percentage it shows.
    used: u32,
    percent: u32,
    cells: Vec<MapCell>,
}

#[derive(Debug)]
struct MapCell {
    x: u32,
    y: u32,
    hue: u32,
    ready: bool,
    title: String,
}

const BOX_WIDTH: u32 = 220;
const CELL: u32 = 12;
const PER_ROW: u32 = 16;

impl PlacementMap {
    fn of(r: &platform_core::platform::RuntimeOverview) -> Self {
        let zone_of = |labels: &std::collections::BTreeMap<String, String>| {
            labels
                .get("zone")
                .cloned()
                .unwrap_or_else(|| "no zone".to_owned())
        };
        let mut zones: Vec<String> = r.nodes.iter().map(|n| zone_of(&n.labels)).collect();
        zones.sort();
        zones.dedup();
        let mut column_y: Vec<u32> = vec![28; zones.len()];
        let mut nodes = Vec::new();
        for n in &r.nodes {
            let column = zones
                .iter()
                .position(|z| *z == zone_of(&n.labels))
                .unwrap_or(0);
            let x = 8 + u32::try_from(column).unwrap_or(0) * (BOX_WIDTH + 16);
            let y = column_y[column];
            let mine: Vec<&platform_core::platform::PlacedInstance> =
                r.placed.iter().filter(|p| p.node == n.name).collect();
            let rows = u32::try_from(mine.len())
                .unwrap_or(0)
                .div_ceil(PER_ROW)
                .max(1);
            let height = 44 + rows * (CELL + 2);
            let cells = mine
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let i = u32::try_from(i).unwrap_or(0);
                    let key = format!("{}/{}/{}", p.tenant, p.environment, p.application);
                    let hue = key.bytes().fold(2166136261u32, |h, b| {
                        (h ^ u32::from(b)).wrapping_mul(16777619)
                    }) % 360;
                    MapCell {
                        x: x + 8 + (i % PER_ROW) * (CELL + 1),
                        y: y + 40 + (i / PER_ROW) * (CELL + 2),
                        hue,
                        ready: p.ready,
                        title: format!(
                            "{key}: {}{}",
                            p.instance,
                            if p.ready { "" } else { " (not ready)" }
                        ),
                    }
                })
                .collect();
            let cpu = n.capacity.cpu_millis.max(1);
            let used_cpu = n.allocated.map_or(0, |a| a.cpu_millis).min(cpu);
            let used = (u64::from(BOX_WIDTH - 16) * u64::from(used_cpu) / u64::from(cpu)) as u32;
            nodes.push(NodeBox {
                x,
                y,
                height,
                name: n.name.clone(),
                state: if n.cordoned {
                    "cordoned".to_owned()
                } else if n.healthy {
                    "ready".to_owned()
                } else {
                    n.condition.clone()
                },
                used,
                percent: (u64::from(used_cpu) * 100 / u64::from(cpu)) as u32,
                cells,
            });
            column_y[column] = y + height + 10;
        }
        Self {
            width: 16 + u32::try_from(zones.len()).unwrap_or(0).max(1) * (BOX_WIDTH + 16),
            height: column_y.iter().copied().max().unwrap_or(28) + 8,
            zones: zones
                .into_iter()
                .enumerate()
                .map(|(i, z)| (8 + u32::try_from(i).unwrap_or(0) * (BOX_WIDTH + 16), z))
                .collect(),
            nodes,
        }
    }
}

async fn runtimes_page(
    state: &AppState,
    auth: &PageAuth,
    notice: Option<String>,
    error: Option<String>,
) -> Result<RuntimesPage, PageError> {
    let runtimes = state
        .platform
        .runtime_overview(&auth.0.principal)
        .await
        .map_err(fail(auth, "Runtimes"))?;
    Ok(RuntimesPage {
        layout: Layout::for_user(&auth.0, "Runtimes", "admin-runtimes"),
        maps: runtimes
            .iter()
            .map(|r| (r.name.clone(), PlacementMap::of(r)))
            .collect(),
        runtimes,
        notice,
        error,
    })
}

/// The runtimes this control plane drives and their nodes.
pub async fn runtimes(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&runtimes_page(&state, &auth, None, None).await?)
}

/// Confirms a silent node lost (platform administrators), saying what will move.
pub async fn confirm_node_lost(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (runtime, node) = path.into_inner();
    let outcome = match state
        .platform
        .confirm_node_lost(&auth.0.principal, &runtime, &node)
        .await
    {
        Ok(loss) => {
            let notice = if loss.stateful_moved.is_empty() {
                format!("{node} is confirmed lost: its instances start on other nodes.")
            } else {
                format!(
                    "{node} is confirmed lost: its instances start on other nodes; the stateful ones ({}) from {} on, with empty data directories (their data stays on {node}).",
                    loss.stateful_moved.join(", "),
                    loss.moves_after.format("%H:%M:%S UTC")
                )
            };
            Ok(notice)
        }
        Err(e) => Err(e),
    };
    node_action_page(&state, &auth, outcome).await
}

/// The runtimes page after an action on a node: its notice, or the reason it was
/// refused (409) when the node or runtime refused it.
async fn node_action_page(
    state: &AppState,
    auth: &PageAuth,
    outcome: Result<String, platform_core::CoreError>,
) -> Result<HttpResponse, PageError> {
    match outcome {
        Ok(notice) => render(&runtimes_page(state, auth, Some(notice), None).await?),
        Err(
            e @ (platform_core::CoreError::Conflict { .. }
            | platform_core::CoreError::NotFound { .. }),
        ) => render_with_status(
            &runtimes_page(state, auth, None, Some(e.to_string())).await?,
            StatusCode::CONFLICT,
        ),
        Err(e) => Err(fail(auth, "Runtimes")(e)),
    }
}

/// Cordons or uncordons a node (platform administrators).
pub async fn cordon_node(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (runtime, node, action) = path.into_inner();
    let cordoned = match action.as_str() {
        "cordon" => true,
        "uncordon" => false,
        _ => {
            return Err(fail(&auth, "Runtimes")(
                platform_core::CoreError::not_found("action", action),
            ));
        }
    };
    let outcome = match state
        .platform
        .set_node_cordoned(&auth.0.principal, &runtime, &node, cordoned)
        .await
    {
        Ok(()) => {
            let notice = if cordoned {
                format!("{node} is cordoned: it takes no new instances; what runs there stays.")
            } else {
                format!("{node} is uncordoned: it takes new instances again.")
            };
            Ok(notice)
        }
        Err(e) => Err(e),
    };
    node_action_page(&state, &auth, outcome).await
}

/// The drain form: `force` drains even when some application cannot move.
#[derive(Debug, Deserialize)]
pub struct DrainForm {
    #[serde(default)]
    force: String,
}

/// Drains a node (platform administrators): refused with the reason per application
/// when the drain could not finish, unless forced.
pub async fn drain_node(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
    form: Form<DrainForm>,
) -> Result<HttpResponse, PageError> {
    let (runtime, node) = path.into_inner();
    let force = form.force == "true";
    let outcome = match state
        .platform
        .drain_node(&auth.0.principal, &runtime, &node, false, force)
        .await
    {
        Ok(plan) => {
            let moving: u32 = plan
                .moves
                .iter()
                .filter(|m| matches!(m.how, How::ReplacementFirst | How::StopsFirst))
                .map(|m| m.instances)
                .sum();
            let mut notice = format!(
                "{node} is draining: {moving} instance{} move{} elsewhere, one at a time per application.",
                if moving == 1 { "" } else { "s" },
                if moving == 1 { "s" } else { "" },
            );
            if !plan.feasible {
                notice.push_str(&format!(
                    " Forced: these stay and say why: {}",
                    plan.blocked()
                ));
            }
            Ok(notice)
        }
        Err(e) => Err(e),
    };
    match outcome {
        Err(e @ platform_core::CoreError::Infeasible { .. }) => render_with_status(
            &runtimes_page(&state, &auth, None, Some(e.to_string())).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        other => node_action_page(&state, &auth, other).await,
    }
}

pub async fn tenants(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&tenants_page(&state, &auth, TenantForm::default(), FormErrors::none()).await?)
}

pub async fn create_tenant(
    state: Data<AppState>,
    auth: PageAuth,
    form: Form<TenantForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let parsed = (|| {
        Ok::<_, FieldError>(NewTenant {
            slug: TenantSlug::parse(form.slug.trim())?,
            display_name: DisplayName::parse(&form.display_name)?,
            admin: Some(form.admin.trim())
                .filter(|a| !a.is_empty())
                .map(Username::parse)
                .transpose()
                .map_err(|e| e.for_field("admin"))?,
        })
    })();
    let result = match parsed {
        Ok(input) => state
            .platform
            .create_tenant(&auth.0.principal, input)
            .await
            .map(|_| ()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other("/admin/tenants")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Tenants", "admin-tenants")))?;
            render_with_status(
                &tenants_page(&state, &auth, form, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    platform_admin: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<User>,
    form: UserForm,
    errors: FormErrors,
}

async fn users_page(
    state: &AppState,
    auth: &PageAuth,
    form: UserForm,
    errors: FormErrors,
) -> Result<UsersPage, PageError> {
    Ok(UsersPage {
        layout: Layout::for_user(&auth.0, "Users", "admin-users"),
        users: state
            .platform
            .users(&auth.0.principal)
            .await
            .map_err(fail(auth, "Users"))?,
        // The password is never echoed back into the page.
        form: UserForm {
            password: String::new(),
            ..form
        },
        errors,
    })
}

pub async fn users(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&users_page(&state, &auth, UserForm::default(), FormErrors::none()).await?)
}

pub async fn create_user(
    state: Data<AppState>,
    auth: PageAuth,
    form: Form<UserForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let parsed = (|| {
        Ok::<_, FieldError>(NewUser {
            username: Username::parse(form.username.trim())?,
            display_name: DisplayName::parse(&form.display_name)?,
            password: Password::parse_new(&form.password)?,
            platform_admin: form.platform_admin,
        })
    })();
    let result = match parsed {
        Ok(input) => state
            .platform
            .create_user(&auth.0.principal, input)
            .await
            .map(|_| ()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other("/admin/users")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Users", "admin-users")))?;
            render_with_status(
                &users_page(&state, &auth, form, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

pub async fn set_user_state(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let (username, action) = path.into_inner();
    let version = form
        .version()
        .map_err(|e| PageError::from(platform_core::CoreError::from(e)))?;
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(PageError::not_found()),
    };
    match state
        .platform
        .set_user_disabled(&auth.0.principal, &username, disabled, version)
        .await
    {
        Ok(_) => Ok(see_other("/admin/users")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Users", "admin-users")))?;
            render_with_status(
                &users_page(&state, &auth, UserForm::default(), errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

pub async fn audit(
    state: Data<AppState>,
    auth: PageAuth,
    filter: Query<AuditFilter>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let entries = state
        .platform
        .platform_audit(&auth.0.principal, &filter)
        .await
        .map_err(fail(&auth, "Platform audit"))?;
    let page = AuditPage::new(
        Layout::for_user(&auth.0, "Platform audit", "admin-audit"),
        "Platform".to_owned(),
        "/admin/audit".to_owned(),
        &filter,
        entries,
    );
    page.respond(&req)
}

#[cfg(test)]
mod tests {
    use platform_core::platform::{PlacedInstance, RuntimeOverview};
    use platform_core::runtime::Node;
    use platform_core::spec::Resources;

    use super::*;

    fn node(name: &str, zone: &str, used: u32, cordoned: bool) -> Node {
        Node {
            name: name.into(),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            capacity: Resources {
                cpu_millis: 1000,
                memory_mib: 1024,
            },
            allocated: Some(Resources {
                cpu_millis: used,
                memory_mib: 0,
            }),
            healthy: true,
            cordoned,
            draining: false,
            condition: "ready".into(),
            message: None,
            last_seen: None,
        }
    }

    #[test]
    fn the_placement_map_puts_each_zone_in_a_column_and_each_instance_in_a_cell() {
        let placed = |node: &'static str, app: &'static str, n: usize| {
            (0..n).map(move |i| PlacedInstance {
                node: node.into(),
                tenant: "acme".into(),
                environment: "dev".into(),
                application: app.into(),
                instance: format!("{app}-{i}"),
                ready: i > 0,
            })
        };
        let overview = RuntimeOverview {
            name: "local".into(),
            nodes: vec![
                node("n1", "a", 500, false),
                node("n2", "b", 0, true),
                node("n3", "a", 1000, false),
            ],
            events: Vec::new(),
            error: None,
            placed: placed("n1", "web", 20)
                .chain(placed("n2", "db", 1))
                .collect(),
        };
        let map = PlacementMap::of(&overview);
        assert_eq!(
            map.zones
                .iter()
                .map(|(_, z)| z.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let by_name = |n: &str| map.nodes.iter().find(|b| b.name == n);
        let (n1, n2, n3) = (by_name("n1"), by_name("n2"), by_name("n3"));
        let (Some(n1), Some(n2), Some(n3)) = (n1, n2, n3) else {
            panic!("{map:?}");
        };
        // Zone a's two nodes share a column, one below the other; zone b is beside.
        assert_eq!(n1.x, n3.x);
        assert!(n3.y > n1.y);
        assert!(n2.x > n1.x);
        // Twenty cells wrap onto a second row; the bar shows the CPU requested.
        assert_eq!(n1.cells.len(), 20);
        assert!(n1.cells[16].y > n1.cells[0].y);
        assert_eq!((n1.percent, n3.percent), (50, 100));
        assert_eq!(n2.state, "cordoned");
        // One application, one colour; the first instance is not ready.
        assert!(n1.cells.iter().all(|c| c.hue == n1.cells[0].hue));
        assert!(!n1.cells[0].ready && n1.cells[1].ready);
        assert!(map.height > n3.y + n3.height);
    }
}
