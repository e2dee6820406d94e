#![doc = include_str!("../README.md")]
#![recursion_limit = "256"]

mod error;
mod events;
mod extract;
mod host;
mod local_files;
mod metrics;
mod notifications;
pub mod openapi;
mod render;
mod resolve;
mod serve;
mod status;
mod storages;
mod webhooks;

use std::sync::Arc;

use axum::routing::{get, post, MethodRouter};
use axum::Router;
use storage_core::host::HostStore;
use storage_core::persist::{Authenticator, ProjectAccess, StorageRepository};
use storage_core::webhooks::WebhookRepository;
use storage_core::{Backend, Backends, EndpointPolicy, SyncService};

pub use error::{ApiError, ApiResult, VERSION};
pub use events::ApiEventRenderer;
pub use extract::Authenticated;
pub use metrics::{MetricsAccess, MetricsToken};
pub use status::LABEL_STUDIO_API_VERSION;

/// What the routes need: the sync service (with its repository and
/// backends, local files' serving rule included), access rules,
/// authentication and, optionally, the host store.
///
/// The `with_*` methods work on any state, a cloned one included: a state
/// shared with a router is copied, not changed, so configuring never panics
/// and never alters a router already built.
#[derive(Debug, Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    sync: SyncService,
    access: Arc<dyn ProjectAccess>,
    auth: Arc<dyn Authenticator>,
    host: Option<Arc<dyn HostStore>>,
    max_body_bytes: usize,
    max_label_config_bytes: usize,
    url_base: String,
    metrics: MetricsAccess,
    /// Users who may read what spans organisations (`/metrics`).
    administrators: Vec<i64>,
    webhooks: Option<Arc<dyn WebhookRepository>>,
    endpoint_policy: EndpointPolicy,
}

impl ApiState {
    /// State for the storage routes.
    pub fn new(
        sync: SyncService,
        access: Arc<dyn ProjectAccess>,
        auth: Arc<dyn Authenticator>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sync,
                access,
                auth,
                host: None,
                max_body_bytes: 64 * 1024 * 1024,
                max_label_config_bytes: 1024 * 1024,
                url_base: String::new(),
                metrics: MetricsAccess::default(),
                administrators: Vec::new(),
                webhooks: None,
                endpoint_policy: EndpointPolicy::strict(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Adds the host store used by [`host_router`].
    pub fn with_host(mut self, host: Arc<dyn HostStore>) -> Self {
        self.inner_mut().host = Some(host);
        self
    }

    /// The largest accepted request body (default 64 MiB).
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.inner_mut().max_body_bytes = bytes;
        self
    }

    /// The largest accepted `label_config` of a project (default 1 MiB):
    /// it is parsed on every project read.
    pub fn with_max_label_config_bytes(mut self, bytes: usize) -> Self {
        self.inner_mut().max_label_config_bytes = bytes;
        self
    }

    /// The absolute base of URLs this server writes into task data
    /// (Label Studio's `HOST`); empty (the default) gives relative URLs.
    pub fn with_url_base(mut self, base: impl Into<String>) -> Self {
        self.inner_mut().url_base = base.into().trim_end_matches('/').to_string();
        self
    }

    /// Who may read `GET /metrics` (default: administrators); see
    /// [`MetricsAccess`].
    pub fn with_metrics(mut self, access: MetricsAccess) -> Self {
        self.inner_mut().metrics = access;
        self
    }

    /// The users (ids) trusted with what spans organisations: the
    /// deployment's `/metrics` (default: none).
    pub fn with_administrators(mut self, users: impl IntoIterator<Item = i64>) -> Self {
        self.inner_mut().administrators = users.into_iter().collect();
        self
    }

    /// Serves the webhook routes over `webhooks`; without it they answer
    /// 404.
    pub fn with_webhooks(mut self, webhooks: Arc<dyn WebhookRepository>) -> Self {
        self.inner_mut().webhooks = Some(webhooks);
        self
    }

    /// The addresses user-given URLs may point to (webhook URLs; the
    /// validation report fetches signed URLs under it): the policy of
    /// storage endpoints. Default: [`EndpointPolicy::strict`].
    pub fn with_endpoint_policy(mut self, policy: EndpointPolicy) -> Self {
        self.inner_mut().endpoint_policy = policy;
        self
    }

    pub(crate) fn webhooks(&self) -> Option<&Arc<dyn WebhookRepository>> {
        self.inner.webhooks.as_ref()
    }

    pub(crate) fn endpoint_policy(&self) -> EndpointPolicy {
        self.inner.endpoint_policy
    }

    pub(crate) fn is_administrator(&self, user: i64) -> bool {
        self.inner.administrators.contains(&user)
    }

    pub(crate) fn metrics_access(&self) -> &MetricsAccess {
        &self.inner.metrics
    }

    pub(crate) fn url_base(&self) -> &str {
        &self.inner.url_base
    }

    pub(crate) fn sync(&self) -> &SyncService {
        &self.inner.sync
    }

    pub(crate) fn storages(&self) -> &Arc<dyn StorageRepository> {
        self.inner.sync.storages()
    }

    pub(crate) fn backends(&self) -> &Backends {
        self.inner.sync.backends()
    }

    pub(crate) fn backend(&self, name: &str) -> ApiResult<&Arc<dyn Backend>> {
        self.backends().get(name).ok_or_else(ApiError::not_found)
    }

    pub(crate) fn access(&self) -> &Arc<dyn ProjectAccess> {
        &self.inner.access
    }

    pub(crate) fn auth(&self) -> &Arc<dyn Authenticator> {
        &self.inner.auth
    }

    pub(crate) fn host(&self) -> Option<&Arc<dyn HostStore>> {
        self.inner.host.as_ref()
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    pub(crate) fn max_label_config_bytes(&self) -> usize {
        self.inner.max_label_config_bytes
    }
}

/// Routes `path` and `path/` (Label Studio accepts both spellings).
fn both(router: Router<ApiState>, path: &str, methods: MethodRouter<ApiState>) -> Router<ApiState> {
    let trimmed = path.trim_end_matches('/');
    router
        .route(trimmed, methods.clone())
        .route(&format!("{trimmed}/"), methods)
}

/// The storage routes of Label Studio (`/api/storages/...`), the URI
/// resolver (`/tasks/{id}/resolve/`, `/projects/{id}/resolve/` and the
/// `/presign/` aliases), `/data/local-files/` and, unless
/// [`MetricsAccess::Disabled`], Prometheus' `/metrics`, ready to `merge` or
/// `nest` into a host app.
///
/// ```no_run
/// # fn make_state() -> storage_api::ApiState { unimplemented!() }
/// let app: axum::Router = axum::Router::new().merge(storage_api::router(make_state()));
/// ```
pub fn router<S>(state: ApiState) -> Router<S> {
    use storages::*;
    let mut r = Router::new();
    r = both(r, "/api/storages/types", get(types));
    r = both(r, "/api/storages/export/types", get(types));
    r = both(r, "/api/storages", get(list_all::<false>));
    r = both(r, "/api/storages/export", get(list_all::<true>));
    r = both(
        r,
        "/api/storages/{storage_type}",
        get(list::<false>).post(create::<false>),
    );
    r = both(
        r,
        "/api/storages/export/{storage_type}",
        get(list::<true>).post(create::<true>),
    );
    r = both(
        r,
        "/api/storages/{storage_type}/validate",
        post(validate::<false>),
    );
    r = both(
        r,
        "/api/storages/export/{storage_type}/validate",
        post(validate::<true>),
    );
    r = both(r, "/api/storages/{storage_type}/files", post(files));
    r = both(
        r,
        "/api/storages/{storage_type}/{id}",
        get(detail::<false>)
            .patch(patch::<false>)
            .delete(remove::<false>),
    );
    r = both(
        r,
        "/api/storages/export/{storage_type}/{id}",
        get(detail::<true>)
            .patch(patch::<true>)
            .delete(remove::<true>),
    );
    r = both(
        r,
        "/api/storages/{storage_type}/{id}/sync",
        post(sync::<false>),
    );
    r = both(
        r,
        "/api/storages/export/{storage_type}/{id}/sync",
        post(sync::<true>),
    );
    r = both(
        r,
        "/api/storages/{storage_type}/{id}/notifications",
        post(notifications::push).options(notifications::allow_origin),
    );
    r = both(
        r,
        "/api/storages/{storage_type}/{id}/notifications/token",
        post(notifications::new_token),
    );
    r = both(
        r,
        "/api/webhooks",
        get(webhooks::list).post(webhooks::create),
    );
    r = both(r, "/api/webhooks/info", get(webhooks::info));
    r = both(
        r,
        "/api/webhooks/{id}",
        get(webhooks::detail)
            .patch(webhooks::update)
            .put(webhooks::update)
            .delete(webhooks::remove),
    );
    r = both(r, "/data/local-files", get(local_files::serve));
    r = both(r, "/api/schema", get(openapi::serve));
    for alias in ["resolve", "presign"] {
        r = both(
            r,
            &format!("/tasks/{{id}}/{alias}"),
            get(resolve::resolve::<true>),
        );
        r = both(
            r,
            &format!("/projects/{{id}}/{alias}"),
            get(resolve::resolve::<false>),
        );
    }
    // Prometheus' path, not Label Studio's: outside the OpenAPI document.
    if !matches!(state.metrics_access(), MetricsAccess::Disabled) {
        r = r.route("/metrics", get(metrics::serve));
    }
    r.fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

/// The minimal Label Studio host surface the server (`storage-server`) offers on its
/// own: `/health`, `/api/version`, projects, task import and listing,
/// annotations.
pub fn host_router<S>(state: ApiState) -> Router<S> {
    use host::*;
    let mut r = Router::new();
    r = both(r, "/health", get(status::health));
    r = both(r, "/api/version", get(status::version));
    r = both(r, "/api/projects", get(list_projects).post(create_project));
    r = both(r, "/api/projects/{id}", get(get_project));
    r = both(r, "/api/projects/{id}/import", post(import_tasks));
    r = both(r, "/api/tasks", get(list_tasks));
    r = both(r, "/api/tasks/{id}", get(get_task));
    r = both(
        r,
        "/api/tasks/{id}/annotations",
        get(list_annotations).post(create_annotation),
    );
    r = both(
        r,
        "/api/annotations/{id}",
        get(get_annotation)
            .patch(update_annotation)
            .delete(delete_annotation),
    );
    r = both(r, "/api/current-user/whoami", get(whoami));
    r.with_state(state)
}
