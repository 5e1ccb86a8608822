//! SSRF guard for http(s) media. A hostname check before the request would not hold:
//! DNS can answer differently when reqwest connects, and redirects move the target. So
//! the guard sits where addresses are chosen: in reqwest's resolver (hostnames) and in
//! its redirect policy (IP literals, which never reach the resolver).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::Policy;
use reqwest::Url;

pub(super) const MAX_REDIRECTS: usize = 5;

/// Why the guard stopped a fetch; found again by walking reqwest's error `source()` chain.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The target is not public: MEDIA_NOT_ALLOWED with this reason.
    NotPublic(String),
    TooManyRedirects,
    UnsupportedRedirect(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotPublic(reason) => f.write_str(reason),
            Refusal::TooManyRedirects => {
                write!(f, "too many redirects (more than {MAX_REDIRECTS})")
            }
            Refusal::UnsupportedRedirect(url) => write!(f, "redirect to a non-http(s) URL ({url})"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether `ip` is an ordinary internet address, i.e. not one that reaches the gateway's
/// own machine or network (loopback, private, link-local, reserved, documentation...).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network"
        || a == 10
        || a == 127
        || a >= 224 // multicast, reserved, broadcast
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol, TEST-NET-1
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113); // TEST-NET-3
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // Translation and tunnel forms deliver to their embedded IPv4 address, so judge that.
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // Only 2000::/3 is global unicast; this also rules out ::1, fc00::/7, fe80::/10, ff00::/8.
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        && !(s[0] == 0x2001 && s[1] == 0) // Teredo tunnels to an address we cannot vet
        && !(s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking
        && !(s[0] == 0x3fff && s[1] < 0x1000) // documentation (RFC 9637)
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-mapped, IPv4-compatible (which puts :: and ::1 in 0.0.0.0/8) and NAT64.
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)), // 6to4
        _ => None,
    }
}

fn not_public(ips: &[IpAddr]) -> Refusal {
    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
    Refusal::NotPublic(format!(
        "host resolves to a non-public address ({})",
        list.join(", ")
    ))
}

/// Refuses a URL whose host is a non-public IP literal. Hostnames are left to the resolver.
pub(super) fn check_literal_host(url: &Url, allow_private: bool) -> Result<(), Refusal> {
    let host = url.host_str().unwrap_or("");
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if !allow_private && !is_public_ip(ip) => Err(not_public(&[ip])),
        _ => Ok(()),
    }
}

/// The redirect rule: `hops` counts redirects including this one (reqwest's `previous()`).
pub(super) fn check_redirect(next: &Url, hops: usize, allow_private: bool) -> Result<(), Refusal> {
    if hops > MAX_REDIRECTS {
        return Err(Refusal::TooManyRedirects);
    }
    if !matches!(next.scheme(), "http" | "https") {
        return Err(Refusal::UnsupportedRedirect(next.to_string()));
    }
    check_literal_host(next, allow_private).map_err(|refusal| match refusal {
        Refusal::NotPublic(reason) => {
            Refusal::NotPublic(format!("redirected to {next}, whose {reason}"))
        }
        other => other,
    })
}

pub(super) fn redirect_policy(allow_private: bool) -> Policy {
    Policy::custom(move |attempt| {
        match check_redirect(attempt.url(), attempt.previous().len(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    })
}

/// Keeps only public addresses; refuses when the host has nothing but non-public ones.
pub(super) fn filter_addrs(
    addrs: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refusal> {
    if allow_private {
        return Ok(addrs);
    }
    let (public, private): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| is_public_ip(a.ip()));
    if public.is_empty() && !private.is_empty() {
        let ips: Vec<IpAddr> = private.iter().map(SocketAddr::ip).collect();
        return Err(not_public(&ips));
    }
    Ok(public)
}

/// RFC 6761: every `localhost` name is loopback, whatever the local resolver says.
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// reqwest's resolver for media fetches: the system resolver behind the address policy.
pub(super) struct GuardedResolver {
    pub(super) allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            if !allow_private && is_localhost_name(&host) {
                return Err(Refusal::NotPublic(format!("host {host} is a loopback name")).into());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = filter_addrs(addrs, allow_private)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.0.3.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.101.1",
            "203.0.114.1",
            "223.255.255.255",
            "169.253.1.1",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:db9::1",
            "3fff:1000::1",
        ] {
            assert!(is_public_ip(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn non_public_addresses() {
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "2001:2::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::192.168.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2002:a00:1::",
        ] {
            assert!(!is_public_ip(ip(s)), "{s} should not be public");
        }
    }

    #[test]
    fn literal_hosts_and_redirect_targets() {
        let url = |s: &str| Url::parse(s).unwrap();
        for s in [
            "http://127.0.0.1/x",
            "http://[::1]:8080/",
            "http://2130706433/",
            "http://0x7f.1/",
            "https://[::ffff:7f00:1]/",
        ] {
            assert!(
                matches!(
                    check_literal_host(&url(s), false),
                    Err(Refusal::NotPublic(_))
                ),
                "{s}"
            );
            assert_eq!(check_literal_host(&url(s), true), Ok(()), "{s}");
        }
        assert_eq!(check_literal_host(&url("http://8.8.8.8/"), false), Ok(()));
        assert_eq!(
            check_literal_host(&url("http://localhost/"), false),
            Ok(()),
            "left to the resolver"
        );

        assert_eq!(check_redirect(&url("https://8.8.8.8/a"), 1, false), Ok(()));
        assert_eq!(
            check_redirect(&url("https://example.com/a"), 5, false),
            Ok(())
        );
        assert_eq!(
            check_redirect(&url("https://example.com/a"), 6, true),
            Err(Refusal::TooManyRedirects)
        );
        let Err(Refusal::NotPublic(reason)) =
            check_redirect(&url("http://169.254.169.254/latest"), 1, false)
        else {
            panic!("metadata redirect must be refused");
        };
        assert!(
            reason.contains("redirected to http://169.254.169.254/latest")
                && reason.contains("(169.254.169.254)")
        );
        assert_eq!(check_redirect(&url("http://10.0.0.1/"), 1, true), Ok(()));
        for s in [
            "file:///etc/passwd",
            "ftp://8.8.8.8/x",
            "data:text/plain;base64,QQ==",
        ] {
            assert!(
                matches!(
                    check_redirect(&url(s), 1, true),
                    Err(Refusal::UnsupportedRedirect(_))
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let sa = |s: &str| SocketAddr::new(ip(s), 0);
        let mixed = vec![
            sa("127.0.0.1"),
            sa("8.8.8.8"),
            sa("::1"),
            sa("2606:4700::1"),
        ];
        assert_eq!(
            filter_addrs(mixed.clone(), false),
            Ok(vec![sa("8.8.8.8"), sa("2606:4700::1")])
        );
        assert_eq!(filter_addrs(mixed.clone(), true), Ok(mixed));
        let Err(Refusal::NotPublic(reason)) =
            filter_addrs(vec![sa("10.0.0.5"), sa("fd00::5")], false)
        else {
            panic!("private-only answers must be refused");
        };
        assert_eq!(
            reason,
            "host resolves to a non-public address (10.0.0.5, fd00::5)"
        );
        assert_eq!(filter_addrs(vec![], false), Ok(vec![]));
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_names() {
        for host in ["localhost", "LOCALHOST.", "api.localhost"] {
            let resolver = GuardedResolver {
                allow_private: false,
            };
            let err = resolver.resolve(host.parse().unwrap()).await.err().unwrap();
            assert!(
                matches!(err.downcast_ref::<Refusal>(), Some(Refusal::NotPublic(_))),
                "{host}"
            );
        }
        let allowed = GuardedResolver {
            allow_private: true,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        assert!(allowed.unwrap().any(|a| a.ip().is_loopback()));
    }
}
