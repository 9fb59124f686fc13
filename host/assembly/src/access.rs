//! `[access]`: who may call actions and run syncs over HTTP.
//!
//! Default-deny: an action can be called only with a caller key whose
//! scope names its connection (or the action), unless the operator lists
//! the connection under `public`. A sync can be run by a key naming it
//! (the server also lets the admin token run syncs).
//!
//! ```toml
//! [access]
//! public = ["echo"]                        # anyone who reaches the port
//!
//! [access.keys.ci-bot]                     # key id, in audit and metrics
//! secret = { env = "CI_BOT_KEY" }          # the secret providers, as grants
//! connections = ["crm"]                    # every action of `crm`
//! actions = ["billing/refund"]             # one action of `billing`
//! syncs = ["nightly"]                      # POST /v1/syncs/nightly/run
//! ```
//!
//! Callers send `Authorization: Bearer <key>`. A presented key is hashed
//! once and compared with every configured key's digest in constant time,
//! all of them every time, so neither the position of a first differing
//! byte nor which key matched shows in the timing.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use switchyard_broker::secrets::{SecretGrant, SecretProvider};

/// `[access]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Connections whose actions anyone who reaches the port may call,
    /// without a key. Default: none.
    pub public: Vec<String>,
    /// Caller keys by id. Default: none.
    pub keys: BTreeMap<String, CallerKeyConfig>,
}

/// `[access.keys.ID]`: one caller's key and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerKeyConfig {
    /// Where the key comes from: `{ env = "VAR" }` or `{ file = "path" }`.
    pub secret: SecretGrant,
    /// Connections whose every action this key may call. Default: none.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Single actions this key may call, as `connection/action`. Default:
    /// none.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Syncs this key may run. Default: none.
    #[serde(default)]
    pub syncs: Vec<String>,
}

impl AccessConfig {
    /// Checks shapes, resolving relative key files against `base`.
    pub(crate) fn prepare(&mut self, base: &Path, syncs: &BTreeSet<&str>) -> Result<(), String> {
        for (id, key) in &mut self.keys {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(format!(
                    "access.keys.{id}: a key id is letters, digits, `-`, `_` or `.` (it becomes a metrics label)"
                ));
            }
            if !key.secret.destinations.is_empty() || key.secret.in_body {
                return Err(format!(
                    "access.keys.{id}.secret: a caller key is only compared, never sent: remove `destinations` and `in_body`"
                ));
            }
            if let Some(file) = key.secret.file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
            for action in &key.actions {
                match action.split_once('/') {
                    Some((c, a)) if !c.is_empty() && !a.is_empty() && !a.contains('/') => {}
                    _ => {
                        return Err(format!(
                            "access.keys.{id}.actions: `{action}` is not `connection/action`"
                        ));
                    }
                }
            }
            if let Some(sync) = key.syncs.iter().find(|s| !syncs.contains(s.as_str())) {
                return Err(format!(
                    "access.keys.{id}.syncs: no sync `{sync}` is configured under [syncs]"
                ));
            }
        }
        Ok(())
    }
}

/// Who a request acts as, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No key presented, on a public connection.
    Public,
    /// A configured key, by id.
    Key(String),
    /// The admin token (the server lets it run syncs).
    Admin,
}

impl Caller {
    /// The id in audit records and metrics labels: the key id, `public`
    /// or `admin`.
    pub fn id(&self) -> &str {
        match self {
            Caller::Public => "public",
            Caller::Key(id) => id,
            Caller::Admin => "admin",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key where one is needed (HTTP 401).
    Missing,
    /// A key that matches no configured key (HTTP 401).
    Unknown,
    /// A valid key outside its scope (HTTP 403); the key id.
    OutOfScope(String),
}

impl Refusal {
    /// `missing_key`, `unknown_key` or `out_of_scope`: the error kind and
    /// the `decision` in audit records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_key",
            Refusal::Unknown => "unknown_key",
            Refusal::OutOfScope(_) => "out_of_scope",
        }
    }

    /// The caller id to record: the key id when one matched, else
    /// `anonymous`.
    pub fn caller_id(&self) -> &str {
        match self {
            Refusal::OutOfScope(id) => id,
            _ => "anonymous",
        }
    }
}

struct CallerKey {
    id: String,
    sha256: [u8; 32],
    connections: BTreeSet<String>,
    actions: BTreeSet<(String, String)>,
    syncs: BTreeSet<String>,
}

/// `[access]` with every key resolved: the one place that decides who may
/// call what over HTTP.
#[derive(Default)]
pub struct Access {
    public: BTreeSet<String>,
    keys: Vec<CallerKey>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("public", &self.public)
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl Access {
    /// Resolves every key with `provider`; the error names the key.
    pub fn resolve(config: &AccessConfig, provider: &dyn SecretProvider) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(config.keys.len());
        let mut seen: Vec<([u8; 32], &str)> = Vec::new();
        for (id, key) in &config.keys {
            let name = format!("access.keys.{id}.secret");
            let value = provider
                .resolve(&name, &key.secret)
                .map_err(|e| e.to_string())?;
            let sha256 = digest(value.expose());
            if let Some((_, other)) = seen.iter().find(|(d, _)| *d == sha256) {
                return Err(format!(
                    "access.keys.{id} and access.keys.{other} have the same key: each caller needs its own, or the audit trail cannot tell them apart"
                ));
            }
            seen.push((sha256, id));
            keys.push(CallerKey {
                id: id.clone(),
                sha256,
                connections: key.connections.iter().cloned().collect(),
                actions: (key.actions.iter())
                    .filter_map(|a| a.split_once('/'))
                    .map(|(c, a)| (c.to_owned(), a.to_owned()))
                    .collect(),
                syncs: key.syncs.iter().cloned().collect(),
            });
        }
        Ok(Access {
            public: config.public.iter().cloned().collect(),
            keys,
        })
    }

    /// Everything public, no keys: for embedders and tests that front a
    /// runtime without access control.
    pub fn open() -> Self {
        Access {
            public: BTreeSet::from(["*".to_owned()]),
            ..Access::default()
        }
    }

    /// Whether anyone may call `connection`'s actions.
    pub fn is_public(&self, connection: &str) -> bool {
        self.public.contains(connection) || self.public.contains("*")
    }

    /// May `presented` (the bearer token, if any) call `action` of
    /// `connection` (a connection name, without `@version`)?
    pub fn check_action(
        &self,
        presented: Option<&[u8]>,
        connection: &str,
        action: &str,
    ) -> Result<Caller, Refusal> {
        let Some(presented) = presented else {
            return if self.is_public(connection) {
                Ok(Caller::Public)
            } else {
                Err(Refusal::Missing)
            };
        };
        let key = self.find(presented).ok_or(Refusal::Unknown)?;
        let in_scope = key.connections.contains(connection)
            || key
                .actions
                .contains(&(connection.to_owned(), action.to_owned()))
            || self.is_public(connection);
        if in_scope {
            Ok(Caller::Key(key.id.clone()))
        } else {
            Err(Refusal::OutOfScope(key.id.clone()))
        }
    }

    /// May `presented` run sync `sync`? Keys naming it may.
    pub fn check_sync(&self, presented: Option<&[u8]>, sync: &str) -> Result<Caller, Refusal> {
        let presented = presented.ok_or(Refusal::Missing)?;
        let key = self.find(presented).ok_or(Refusal::Unknown)?;
        if key.syncs.contains(sync) {
            Ok(Caller::Key(key.id.clone()))
        } else {
            Err(Refusal::OutOfScope(key.id.clone()))
        }
    }

    /// The key `presented` is, comparing against every key.
    fn find(&self, presented: &[u8]) -> Option<&CallerKey> {
        let presented = digest(presented);
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&key.sha256, &presented) {
                found = Some(key);
            }
        }
        found
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_broker::secrets::{SecretError, SecretValue};

    /// Resolves `env` names to themselves with a `key-` prefix.
    struct Fixed;
    impl SecretProvider for Fixed {
        fn resolve(&self, _: &str, grant: &SecretGrant) -> Result<SecretValue, SecretError> {
            let var = grant.env.clone().unwrap_or_default();
            Ok(SecretValue::new(format!("key-{var}").into_bytes()))
        }
    }

    fn access(toml_text: &str) -> Access {
        let mut config: AccessConfig = toml::from_str(toml_text).unwrap();
        config
            .prepare(Path::new("/etc"), &BTreeSet::from(["nightly"]))
            .unwrap();
        Access::resolve(&config, &Fixed).unwrap()
    }

    const CONFIG: &str = r#"
public = ["echo"]
[keys.bot]
secret = { env = "BOT" }
connections = ["crm"]
actions = ["billing/refund"]
syncs = ["nightly"]
[keys.other]
secret = { env = "OTHER" }
"#;

    #[test]
    fn default_deny_with_public_connections_and_scoped_keys() {
        let a = access(CONFIG);
        let bot = Some(&b"key-BOT"[..]);
        let other = Some(&b"key-OTHER"[..]);
        assert_eq!(a.check_action(None, "echo", "greet"), Ok(Caller::Public));
        assert_eq!(a.check_action(None, "crm", "x"), Err(Refusal::Missing));
        assert_eq!(
            a.check_action(bot, "crm", "x"),
            Ok(Caller::Key("bot".into()))
        );
        assert_eq!(
            a.check_action(bot, "billing", "refund"),
            Ok(Caller::Key("bot".into()))
        );
        assert_eq!(
            a.check_action(bot, "billing", "charge"),
            Err(Refusal::OutOfScope("bot".into()))
        );
        assert_eq!(
            a.check_action(other, "crm", "x"),
            Err(Refusal::OutOfScope("other".into()))
        );
        // A key on a public connection is attributed to its caller.
        assert_eq!(
            a.check_action(other, "echo", "greet"),
            Ok(Caller::Key("other".into()))
        );
        assert_eq!(
            a.check_action(Some(b"key-BOTX"), "echo", "greet"),
            Err(Refusal::Unknown)
        );
        assert_eq!(a.check_action(Some(b""), "crm", "x"), Err(Refusal::Unknown));
    }

    #[test]
    fn syncs_need_a_key_naming_them() {
        let a = access(CONFIG);
        assert_eq!(
            a.check_sync(Some(b"key-BOT"), "nightly"),
            Ok(Caller::Key("bot".into()))
        );
        assert_eq!(a.check_sync(Some(b"adm"), "nightly"), Err(Refusal::Unknown));
        assert_eq!(
            a.check_sync(Some(b"key-OTHER"), "nightly"),
            Err(Refusal::OutOfScope("other".into()))
        );
        assert_eq!(a.check_sync(None, "nightly"), Err(Refusal::Missing));
    }

    #[test]
    fn bad_shapes_are_refused_with_their_key() {
        let prepare = |text: &str| {
            let mut c: AccessConfig = toml::from_str(text).unwrap();
            c.prepare(Path::new("/etc"), &BTreeSet::new())
        };
        let err = prepare("[keys.a]\nsecret = { env = \"A\" }\nactions = [\"crm\"]").unwrap_err();
        assert!(err.contains("access.keys.a.actions") && err.contains("connection/action"));
        let err = prepare("[keys.a]\nsecret = { env = \"A\" }\nsyncs = [\"x\"]").unwrap_err();
        assert!(err.contains("no sync `x`"), "{err}");
        let err = prepare("[keys.\"a b\"]\nsecret = { env = \"A\" }").unwrap_err();
        assert!(err.contains("key id"), "{err}");
        let err = prepare("[keys.a]\nsecret = { env = \"A\", destinations = [\"https://x\"] }")
            .unwrap_err();
        assert!(err.contains("never sent"), "{err}");
        let mut c: AccessConfig = toml::from_str("[keys.a]\nsecret = { file = \"k\" }").unwrap();
        c.prepare(Path::new("/etc"), &BTreeSet::new()).unwrap();
        assert_eq!(
            c.keys["a"].secret.file.as_deref(),
            Some(Path::new("/etc/k"))
        );
    }

    #[test]
    fn two_callers_sharing_a_key_are_refused() {
        let config: AccessConfig = toml::from_str(
            "[keys.a]\nsecret = { env = \"S\" }\n[keys.b]\nsecret = { env = \"S\" }",
        )
        .unwrap();
        let err = Access::resolve(&config, &Fixed).unwrap_err();
        assert!(err.contains("same key"), "{err}");
    }
}
