//! The demo's application (`standby demo-writer`): what BioStar's server and
//! UI do to `biostar2.db` besides storing events, that is, adding and
//! changing users. It runs on the active node only, started and stopped by
//! the `app` failover action, and writes through its own connection, like
//! the real application. Every commit is logged to its own file so the
//! independent checker ([`crate::app_audit`]) can compare it with the
//! surviving database.
//!
//! Each write is one transaction that inserts a user `SITE-NNNNNNN` or
//! changes one of this site's users; `updated_at` is the commit's wall time
//! in ms, strictly increasing per writer, so it identifies the write: a
//! database holds the write when the user's `updated_at` is at least that.
//! A log line, appended after the commit returns: `UPDATED_AT USER OP`
//! (tab-separated, OP `I` or `U`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

/// Why the writer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// A setting it needs is missing.
    #[error("{0} is not set: the writer runs as a service of a standby node (the `app` failover action), which sets it")]
    Missing(&'static str),
    /// The database is outside the demo's working directory.
    #[error("the database {db} is not inside the working directory {workdir}; the demo's writer writes only to the demo's databases")]
    Outside {
        /// The database.
        db: PathBuf,
        /// The working directory.
        workdir: PathBuf,
    },
    /// The database failed.
    #[error("the database {path}: {source}")]
    Db {
        /// The database.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The log failed.
    #[error("the write log {path}: {source}")]
    Log {
        /// The log.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the writer writes where.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The database (the node's `STANDBY_DB`).
    pub db: PathBuf,
    /// The log of commits.
    pub log: PathBuf,
    /// The site, prefix of the users it creates.
    pub site: String,
    /// Writes a second.
    pub rate: f64,
}

/// The log file a site's writer keeps, in the node's data directory.
pub const LOG_FILE: &str = "app-writes.log";

impl WriterOptions {
    /// From the environment a node gives its services (`STANDBY_DB`,
    /// `STANDBY_DATA_DIR`, `STANDBY_SITE`); the database must lie inside
    /// `workdir`.
    pub fn from_env(workdir: &Path, rate: f64) -> Result<Self, WriterError> {
        let var = |name: &'static str| std::env::var_os(name).ok_or(WriterError::Missing(name));
        let db = PathBuf::from(var("STANDBY_DB")?);
        let data_dir = PathBuf::from(var("STANDBY_DATA_DIR")?);
        let site = var("STANDBY_SITE")?.to_string_lossy().into_owned();
        let inside = |p: &Path| {
            std::fs::canonicalize(p)
                .ok()
                .zip(std::fs::canonicalize(workdir).ok())
                .is_some_and(|(p, w)| p.starts_with(w))
        };
        if !inside(&db) {
            return Err(WriterError::Outside {
                db,
                workdir: workdir.to_path_buf(),
            });
        }
        Ok(Self {
            db,
            log: data_dir.join(LOG_FILE),
            site,
            rate,
        })
    }
}

/// A small deterministic generator (no need for more randomness).
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Write until killed (SIGTERM's default action ends it between two
/// writes or inside one; SQLite keeps either whole or nothing).
pub fn run(options: &WriterOptions) -> Result<std::convert::Infallible, WriterError> {
    let db_err = |source| WriterError::Db {
        path: options.db.clone(),
        source,
    };
    let conn = Connection::open(&options.db).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
    let prefix = format!("{}-", options.site);
    let mut users: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT user_id FROM users WHERE user_id LIKE ?1 || '%' ORDER BY user_id")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([&prefix], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    let mut next = users
        .iter()
        .filter_map(|u| u[prefix.len()..].parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1);
    let log_err = |source| WriterError::Log {
        path: options.log.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&options.log)
        .map_err(log_err)?;
    let mut pick = Pick(standby_host::store::unix_ms() | 1);
    let mut last_at = 0u64;
    let every = Duration::from_secs_f64(1.0 / options.rate.max(0.1));
    let mut due = Instant::now();
    loop {
        let at = standby_host::store::unix_ms().max(last_at + 1);
        last_at = at;
        // Two writes in five add a user, the others change one.
        let (user, op) = if users.is_empty() || pick.below(5) < 2 {
            let user = format!("{prefix}{next:07}");
            next += 1;
            conn.execute(
                "INSERT INTO users (user_id, name, card, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    user,
                    format!("User {user}"),
                    format!("card-{user}"),
                    at as i64
                ],
            )
            .map_err(db_err)?;
            users.push(user.clone());
            (user, 'I')
        } else {
            let user = users[pick.below(users.len())].clone();
            conn.execute(
                "UPDATE users SET name = ?2, disabled = ?3, updated_at = ?4 WHERE user_id = ?1",
                params![
                    user,
                    format!("User {user} ({at})"),
                    (at % 2) as i64,
                    at as i64
                ],
            )
            .map_err(db_err)?;
            (user, 'U')
        };
        writeln!(log, "{at}\t{user}\t{op}").map_err(log_err)?;
        due += every;
        let now = Instant::now();
        match due.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Far behind (it was stopped, or the database was busy): go on
            // at the rate from now rather than in a burst, as an
            // application serving people would.
            None if now - due > CATCH_UP => due = now,
            None => {}
        }
    }
}

/// How far behind its schedule the writer catches up by writing at once.
const CATCH_UP: Duration = Duration::from_millis(50);
