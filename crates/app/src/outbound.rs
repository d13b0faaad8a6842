//! Outbound HTTP: the client every delivery uses (webhooks, Slack, Teams), and the rules that
//! keep it off the server's own network — a URL's literal address is checked before sending,
//! and names are checked after resolution, by the client's resolver, so DNS cannot point a
//! webhook inside.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How a refused name is described; an attempt failing with it is not retried.
const PRIVATE_ONLY: &str = "resolves only to private, loopback or link-local addresses";

/// Addresses a webhook may not reach unless private delivery is allowed: loopback, private,
/// link-local, shared, documentation, multicast and reserved ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || o0 == 0
                || o0 >= 240
                || (o0 == 100 && (o1 & 0xc0) == 64)
                || (o0 == 198 && (o1 & 0xfe) == 18)
                || (o0 == 192 && o1 == 0 && o2 == 0))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let s = a.segments();
                let embedded = |hi: u16, lo: u16| {
                    IpAddr::V4(std::net::Ipv4Addr::new(
                        (hi >> 8) as u8,
                        hi as u8,
                        (lo >> 8) as u8,
                        lo as u8,
                    ))
                };
                // NAT64 and 6to4 carry an IPv4 address that decides where the packet goes.
                if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                    return is_public(embedded(s[6], s[7]));
                }
                if s[0] == 0x2002 {
                    return is_public(embedded(s[1], s[2]));
                }
                // IPv4-compatible (`::a.b.c.d`, deprecated but still routed to the IPv4
                // address by some stacks) and IPv4-translated (`::ffff:0:a.b.c.d`) addresses,
                // local-use NAT64 (64:ff9b:1::/48) and the IETF protocol block (2001::/23,
                // Teredo among it, which hides an IPv4 address): never a webhook receiver.
                if s[0..6] == [0, 0, 0, 0, 0, 0]
                    || (s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0)
                    || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                    || (s[0] == 0x2001 && s[1] < 0x200)
                {
                    return false;
                }
                !(a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80
                    || (s[0] & 0xffc0) == 0xfec0
                    || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
                    || (s[0] == 0x2001 && s[1] == 0x0db8))
            }
        },
    }
}

/// Resolves names and keeps only public addresses, so a webhook cannot be pointed at the
/// server's own network by a name that resolves there. Checking after resolution (not the
/// URL's text) is what stops DNS tricks.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} {PRIVATE_ONLY}", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for outbound deliveries: 5 s to connect, 15 s in all, no redirects.
pub fn http_client(allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names itself, past the check below.
        .no_proxy()
        .user_agent(concat!("AgentNexus-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("the HTTP client builds")
}

/// The HTTP client for identity providers (SSO): as [`http_client`], 10 s in all.
pub fn sso_client(allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("AgentNexus-SSO/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("the HTTP client builds")
}

/// Whether a URL's host is a literal address in a private range (names are checked after
/// resolution, by the clients' resolver).
pub(crate) fn literal_private(url: &reqwest::Url) -> Option<IpAddr> {
    let ip = match url.host()? {
        url::Host::Ipv4(a) => IpAddr::V4(a),
        url::Host::Ipv6(a) => IpAddr::V6(a),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then_some(ip)
}

/// What a receiver answered.
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    /// Its `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// At most the first `limit` bytes of the body.
    pub body: Vec<u8>,
}

/// Sends a request and reads its answer, keeping at most `limit` bytes of the body. A
/// transport failure comes back as what to record, and whether retrying could help.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    limit: usize,
) -> Result<Answer, (String, bool)> {
    let mut response = request.send().await.map_err(|e| {
        let why = describe(&e);
        let retryable = !why.contains(PRIVATE_ONLY);
        (why, retryable)
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Refuses what no retry can fix: a URL that is not http(s), or a literal address in a
/// private range (names are checked after resolution, by the client's resolver).
pub(crate) fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook_url must be http or https".into());
    }
    if parsed.host().is_none() {
        return Err("webhook_url has no host".into());
    }
    match literal_private(&parsed) {
        Some(ip) if !allow_private => Err(format!(
            "{ip} is a private, loopback or link-local address; refused \
             (AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
        )),
        _ => Ok(()),
    }
}

/// A URL as the audit trail keeps it: without its query, which may carry a token.
pub(crate) fn without_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// A transport error in a sentence, without the URL's query (which may carry a token).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "192.0.0.8",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fec0::1",
            "100::1",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "::ffff:0:127.0.0.1",
            "64:ff9b:1::a00:1",
            "2001::5efe:7f00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_private_destinations_are_refused() {
        assert!(check_destination("http://127.0.0.1:9/hook", false).is_err());
        assert!(check_destination("http://[::1]/hook", false).is_err());
        assert!(check_destination("http://[::127.0.0.1]:9/hook", false).is_err());
        assert!(check_destination("http://[::ffff:7f00:1]/hook", false).is_err());
        assert!(check_destination("http://169.254.169.254/latest", false).is_err());
        assert!(check_destination("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check_destination("https://hooks.example.com/x", false).is_ok());
        assert!(check_destination("ftp://hooks.example.com/x", true).is_err());
    }
}
