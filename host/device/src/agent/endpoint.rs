//! Server endpoints in a device's list.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::messages::WireEndpoint;

/// Where a server is: an IP address or a domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Host {
    /// A literal address.
    Ip(IpAddr),
    /// A domain name, resolved on every connection attempt.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// One server address in a device's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address or name.
    pub host: Host,
    /// TCP port (51212 plain, 51213 TLS by convention).
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
    /// Lower is tried first; at equal priority, IP addresses before names.
    pub priority: u8,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}{}",
            self.host,
            self.port,
            if self.tls { "/tls" } else { "" }
        )
    }
}

/// A bad endpoint string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint `{text}`: {reason} (expected host:port or host:port/tls)")]
pub struct EndpointError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl Endpoint {
    /// Parse `host:port[/tls]`, with `priority`.
    pub fn parse(text: &str, priority: u8) -> Result<Self, EndpointError> {
        let err = |reason: &str| EndpointError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (addr, tls) = match text.strip_suffix("/tls") {
            Some(a) => (a, true),
            None => (text, false),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| err("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(err("port 0"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("no host"));
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => {
                let valid = host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
                if !valid || host.len() > 253 {
                    return Err(err("the host is neither an IP address nor a domain name"));
                }
                Host::Name(host.to_ascii_lowercase())
            }
        };
        Ok(Self {
            host,
            port,
            tls,
            priority,
        })
    }

    /// Parse a comma-separated list; list order gives the priority.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, EndpointError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| Self::parse(s, i.min(255) as u8))
            .collect()
    }

    /// The wire form.
    pub fn to_wire(&self) -> WireEndpoint {
        WireEndpoint {
            host: match &self.host {
                Host::Ip(ip) => ip.to_string(),
                Host::Name(n) => n.clone(),
            },
            port: self.port,
            tls: self.tls,
            priority: self.priority,
        }
    }

    /// From the wire form.
    pub fn from_wire(w: &WireEndpoint) -> Result<Self, EndpointError> {
        let mut e = Self::parse(&format!("{}:{}", w.host, w.port), w.priority)?;
        e.tls = w.tls;
        Ok(e)
    }
}

/// Sort endpoints into the order they are tried: priority, then IP before name,
/// then list order.
pub fn order(endpoints: &mut [Endpoint]) {
    endpoints.sort_by_key(|e| (e.priority, matches!(e.host, Host::Name(_))));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let mut list =
            Endpoint::parse_list("biostar.site.test:51212, 127.0.0.1:51212/tls").unwrap();
        for e in &mut list {
            e.priority = 0;
        }
        order(&mut list);
        assert_eq!(list[0].host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert!(list[0].tls);
        assert_eq!(list[1].host, Host::Name("biostar.site.test".into()));
        assert!(Endpoint::parse("nohost", 0).is_err());
        assert!(Endpoint::parse("a b:1", 0).is_err());
        assert!(Endpoint::parse("x:70000", 0).is_err());
        assert_eq!(
            Endpoint::parse("[::1]:5", 0).unwrap().to_string(),
            "[::1]:5"
        );
    }
}
