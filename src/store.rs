//! The embedded store: what must survive a restart, i.e. the group bindings made with
//! `/bind` (openConversationId → chatid).
//!
//! One JSON file, `bindings.json`, under `storage.data_dir`. It is read once at startup (a
//! file that cannot be parsed stops startup with its path named: it is never silently
//! replaced) and rewritten whole on every change: written to a temporary file in the same
//! directory, fsynced, renamed over the old one, and the directory fsynced, so a crash
//! leaves either the old or the new file, never a torn one. Writers are serialised. The
//! file holds no secret.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// File name of the bindings under the data dir.
pub const BINDINGS_FILE: &str = "bindings.json";

/// Format version written into the file.
const VERSION: u32 = 1;

/// A failure to open or write the store, phrased for the admin.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir cannot be created or written.
    #[error(
        "storage.data_dir: {path} cannot be used ({source}); create it writable for dingbot or set storage.data_dir"
    )]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bindings file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bindings file is not what dingbot wrote.
    #[error(
        "{path} is corrupt ({detail}); dingbot does not overwrite it: fix it, or move it away to start without bindings"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A change could not be written (the file on disk is unchanged).
    #[error("cannot write {path}: {detail}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

/// One `/bind`: the group's chatid, who bound it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The legacy chatid `chat/get` accepts.
    pub chatid: String,
    /// `senderStaffId` of whoever sent `/bind`, if DingTalk gave one.
    #[serde(default)]
    pub bound_by: Option<String>,
    /// When, in ms since the epoch.
    #[serde(default)]
    pub bound_at_ms: i64,
}

/// The file's shape.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u32,
    /// openConversationId → binding.
    bindings: BTreeMap<String, Binding>,
}

/// Bindings in memory, backed by `bindings.json`.
#[derive(Debug)]
pub struct BindingStore {
    /// `data_dir/bindings.json`.
    file: PathBuf,
    /// What the file holds.
    bindings: RwLock<BTreeMap<String, Binding>>,
    /// Serialises writers so that no change is lost.
    write: tokio::sync::Mutex<()>,
}

impl BindingStore {
    /// Opens (creating if needed) `data_dir`, checks that it is writable, and loads
    /// `bindings.json` if it exists.
    pub fn open(data_dir: &Path) -> Result<BindingStore, StoreError> {
        let dir_error = |source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(dir_error)?;
        remove_stale_temp_files(data_dir);
        // Writable? Create, write and remove a probe file now rather than at the first /bind.
        let probe = temp_path(data_dir);
        write_file(&probe, |f| f.write_all(b"probe")).map_err(dir_error)?;
        let _ = std::fs::remove_file(&probe);

        let file = data_dir.join(BINDINGS_FILE);
        let bindings = match std::fs::read(&file) {
            Ok(bytes) => parse(&bytes).map_err(|detail| StoreError::Corrupt {
                path: file.display().to_string(),
                detail,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(StoreError::Read {
                    path: file.display().to_string(),
                    source,
                });
            }
        };
        tracing::info!(file = %file.display(), bindings = bindings.len(), "binding store opened");
        Ok(BindingStore {
            file,
            bindings: RwLock::new(bindings),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// The bindings file's path.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Every binding, by openConversationId.
    pub fn all(&self) -> Vec<(String, Binding)> {
        let guard = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        guard.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The binding of one group.
    pub fn get(&self, open_conversation_id: &str) -> Option<Binding> {
        let guard = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        guard.get(open_conversation_id).cloned()
    }

    /// Stores (or replaces) the binding of `open_conversation_id`, on disk first: when this
    /// returns an error nothing changed, in memory or on disk.
    pub async fn put(
        self: &Arc<Self>,
        open_conversation_id: &str,
        binding: Binding,
    ) -> Result<(), StoreError> {
        let _writer = self.write.lock().await;
        let mut next = {
            let guard = self.bindings.read().unwrap_or_else(|e| e.into_inner());
            guard.clone()
        };
        next.insert(open_conversation_id.to_string(), binding);
        let contents = FileContents {
            version: VERSION,
            bindings: next,
        };
        let bytes = serde_json::to_vec_pretty(&contents).map_err(|e| StoreError::Write {
            path: self.file.display().to_string(),
            detail: e.to_string(),
        })?;
        let this = Arc::clone(self);
        let written = tokio::task::spawn_blocking(move || this.replace_file(&bytes)).await;
        let failure = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = failure {
            return Err(StoreError::Write {
                path: self.file.display().to_string(),
                detail,
            });
        }
        *self.bindings.write().unwrap_or_else(|e| e.into_inner()) = contents.bindings;
        Ok(())
    }

    /// Atomically replaces the file: temp file in the same dir, fsync, rename, fsync dir.
    fn replace_file(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.file, bytes)
    }
}

/// Replaces `path` with `bytes` atomically: a temp file in the same directory, fsynced,
/// renamed over `path`, then the directory fsynced. A crash leaves the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomically`], with `write` filling the new file (for contents too big to
/// build in memory first).
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = write_file(&tmp, write).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable. Not every platform can open a directory.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all()?;
    }
    Ok(())
}

/// Parses the file, checking what serde cannot.
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Binding>, String> {
    let contents: FileContents = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if contents.version != VERSION {
        return Err(format!(
            "version {} is not {VERSION}, the version this dingbot writes",
            contents.version
        ));
    }
    for (cid, b) in &contents.bindings {
        if cid.trim().is_empty() || b.chatid.trim().is_empty() {
            return Err("a binding has an empty openConversationId or chatid".into());
        }
    }
    Ok(contents.bindings)
}

/// `.bindings.json.<pid>.<random>.tmp` in `dir`.
fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".{BINDINGS_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    write(&mut f)?;
    f.sync_all()
}

/// Temp files a crash left behind (never the live file).
fn remove_stale_temp_files(dir: &Path) {
    remove_stale_temp_files_of(&dir.join(BINDINGS_FILE));
}

/// Removes the temp files a crash during [`write_atomically`]`(path, …)` left behind
/// (never `path` itself).
pub fn remove_stale_temp_files_of(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "dingbot-store-{tag}-{}-{:x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn binding(chatid: &str) -> Binding {
        Binding {
            chatid: chatid.into(),
            bound_by: Some("manager4220".into()),
            bound_at_ms: 1,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn bindings_survive_reopening_and_leave_no_temp_files() {
        let dir = Dir::new("roundtrip");
        let store = Arc::new(BindingStore::open(&dir.0.join("nested")).unwrap());
        assert!(store.all().is_empty());
        store.put("cidA==", binding("chatA")).await.unwrap();
        store.put("cidB==", binding("chatB")).await.unwrap();
        store.put("cidA==", binding("chatA2")).await.unwrap();
        assert_eq!(entries(&dir.0.join("nested")), vec![BINDINGS_FILE]);

        let again = BindingStore::open(&dir.0.join("nested")).unwrap();
        assert_eq!(again.get("cidA==").unwrap().chatid, "chatA2");
        assert_eq!(again.get("cidB==").unwrap(), binding("chatB"));
        assert_eq!(again.all().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_puts_lose_nothing() {
        let dir = Dir::new("concurrent");
        let store = Arc::new(BindingStore::open(&dir.0).unwrap());
        let puts = (0..20).map(|i| {
            let store = store.clone();
            async move {
                store
                    .put(&format!("cid{i}=="), binding(&format!("chat{i}")))
                    .await
            }
        });
        for r in futures_util::future::join_all(puts).await {
            r.unwrap();
        }
        assert_eq!(BindingStore::open(&dir.0).unwrap().all().len(), 20);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it_and_is_kept() {
        let dir = Dir::new("corrupt");
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join(BINDINGS_FILE);
        for bad in [
            "{\"version\":1,\"bindings\":{\"cid\":{\"chatid\":",
            "[]",
            "{\"version\":7,\"bindings\":{}}",
            "{\"version\":1,\"bindings\":{\"cid\":{\"chatid\":\"\"}}}",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = BindingStore::open(&dir.0).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
            assert!(e.to_string().contains(&file.display().to_string()), "{e}");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), bad);
        }
    }

    #[test]
    fn unusable_data_dir_is_an_error_naming_the_key() {
        let dir = Dir::new("unusable");
        std::fs::create_dir_all(&dir.0).unwrap();
        let not_a_dir = dir.0.join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let e = BindingStore::open(&not_a_dir.join("data")).unwrap_err();
        assert!(matches!(e, StoreError::DataDir { .. }), "{e}");
        assert!(e.to_string().contains("storage.data_dir"), "{e}");
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = Dir::new("stale");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join(".bindings.json.1.00.tmp"), "half").unwrap();
        std::fs::write(dir.0.join("other.txt"), "keep").unwrap();
        BindingStore::open(&dir.0).unwrap();
        assert_eq!(entries(&dir.0), vec!["other.txt"]);
    }
}
