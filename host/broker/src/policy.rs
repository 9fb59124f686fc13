//! Egress policy: which destinations a connection may reach.
//!
//! Default deny. An operator grants destinations as `scheme://host[:port]`
//! patterns, where the host may start with `*.` to match any subdomain
//! (never the bare domain, never a suffix trick such as `allowed.com.evil`).
//! URLs are parsed the way browsers parse them (WHATWG), so odd IPv4
//! spellings such as `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1`
//! all become `127.0.0.1` before any rule sees them.
//!
//! Matching a rule is not enough: every address a name resolves to is
//! checked by [`forbidden_reason`], and loopback, private, link-local,
//! unique-local, metadata, unspecified and translated (IPv4-mapped, NAT64)
//! addresses are refused unless a rule names that exact IP literal.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The URL does not parse.
    #[error("`{url}` is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Only http and https leave the host.
    #[error("scheme `{0}` is not allowed; only http and https")]
    Scheme(String),
    /// Credentials in the URL are refused: they belong in secrets.
    #[error("URLs with user info (`user@host`) are refused; use a secret instead")]
    UserInfo,
    /// No grant covers the destination.
    #[error("{0} is not granted; add it to the connection's `allow` list")]
    NotGranted(String),
    /// The destination resolves to an address that is never reachable by
    /// name, only by a grant naming the IP itself.
    #[error("{host} resolves to {addr}, a {reason} address; grant `{addr}` explicitly to allow it")]
    ForbiddenAddress {
        host: String,
        addr: IpAddr,
        reason: &'static str,
    },
}

/// One granted destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    scheme: String,
    host: HostPattern,
    /// `None` means the scheme's default port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// An exact DNS name, lowercase, without trailing dot.
    Name(String),
    /// `*.suffix`: any name with at least one more label.
    Subdomains(String),
    /// An IP literal: the only way to reach a forbidden address.
    Ip(IpAddr),
}

impl EgressRule {
    /// Parses `scheme://host[:port]` where host may be `*.domain`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("egress rule `{text}`: {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad("scheme must be http or https"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "give only scheme, host and port; no path, query or user",
            ));
        }
        if let Some(suffix) = rest.strip_prefix("*.") {
            // Validate the suffix with the URL parser, then keep its form.
            let url =
                Url::parse(&format!("{scheme}://{suffix}")).map_err(|e| bad(&e.to_string()))?;
            let Some(Host::Domain(domain)) = url.host() else {
                return Err(bad("a wildcard needs a domain, not an IP"));
            };
            if !domain.contains('.') {
                return Err(bad(
                    "a wildcard must cover a registrable domain, e.g. *.example.com",
                ));
            }
            return Ok(EgressRule {
                scheme,
                host: HostPattern::Subdomains(domain.trim_end_matches('.').to_owned()),
                port: url.port(),
            });
        }
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|e| bad(&e.to_string()))?;
        let host = match url.host() {
            Some(Host::Domain(d)) => HostPattern::Name(d.trim_end_matches('.').to_owned()),
            Some(Host::Ipv4(ip)) => HostPattern::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => HostPattern::Ip(IpAddr::V6(ip)),
            None => return Err(bad("missing host")),
        };
        Ok(EgressRule {
            scheme,
            host,
            port: url.port(),
        })
    }

    fn matches(&self, dest: &Destination) -> bool {
        if self.scheme != dest.scheme
            || self.port.unwrap_or(default_port(&self.scheme)) != dest.port
        {
            return false;
        }
        match (&self.host, &dest.host) {
            (HostPattern::Name(name), DestHost::Name(host)) => name == host,
            (HostPattern::Subdomains(suffix), DestHost::Name(host)) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Ip(ip), DestHost::Ip(addr)) => ip == addr,
            _ => false,
        }
    }

    /// Whether this rule names `addr` itself for `dest`'s scheme and
    /// port: the only way to reach a forbidden address.
    fn names_ip(&self, dest: &Destination, addr: IpAddr) -> bool {
        let same_port = self.scheme == dest.scheme
            && self.port.unwrap_or(default_port(&self.scheme)) == dest.port;
        same_port && matches!(self.host, HostPattern::Ip(ip) if ip == addr)
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Name(n) => n.clone(),
            HostPattern::Subdomains(s) => format!("*.{s}"),
            HostPattern::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            HostPattern::Ip(ip) => ip.to_string(),
        };
        match self.port {
            Some(port) => write!(f, "{}://{host}:{port}", self.scheme),
            None => write!(f, "{}://{host}", self.scheme),
        }
    }
}

/// Where a request would go, after parsing and normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: String,
    host: DestHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DestHost {
    Name(String),
    Ip(IpAddr),
}

impl Destination {
    /// The host as text (IPv6 without brackets).
    pub fn host(&self) -> String {
        match &self.host {
            DestHost::Name(n) => n.clone(),
            DestHost::Ip(ip) => ip.to_string(),
        }
    }

    /// The IP, when the URL names one directly.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            DestHost::Ip(ip) => Some(ip),
            DestHost::Name(_) => None,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            DestHost::Ip(IpAddr::V6(ip)) => write!(f, "{}://[{ip}]:{}", self.scheme, self.port),
            _ => write!(f, "{}://{}:{}", self.scheme, self.host(), self.port),
        }
    }
}

/// The destinations one connection may reach. Default: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    rules: Vec<EgressRule>,
}

impl EgressPolicy {
    /// A policy allowing exactly `rules`.
    pub fn new(rules: Vec<EgressRule>) -> Self {
        EgressPolicy { rules }
    }

    /// Whether no destination is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parses each pattern, naming the first bad one.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let rules = patterns
            .iter()
            .map(|p| EgressRule::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(EgressPolicy { rules })
    }

    /// Checks a URL against the rules, before any name resolution. An IP
    /// literal in the URL is also checked against [`forbidden_reason`].
    pub fn check_url(&self, url: &str) -> Result<Destination, Denied> {
        let parsed = Url::parse(url).map_err(|e| Denied::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let scheme = parsed.scheme().to_owned();
        if scheme != "http" && scheme != "https" {
            return Err(Denied::Scheme(scheme));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Denied::UserInfo);
        }
        let host = match parsed.host() {
            Some(Host::Domain(d)) => DestHost::Name(d.trim_end_matches('.').to_ascii_lowercase()),
            Some(Host::Ipv4(ip)) => DestHost::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => DestHost::Ip(IpAddr::V6(ip)),
            None => {
                return Err(Denied::InvalidUrl {
                    url: url.to_owned(),
                    reason: "no host".into(),
                });
            }
        };
        let port = parsed
            .port_or_known_default()
            .unwrap_or(default_port(&scheme));
        let dest = Destination { scheme, host, port };
        if !self.rules.iter().any(|r| r.matches(&dest)) {
            return Err(Denied::NotGranted(dest.to_string()));
        }
        if let Some(ip) = dest.ip() {
            self.check_addr(&dest, ip)?;
        }
        Ok(dest)
    }

    /// Checks one resolved address of `dest`. Call it for every address
    /// the resolver returns and connect only to addresses that pass.
    pub fn check_addr(&self, dest: &Destination, addr: IpAddr) -> Result<(), Denied> {
        match forbidden_reason(addr) {
            Some(reason) if !self.rules.iter().any(|r| r.names_ip(dest, addr)) => {
                Err(Denied::ForbiddenAddress {
                    host: dest.host(),
                    addr,
                    reason,
                })
            }
            _ => Ok(()),
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// Why `addr` must not be reached by name, or `None` for a public address.
pub fn forbidden_reason(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        (169, 254, 169) if ip.octets()[3] == 254 => "cloud metadata",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_private() => "private",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Translated forms would smuggle any IPv4 address past the v4 checks.
    if ip.to_ipv4_mapped().is_some() {
        return Some("IPv4-mapped (::ffff:0:0/96)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some("NAT64 (64:ff9b::/96)");
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "cloud metadata",
        x if x & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x2002 => "6to4 (2002::/16)",
        0 if s[1..6] == [0; 5] => "IPv4-compatible (::/96)",
        _ => return None,
    })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
