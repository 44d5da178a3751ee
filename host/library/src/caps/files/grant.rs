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
    /// A root is `/` or a system directory.
    #[error("{} is a system directory; grant a directory of its own (e.g. under the site's data_dir)", path.display())]
    SystemDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A root outside the site's data directory does not exist.
    #[error("{} does not exist; create it first (only roots under the site's data_dir are created)", path.display())]
    Missing {
        /// The directory.
        path: PathBuf,
    },
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

/// Directories no plugin is granted, nor anything under those marked so:
/// the system's own.
const SYSTEM_DIRECTORIES: &[(&str, bool)] = &[
    ("/", false),
    ("/bin", true),
    ("/boot", true),
    ("/dev", true),
    ("/etc", true),
    ("/home", false),
    ("/lib", true),
    ("/lib32", true),
    ("/lib64", true),
    ("/libx32", true),
    ("/opt", false),
    ("/proc", true),
    ("/root", false),
    ("/run", false),
    ("/sbin", true),
    ("/srv", false),
    ("/sys", true),
    ("/tmp", false),
    ("/usr", true),
    ("/var", false),
    ("/var/lib", false),
    ("/var/log", false),
];

/// Whether `path` (absolute) is `/` or a system directory.
fn is_system_directory(path: &Path) -> bool {
    SYSTEM_DIRECTORIES.iter().any(|(dir, subtree)| {
        let dir = Path::new(dir);
        path == dir || (*subtree && path.starts_with(dir))
    })
}

/// `path` with `.` and `..` taken out lexically (for a check before it exists).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl Root {
    /// Open (creating if missing) the directory at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Self::open_existing(path)
    }

    /// Open the directory at `path`, which must exist.
    pub fn open_existing(path: &Path) -> std::io::Result<Self> {
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
        if path.is_absolute() && is_system_directory(&lexically_normal(path)) {
            return Err(GrantError::new(
                key,
                FilesProblem::SystemDirectory { path: path.clone() },
            ));
        }
    }
    Ok(())
}

/// Open every granted directory (relative ones under `data_dir`): one under
/// `data_dir` is created if missing, one elsewhere must exist, and none may
/// be `/` or a system directory (checked again once symbolic links are
/// followed).
pub(crate) fn resolve(
    grant: &FilesGrant,
    data_dir: &Path,
) -> Result<BTreeMap<String, Root>, GrantError> {
    let mut roots = BTreeMap::new();
    for (name, path) in grant {
        let key = format!("files.{name}");
        let full = lexically_normal(&data_dir.join(path));
        let under_data_dir = full.starts_with(lexically_normal(data_dir));
        if !under_data_dir && !full.exists() {
            return Err(GrantError::new(key, FilesProblem::Missing { path: full }));
        }
        let opened = if under_data_dir {
            Root::open(&full)
        } else {
            Root::open_existing(&full)
        };
        let root = opened.map_err(|source| {
            GrantError::new(
                key.clone(),
                FilesProblem::Open {
                    path: full.clone(),
                    source,
                },
            )
        })?;
        // The real place, symbolic links followed.
        if is_system_directory(&root.path) {
            return Err(GrantError::new(
                key,
                FilesProblem::SystemDirectory { path: root.path },
            ));
        }
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

    #[test]
    fn system_directories_are_refused_and_only_roots_under_data_dir_are_created() {
        for system in [
            "/",
            "/etc",
            "/etc/ssl",
            "/usr/lib",
            "/var",
            "/tmp",
            "/proc/1",
            "/x/../etc",
        ] {
            let mut g = FilesGrant::new();
            g.insert("r".into(), system.into());
            let e = validate(&g).unwrap_err();
            assert!(e.to_string().contains("system directory"), "{system}: {e}");
        }
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // Missing and outside data_dir: an error naming it, nothing created.
        let missing = elsewhere.path().join("not-there");
        let mut g = FilesGrant::new();
        g.insert("r".into(), missing.clone());
        assert!(validate(&g).is_ok());
        let e = resolve(&g, data.path()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!missing.exists());
        // Existing and outside: opened.
        std::fs::create_dir(&missing).unwrap();
        assert!(resolve(&g, data.path()).is_ok());
        // A relative root climbing out of data_dir is outside too.
        let mut g = FilesGrant::new();
        g.insert("r".into(), "../climbed".into());
        assert!(resolve(&g, data.path()).is_err());
        // A symbolic link to a system directory is refused once followed.
        std::os::unix::fs::symlink("/etc", data.path().join("etc-link")).unwrap();
        let mut g = FilesGrant::new();
        g.insert("r".into(), "etc-link".into());
        let e = resolve(&g, data.path()).unwrap_err();
        assert!(e.to_string().contains("system directory"), "{e}");
    }
}
