//! Which compiler builds guests on this machine.

use crate::{BuildError, capture};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A way to compile Rust to wasm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Toolchain {
    /// rustup's `wasm32-wasip2` target; rustc links a component itself.
    Wasip2 { cargo: PathBuf },
    /// rustup's `wasm32-unknown-unknown` target; componentized afterwards.
    Unknown { cargo: PathBuf },
    /// Debian's rustc-web with std built from rust-web-src by
    /// `-Zbuild-std`, linked by `wasm-ld-19`; componentized afterwards.
    DebianBuildStd {
        cargo: PathBuf,
        rustc: PathBuf,
        linker: PathBuf,
    },
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

impl Toolchain {
    /// Finds the best toolchain available; see the crate docs for the order.
    pub fn detect() -> Result<Toolchain, BuildError> {
        let forced = std::env::var("SWITCHYARD_TOOLCHAIN").ok();
        let rustup_targets = rustup_sysroot().map(|root| root.join("lib/rustlib"));
        let has_target = |t: &str| {
            rustup_targets
                .as_ref()
                .is_some_and(|dir| dir.join(t).join("lib").is_dir())
        };
        let cargo = || PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        let mut tried = Vec::new();
        if matches!(forced.as_deref(), None | Some("wasip2")) {
            if has_target("wasm32-wasip2") {
                return Ok(Toolchain::Wasip2 { cargo: cargo() });
            }
            tried.push("rustup target wasm32-wasip2 not installed");
        }
        if matches!(forced.as_deref(), None | Some("unknown")) {
            if has_target("wasm32-unknown-unknown") {
                return Ok(Toolchain::Unknown { cargo: cargo() });
            }
            tried.push("rustup target wasm32-unknown-unknown not installed");
        }
        if matches!(forced.as_deref(), None | Some("debian")) {
            match debian() {
                Ok(t) => return Ok(t),
                Err(why) => tried.push(why),
            }
        }
        if let Some(f) = forced.filter(|f| !["wasip2", "unknown", "debian"].contains(&f.as_str())) {
            return Err(BuildError::NoToolchain(format!(
                "SWITCHYARD_TOOLCHAIN={f} is not one of wasip2, unknown, debian"
            )));
        }
        Err(BuildError::NoToolchain(tried.join("; ")))
    }

    /// The wasm target triple this toolchain builds for.
    pub fn target(&self) -> &'static str {
        match self {
            Toolchain::Wasip2 { .. } => "wasm32-wasip2",
            _ => "wasm32-unknown-unknown",
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Toolchain::Wasip2 { .. } => "rustup wasm32-wasip2".into(),
            Toolchain::Unknown { .. } => "rustup wasm32-unknown-unknown".into(),
            Toolchain::DebianBuildStd { rustc, .. } => {
                format!(
                    "{} with -Zbuild-std (wasm32-unknown-unknown)",
                    rustc.display()
                )
            }
        }
    }

    /// `cargo build --release --target …` with this toolchain's settings.
    ///
    /// wasm32-unknown-unknown guests are linked with an initial heap of
    /// [`INITIAL_HEAP_BYTES`].
    pub(crate) fn cargo_build(&self) -> Command {
        let cargo = match self {
            Toolchain::Wasip2 { cargo } | Toolchain::Unknown { cargo } => cargo,
            Toolchain::DebianBuildStd { cargo, .. } => cargo,
        };
        let mut cmd = Command::new(cargo);
        // Settings of an enclosing cargo (e.g. `cargo test`) must not leak
        // into the guest build.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(["build", "--release", "--target", self.target()]);
        // Guests are small and instantiated per call: whole-program
        // optimisation makes them both smaller and faster. Only the guest
        // build sees these; the host's release profile is untouched.
        cmd.args([
            "--config",
            "profile.release.lto=true",
            "--config",
            "profile.release.codegen-units=1",
            "--config",
            "profile.release.opt-level=3",
        ]);
        if !matches!(self, Toolchain::Wasip2 { .. }) {
            // Room for the SDK's allocator to start in (sdk/src/alloc.rs):
            // a call that fits needs no memory.grow, which would cost the
            // host two page-protection changes per instance.
            cmd.args([
                "--config",
                &format!(
                    "target.wasm32-unknown-unknown.rustflags=[\"-Clink-arg=--initial-heap={INITIAL_HEAP_BYTES}\"]"
                ),
            ]);
        }
        if let Toolchain::DebianBuildStd { rustc, linker, .. } = self {
            cmd.env("RUSTC", rustc)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", linker)
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO")
                .arg("-Zbuild-std=std,panic_abort");
        }
        cmd
    }
}

/// Heap in a wasm32-unknown-unknown guest's initial memory: 1 MiB, on top
/// of its static data and 1 MiB stack. Untouched pages cost nothing.
pub const INITIAL_HEAP_BYTES: usize = 1 << 20;

fn rustup_sysroot() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--print", "sysroot"]);
    capture(cmd).map(PathBuf::from)
}

fn debian() -> Result<Toolchain, &'static str> {
    let rustc = Path::new(DEBIAN_RUSTC);
    let cargo = Path::new(DEBIAN_CARGO);
    if !rustc.is_file() || !cargo.is_file() {
        return Err("Debian rustc-web/cargo-web not installed");
    }
    let mut cmd = Command::new(rustc);
    cmd.args(["--print", "sysroot"]);
    let sysroot = capture(cmd).ok_or("/usr/bin/rustc does not run")?;
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/std")
        .is_dir()
    {
        return Err("rust-web-src (std sources for -Zbuild-std) not installed");
    }
    let linker = ["wasm-ld-19", "wasm-ld"]
        .iter()
        .find_map(|name| which(name))
        .ok_or("wasm-ld (lld-19) not installed")?;
    Ok(Toolchain::DebianBuildStd {
        cargo: cargo.to_owned(),
        rustc: rustc.to_owned(),
        linker,
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
