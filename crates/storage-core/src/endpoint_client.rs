//! The HTTP client of user storages: the endpoint policy on every request.
//!
//! object_store's own client (reqwest's defaults) follows redirects, so an
//! endpoint that passed [`EndpointPolicy::check`] could send the server on
//! to `http://127.0.0.1:…/` or `http://169.254.169.254/` with a `302`; a
//! redirect to an IP literal never meets a DNS resolver, and with
//! `HTTP(S)_PROXY` set the resolver is not consulted for the target at all.
//! [`PolicyConnector`] builds the client instead:
//!
//! * redirects are never followed (object_store reports a `3xx` as an
//!   error, which the backends explain);
//! * the environment's proxy (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) is
//!   ignored unless the policy opts in ([`EndpointPolicy::with_env_proxy`]);
//! * every request's URL is checked before it is sent: IP literals and
//!   `localhost` names always, and, when a proxy is in use (which resolves
//!   the name itself), the host name's addresses too;
//! * connections resolve names through the policy (DNS rebinding); only
//!   the proxy's own host is exempt, as the operator chose it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use object_store::client::{
    DnsResolver, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpService,
};
use object_store::{ClientConfigKey, ClientOptions};
use reqwest_object_store as reqwest;
use url::{Host, Url};

use super::{localhost_refusal, resolve, EndpointPolicy, PolicyDnsResolver, HINT};

/// The environment variables reqwest reads its proxies from.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An object_store [`HttpConnector`] whose clients follow no redirect, use
/// no proxy unless the policy opts in, and check every request against the
/// [`EndpointPolicy`] (see the module documentation).
///
/// Install it with `AmazonS3Builder::with_http_connector` (or GCS's); the
/// builder's [`ClientOptions`] still decide `allow_http`, invalid
/// certificates and the user agent.
///
/// ```
/// use object_store::client::HttpConnector;
/// use storage_core::endpoint::PolicyConnector;
/// use storage_core::EndpointPolicy;
/// let connector = PolicyConnector::new(EndpointPolicy::strict());
/// assert!(connector.connect(&object_store::ClientOptions::new()).is_ok());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PolicyConnector {
    policy: EndpointPolicy,
    timeout: Option<Duration>,
}

impl PolicyConnector {
    /// A connector applying `policy`, without a request timeout.
    pub const fn new(policy: EndpointPolicy) -> Self {
        Self {
            policy,
            timeout: None,
        }
    }

    /// Sets the timeout of one request.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The policy this connector applies.
    pub const fn policy(&self) -> EndpointPolicy {
        self.policy
    }

    fn client(&self, options: &ClientOptions) -> Result<reqwest::Client, reqwest::Error> {
        let flag = |key| options.get_config_value(&key).is_some_and(|v| v == "true");
        let user_agent = options
            .get_config_value(&ClientConfigKey::UserAgent)
            .unwrap_or_else(|| concat!("storage-connections/", env!("CARGO_PKG_VERSION")).into());
        let mut exempt = Vec::new();
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            // As object_store: compression breaks Content-Length.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .https_only(!flag(ClientConfigKey::AllowHttp))
            .danger_accept_invalid_certs(flag(ClientConfigKey::AllowInvalidCertificates));
        if self.policy.uses_env_proxy() {
            exempt = proxy_hosts();
        } else {
            builder = builder.no_proxy();
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        builder
            .dns_resolver(PolicyResolve {
                policy: self.policy,
                exempt,
            })
            .build()
    }
}

impl HttpConnector for PolicyConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = self
            .client(options)
            .map_err(|e| object_store::Error::Generic {
                store: "HTTP client",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(GuardedClient {
            inner,
            policy: self.policy,
        }))
    }
}

/// The host names of the proxies the environment configures, lowercase.
fn proxy_hosts() -> Vec<String> {
    PROXY_VARS
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .filter_map(|value| {
            let value = if value.contains("://") {
                value
            } else {
                format!("http://{value}")
            };
            Url::parse(&value)
                .ok()?
                .host_str()
                .map(str::to_ascii_lowercase)
        })
        .collect()
}

/// A request refused by the policy.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The reqwest client and the check every request passes first.
#[derive(Debug)]
struct GuardedClient {
    inner: reqwest::Client,
    policy: EndpointPolicy,
}

#[async_trait]
impl HttpService for GuardedClient {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if let Some(reason) = request_refusal(self.policy, req.uri()).await {
            // Not retried: the same URL is refused again.
            return Err(HttpError::new(HttpErrorKind::Unknown, Refused(reason)));
        }
        HttpService::call(&self.inner, req).await
    }
}

/// Why the policy refuses a request to `uri`, if it does.
async fn request_refusal(policy: EndpointPolicy, uri: &http::Uri) -> Option<String> {
    if policy.allows_private() {
        return None;
    }
    let Ok(url) = Url::parse(&uri.to_string()) else {
        return Some("the request URL does not parse".into());
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let refused = match url.host() {
        None => return Some("the request URL has no host".into()),
        Some(Host::Ipv4(ip)) => policy.refused(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => policy.refused(IpAddr::V6(ip)),
        Some(Host::Domain(name)) => {
            if let Some(reason) = localhost_refusal(name) {
                Some(reason)
            } else if policy.uses_env_proxy() {
                // The proxy resolves the name, not our resolver: check it here.
                let port = url.port_or_known_default().unwrap_or(443);
                match resolve(name, port).await {
                    Err(e) => {
                        return Some(format!(
                            "request to {host} refused: it could not be resolved: {e}"
                        ))
                    }
                    Ok(ips) => match ips
                        .into_iter()
                        .find_map(|ip| policy.refused(ip).map(|r| (ip, r)))
                    {
                        Some((ip, reason)) => {
                            return Some(format!(
                                "request to {host} refused: it resolves to {ip}, {reason}; {HINT}"
                            ))
                        }
                        None => None,
                    },
                }
            } else {
                None
            }
        }
    };
    refused.map(|reason| format!("request to {host} refused: it points to {reason}; {HINT}"))
}

/// The policy's resolver in reqwest's terms; the operator's proxy hosts
/// are resolved without the policy.
struct PolicyResolve {
    policy: EndpointPolicy,
    exempt: Vec<String>,
}

impl reqwest::dns::Resolve for PolicyResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let policy = if self.exempt.contains(&host.to_ascii_lowercase()) {
            EndpointPolicy::allow_private()
        } else {
            self.policy
        };
        let lookup = PolicyDnsResolver::new(policy).resolve(&host);
        Box::pin(async move {
            let ips = lookup.await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
