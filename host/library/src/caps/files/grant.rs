//! The `files` grant: directories by root name. Relative directories are
//! under the site's data directory; each is opened once, and every access
//! goes through its directory handle with a checked relative path.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::super::grant_error::GrantError;
use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// The `files` grant as the profile writes it: root name to directory.
pub type FilesGrant = BTreeMap<String, PathBuf>;

/// What is wrong with a `files` grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FilesProblem {
    /// A root name is empty or has a `/`.
    #[error("root names must be non-empty and contain no `/`")]
    RootName,
    /// A root names no directory.
    #[error("needs a directory")]
    NoDirectory,
    /// A root's directory cannot be opened (or created).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A granted directory, opened once; every access goes through the handle.
#[derive(Debug, Clone)]
pub struct Root {
    /// Where it is (canonical), for messages and for handing verified files to SQLite.
    pub path: PathBuf,
    /// The open directory.
    pub dir: Arc<Dir>,
}

impl Root {
    /// Open (creating if missing) the directory at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let dir = Dir::open_ambient_dir(&path, ambient_authority())?;
        Ok(Self {
            path,
            dir: Arc::new(dir),
        })
    }
}

/// Whether the profile grants `files` at all.
pub(crate) fn granted(grant: &FilesGrant) -> bool {
    !grant.is_empty()
}

/// Root names and directories make sense.
pub(crate) fn validate(grant: &FilesGrant) -> Result<(), GrantError> {
    for (name, path) in grant {
        let key = format!("files.{name}");
        if name.is_empty() || name.contains('/') {
            return Err(GrantError::new(key, FilesProblem::RootName));
        }
        if path.as_os_str().is_empty() {
            return Err(GrantError::new(key, FilesProblem::NoDirectory));
        }
    }
    Ok(())
}

/// Open every granted directory (relative ones under `data_dir`), creating
/// missing ones.
pub(crate) fn resolve(
    grant: &FilesGrant,
    data_dir: &Path,
) -> Result<BTreeMap<String, Root>, GrantError> {
    let mut roots = BTreeMap::new();
    for (name, path) in grant {
        let full = data_dir.join(path);
        let root = Root::open(&full).map_err(|source| {
            GrantError::new(
                format!("files.{name}"),
                FilesProblem::Open { path: full, source },
            )
        })?;
        roots.insert(name.clone(), root);
    }
    Ok(roots)
}

/// The call-time check of a root: granted to `plugin`, or access-denied.
pub(crate) fn root<'a>(
    roots: &'a BTreeMap<String, Root>,
    name: &str,
    plugin: &str,
) -> Result<&'a Root, WitError> {
    roots.get(name).ok_or_else(|| {
        WitError::AccessDenied(format!(
            "root `{name}` is not granted to plugin {plugin} (granted: {})",
            roots.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The call-time check of a path inside a root: no absolute paths, no `..`,
/// no `.`, no empty components, no NUL. `""` names the root itself.
pub(crate) fn relative_path(path: &str) -> Result<PathBuf, WitError> {
    let bad = |why: &str| WitError::AccessDenied(format!("path `{path}` {why}"));
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(bad("leaves its root (`..`)")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("is absolute; paths are relative to a granted root"))
            }
            Component::CurDir => return Err(bad("contains `.`")),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked_and_roots_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = FilesGrant::new();
        g.insert("snapshots".into(), "snaps".into());
        assert!(validate(&g).is_ok());
        let roots = resolve(&g, dir.path()).unwrap();
        assert!(dir.path().join("snaps").is_dir(), "created");
        assert!(root(&roots, "snapshots", "p").is_ok());
        let denied = root(&roots, "etc", "p").unwrap_err();
        assert!(matches!(denied, WitError::AccessDenied(m) if m.contains("granted: snapshots")));
        g.insert("a/b".into(), "x".into());
        let e = validate(&g).unwrap_err();
        assert_eq!(e.key, "files.a/b");
        assert!(e.to_string().contains("no `/`"));
    }

    #[test]
    fn paths_stay_inside_their_root() {
        assert_eq!(relative_path("a/b.db").unwrap(), PathBuf::from("a/b.db"));
        assert_eq!(relative_path("").unwrap(), PathBuf::new());
        for bad in ["../x", "a/../../x", "/etc/passwd", "./a", "a\0b"] {
            assert!(
                matches!(relative_path(bad), Err(WitError::AccessDenied(_))),
                "{bad:?}"
            );
        }
    }
}
