//! Finding a device's address from its `.local` name: over mDNS (step 10 of the flow: the name
//! answers from this LAN), or from a fixed map given by the user (`--resolve`, like curl's).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use localcert_proto::name::LocalName;
use mdns_sd::{HostnameResolutionEvent, IfKind, ServiceDaemon};

use crate::provision::Resolver;

/// Where an mDNS query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every interface but loopback: the LAN.
    Lan,
    /// One interface, by name (e.g. `wlan0`).
    Interface(String),
    /// Only the IPv4 loopback: tests and the in-process demo, which must not reach the LAN.
    Loopback,
}

/// Resolves with multicast DNS (mdns-sd).
#[derive(Debug, Clone)]
pub struct MdnsResolver {
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Where to ask.
    pub scope: Scope,
}

impl Default for MdnsResolver {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            scope: Scope::Lan,
        }
    }
}

fn restrict(daemon: &ServiceDaemon, scope: &Scope) -> Result<(), mdns_sd::Error> {
    match scope {
        Scope::Lan => daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6]),
        Scope::Interface(name) => {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Name(name.clone()))
        }
        Scope::Loopback => {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::LoopbackV4)
        }
    }
}

impl Resolver for MdnsResolver {
    async fn resolve(&self, name: &LocalName) -> Result<Vec<IpAddr>, String> {
        let hostname = format!("{name}.");
        let (timeout, scope) = (self.timeout, self.scope.clone());
        let lookup = move || -> Result<Vec<IpAddr>, String> {
            let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
            restrict(&daemon, &scope).map_err(|e| format!("mDNS: {e}"))?;
            let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let events = daemon
                .resolve_hostname(&hostname, Some(millis))
                .map_err(|e| format!("mDNS: {e}"))?;
            let deadline = std::time::Instant::now() + timeout + Duration::from_millis(500);
            let mut found = vec![];
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match events.recv_timeout(left) {
                    Ok(HostnameResolutionEvent::AddressesFound(_, addresses)) => {
                        // A link-local IPv6 address is useless without its interface, which an
                        // IpAddr cannot carry: skip it.
                        let usable = addresses
                            .iter()
                            .map(|a| a.to_ip_addr())
                            .filter(|a| !is_link_local_v6(a));
                        found.extend(usable);
                        // A and AAAA records may come in separate answers: an IPv4 address ends
                        // the wait, otherwise keep listening until the timeout.
                        if found.iter().any(IpAddr::is_ipv4) {
                            break;
                        }
                    }
                    Ok(
                        HostnameResolutionEvent::SearchTimeout(_)
                        | HostnameResolutionEvent::SearchStopped(_),
                    )
                    | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Shutting down is best effort; the answer is what matters.
            let _ = daemon.shutdown();
            found.sort_by_key(|a| (a.is_loopback(), a.is_ipv6()));
            found.dedup();
            if found.is_empty() {
                Err(format!(
                    "{hostname} did not answer over mDNS within {timeout:?}"
                ))
            } else {
                Ok(found)
            }
        };
        tokio::task::spawn_blocking(lookup)
            .await
            .map_err(|e| format!("mDNS: {e}"))?
    }
}

fn is_link_local_v6(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Resolves from a fixed map; the flow's report says the name was not looked up over mDNS.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    map: HashMap<String, IpAddr>,
}

impl StaticResolver {
    /// Adds `name` → `address`.
    pub fn insert(&mut self, name: &str, address: IpAddr) {
        self.map
            .insert(name.trim_end_matches('.').to_owned(), address);
    }

    /// Parses `NAME=ADDRESS` (as `--resolve` takes it).
    pub fn parse_entry(&mut self, entry: &str) -> Result<(), String> {
        let (name, address) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected NAME=ADDRESS"))?;
        let address = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        self.insert(name, address);
        Ok(())
    }
}

impl Resolver for StaticResolver {
    async fn resolve(&self, name: &LocalName) -> Result<Vec<IpAddr>, String> {
        self.map
            .get(name.as_str())
            .map(|a| vec![*a])
            .ok_or_else(|| format!("{name} is not in the --resolve map"))
    }
}
