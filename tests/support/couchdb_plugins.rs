//! Installing the CouchDB and webhook example connectors for a test host.

use crate::guest;
use std::path::Path;

/// Copies couchdb-source, couchdb-sink and webhook-receiver into
/// `plugins`, with manifests letting the CouchDB ones reach `origins`.
pub fn install(plugins: &Path, origins: &[String]) {
    std::fs::create_dir_all(plugins).unwrap();
    let http: Vec<String> = origins.iter().map(|o| format!("\"{o}\"")).collect();
    for name in ["couchdb-source", "couchdb-sink", "webhook-receiver"] {
        std::fs::copy(guest(name), plugins.join(format!("{name}.wasm"))).unwrap();
        if name != "webhook-receiver" {
            let manifest = format!(
                "http = [{}]\nsecrets = [\"couchdb-auth\"]\n",
                http.join(", ")
            );
            std::fs::write(plugins.join(format!("{name}.manifest.toml")), manifest).unwrap();
        }
    }
}

/// The environment variable holding the (unused) CouchDB auth secret.
pub const AUTH_ENV: &str = "SWITCHYARD_TEST_COUCH_AUTH";

/// A `[connections.NAME]` block for a CouchDB connector at `origin`.
pub fn connection(name: &str, plugin: &str, origin: &str, database: &str) -> String {
    format!(
        r#"
        [connections.{name}]
        plugin = "{plugin}"
        config = {{ base_url = "{origin}", database = "{database}" }}
        [connections.{name}.grants]
        allow = ["{origin}"]
        # Unused (pouchdb-server runs without auth) but the plugins import
        # `secrets`, so the grant must exist.
        secrets.couchdb-auth = {{ env = "{AUTH_ENV}" }}
        "#
    )
}
