//! Capabilities: what a plugin requests, what the operator grants a
//! connection, and what the connection may then use.
//!
//! A plugin ships a manifest beside its component (`stripe.wasm` →
//! `stripe.manifest.toml`) listing what it needs. The operator grants each
//! connection rights in `switchyard.toml`. The effective rights are the
//! intersection: a destination must be both requested and granted, a secret
//! both named by the plugin and bound by the operator. Everything else is
//! denied, and a plugin without a manifest requests nothing.

use crate::oauth::OAuthGrant;
use crate::policy::{Denied, Destination, EgressPolicy};
use crate::rate::RateLimitGrant;
use crate::secrets::SecretGrant;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a plugin asks for. Every list defaults to empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginManifest {
    /// Outbound HTTP destinations, as egress rules (`https://*.stripe.com`).
    pub http: Vec<String>,
    /// Names of secrets the plugin will ask for.
    pub secrets: BTreeSet<String>,
    /// Named rate-limit buckets the plugin paces itself with.
    pub rate_limits: BTreeSet<String>,
    /// Whether the plugin keeps key-value state.
    pub state: bool,
    /// Names of OAuth grants whose access token the plugin sends, as the
    /// placeholder `{{oauth:NAME}}`.
    pub oauth: BTreeSet<String>,
}

impl PluginManifest {
    /// The manifest path for a component: `x.wasm` → `x.manifest.toml`.
    pub fn path_for(component: &Path) -> PathBuf {
        component.with_extension("manifest.toml")
    }

    /// Reads the manifest beside `component`; none means requests nothing.
    pub fn load_for(component: &Path) -> Result<Self, String> {
        let path = Self::path_for(component);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parses manifest TOML, checking every destination pattern.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: PluginManifest = toml::from_str(text).map_err(|e| e.to_string())?;
        EgressPolicy::parse(&manifest.http)?;
        Ok(manifest)
    }

    /// What `self` (a new version) requests beyond `old`.
    pub fn beyond(&self, old: &PluginManifest) -> PluginManifest {
        PluginManifest {
            http: self
                .http
                .iter()
                .filter(|h| !old.http.contains(h))
                .cloned()
                .collect(),
            secrets: self.secrets.difference(&old.secrets).cloned().collect(),
            rate_limits: self
                .rate_limits
                .difference(&old.rate_limits)
                .cloned()
                .collect(),
            state: self.state && !old.state,
            oauth: self.oauth.difference(&old.oauth).cloned().collect(),
        }
    }

    /// One line per requested right, for people.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.http.iter().map(|h| format!("http {h}")).collect();
        lines.extend(self.secrets.iter().map(|s| format!("secret {s}")));
        lines.extend(self.rate_limits.iter().map(|r| format!("rate limit {r}")));
        if self.state {
            lines.push("state".into());
        }
        lines.extend(self.oauth.iter().map(|g| format!("oauth {g}")));
        lines
    }

    /// Whether the manifest requests nothing.
    pub fn is_empty(&self) -> bool {
        self == &PluginManifest::default()
    }
}

/// What the operator grants one connection. Default: nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Destinations this connection may reach (egress rules).
    pub allow: Vec<String>,
    /// Secrets bound for this connection: where each comes from and where
    /// it may be sent.
    pub secrets: BTreeMap<String, SecretGrant>,
    /// Rate-limit buckets configured for this connection.
    pub rate_limits: BTreeMap<String, RateLimitGrant>,
    /// Whether this connection may keep state.
    pub state: bool,
    /// Host-level retries of idempotent outbound requests. Default: none.
    pub retry: Option<crate::egress::RetryGrant>,
    /// OAuth clients whose access tokens the host obtains and sends for
    /// this connection. Default: none.
    pub oauth: BTreeMap<String, OAuthGrant>,
}

/// The rights one connection actually has: requested ∩ granted.
#[derive(Debug, Clone, Default)]
pub struct EffectiveRights {
    requested_http: EgressPolicy,
    granted_http: EgressPolicy,
    /// Secrets both requested and granted.
    pub secrets: BTreeSet<String>,
    /// Buckets both requested and granted.
    pub rate_limits: BTreeSet<String>,
    /// State both requested and granted.
    pub state: bool,
    /// OAuth grants both requested and granted.
    pub oauth: BTreeSet<String>,
    /// Requested but not granted, one line each, for operators.
    pub missing: Vec<String>,
}

impl EffectiveRights {
    /// Intersects a manifest with a connection's grants.
    pub fn new(manifest: &PluginManifest, grants: &Grants) -> Result<Self, String> {
        let requested_http = EgressPolicy::parse(&manifest.http)?;
        let granted_http = EgressPolicy::parse(&grants.allow)?;
        let mut missing = Vec::new();
        for dest in &manifest.http {
            // A plain requested destination may be covered by a wildcard
            // grant; a requested wildcard needs the same wildcard granted.
            let covered = grants.allow.contains(dest)
                || (!dest.contains("*.") && granted_http.check_url(dest).is_ok());
            if !covered {
                missing.push(format!("allow = [\"{dest}\"]"));
            }
        }
        for name in manifest
            .secrets
            .iter()
            .filter(|n| !grants.secrets.contains_key(*n))
        {
            missing.push(format!("secret `{name}`"));
        }
        for name in manifest
            .rate_limits
            .iter()
            .filter(|n| !grants.rate_limits.contains_key(*n))
        {
            missing.push(format!("rate limit `{name}`"));
        }
        if manifest.state && !grants.state {
            missing.push("state = true".into());
        }
        for name in manifest
            .oauth
            .iter()
            .filter(|n| !grants.oauth.contains_key(*n))
        {
            missing.push(format!("oauth grant `{name}`"));
        }
        Ok(EffectiveRights {
            requested_http,
            granted_http,
            secrets: manifest
                .secrets
                .iter()
                .filter(|n| grants.secrets.contains_key(*n))
                .cloned()
                .collect(),
            rate_limits: manifest
                .rate_limits
                .iter()
                .filter(|n| grants.rate_limits.contains_key(*n))
                .cloned()
                .collect(),
            state: manifest.state && grants.state,
            oauth: manifest
                .oauth
                .iter()
                .filter(|n| grants.oauth.contains_key(*n))
                .cloned()
                .collect(),
            missing,
        })
    }

    /// Checks a URL: it must be both requested and granted, and pass the
    /// address rules of the grant.
    pub fn check_url(&self, url: &str) -> Result<Destination, Denied> {
        self.requested_http.check_url(url).map_err(|e| match e {
            Denied::NotGranted(dest) => {
                Denied::NotGranted(format!("{dest} (not requested in the plugin's manifest)"))
            }
            other => other,
        })?;
        self.granted_http.check_url(url)
    }

    /// Whether any destination is both requested and granted.
    pub fn allows_http(&self) -> bool {
        !self.requested_http.is_empty() && !self.granted_http.is_empty()
    }

    /// The granted policy, for checking resolved addresses.
    pub fn egress(&self) -> &EgressPolicy {
        &self.granted_http
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> PluginManifest {
        PluginManifest::parse(
            r#"
            http = ["https://api.stripe.com", "https://files.stripe.com"]
            secrets = ["stripe-key"]
            rate_limits = ["api"]
            state = true
            "#,
        )
        .unwrap()
    }

    #[test]
    fn effective_rights_are_the_intersection() {
        let grants = Grants {
            allow: vec![
                "https://api.stripe.com".into(),
                "https://evil.example".into(),
            ],
            secrets: BTreeMap::from([
                ("stripe-key".to_owned(), SecretGrant::default()),
                ("other".to_owned(), SecretGrant::default()),
            ]),
            rate_limits: BTreeMap::new(),
            state: false,
            retry: None,
            oauth: BTreeMap::new(),
        };
        let rights = EffectiveRights::new(&manifest(), &grants).unwrap();
        assert!(
            rights
                .check_url("https://api.stripe.com/v1/charges")
                .is_ok()
        );
        // Granted but not requested, and requested but not granted: denied.
        let err = rights.check_url("https://evil.example/").unwrap_err();
        assert!(err.to_string().contains("not requested"), "{err}");
        assert!(rights.check_url("https://files.stripe.com/").is_err());
        assert_eq!(rights.secrets, ["stripe-key".to_owned()].into());
        assert!(rights.rate_limits.is_empty());
        assert!(!rights.state);
        assert_eq!(
            rights.missing,
            [
                "allow = [\"https://files.stripe.com\"]",
                "rate limit `api`",
                "state = true"
            ]
        );
    }

    #[test]
    fn a_wildcard_grant_covers_a_plain_request() {
        let manifest = PluginManifest::parse(r#"http = ["https://api.stripe.com"]"#).unwrap();
        let grants = Grants {
            allow: vec!["https://*.stripe.com".into()],
            ..Grants::default()
        };
        let rights = EffectiveRights::new(&manifest, &grants).unwrap();
        assert!(rights.missing.is_empty(), "{:?}", rights.missing);
        assert!(rights.check_url("https://api.stripe.com/x").is_ok());
        assert!(rights.check_url("https://files.stripe.com/x").is_err());
    }

    #[test]
    fn no_manifest_and_no_grants_mean_nothing() {
        let rights = EffectiveRights::new(&PluginManifest::default(), &Grants::default()).unwrap();
        assert!(rights.check_url("https://api.stripe.com/").is_err());
        assert!(rights.secrets.is_empty() && !rights.state && rights.missing.is_empty());
    }

    #[test]
    fn a_new_version_shows_what_it_asks_for_beyond_the_old() {
        let old = manifest();
        let mut new = manifest();
        new.http.push("https://hooks.slack.com".into());
        new.secrets.insert("slack-token".into());
        let extra = new.beyond(&old);
        assert_eq!(extra.http, ["https://hooks.slack.com"]);
        assert_eq!(extra.secrets, ["slack-token".to_owned()].into());
        assert!(!extra.state);
        assert!(old.beyond(&old).is_empty());
    }

    #[test]
    fn manifests_are_checked() {
        let err = PluginManifest::parse("http = [\"ftp://x.com\"]").unwrap_err();
        assert!(err.contains("http or https"), "{err}");
        let err = PluginManifest::parse("network = true").unwrap_err();
        assert!(err.contains("network"), "{err}");
    }

    #[test]
    fn manifest_paths_sit_beside_the_component() {
        assert_eq!(
            PluginManifest::path_for(Path::new("/p/stripe.wasm")),
            Path::new("/p/stripe.manifest.toml")
        );
    }
}
