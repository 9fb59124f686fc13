//! How egress reaches the network: the resolver and dialer an embedder
//! may swap, and the per-(plugin, destination) buckets every connection of
//! a plugin shares.

use super::*;

/// A boxed future, as the pluggable network traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns a host name into addresses. The host resolves names itself so it
/// can check every address before connecting; swap it to map names in
/// tests or to use a company resolver.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// Every address `host` resolves to.
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names; any other name is not found.
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// Maps `name` (case-insensitive) to `addrs`.
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.names.insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.names.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not found"))
        })
    }
}

/// Opens the TCP connection to an address the policy has checked. Swap it
/// to send everything to a sinkhole in tests.
pub trait Dialer: Send + Sync + fmt::Debug {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// Connects directly.
#[derive(Debug, Default)]
pub struct DirectDialer;

impl Dialer for DirectDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(addr))
    }
}

/// How a runtime reaches the network: resolver, dialer, TLS roots, and the
/// per-(plugin, destination) buckets. Shared by every connection. Default: the
/// system resolver, direct connections, and the Mozilla root store.
#[derive(Clone)]
pub struct Network {
    pub(super) resolver: Arc<dyn Resolver>,
    pub(super) dialer: Arc<dyn Dialer>,
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) destinations: Arc<DestinationBuckets>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("resolver", &self.resolver)
            .field("dialer", &self.dialer)
            .finish_non_exhaustive()
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::new(Arc::new(SystemResolver), Arc::new(DirectDialer))
    }
}

/// TLS as the host speaks it to upstreams: ring, the default protocol
/// versions, the Mozilla root store, no client certificate.
pub fn tls_client_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Network {
    /// A network with this resolver and dialer.
    pub fn new(resolver: Arc<dyn Resolver>, dialer: Arc<dyn Dialer>) -> Self {
        Network {
            resolver,
            dialer,
            tls: Arc::new(tls_client_config()),
            destinations: Arc::default(),
        }
    }
}

/// One bucket per (plugin, destination), shared by every connection of
/// the plugin: it paces the plugin's traffic to one upstream at
/// `limits.http_destination_per_second`, and an upstream's `Retry-After`
/// pauses it for all of them.
/// Beside it, one bucket per (plugin, connection, destination) at
/// `limits.http_destination_per_second_per_connection`: a connection's
/// share, so one busy connection cannot spend the whole plugin's pace.
#[derive(Debug, Default)]
pub(super) struct DestinationBuckets {
    buckets: Mutex<HashMap<PluginDestination, Arc<RateLimiter>>>,
}

/// (plugin name, connection name or "" for the plugin's own bucket,
/// `scheme://host:port`).
type PluginDestination = (Arc<str>, Arc<str>, String);

impl DestinationBuckets {
    /// The plugin's bucket for `dest`.
    pub(super) fn get(
        &self,
        plugin: &Arc<str>,
        dest: &Destination,
        per_second: u32,
    ) -> Arc<RateLimiter> {
        self.bucket(plugin, &Arc::from(""), dest, per_second)
    }

    /// The bucket pacing `plugin` to `dest` (`connection` empty), or
    /// `connection`'s share of it.
    pub(super) fn bucket(
        &self,
        plugin: &Arc<str>,
        connection: &Arc<str>,
        dest: &Destination,
        per_second: u32,
    ) -> Arc<RateLimiter> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((plugin.clone(), connection.clone(), dest.to_string()))
            .or_insert_with(|| {
                let grant = RateLimitGrant {
                    per_second: f64::from(per_second),
                    burst: per_second,
                    destinations: Vec::new(),
                };
                let name = if connection.is_empty() {
                    format!("{plugin} → {dest}")
                } else {
                    format!("{plugin}/{connection} → {dest}")
                };
                Arc::new(RateLimiter::new(&name, &grant).expect("validated limits"))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_resolver_maps_names_case_insensitively() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let resolver = StaticResolver::default().with("Sink.Test", &[ip]);
        assert_eq!(resolver.resolve("sink.test").await.unwrap(), vec![ip]);
        assert!(resolver.resolve("other.test").await.is_err());
    }
}
