#![allow(clippy::unwrap_used)]

use super::*;

const STRICT: EndpointPolicy = EndpointPolicy::strict();
const OPEN: EndpointPolicy = EndpointPolicy::allow_private();

/// The one message of an `InvalidConfig` error about `field`.
fn message(result: Result<Url>, field: &str) -> String {
    match result {
        Err(Error::InvalidConfig(errors)) => {
            assert_eq!(errors.fields().collect::<Vec<_>>(), vec![field]);
            let messages = errors.messages(field);
            assert_eq!(messages.len(), 1, "{messages:?}");
            messages[0].clone()
        }
        other => panic!("expected InvalidConfig about {field}, got {other:?}"),
    }
}

/// Every non-public address in the spellings users (or attackers) write.
const REFUSED: &[&str] = &[
    // IPv4 loopback in every spelling the `url` crate normalises.
    "http://127.0.0.1/",
    "http://127.0.0.1:9000/bucket",
    "http://127.255.255.254/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://0177.0.0.1/",
    "http://0177.0000.0000.0001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0x7f.1/",
    "http://0x7f.0.0.0x1/",
    "http://127.0.0.1./",
    "http://%31%32%37.0.0.1/",
    "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
    // Names for this machine.
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:9000/",
    "http://minio.localhost/",
    // Cloud metadata and the rest of link-local.
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://169.254.0.1/",
    "http://[fd00:ec2::254]/",
    // Unspecified and "this network".
    "http://0.0.0.0/",
    "http://0/",
    "http://0.1.2.3/",
    // Private, shared, benchmarking, protocol assignments.
    "http://10.1.2.3/",
    "http://012.1.2.3/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1:9000/",
    "http://100.64.0.1/",
    "http://100.127.255.255/",
    "http://100.100.100.200/",
    "http://198.18.0.1/",
    "http://198.19.255.255/",
    "http://192.0.0.170/",
    // Documentation, multicast, reserved, broadcast.
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    // IPv6 loopback, unspecified, local ranges.
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]:9000/",
    "https://[::]/",
    "http://[fc00::1]/",
    "http://[fd12:3456:789a::1]/",
    "http://[fe80::1]/",
    "http://[febf::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[100::1]/",
    "http://[2001:db8::1]/",
    "http://[3fff::1]/",
    "http://[2001:2::1]/",
    "http://[64:ff9b:1::1]/",
    "http://[::1:2:3:4]/",
    // IPv6 forms that embed a refused IPv4 address.
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:0:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[::169.254.169.254]/",
    "http://[::0.0.0.2]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::192.168.0.1]/",
    "http://[2002:7f00:1::1]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2002:c0a8:101::1]/",
    // Teredo with client 10.0.0.1 (stored inverted) behind a public server.
    "http://[2001:0:808:808:0:0:f5ff:fffe]/",
];

#[test]
fn url_crate_normalises_ipv4_spellings() {
    for spelling in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0X7F000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.1/",
        "http://0x7f.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
    ] {
        let url = OPEN.check_literal("s3_endpoint", spelling).unwrap();
        assert_eq!(
            url.host(),
            Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
            "{spelling}"
        );
        assert_eq!(url.as_str(), "http://127.0.0.1/", "{spelling}");
    }
    // IPv6 stays IPv6: the embedded forms are this module's job.
    let url = OPEN
        .check_literal("s3_endpoint", "http://[::ffff:127.0.0.1]/")
        .unwrap();
    assert_eq!(url.host_str(), Some("[::ffff:7f00:1]"));
    let url = OPEN
        .check_literal("s3_endpoint", "http://[::127.0.0.1]/")
        .unwrap();
    assert_eq!(url.host_str(), Some("[::7f00:1]"));
    // A trailing dot on a name is kept: the name check strips it.
    let url = OPEN
        .check_literal("s3_endpoint", "http://localhost./")
        .unwrap();
    assert_eq!(url.host(), Some(Host::Domain("localhost.")));
}

#[test]
fn strict_check_literal_refuses_every_spelling() {
    for endpoint in REFUSED {
        let text = message(STRICT.check_literal("s3_endpoint", endpoint), "s3_endpoint");
        assert!(text.contains(" points to "), "{endpoint}: {text}");
        assert!(text.ends_with(HINT), "{endpoint}: {text}");
    }
}

#[tokio::test]
async fn strict_check_refuses_every_spelling() {
    for endpoint in REFUSED {
        let text = message(STRICT.check("s3_endpoint", endpoint).await, "s3_endpoint");
        assert!(text.contains(" points to "), "{endpoint}: {text}");
    }
}

#[tokio::test]
async fn allow_private_accepts_every_spelling() {
    for endpoint in REFUSED {
        assert!(
            OPEN.check_literal("s3_endpoint", endpoint).is_ok(),
            "{endpoint}"
        );
        let url = OPEN.check("s3_endpoint", endpoint).await;
        assert!(url.is_ok(), "{endpoint}: {url:?}");
    }
}

#[test]
fn refused_addresses() {
    for ip in [
        "0.0.0.0",
        "0.255.255.255",
        "10.0.0.0",
        "10.255.255.255",
        "100.64.0.0",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.255.255",
        "169.254.0.0",
        "169.254.169.254",
        "169.254.255.255",
        "172.16.0.0",
        "172.31.255.255",
        "192.0.0.0",
        "192.0.0.255",
        "192.0.2.0",
        "192.168.0.0",
        "192.168.255.255",
        "198.18.0.0",
        "198.19.255.255",
        "198.51.100.255",
        "203.0.113.0",
        "224.0.0.0",
        "239.255.255.255",
        "240.0.0.0",
        "255.255.255.254",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "::ffff:0.0.0.0",
        "::ffff:0:192.168.1.1",
        "::10.0.0.1",
        "::255.255.255.255",
        "64:ff9b::10.0.0.1",
        "64:ff9b::100.64.0.1",
        "64:ff9b:1::8.8.8.8",
        "2002:0a00:0001::",
        "2002:ac10:0001:1::1",
        "2002:0000:0000::",
        "2001:0:a00:1::1",
        "2001:0:808:808::f5ff:fffe",
        "2001:db8::",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:2::1",
        "3fff:fff::1",
        "100::1",
        "fc00::",
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fd00:ec2::254",
        "fe80::1",
        "febf:ffff::1",
        "fec0::1",
        "ff00::",
        "ff02::1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        assert!(!is_public_ip(ip.parse().unwrap()), "{ip} should be refused");
    }
}

#[test]
fn public_addresses() {
    for ip in [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.0",
        "52.216.0.1",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "192.0.3.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::1",
        "2600:1f18::1",
        "::ffff:8.8.8.8",
        "::ffff:0:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:0808:0808::1",
        "2001:0:808:808::f7f7:f7f7",
        "3fff:1000::1",
        "2001:db9::1",
        "fbff::1",
        "fe00::1",
    ] {
        assert!(is_public_ip(ip.parse().unwrap()), "{ip} should be public");
    }
}

#[tokio::test]
async fn public_literals_are_accepted_unchanged() {
    for (endpoint, normalised) in [
        ("https://93.184.216.34:9000", "https://93.184.216.34:9000/"),
        ("http://8.8.8.8/bucket?x=1", "http://8.8.8.8/bucket?x=1"),
        ("https://[2606:4700::1111]/", "https://[2606:4700::1111]/"),
        ("  https://52.216.0.1:443/  ", "https://52.216.0.1/"),
    ] {
        let url = STRICT.check("s3_endpoint", endpoint).await.unwrap();
        assert_eq!(url.as_str(), normalised);
        let url = STRICT.check_literal("s3_endpoint", endpoint).unwrap();
        assert_eq!(url.as_str(), normalised);
    }
}

#[test]
fn check_literal_accepts_names_unresolved() {
    let url = STRICT
        .check_literal("s3_endpoint", "HTTPS://S3.Example.COM:443/path")
        .unwrap();
    assert_eq!(url.as_str(), "https://s3.example.com/path");
    assert!(STRICT
        .check_literal("gcs_base_url", "https://storage.googleapis.com")
        .is_ok());
}

#[test]
fn metadata_message_names_the_service_and_the_switch() {
    let text = message(
        STRICT.check_literal("s3_endpoint", "http://169.254.169.254/latest/meta-data/"),
        "s3_endpoint",
    );
    assert_eq!(
        text,
        "\"http://169.254.169.254\" points to a link-local address (cloud metadata \
             service); private, loopback and link-local endpoints are refused unless the \
             server runs with --allow-private-endpoints (STORAGE_ALLOW_PRIVATE_ENDPOINTS=true)"
    );
    for endpoint in [
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://0xa9fea9fe/",
    ] {
        let text = message(
            STRICT.check_literal("sts_endpoint", endpoint),
            "sts_endpoint",
        );
        assert!(text.contains("cloud metadata service"), "{text}");
    }
    let text = message(
        STRICT.check_literal("s3_endpoint", "http://[::ffff:127.0.0.1]:9000"),
        "s3_endpoint",
    );
    assert!(
        text.starts_with(
            "\"http://[::ffff:7f00:1]:9000\" points to 127.0.0.1 in IPv4-mapped IPv6 \
                 form, a loopback address;"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn only_http_and_https() {
    for endpoint in [
        "ftp://s3.example.com/",
        "file:///etc/passwd",
        "gopher://8.8.8.8:70/",
        "s3://bucket/key",
        "unix:///var/run/docker.sock",
        "data:text/plain,hi",
        "javascript:alert(1)",
    ] {
        for policy in [STRICT, OPEN] {
            let text = message(policy.check("s3_endpoint", endpoint).await, "s3_endpoint");
            assert!(
                text.ends_with("must use http or https"),
                "{endpoint}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn credentials_are_refused_and_never_repeated() {
    for endpoint in [
        "http://admin:hunter2@s3.example.com/",
        "https://admin:hunter2@8.8.8.8:9000/",
        "https://admin@s3.example.com/",
        "https://:hunter2@s3.example.com/",
        "http://admin:hunter2@127.0.0.1/",
        "http://admin:p%40ss@hunter2@s3.example.com/",
    ] {
        for policy in [STRICT, OPEN] {
            let text = message(policy.check("s3_endpoint", endpoint).await, "s3_endpoint");
            assert!(text.contains("must not contain credentials"), "{text}");
            assert!(text.contains("***@"), "{text}");
            assert!(
                !text.contains("hunter2") && !text.contains("admin"),
                "{text}"
            );
        }
    }
    // Unparseable input is redacted too.
    for endpoint in [
        "http://admin:hunter2@exa mple.com/",
        "admin:hunter2@s3.example.com",
        "http://admin:hunt/er2@s3.example.com:notaport/",
    ] {
        let err = STRICT.check("s3_endpoint", endpoint).await.unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("admin"),
            "{text}"
        );
    }
}

#[test]
fn paths_and_queries_are_not_repeated() {
    let text = message(
        STRICT.check_literal("s3_endpoint", "http://10.0.0.1/b?X-Amz-Signature=secret"),
        "s3_endpoint",
    );
    assert!(text.starts_with("\"http://10.0.0.1\" points to a private address;"));
    assert!(!text.contains("secret"), "{text}");
    let text = message(
        STRICT.check_literal("s3_endpoint", "http://exa mple.com/?token=secret"),
        "s3_endpoint",
    );
    assert!(!text.contains("secret"), "{text}");
}

#[tokio::test]
async fn invalid_urls() {
    for endpoint in [
        "",
        "   ",
        "not a url",
        "s3.example.com",
        "http://",
        "http://[::1",
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://0x1g.0.0.1/",
        "http://example.com:99999/",
        "http://[fe80::1%25eth0]/",
    ] {
        for policy in [STRICT, OPEN] {
            let text = message(policy.check("s3_endpoint", endpoint).await, "s3_endpoint");
            assert!(text.contains("is not a valid URL"), "{endpoint:?}: {text}");
        }
    }
    let long = format!("http://{}/", "x y".repeat(100));
    let text = message(STRICT.check_literal("s3_endpoint", &long), "s3_endpoint");
    assert!(text.contains('…') && text.len() < 250, "{text}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_refused() {
    // `.invalid` never resolves (RFC 6761), with or without a network.
    let text = message(
        STRICT
            .check("s3_endpoint", "https://no-such-host.invalid:9000/bucket")
            .await,
        "s3_endpoint",
    );
    assert!(
        text.starts_with("\"https://no-such-host.invalid:9000\" could not be resolved: "),
        "{text}"
    );
    // Allowing private endpoints skips DNS: nothing would be refused.
    assert!(OPEN
        .check("s3_endpoint", "https://no-such-host.invalid")
        .await
        .is_ok());
}

/// A name other than `localhost` that /etc/hosts maps to a refused
/// address, if there is one.
fn hosts_file_name() -> Option<(String, IpAddr)> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        let ip: IpAddr = words.next()?.parse().ok()?;
        let name = words.find(|name| localhost_refusal(name).is_none())?;
        (!is_public_ip(ip)).then(|| (name.to_owned(), ip))
    })
}

#[tokio::test]
async fn names_are_refused_by_what_they_resolve_to() {
    let Some((name, _)) = hosts_file_name() else {
        eprintln!("no suitable name in /etc/hosts; skipped");
        return;
    };
    let endpoint = format!("http://{name}:9000/");
    assert!(STRICT.check_literal("s3_endpoint", &endpoint).is_ok());
    let text = message(STRICT.check("s3_endpoint", &endpoint).await, "s3_endpoint");
    assert!(
        text.starts_with(&format!("\"http://{name}:9000\" resolves to ")),
        "{text}"
    );
    assert!(text.ends_with(HINT), "{text}");
    assert!(OPEN.check("s3_endpoint", &endpoint).await.is_ok());
}

#[test]
fn constructors() {
    assert_eq!(EndpointPolicy::default(), EndpointPolicy::strict());
    assert!(!EndpointPolicy::strict().allows_private());
    assert!(EndpointPolicy::allow_private().allows_private());
    assert_eq!(EndpointPolicy::new(true), EndpointPolicy::allow_private());
    assert_eq!(EndpointPolicy::new(false), EndpointPolicy::strict());
}

#[cfg(feature = "cloud")]
mod resolver {
    use super::*;
    use object_store::client::DnsResolver;

    #[tokio::test]
    async fn strict_resolver_refuses_localhost() {
        let err = STRICT
            .dns_resolver()
            .resolve("localhost")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("loopback"), "{text}");
        assert!(text.contains("--allow-private-endpoints"), "{text}");
        assert!(PolicyDnsResolver::new(STRICT)
            .resolve("localhost.")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn strict_resolver_refuses_names_that_resolve_to_private_addresses() {
        let Some((name, ip)) = hosts_file_name() else {
            eprintln!("no suitable name in /etc/hosts; skipped");
            return;
        };
        let text = STRICT
            .dns_resolver()
            .resolve(&name)
            .await
            .unwrap_err()
            .to_string();
        assert!(text.contains(&format!("resolves to {ip}")), "{text}");
    }

    #[tokio::test]
    async fn strict_resolver_fails_on_unknown_names() {
        assert!(STRICT
            .dns_resolver()
            .resolve("no-such-host.invalid")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn open_resolver_resolves_normally() {
        let ips = OPEN.dns_resolver().resolve("localhost").await.unwrap();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
    }

    #[test]
    fn plugs_into_client_options() {
        let options = object_store::ClientOptions::new()
            .with_dns_resolver(EndpointPolicy::strict().dns_resolver());
        assert!(options.dns_resolver().is_some());
    }
}

/// The HTTP client of user storages ([`super::PolicyConnector`]) against
/// listeners written here: it follows no redirect, refuses IP literals the
/// policy refuses before connecting, and ignores the environment's proxy.
#[cfg(feature = "cloud")]
mod connector {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use object_store::client::{HttpConnector, HttpRequestBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::EndpointPolicy;

    /// A listener on 127.0.0.1 that answers every request with `answer`
    /// and counts the requests it got.
    async fn listener(answer: String) -> (String, Arc<AtomicUsize>) {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), hits)
    }

    fn ok_answer() -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret".into()
    }

    async fn get(policy: EndpointPolicy, url: &str) -> Result<u16, String> {
        let options = object_store::ClientOptions::new().with_allow_http(true);
        let client = policy.connector().connect(&options).unwrap();
        let request = http::Request::builder()
            .uri(url)
            .body(HttpRequestBody::empty())
            .unwrap();
        client
            .execute(request)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_hits) = listener(ok_answer()).await;
        let (attacker, _) = listener(format!(
            "HTTP/1.1 302 Found\r\nlocation: {target}/latest/meta-data/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        // Even where every address is allowed, a redirect is an answer,
        // never a second request.
        let status = get(
            EndpointPolicy::allow_private(),
            &format!("{attacker}/bucket/key"),
        )
        .await
        .unwrap();
        assert_eq!(status, 302);
        assert_eq!(
            target_hits.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    #[tokio::test]
    async fn strict_clients_refuse_private_ip_literals_before_connecting() {
        let (target, hits) = listener(ok_answer()).await;
        let err = get(EndpointPolicy::strict(), &format!("{target}/"))
            .await
            .unwrap_err();
        assert!(
            err.contains("loopback") && err.contains("--allow-private-endpoints"),
            "{err}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let err = get(EndpointPolicy::strict(), "http://169.254.169.254/latest/")
            .await
            .unwrap_err();
        assert!(err.contains("metadata"), "{err}");
    }

    #[tokio::test]
    async fn an_allowed_network_opens_only_that_network() {
        let (target, hits) = listener(ok_answer()).await;
        let one = EndpointPolicy::strict().with_allowed_network("127.0.0.1".parse().unwrap(), 32);
        assert_eq!(get(one, &format!("{target}/")).await.unwrap(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let port = target.rsplit(':').next().unwrap();
        let err = get(one, &format!("http://127.0.0.2:{port}/"))
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        assert!(one
            .check_literal("s3_endpoint", "http://10.0.0.1/")
            .is_err());
        assert!(one
            .check_literal("s3_endpoint", "http://127.0.0.1:9000/")
            .is_ok());
        let net = EndpointPolicy::strict().with_allowed_network("10.1.2.0".parse().unwrap(), 24);
        assert!(net
            .check_literal("s3_endpoint", "http://10.1.2.200/")
            .is_ok());
        assert!(net
            .check_literal("s3_endpoint", "http://10.1.3.1/")
            .is_err());
        assert!(net.check_literal("s3_endpoint", "http://[::1]/").is_err());
    }

    #[tokio::test]
    async fn the_environment_proxy_is_ignored_unless_the_policy_opts_in() {
        let (proxy, proxy_hits) = listener(ok_answer()).await;
        let (target, target_hits) = listener(ok_answer()).await;
        // Only this test of the crate sets a proxy; nothing else here makes
        // HTTP requests with the environment's settings.
        std::env::set_var("HTTP_PROXY", &proxy);
        std::env::set_var("http_proxy", &proxy);
        let direct = get(EndpointPolicy::allow_private(), &format!("{target}/")).await;
        let proxied = get(
            EndpointPolicy::allow_private().with_env_proxy(true),
            &format!("{target}/"),
        )
        .await;
        // With the proxy opted in, the strict policy still checks the
        // target before the proxy sees the request.
        let refused = get(
            EndpointPolicy::strict().with_env_proxy(true),
            &format!("{target}/"),
        )
        .await;
        std::env::remove_var("HTTP_PROXY");
        std::env::remove_var("http_proxy");
        assert_eq!(direct.unwrap(), 200);
        assert_eq!(
            target_hits.load(Ordering::SeqCst),
            1,
            "the direct request reached the target"
        );
        assert_eq!(proxied.unwrap(), 200);
        assert_eq!(
            proxy_hits.load(Ordering::SeqCst),
            1,
            "only the opted-in client used the proxy"
        );
        assert!(refused.unwrap_err().contains("loopback"));
        assert_eq!(proxy_hits.load(Ordering::SeqCst), 1);
    }
}
