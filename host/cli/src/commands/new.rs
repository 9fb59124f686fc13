//! `switchyard plugin new <name> --lang rust|python|js`: a connector that
//! builds and runs with one more command each.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    /// JavaScript (`js` for short).
    #[value(alias = "js")]
    Javascript,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector's name, lowercase `[a-z0-9-]`; also its folder.
    name: String,
    /// Its language.
    #[arg(long, value_enum, default_value_t = Lang::Python)]
    lang: Lang,
    /// Where to create the folder. Default: the current directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rust: the path of switchyard-sdk. Default: this checkout's `sdk/`.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
    {
        bail!("connector name `{name}`: use lowercase letters, digits and `-`, e.g. `stripe-crm`");
    }
    let dir = args.dir.join(name);
    if dir.exists() {
        bail!(
            "{} already exists; pick another name or --dir",
            dir.display()
        );
    }
    let files = match args.lang {
        Lang::Python => python(name),
        Lang::Javascript => javascript(name),
        Lang::Rust => {
            let sdk = match args.sdk {
                Some(sdk) => sdk,
                None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk"),
            };
            let sdk = sdk.canonicalize().with_context(|| {
                format!("switchyard-sdk not found at {}; pass --sdk", sdk.display())
            })?;
            rust(name, &sdk)
        }
    };
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("in the folder"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "created {}; next:\n  switchyard plugin build {} --out .switchyard/plugins\n  switchyard call .switchyard/plugins/{name}.wasm greet -i '{{\"name\": \"Ada\"}}'",
        dir.display(),
        dir.display()
    );
    println!("{}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn manifest(name: &str) -> String {
    format!(
        "# What {name} asks the operator for; a connection gets this ∩ its grants.\n# http = [\"https://api.example.com\"]\n# secrets = [\"api-token\"]\n# rate_limits = [\"api\"]\nstate = false\n"
    )
}

fn readme(name: &str, lang: &str, test: &str) -> String {
    format!(
        "# {name}\n\nA Switchyard connector in {lang}, scaffolded by `switchyard plugin new`.\n\n    switchyard plugin build . --out ../.switchyard/plugins\n    switchyard call ../.switchyard/plugins/{name}.wasm greet -i '{{\"name\": \"Ada\"}}'\n\nTest: {test}\n\nAsk for capabilities in `{name}.manifest.toml` (http, secrets, state,\nrate_limits); the operator grants them per connection.\n"
    )
}

/// `stripe-crm` → `StripeCrm`.
fn class_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn python(name: &str) -> Vec<(String, String)> {
    let class = class_name(name);
    let app = format!(
        r#""""The {name} connector."""

import switchyard_connector as sy


def greeting(name):
    """Pure logic, tested natively by test_app.py."""
    if not isinstance(name, str) or not name:
        raise sy.InvalidInput('expected {{"name": "…"}}')
    return f"Hello, {{name}}!"


class {class}(sy.Connector):
    name = "{name}"
    version = "0.1.0"
    description = "Says hello"

    @sy.action("greet", '{{"name"}} → {{"message"}}')
    def greet(self, input):
        return {{"message": greeting((input or {{}}).get("name"))}}


Connector = sy.export({class})
"#
    );
    let test = r#""""Tests the connector's logic natively: `python3 test_app.py`.
The SDK only runs inside the component, so it is stubbed here."""

import sys
import types
import unittest

sdk = types.ModuleType("switchyard_connector")


class InvalidInput(Exception):
    pass


sdk.InvalidInput = InvalidInput
sdk.Connector = object
sdk.action = lambda *a: (lambda f: f)
sdk.export = lambda cls: cls
sys.modules["switchyard_connector"] = sdk

import app  # noqa: E402


class GreetingTest(unittest.TestCase):
    def test_greets(self):
        self.assertEqual(app.greeting("Ada"), "Hello, Ada!")

    def test_refuses_a_missing_name(self):
        with self.assertRaises(InvalidInput):
            app.greeting(None)


if __name__ == "__main__":
    unittest.main()
"#;
    vec![
        ("app.py".into(), app),
        ("test_app.py".into(), test.into()),
        (format!("{name}.manifest.toml"), manifest(name)),
        (
            "README.md".into(),
            readme(name, "Python", "`python3 test_app.py`"),
        ),
    ]
}

fn javascript(name: &str) -> Vec<(String, String)> {
    let class = class_name(name);
    let app = format!(
        r#"// The {name} connector.
import * as sy from "switchyard-connector";

// Pure logic, tested natively by test_app.mjs.
export function greeting(name) {{
  if (typeof name !== "string" || !name) throw new sy.InvalidInput('expected {{"name": "…"}}');
  return `Hello, ${{name}}!`;
}}

class {class} extends sy.Connector {{
  static info = {{ name: "{name}", version: "0.1.0", description: "Says hello" }};
  static actions = {{ greet: '{{"name"}} → {{"message"}}' }};

  greet(input) {{
    return {{ message: greeting((input ?? {{}}).name) }};
  }}
}}

export const connector = sy.exportConnector({class});
"#
    );
    let test = r#"// Tests the connector's logic natively: `node test_app.mjs`. The SDK only
// runs inside the component, so app.js is loaded with a stand-in for it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";

class InvalidInput extends Error {}
globalThis.switchyardSdkStub = {
  InvalidInput,
  Connector: class {},
  exportConnector: (impl) => impl,
};
const source = readFileSync(new URL("./app.js", import.meta.url), "utf8").replace(
  'import * as sy from "switchyard-connector";',
  "const sy = globalThis.switchyardSdkStub;",
);
const app = await import(`data:text/javascript,${encodeURIComponent(source)}`);

test("greets", () => {
  assert.equal(app.greeting("Ada"), "Hello, Ada!");
});

test("refuses a missing name", () => {
  assert.throws(() => app.greeting(undefined), InvalidInput);
});
"#;
    vec![
        ("app.js".into(), app),
        ("test_app.mjs".into(), test.into()),
        (format!("{name}.manifest.toml"), manifest(name)),
        (
            "README.md".into(),
            readme(name, "JavaScript", "`node test_app.mjs`"),
        ),
    ]
}

fn rust(name: &str, sdk: &Path) -> Vec<(String, String)> {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Not part of any surrounding workspace.
[workspace]
"#,
        sdk = sdk.display()
    );
    let lib = format!(
        r#"//! The {name} connector.

use switchyard_sdk::{{Connector, ConnectorInfo, Error, json}};

struct Greeter;

#[derive(serde::Deserialize)]
struct Input {{
    name: String,
}}

fn greeting(name: &str) -> String {{
    format!("Hello, {{name}}!")
}}

impl Connector for Greeter {{
    fn describe() -> ConnectorInfo {{
        ConnectorInfo::new("{name}", env!("CARGO_PKG_VERSION"))
            .description("Says hello")
            .action("greet", "{{\"name\"}} → {{\"message\"}}")
    }}

    fn call_action(action: &str, input: &[u8]) -> Result<Vec<u8>, Error> {{
        match action {{
            "greet" => {{
                let input: Input = json::from_slice(input)?;
                json::to_vec(&json::json!({{ "message": greeting(&input.name) }}))
            }}
            other => Err(Error::unknown_action(other)),
        }}
    }}
}}

switchyard_sdk::export!(Greeter);

#[cfg(test)]
mod tests {{
    #[test]
    fn greets() {{
        assert_eq!(super::greeting("Ada"), "Hello, Ada!");
    }}
}}
"#
    );
    vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), lib),
        (format!("{name}.manifest.toml"), manifest(name)),
        ("README.md".into(), readme(name, "Rust", "`cargo test`")),
        (".gitignore".into(), "target/\n".into()),
    ]
}
