//! Hot loading: watch the plugin directory and load what changes.
//!
//! A changed `*.wasm` file (or its `.manifest.toml` / `.sig`) is loaded as
//! a new version of its plugin with [`DeployMode::ReplaceFile`]: the
//! versions that file held before retire, other files' versions keep
//! serving. A removed file retires the versions loaded from it. A file
//! that fails to load leaves the loaded versions serving; the reason is in
//! the log and in [`Runtime::load_failures`].
//!
//! Events are debounced ([`DEBOUNCE`]) and a file whose component and side
//! files hash as already loaded is skipped, so an editor's several writes
//! or an upload that moved its own files in cost one load at most. A file
//! is looked at again only when it changes: opening or reading it (an
//! operator's `cat`, a backup, the watcher's own reads) is no event, and a
//! file whose length, modification time and inode are as when it was last
//! looked at is not read again, so a bad file is logged once, not once per
//! event. Write
//! plugins atomically (write elsewhere, then rename into the directory); a
//! half-written file fails to load and loads once complete.

use crate::error::LoadError;
use crate::plugin::{plugin_name_from_path, source_digest};
use crate::registry::DeployMode;
use crate::runtime::Runtime;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last event before changed files load.
/// Default: 250 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `dir` (creating it if missing) and hot-loads into `runtime`.
/// Must be called inside a Tokio runtime.
pub fn watch_plugin_dir(runtime: Runtime, dir: &Path) -> Result<PluginWatcher, LoadError> {
    std::fs::create_dir_all(dir).map_err(|source| LoadError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if changes_content(&event.kind) => {
                event.paths.into_iter().for_each(|p| drop(tx.send(p)))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "plugin dir watch error"),
        })
        .map_err(|e| LoadError::Config(format!("cannot watch {}: {e}", dir.display())))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| LoadError::Config(format!("cannot watch {}: {e}", dir.display())))?;
    tracing::info!(dir = %dir.display(), "watching the plugin dir for changes");
    let task = tokio::spawn(run(runtime, rx));
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}

/// Whether an event can mean new content: opening, reading and closing a
/// file unwritten cannot (and the watcher's own reads cause them).
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn run(runtime: Runtime, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    let mut seen: HashMap<PathBuf, Option<Fingerprint>> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut changed = BTreeSet::new();
        changed.extend(component_for(&first));
        while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            changed.extend(component_for(&path));
        }
        for component in changed {
            let now = fingerprint(&component);
            if seen.get(&component) == Some(&now) {
                continue;
            }
            sync_file(&runtime, &component).await;
            // Taken before the load: a change during it is seen next time.
            seen.insert(component, now);
        }
    }
}

/// What `stat` says of a component and its side files: equal fingerprints
/// mean the files were not written, so they are not read again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<Option<(u64, Option<std::time::SystemTime>, u64)>>);

fn fingerprint(component: &Path) -> Option<Fingerprint> {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    let stat = |path: &Path| {
        std::fs::metadata(path).ok().map(|m| {
            #[cfg(unix)]
            let inode = m.ino();
            #[cfg(not(unix))]
            let inode = 0;
            (m.len(), m.modified().ok(), inode)
        })
    };
    let component_stat = stat(component)?;
    let mut files = vec![Some(component_stat)];
    files.extend(crate::plugin::side_files(component).iter().map(|p| stat(p)));
    Some(Fingerprint(files))
}

/// Brings the runtime in line with `component` as it is on disk now.
pub async fn sync_file(runtime: &Runtime, component: &Path) {
    let Some(name) = plugin_name_from_path(component) else {
        return;
    };
    let loaded_from_here: Vec<_> = runtime
        .plugins()
        .into_iter()
        .filter(|p| p.path() == component)
        .collect();
    if !component.is_file() {
        for plugin in loaded_from_here {
            runtime.remove_plugin(plugin.name(), Some(plugin.version()));
        }
        return;
    }
    // An oversized file is not hashed (read whole) to compare: `deploy`
    // refuses it from its length and lists it under the load failures.
    let oversized =
        std::fs::metadata(component).is_ok_and(|m| m.len() > runtime.limits().component_bytes);
    if !oversized {
        let Ok(digest) = source_digest(component) else {
            return;
        };
        if loaded_from_here.iter().any(|p| p.source_digest() == digest) {
            return;
        }
    }
    // Errors are logged and kept by `deploy`; the old version serves on.
    if runtime
        .deploy(&name, component, DeployMode::ReplaceFile)
        .await
        .is_ok()
    {
        runtime.ensure_default_connection(&name);
    }
}

/// The component a changed path belongs to: itself for `*.wasm`, the
/// component beside it for a manifest or signature; none for the rest
/// (temporary files, the upload staging dir).
fn component_for(path: &Path) -> Option<PathBuf> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') {
        return None;
    }
    let stem = file
        .strip_suffix(".wasm")
        .or_else(|| file.strip_suffix(".manifest.toml"))
        .or_else(|| file.strip_suffix(".sig"))?;
    Some(path.with_file_name(format!("{stem}.wasm")))
}

#[cfg(test)]
mod tests {
    use super::component_for;
    use std::path::{Path, PathBuf};

    #[test]
    fn side_files_map_to_their_component() {
        let c = |p: &str| component_for(Path::new(p));
        assert_eq!(c("/p/echo.wasm"), Some(PathBuf::from("/p/echo.wasm")));
        assert_eq!(
            c("/p/echo@1.0.0.sig"),
            Some(PathBuf::from("/p/echo@1.0.0.wasm"))
        );
        assert_eq!(
            c("/p/echo.manifest.toml"),
            Some(PathBuf::from("/p/echo.wasm"))
        );
        assert_eq!(c("/p/.incoming"), None);
        assert_eq!(c("/p/echo.wasm.tmp123"), None);
        assert_eq!(c("/p/notes.txt"), None);
    }
}
