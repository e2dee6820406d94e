//! The endpoint policy against server-side request forgery (SSRF).
//!
//! Storages let users name the server to talk to (an S3 `s3_endpoint`, an STS
//! endpoint, a `gcs_base_url` inside GCS credentials). Without a check, a user
//! could make this server connect to itself, to the private network it runs
//! in, or to the cloud metadata service at `169.254.169.254` and read the
//! machine's credentials. [`EndpointPolicy`] is the single place where such
//! endpoints are checked, before any connection:
//!
//! * only `http` and `https` URLs, without `user:password@`;
//! * the host must not be, or resolve to, a loopback, private, link-local,
//!   unspecified, shared (CGNAT), benchmarking, documentation, multicast,
//!   broadcast or reserved address, including IPv6 forms that embed such an
//!   IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo), see
//!   [`is_public_ip`];
//! * `localhost` and `*.localhost` names are refused without asking DNS.
//!
//! Other spellings of an address (`http://2130706433/`, `http://0x7f000001/`,
//! `http://0177.0.0.1/`, `http://127.1/`) are normalised by the `url` crate
//! to the dotted form before the check. Host names are resolved and refused
//! when any of their addresses is refused; because a name may resolve
//! differently when the connection is made (DNS rebinding), cloud backends
//! also install [`EndpointPolicy::dns_resolver`] (feature `cloud`), which
//! applies the same rules at connect time.
//!
//! Servers that talk to a local S3-compatible server (and tests) start with
//! [`EndpointPolicy::allow_private`], which accepts every address.
//!
//! ```
//! use storage_core::EndpointPolicy;
//!
//! let strict = EndpointPolicy::strict();
//! assert!(strict.check_literal("s3_endpoint", "http://169.254.169.254/").is_err());
//! assert!(strict.check_literal("s3_endpoint", "http://0x7f000001/").is_err());
//! let url = strict.check_literal("s3_endpoint", "https://93.184.216.34:9000").unwrap();
//! assert_eq!(url.as_str(), "https://93.184.216.34:9000/");
//!
//! let local = EndpointPolicy::allow_private();
//! assert!(local.check_literal("s3_endpoint", "http://127.0.0.1:9000").is_ok());
//! ```

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use url::{Host, Url};

use crate::{Error, Result};

/// What refused messages tell the user to do about it.
const HINT: &str = "private, loopback and link-local endpoints are refused unless the server \
                    runs with --allow-private-endpoints (STORAGE_ALLOW_PRIVATE_ENDPOINTS=true)";

/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many characters of an unparseable endpoint an error message repeats.
const MAX_SHOWN_CHARS: usize = 100;

/// The AWS, GCP, Azure, … instance metadata service.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The AWS instance metadata service over IPv6 (Nitro instances).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Which endpoints user-supplied storage settings may point to.
///
/// The default ([`EndpointPolicy::strict`]) accepts only public addresses;
/// [`EndpointPolicy::allow_private`] accepts every address (tests, local
/// S3-compatible servers). Scheme and credential checks apply to both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    allow_private: bool,
    env_proxy: bool,
    /// One network accepted under the strict policy, `(address, prefix length)`.
    allowed_network: Option<(IpAddr, u8)>,
}

impl EndpointPolicy {
    /// Refuses endpoints that are, or resolve to, non-public addresses
    /// (the default).
    pub const fn strict() -> Self {
        Self {
            allow_private: false,
            env_proxy: false,
            allowed_network: None,
        }
    }

    /// Accepts endpoints on any address, including loopback and private
    /// networks (`--allow-private-endpoints`).
    pub const fn allow_private() -> Self {
        Self {
            allow_private: true,
            env_proxy: false,
            allowed_network: None,
        }
    }

    /// [`EndpointPolicy::allow_private`] when `allow_private` is true, else
    /// [`EndpointPolicy::strict`]; for hosts that read the setting as a flag.
    pub const fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            env_proxy: false,
            allowed_network: None,
        }
    }

    /// Lets storage HTTP clients use the environment's proxy (`HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`); off by default, when they
    /// ignore it. The policy still decides: every request's host name is
    /// resolved and checked before it goes to the proxy (see
    /// `PolicyConnector`, feature `cloud`).
    pub const fn with_env_proxy(mut self, env_proxy: bool) -> Self {
        self.env_proxy = env_proxy;
        self
    }

    /// Accepts the addresses of one network (`address/prefix_len`) under the
    /// strict policy as well: an S3-compatible server on a private network
    /// without opening every private address (`--allow-endpoint-network`).
    /// Everything else stays refused.
    pub const fn with_allowed_network(mut self, address: IpAddr, prefix_len: u8) -> Self {
        self.allowed_network = Some((address, prefix_len));
        self
    }

    /// Why this policy refuses `ip`, or `None` when it accepts it.
    fn refused(&self, ip: IpAddr) -> Option<Cow<'static, str>> {
        if self.allow_private || self.in_allowed_network(ip) {
            return None;
        }
        refusal(ip)
    }

    fn in_allowed_network(&self, ip: IpAddr) -> bool {
        let Some((net, bits)) = self.allowed_network else {
            return false;
        };
        match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(bits.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(bits.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// Whether storage HTTP clients use the environment's proxy.
    pub const fn uses_env_proxy(&self) -> bool {
        self.env_proxy
    }

    /// The HTTP connector of storage clients under this policy: no
    /// redirects, no ambient proxy, every request checked (feature `cloud`).
    #[cfg(feature = "cloud")]
    pub const fn connector(self) -> PolicyConnector {
        PolicyConnector::new(self)
    }

    /// Whether non-public addresses are accepted.
    pub const fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks `endpoint`, the value of the setting `field`, and returns it
    /// parsed and normalised.
    ///
    /// Refuses URLs that do not parse, that use a scheme other than `http`
    /// or `https`, that contain `user:password@`, and (unless private
    /// endpoints are allowed) whose host is a non-public address, a
    /// `localhost` name, or a name that does not resolve or resolves to any
    /// non-public address. Errors are [`Error::InvalidConfig`] about `field`
    /// and never repeat credentials.
    pub async fn check(&self, field: &str, endpoint: &str) -> Result<Url> {
        let url = self.check_literal(field, endpoint)?;
        if self.allow_private {
            return Ok(url);
        }
        if let Some(Host::Domain(name)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let ips = resolve(name, port).await.map_err(|e| {
                Error::invalid(
                    field,
                    format!("\"{}\" could not be resolved: {e}", shown(&url)),
                )
            })?;
            for ip in ips {
                if let Some(reason) = self.refused(ip) {
                    return Err(Error::invalid(
                        field,
                        format!("\"{}\" resolves to {ip}, {reason}; {HINT}", shown(&url)),
                    ));
                }
            }
        }
        Ok(url)
    }

    /// [`EndpointPolicy::check`] without DNS, for code that cannot wait:
    /// refuses what the URL itself shows (scheme, credentials, an IP
    /// literal in any spelling, a `localhost` name) and accepts other host
    /// names unresolved. Connections must then go through
    /// [`EndpointPolicy::dns_resolver`] (feature `cloud`).
    pub fn check_literal(&self, field: &str, endpoint: &str) -> Result<Url> {
        let url = Url::parse(endpoint.trim()).map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "\"{}\" is not a valid URL ({e}); expected e.g. https://host:port",
                    shown_raw(endpoint)
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(
                field,
                // The raw text: without an authority, `shown` would repeat
                // `user` of `user:password@host` as the scheme.
                format!("\"{}\" must use http or https", shown_raw(endpoint)),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(
                field,
                format!(
                    "\"{}\" must not contain credentials (user:password@); \
                     configure them in their own fields",
                    shown(&url)
                ),
            ));
        }
        let refused = match url.host() {
            None => {
                return Err(Error::invalid(
                    field,
                    format!("\"{}\" has no host", shown(&url)),
                ))
            }
            _ if self.allow_private => None,
            Some(Host::Ipv4(ip)) => self.refused(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.refused(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => localhost_refusal(name),
        };
        match refused {
            Some(reason) => Err(Error::invalid(
                field,
                format!("\"{}\" points to {reason}; {HINT}", shown(&url)),
            )),
            None => Ok(url),
        }
    }

    /// A DNS resolver for `object_store` clients
    /// (`ClientOptions::with_dns_resolver`) that applies this policy to
    /// every address a host name resolves to at connect time, which catches
    /// a name that resolved to a public address when it was checked and to
    /// a private one afterwards (DNS rebinding).
    #[cfg(feature = "cloud")]
    pub fn dns_resolver(self) -> std::sync::Arc<dyn object_store::client::DnsResolver> {
        std::sync::Arc::new(PolicyDnsResolver::new(self))
    }
}

/// Whether `ip` is an address user-supplied endpoints may point to under
/// [`EndpointPolicy::strict`].
///
/// Refused IPv4: `0.0.0.0/8` (unspecified, "this network"), `10/8`,
/// `172.16/12`, `192.168/16` (private), `100.64/10` (shared, CGNAT),
/// `127/8` (loopback), `169.254/16` (link-local, cloud metadata),
/// `192.0.0/24` (IETF protocol assignments), `192.0.2/24`, `198.51.100/24`,
/// `203.0.113/24` (documentation), `198.18/15` (benchmarking), `224/4`
/// (multicast), `240/4` (reserved) and `255.255.255.255` (broadcast).
///
/// Refused IPv6: `::` and `::1`, the rest of `::/8` (reserved), `100::/64`
/// (discard), `2001:2::/48` (benchmarking), `2001:db8::/32` and `3fff::/20`
/// (documentation), `64:ff9b:1::/48` (local-use NAT64), `fc00::/7`
/// (unique-local), `fe80::/10` (link-local), `fec0::/10` (site-local),
/// `ff00::/8` (multicast), and the forms that embed a refused IPv4 address:
/// IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`,
/// IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16` and
/// Teredo `2001::/32` (server or client address).
///
/// ```
/// use storage_core::endpoint::is_public_ip;
/// assert!(is_public_ip("8.8.8.8".parse().unwrap()));
/// assert!(!is_public_ip("169.254.169.254".parse().unwrap()));
/// assert!(!is_public_ip("::ffff:127.0.0.1".parse().unwrap()));
/// ```
pub fn is_public_ip(ip: IpAddr) -> bool {
    refusal(ip).is_none()
}

/// Why `ip` is refused (phrased to follow "points to"), or `None` when
/// it is public.
fn refusal(ip: IpAddr) -> Option<Cow<'static, str>> {
    match ip {
        IpAddr::V4(ip) => ipv4_refusal(ip).map(Cow::Borrowed),
        IpAddr::V6(ip) => ipv6_refusal(ip),
    }
}

fn ipv4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let n = u32::from(ip);
    let within = |net: [u8; 4], bits: u32| {
        let mask = u32::MAX << (32 - bits);
        n & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    let reason = if ip == METADATA_V4 {
        "a link-local address (cloud metadata service)"
    } else if ip.is_unspecified() {
        "the unspecified address"
    } else if within([0, 0, 0, 0], 8) {
        "a \"this network\" address (0.0.0.0/8)"
    } else if within([127, 0, 0, 0], 8) {
        "a loopback address"
    } else if within([10, 0, 0, 0], 8)
        || within([172, 16, 0, 0], 12)
        || within([192, 168, 0, 0], 16)
    {
        "a private address"
    } else if within([100, 64, 0, 0], 10) {
        "a shared (carrier-grade NAT) address"
    } else if within([169, 254, 0, 0], 16) {
        "a link-local address"
    } else if within([192, 0, 0, 0], 24) {
        "an IETF protocol assignment address (192.0.0.0/24)"
    } else if within([192, 0, 2, 0], 24)
        || within([198, 51, 100, 0], 24)
        || within([203, 0, 113, 0], 24)
    {
        "a documentation address"
    } else if within([198, 18, 0, 0], 15) {
        "a benchmarking address"
    } else if within([224, 0, 0, 0], 4) {
        "a multicast address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if within([240, 0, 0, 0], 4) {
        "a reserved address"
    } else {
        return None;
    };
    Some(reason)
}

fn ipv6_refusal(ip: Ipv6Addr) -> Option<Cow<'static, str>> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let embedded = |form: &str, v4: Ipv4Addr| {
        ipv4_refusal(v4).map(|reason| Cow::Owned(format!("{v4} in {form} IPv6 form, {reason}")))
    };
    let fixed = |reason: &'static str| Some(Cow::Borrowed(reason));

    if ip.is_unspecified() {
        return fixed("the unspecified address");
    }
    if ip.is_loopback() {
        return fixed("a loopback address");
    }
    if ip == METADATA_V6 {
        return fixed("a unique-local address (cloud metadata service)");
    }
    match s {
        // ::ffff:a.b.c.d, IPv4-mapped.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => embedded("IPv4-mapped", v4(hi, lo)),
        // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => embedded("IPv4-translated", v4(hi, lo)),
        // ::a.b.c.d, IPv4-compatible (deprecated).
        [0, 0, 0, 0, 0, 0, hi, lo] => embedded("IPv4-compatible", v4(hi, lo)),
        // 64:ff9b::a.b.c.d, NAT64 well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => embedded("NAT64", v4(hi, lo)),
        [0x64, 0xff9b, 1, ..] => fixed("a local-use NAT64 address (64:ff9b:1::/48)"),
        [0x100, 0, 0, 0, ..] => fixed("a discard-only address (100::/64)"),
        // 2002:AABB:CCDD::/48 is 6to4 for AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => embedded("6to4", v4(hi, lo)),
        // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC is Teredo for server S and
        // client !C.
        [0x2001, 0, shi, slo, _, _, chi, clo] => {
            embedded("Teredo", v4(shi, slo)).or_else(|| embedded("Teredo", v4(!chi, !clo)))
        }
        [0x2001, 2, 0, ..] => fixed("a benchmarking address"),
        [0x2001, 0xdb8, ..] => fixed("a documentation address"),
        [0x3fff, second, ..] if second < 0x1000 => fixed("a documentation address"),
        [first, ..] if first < 0x100 => fixed("a reserved address (::/8)"),
        [first, ..] if first & 0xfe00 == 0xfc00 => fixed("a unique-local (private) address"),
        [first, ..] if first & 0xffc0 == 0xfe80 => fixed("a link-local address"),
        [first, ..] if first & 0xffc0 == 0xfec0 => fixed("a site-local address"),
        [first, ..] if first & 0xff00 == 0xff00 => fixed("a multicast address"),
        _ => None,
    }
}

/// `localhost` and `*.localhost` always mean this machine (RFC 6761),
/// whatever DNS says, and `localhost.` may not resolve at all.
fn localhost_refusal(name: &str) -> Option<Cow<'static, str>> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost"))
        .then_some(Cow::Borrowed("a loopback address (the name localhost)"))
}

/// Resolves `name` with the system resolver, failing on a timeout or when
/// there is no address.
async fn resolve(name: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let addrs = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out after {}s", RESOLVE_TIMEOUT.as_secs()),
            )
        })??;
    let ips: Vec<IpAddr> = addrs.map(|addr| addr.ip()).collect();
    if ips.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address found",
        ));
    }
    Ok(ips)
}

/// `scheme://host[:port]` of `url`, with `***@` in place of credentials;
/// never its path or query, which may carry signatures.
fn shown(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("***@");
    }
    out.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out
}

/// An endpoint that did not parse, fit to repeat: everything before the last
/// `@` (after the scheme) replaced with `***`, query and fragment dropped,
/// control characters escaped and the length capped.
fn shown_raw(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    let rest = match rest.rfind('@') {
        Some(at) => Cow::Owned(format!("***@{}", &rest[at + 1..])),
        None => Cow::Borrowed(rest),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let mut out: String = format!("{scheme}{rest}")
        .chars()
        .flat_map(char::escape_debug)
        .take(MAX_SHOWN_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_SHOWN_CHARS {
        out = out.chars().take(MAX_SHOWN_CHARS).collect();
        out.push('…');
    }
    out
}

/// An `object_store` [`DnsResolver`](object_store::client::DnsResolver)
/// that resolves with the system resolver and, under
/// [`EndpointPolicy::strict`], fails when any address is not public (see
/// [`is_public_ip`]) or the name is `localhost`. Connections to IP literals
/// do not go through a resolver; [`EndpointPolicy::check`] refuses those.
///
/// Build one with [`EndpointPolicy::dns_resolver`].
#[cfg(feature = "cloud")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDnsResolver {
    policy: EndpointPolicy,
}

#[cfg(feature = "cloud")]
impl PolicyDnsResolver {
    /// A resolver that applies `policy`.
    pub const fn new(policy: EndpointPolicy) -> Self {
        Self { policy }
    }
}

#[cfg(feature = "cloud")]
impl object_store::client::DnsResolver for PolicyDnsResolver {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let policy = self.policy;
        let host = host.to_owned();
        Box::pin(async move {
            if !policy.allow_private {
                if let Some(reason) = localhost_refusal(&host) {
                    return Err(format!("endpoint host {host:?} points to {reason}; {HINT}").into());
                }
            }
            // The transport replaces the port with the URL's.
            let ips = resolve(&host, 0).await?;
            if !policy.allow_private {
                for ip in &ips {
                    if let Some(reason) = policy.refused(*ip) {
                        return Err(format!(
                            "endpoint host {host:?} resolves to {ip}, {reason}; {HINT}"
                        )
                        .into());
                    }
                }
            }
            Ok(ips)
        })
    }
}

#[cfg(feature = "cloud")]
#[path = "endpoint_client.rs"]
mod client;
#[cfg(feature = "cloud")]
pub use client::PolicyConnector;

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
