//! [`DnsResolver`]: asks one DNS server directly, honouring TTLs, with
//! lookups of one name shared by every caller waiting for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;

use super::{Resolve, ResolveError};

/// How long an answer is shared with lookups of the same name that were
/// waiting for it (many simulated devices share one resolver; each real
/// device has its own).
const SHARE_ANSWER_FOR: Duration = Duration::from_millis(100);

/// One lookup's answer.
type Answer = Result<Vec<IpAddr>, ResolveError>;

/// What the resolver knows of one name: its last answer, and the lookup in
/// flight (whose answer every waiter receives at once).
#[derive(Default)]
struct NameState {
    last: Option<(std::time::Instant, Answer)>,
    in_flight: Option<watch::Receiver<Option<Answer>>>,
}

type Names = Arc<std::sync::Mutex<HashMap<String, NameState>>>;

/// Asks one DNS server (the device's configured DNS server) directly.
/// Concurrent lookups of the same name share one query: the first starts it
/// on its own task (so a caller that gives up does not cancel it for the
/// others), and every caller waiting for it is woken by its answer at once.
/// A fleet of simulated devices sharing this resolver thus sends one query
/// per name at a time rather than thousands at once, and no caller waits
/// behind another.
///
/// The queries run on a thread of their own (each real device has its own
/// CPU): in a reconnection storm the fleet's runtime has thousands of tasks
/// ready, and a query that needs several trips through that queue would
/// outlast the devices' connect timeout.
pub struct DnsResolver {
    server: SocketAddr,
    inner: TokioResolver,
    names: Names,
    /// Where queries run: the resolver's own thread, or the caller's runtime
    /// when that thread could not be started.
    queries: Option<tokio::runtime::Handle>,
    /// Dropping it stops the resolver's thread.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("server", &self.server)
            .finish()
    }
}

impl DnsResolver {
    /// A resolver that asks `server` (UDP, then TCP) and nobody else.
    pub fn new(server: SocketAddr) -> Arc<Self> {
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_millis(500);
        opts.attempts = 2;
        opts.ndots = 0;
        opts.edns0 = false;
        let inner = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        let (queries, stop) = match query_thread() {
            Ok((handle, stop)) => (Some(handle), Some(stop)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the resolver's thread; queries share the caller's runtime");
                (None, None)
            }
        };
        Arc::new(Self {
            server,
            inner,
            names: Arc::default(),
            queries,
            _stop: stop,
        })
    }

    /// The shared answer for `key` when fresh, or a receiver for the lookup
    /// in flight (started here when there is none).
    fn answer_or_flight(&self, key: &str) -> Result<Answer, watch::Receiver<Option<Answer>>> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let state = names.entry(key.to_string()).or_default();
        if let Some((at, answer)) = &state.last {
            if at.elapsed() < SHARE_ANSWER_FOR {
                return Ok(answer.clone());
            }
        }
        if let Some(rx) = &state.in_flight {
            return Err(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        state.in_flight = Some(rx.clone());
        let (inner, server, names, key) = (
            self.inner.clone(),
            self.server,
            self.names.clone(),
            key.to_string(),
        );
        let query = async move {
            let answer = lookup(&inner, server, &key).await;
            let mut names = names.lock().unwrap_or_else(|p| p.into_inner());
            let state = names.entry(key).or_default();
            state.last = Some((std::time::Instant::now(), answer.clone()));
            state.in_flight = None;
            drop(names);
            let _ = tx.send(Some(answer));
        };
        match &self.queries {
            Some(handle) => drop(handle.spawn(query)),
            None => drop(tokio::spawn(query)),
        }
        Err(rx)
    }
}

/// A thread running a single-threaded runtime for the queries, until the
/// returned sender is dropped.
fn query_thread() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("dns-resolver".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            })
        })?;
    Ok((handle, stop))
}

/// One query for `name` to `server`.
async fn lookup(inner: &TokioResolver, server: SocketAddr, name: &str) -> Answer {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let lookup = inner
        .lookup_ip(fqdn.as_str())
        .await
        .map_err(|e| ResolveError::Lookup {
            name: name.to_string(),
            server: Some(server),
            source: Arc::new(e),
        })?;
    Ok(lookup.iter().collect())
}

#[async_trait]
impl Resolve for DnsResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rx = match self.answer_or_flight(&key) {
            Ok(answer) => return answer,
            Err(rx) => rx,
        };
        let answer = match rx.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            // The lookup's task ended without an answer (the runtime is
            // shutting down).
            Err(_) => None,
        };
        answer.unwrap_or_else(|| {
            Err(ResolveError::Abandoned {
                name: name.to_string(),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

    use super::*;

    /// A DNS server on loopback that answers every A query with 127.0.0.9
    /// (TTL 0) after `delay`, counting the queries it gets.
    async fn slow_server(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let query = Message::from_bytes(&buf[..n]).unwrap();
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut reply = query.clone();
                    reply.set_message_type(MessageType::Response);
                    let name = query.queries()[0].name().clone();
                    reply.add_answer(Record::from_rdata(
                        name,
                        0,
                        RData::A(A(Ipv4Addr::new(127, 0, 0, 9))),
                    ));
                    let _ = socket.send_to(&reply.to_bytes().unwrap(), from).await;
                });
            }
        });
        (addr, queries)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_share_one_query_and_all_get_its_answer() {
        let (server, queries) = slow_server(Duration::from_millis(200)).await;
        let resolver = DnsResolver::new(server);
        let lookups: Vec<_> = (0..2_000)
            .map(|_| {
                let r = resolver.clone();
                tokio::spawn(async move { r.resolve("door.site.test").await })
            })
            .collect();
        for l in lookups {
            assert_eq!(
                l.await.unwrap().unwrap(),
                vec![IpAddr::from([127, 0, 0, 9])]
            );
        }
        // 2,000 callers within one 200 ms query: one query, perhaps a second
        // for callers that came after the first answer went stale.
        let n = queries.load(Ordering::SeqCst);
        assert!((1..=2).contains(&n), "{n} queries for 2,000 lookups");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_does_not_cancel_the_query_for_the_others() {
        let (server, queries) = slow_server(Duration::from_millis(300)).await;
        let resolver = DnsResolver::new(server);
        // The first caller starts the query and gives up at once.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            resolver.resolve("door.site.test"),
        )
        .await;
        assert!(gave_up.is_err(), "the slow server answered within 10 ms");
        // A second caller joins the same query and gets its answer.
        assert_eq!(
            resolver.resolve("door.site.test").await.unwrap(),
            vec![IpAddr::from([127, 0, 0, 9])]
        );
        assert_eq!(queries.load(Ordering::SeqCst), 1);
    }
}
