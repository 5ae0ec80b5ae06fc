//! mDNS: each binding's name answers A/AAAA queries with the device's LAN addresses, and an
//! `_https._tcp` service points at the HTTPS port. Withdrawn on REMOVE (goodbye packets).
//!
//! mdns-sd runs its own thread; this wrapper only decides what is announced and where.

use std::collections::BTreeMap;

use localcert_proto::name::LocalName;
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use crate::error::Error;

/// The DNS-SD service type announced for each name.
pub const SERVICE_TYPE: &str = "_https._tcp.local.";

/// On which interfaces to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface except loopback (mdns-sd's default): the LAN.
    Lan,
    /// Only these interfaces, by name (e.g. `wlan0`).
    Named(Vec<String>),
    /// Only the IPv4 loopback (tests).
    LoopbackOnly,
}

fn mdns_error(e: mdns_sd::Error) -> Error {
    Error::Service(format!("mDNS: {e}"))
}

/// Announces names over mDNS.
pub struct Announcer {
    daemon: ServiceDaemon,
    https_port: u16,
    /// Name → registered service full name.
    announced: BTreeMap<String, String>,
}

impl core::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Announcer")
            .field("https_port", &self.https_port)
            .field("announced", &self.announced.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Announcer {
    /// Starts the mDNS responder on `interfaces`.
    pub fn new(https_port: u16, interfaces: &Interfaces) -> Result<Self, Error> {
        let daemon = ServiceDaemon::new().map_err(mdns_error)?;
        apply_interfaces(&daemon, interfaces)?;
        Ok(Self {
            daemon,
            https_port,
            announced: BTreeMap::new(),
        })
    }

    /// Announces `name` (idempotent): its A/AAAA records with the addresses of the enabled
    /// interfaces, and an `_https._tcp` service instance named after it.
    pub fn announce(&mut self, name: &LocalName) -> Result<(), Error> {
        if self.announced.contains_key(name.as_str()) {
            return Ok(());
        }
        let host = format!("{}.", name.as_str());
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            name.label(),
            &host,
            "",
            self.https_port,
            None::<std::collections::HashMap<String, String>>,
        )
        .map_err(mdns_error)?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        self.daemon.register(info).map_err(mdns_error)?;
        tracing::info!(%name, "announced over mDNS");
        self.announced.insert(name.as_str().to_owned(), fullname);
        Ok(())
    }

    /// Withdraws `name`; nothing happens if it was not announced.
    pub fn withdraw(&mut self, name: &LocalName) -> Result<(), Error> {
        if let Some(fullname) = self.announced.remove(name.as_str()) {
            let status = self.daemon.unregister(&fullname).map_err(mdns_error)?;
            // Wait (bounded) until the goodbye packets went out, so a caller that withdraws and
            // then reports REMOVE done is not contradicted by a late answer.
            let _ = status.recv_timeout(std::time::Duration::from_secs(2));
            tracing::info!(%name, "withdrawn from mDNS");
        }
        Ok(())
    }

    /// The names announced.
    pub fn names(&self) -> Vec<String> {
        self.announced.keys().cloned().collect()
    }

    /// Withdraws everything and stops the responder.
    pub fn shutdown(mut self) {
        let names: Vec<String> = self.announced.keys().cloned().collect();
        for name in names {
            if let Some(fullname) = self.announced.remove(&name) {
                let _ = self.daemon.unregister(&fullname);
            }
        }
        let _ = self.daemon.shutdown();
    }
}

pub(crate) fn apply_interfaces(
    daemon: &ServiceDaemon,
    interfaces: &Interfaces,
) -> Result<(), Error> {
    match interfaces {
        Interfaces::Lan => {
            daemon
                .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                .map_err(mdns_error)?;
        }
        Interfaces::Named(names) => {
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            let kinds: Vec<IfKind> = names.iter().map(|n| IfKind::Name(n.clone())).collect();
            daemon.enable_interface(kinds).map_err(mdns_error)?;
        }
        Interfaces::LoopbackOnly => {
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            daemon
                .enable_interface(IfKind::LoopbackV4)
                .map_err(mdns_error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdns_sd::HostnameResolutionEvent;
    use std::net::{IpAddr, Ipv4Addr};

    fn resolves(name: &LocalName) -> bool {
        let resolver = ServiceDaemon::new().unwrap();
        apply_interfaces(&resolver, &Interfaces::LoopbackOnly).unwrap();
        let events = resolver
            .resolve_hostname(&format!("{}.", name.as_str()), Some(1500))
            .unwrap();
        let found = loop {
            match events.recv() {
                Ok(HostnameResolutionEvent::AddressesFound(_, addrs)) => {
                    break addrs
                        .iter()
                        .any(|a| a.to_ip_addr() == IpAddr::V4(Ipv4Addr::LOCALHOST));
                }
                Ok(
                    HostnameResolutionEvent::SearchTimeout(_)
                    | HostnameResolutionEvent::SearchStopped(_),
                )
                | Err(_) => break false,
                Ok(_) => {}
            }
        };
        if let Ok(done) = resolver.shutdown() {
            let _ = done.recv_timeout(std::time::Duration::from_secs(2));
        }
        found
    }

    /// Over the IPv4 loopback only (mdns-sd supports it with `IfKind::LoopbackV4`); no packet
    /// leaves the machine.
    #[test]
    fn names_resolve_over_loopback_and_are_withdrawn() {
        let unique = std::process::id() % 100_000;
        let name = LocalName::parse(&format!("lc-test-{unique}.local")).unwrap();
        let mut announcer = Announcer::new(8443, &Interfaces::LoopbackOnly).unwrap();
        announcer.announce(&name).unwrap();
        assert_eq!(announcer.names(), vec![name.as_str().to_owned()]);
        assert!(resolves(&name), "the announced name resolves to 127.0.0.1");

        announcer.withdraw(&name).unwrap();
        assert!(announcer.names().is_empty());
        // mdns-sd repeats the goodbye 120 ms later, and a resolver that hears only that repeat
        // reports the address it carries; so ask again (a few times, on a loaded machine) until
        // nothing answers.
        let gone = (0..5).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            !resolves(&name)
        });
        assert!(gone, "a withdrawn name no longer resolves");
        announcer.shutdown();
    }
}
