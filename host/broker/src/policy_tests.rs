use super::*;

fn policy(rules: &[&str]) -> EgressPolicy {
    EgressPolicy::parse(rules).unwrap()
}

fn allowed() -> EgressPolicy {
    policy(&[
        "https://api.allowed.com",
        "https://*.allowed.org",
        "http://plain.allowed.com:8080",
    ])
}

#[test]
fn default_policy_denies_everything() {
    let err = EgressPolicy::default()
        .check_url("https://example.com/")
        .unwrap_err();
    assert_eq!(err, Denied::NotGranted("https://example.com:443".into()));
}

#[test]
fn granted_destinations_pass() {
    let p = allowed();
    for url in [
        "https://api.allowed.com/v1/charges?limit=3",
        "https://API.Allowed.com./x",
        "https://api.allowed.com:443/",
        "https://a.allowed.org/",
        "https://deep.a.allowed.org/",
        "http://plain.allowed.com:8080/",
    ] {
        assert!(p.check_url(url).is_ok(), "{url}");
    }
}

#[test]
fn near_misses_are_denied() {
    let p = allowed();
    for url in [
        "https://api.allowed.com.evil.net/",   // suffix trick
        "https://evilapi.allowed.com/",        // not the granted name
        "https://allowed.org/",                // wildcard excludes the bare domain
        "https://xallowed.org/",               // wildcard needs a dot boundary
        "http://api.allowed.com/",             // wrong scheme
        "https://api.allowed.com:8443/",       // wrong port
        "http://plain.allowed.com/",           // default port is not 8080
        "https://api.allowed.com%2eevil.net/", // encoded dot
    ] {
        assert!(p.check_url(url).is_err(), "{url} should be denied");
    }
}

#[test]
fn userinfo_tricks_are_refused() {
    let p = allowed();
    for url in [
        "https://api.allowed.com@evil.net/",
        "https://user:pass@api.allowed.com/",
        "https://api.allowed.com:443@169.254.169.254/",
    ] {
        let err = p.check_url(url).unwrap_err();
        assert_eq!(err, Denied::UserInfo, "{url}");
    }
}

#[test]
fn only_http_schemes_leave_the_host() {
    let p = policy(&["https://api.allowed.com"]);
    for url in [
        "file:///etc/passwd",
        "ftp://api.allowed.com/",
        "gopher://api.allowed.com:70/",
        "ws://api.allowed.com/",
        "data:text/plain,hi",
        "javascript:alert(1)",
    ] {
        assert!(
            matches!(p.check_url(url), Err(Denied::Scheme(_))),
            "{url}: {:?}",
            p.check_url(url)
        );
    }
    assert!(matches!(
        p.check_url("not a url"),
        Err(Denied::InvalidUrl { .. })
    ));
}

#[test]
fn odd_ipv4_spellings_normalise_to_loopback_and_are_denied() {
    // Even a grant for "anything on 127.0.0.1's spelling" cannot be written
    // except as the literal; these never match a name rule.
    let p = allowed();
    for url in [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::1]/",
        "http://0/",
    ] {
        assert!(
            matches!(p.check_url(url), Err(Denied::NotGranted(_))),
            "{url}"
        );
    }
    // And when a broad-looking grant exists, the literal still has to be
    // granted by IP: a rule for 127.0.0.1 does not cover ::1.
    let p = policy(&["http://127.0.0.1"]);
    assert!(
        p.check_url("http://2130706433/").is_ok(),
        "same address, granted"
    );
    assert!(p.check_url("http://[::1]/").is_err());
}

#[test]
fn forbidden_addresses_need_an_explicit_ip_grant() {
    let p = policy(&["https://api.allowed.com", "http://10.1.2.3"]);
    let dest = p.check_url("https://api.allowed.com/").unwrap();
    for (addr, reason) in [
        ("127.0.0.1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "carrier-grade"),
        ("255.255.255.255", "reserved"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
        ("64:ff9b::a9fe:a9fe", "NAT64"),
        ("2002:7f00:1::", "6to4"),
    ] {
        let ip: IpAddr = addr.parse().unwrap();
        match p.check_addr(&dest, ip) {
            Err(Denied::ForbiddenAddress { reason: r, .. }) => {
                assert!(r.contains(reason), "{addr}: {r}")
            }
            other => panic!("{addr} should be forbidden, got {other:?}"),
        }
    }
    // Public addresses pass; an IP grant opens exactly that address.
    for addr in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
        assert!(p.check_addr(&dest, addr.parse().unwrap()).is_ok(), "{addr}");
    }
    assert!(p.check_url("http://10.1.2.3/").is_ok());
    assert!(p.check_url("http://10.1.2.4/").is_err());
}

#[test]
fn the_denial_says_what_to_grant() {
    let p = policy(&["https://api.allowed.com"]);
    let dest = p.check_url("https://api.allowed.com/").unwrap();
    let err = p
        .check_addr(&dest, "10.0.0.7".parse().unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "api.allowed.com resolves to 10.0.0.7, a private address; grant `10.0.0.7` explicitly to allow it"
    );
    let err = p.check_url("https://other.com/").unwrap_err();
    assert!(
        err.to_string()
            .contains("add it to the connection's `allow` list")
    );
}

#[test]
fn bad_rules_are_refused_with_the_reason() {
    for (rule, why) in [
        ("api.allowed.com", "expected scheme://"),
        ("ftp://x.com", "http or https"),
        ("https://x.com/path", "no path"),
        ("https://user@x.com", "no path, query or user"),
        ("https://*.com", "registrable domain"),
        ("https://*.10.0.0.1", "wildcard needs a domain"),
    ] {
        let err = EgressRule::parse(rule).unwrap_err();
        assert!(err.contains(why), "{rule}: {err}");
    }
}

#[test]
fn rules_display_canonically() {
    let rule = EgressRule::parse("HTTPS://*.Example.COM:8443/").unwrap();
    assert_eq!(rule.to_string(), "https://*.example.com:8443");
    let rule = EgressRule::parse("http://[::1]:9000").unwrap();
    assert_eq!(rule.to_string(), "http://[::1]:9000");
}
