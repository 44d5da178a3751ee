//! The admin endpoint's client: what `standby status`, `standby promote`,
//! the demo and the tests use to ask a running node.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::config::{ConfigError, LoadedProfile};

/// Why a node could not be asked, or refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The profile has no admin address for the site.
    #[error("site `{site}` of {profile} has no `admin_listen`, so it cannot be asked")]
    NoAdminAddress {
        /// The site.
        site: String,
        /// The profile file.
        profile: String,
    },
    /// The profile could not be read.
    #[error(transparent)]
    Profile(#[from] ConfigError),
    /// Nothing answered at the address (the node is not running?).
    #[error("asking the node at {addr} (is it running?): {source}")]
    Unreachable {
        /// Where it was asked.
        addr: SocketAddr,
        /// What the HTTP client saw.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The node answered with something that is not the JSON it should be.
    #[error("reading the answer of the node at {addr}: {source}")]
    BadAnswer {
        /// Where it was asked.
        addr: SocketAddr,
        /// Why the answer did not parse.
        #[source]
        source: std::io::Error,
    },
    /// The node refused the request and said why.
    #[error("{0}")]
    Refused(String),
}

/// A client of one node's admin endpoint.
#[derive(Debug, Clone)]
pub struct AdminClient {
    addr: SocketAddr,
    agent: ureq::Agent,
}

impl AdminClient {
    /// A client of the endpoint at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self { addr, agent }
    }

    /// A client of `site`'s endpoint, as `profile` names it.
    pub fn for_site(profile: &LoadedProfile, site: &str) -> Result<Self, AdminError> {
        let s = profile.site(site)?;
        let addr = s.admin_listen.ok_or_else(|| AdminError::NoAdminAddress {
            site: site.to_string(),
            profile: profile.file.display().to_string(),
        })?;
        Ok(Self::new(addr))
    }

    /// Where it asks.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /status`: the node's status as JSON (blocking).
    pub fn status(&self) -> Result<Value, AdminError> {
        let url = format!("http://{}/status", self.addr);
        let answer = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.unreachable(e))?;
        self.json(answer)
    }

    /// `POST /promote`: the promotion's timeline as JSON, or why the node
    /// refused (blocking).
    pub fn promote(&self, force: bool) -> Result<Value, AdminError> {
        let url = format!("http://{}/promote?force={force}", self.addr);
        match self.agent.post(&url).call() {
            Ok(answer) => self.json(answer),
            Err(ureq::Error::Status(_, answer)) => {
                let body: Value = answer.into_json().unwrap_or(Value::Null);
                Err(AdminError::Refused(
                    body["error"]
                        .as_str()
                        .unwrap_or("no reason given")
                        .to_string(),
                ))
            }
            Err(e) => Err(self.unreachable(e)),
        }
    }

    fn unreachable(&self, e: ureq::Error) -> AdminError {
        AdminError::Unreachable {
            addr: self.addr,
            source: Box::new(e),
        }
    }

    fn json(&self, answer: ureq::Response) -> Result<Value, AdminError> {
        answer.into_json().map_err(|source| AdminError::BadAnswer {
            addr: self.addr,
            source,
        })
    }
}
