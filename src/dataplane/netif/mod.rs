//! The `kube-ipvs0` dummy interface and the service addresses bound on it (rtnetlink).
//!
//! IPVS only accepts traffic for a virtual address the node considers local, so every
//! ClusterIP, external IP and load-balancer IP is bound as a /32 or /128 on a dummy
//! interface. Like kube-proxy, the interface is created and never set up: it stays
//! DOWN (a dummy is NOARP), the addresses still get local routes, and nothing is
//! announced from it. IPv6 addresses are added with `nodad` so they are usable at once.
//!
//! Address changes are pipelined: up to [`IN_FLIGHT`] requests are on the netlink
//! socket at once instead of one round trip per address. Binding many at once has a
//! cheaper path still, [`ServiceInterface::add_batched`] ([`batch`]): many requests per
//! system call and one acknowledgement per batch.

pub mod batch;
mod host;

use std::collections::BTreeSet;
use std::net::IpAddr;

pub use batch::{AddressBinder, BATCH_CHUNK};
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
pub use host::host_addresses;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkDummy};

/// The interface name kube-proxy uses, kept for drop-in compatibility.
pub const DEFAULT_NAME: &str = "kube-ipvs0";

/// How many address requests are outstanding on the netlink socket at once. Bounded
/// so the kernel's acknowledgements never overflow the socket's receive buffer
/// (an overflowed ACK is dropped and its request would wait forever).
pub const IN_FLIGHT: usize = 64;

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const IFNAMSIZ: usize = 16;

/// What went wrong managing the service interface.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    /// The route netlink socket could not be opened.
    #[error("could not open a route netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The interface name cannot be a Linux interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why the kernel would refuse it.
        reason: &'static str,
    },
    /// A link request (look up, create, delete) failed.
    #[error("could not {action} interface {name}: {reason}")]
    Link {
        /// What was attempted.
        action: &'static str,
        /// The interface.
        name: String,
        /// The kernel's answer.
        reason: String,
    },
    /// An interface of that name exists and is not a dummy: not ours to use.
    #[error(
        "interface {name} exists but is a {kind} link, not a dummy: delete or rename it, \
         or configure another interface name"
    )]
    NotDummy {
        /// The interface.
        name: String,
        /// Its link kind (`veth`, `bridge`, ... or `device` for a physical one).
        kind: String,
    },
    /// Listing the interface's addresses failed.
    #[error("could not list the addresses of {name}: {reason}")]
    List {
        /// The interface.
        name: String,
        /// The kernel's answer.
        reason: String,
    },
    /// The batch socket failed mid-way (send, receive, an undecodable reply): the
    /// addresses not yet confirmed may or may not be bound; the next sync tells.
    #[error("binding addresses on {name} in batches failed: {reason}")]
    Batch {
        /// The interface.
        name: String,
        /// What failed, with the system's answer.
        reason: String,
    },
    /// Some of a batch of address changes failed (the others were applied).
    #[error(
        "{} of {total} address {action}s on {name} failed; first: {} ({})",
        failures.len(), failures[0].0, failures[0].1
    )]
    Addresses {
        /// "add" or "delete".
        action: &'static str,
        /// The interface.
        name: String,
        /// How many changes were attempted.
        total: usize,
        /// Every address that failed, with the kernel's answer.
        failures: Vec<(IpAddr, String)>,
    },
}

/// What [`ServiceInterface::sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressChanges {
    /// Addresses that were missing and are now bound.
    pub added: Vec<IpAddr>,
    /// Addresses that were bound but not wanted, now removed.
    pub removed: Vec<IpAddr>,
    /// How many wanted addresses were already bound and left alone.
    pub kept: usize,
}

impl AddressChanges {
    /// True when nothing was added or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The dummy interface that holds the service addresses.
#[derive(Clone, Debug)]
pub struct ServiceInterface {
    handle: Handle,
    name: String,
    index: u32,
    created: bool,
}

/// Turns an rtnetlink error into the kernel's errno text where there is one.
fn describe(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
        other => other.to_string(),
    }
}

fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

fn check_name(name: &str) -> Result<(), NetifError> {
    let invalid = |reason| {
        Err(NetifError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return invalid("must be 1 to 15 bytes long");
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':', '\0'])
        || name.contains(char::is_whitespace)
    {
        return invalid("must not be `.`/`..` nor contain `/`, `:`, NUL or whitespace");
    }
    Ok(())
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                LinkInfo::Kind(kind) => Some(kind),
                _ => None,
            }),
            _ => None,
        })
}

/// The address an rtnetlink address message describes (IFA_LOCAL, else IFA_ADDRESS).
pub(crate) fn message_address(message: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address (IPv4); IPv6 only sends IFA_ADDRESS.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// Whether `address` is an IPv6 link-local address (fe80::/10).
pub(crate) fn is_ipv6_link_local(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

impl ServiceInterface {
    /// Opens a route netlink connection (driven by a task on the current tokio
    /// runtime) and ensures the dummy interface `name` exists.
    pub async fn ensure(name: &str) -> Result<ServiceInterface, NetifError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetifError::Connect)?;
        tokio::spawn(connection);
        ServiceInterface::ensure_with(handle, name).await
    }

    /// Ensures the dummy interface `name` exists, using an existing connection.
    ///
    /// An existing dummy of that name is adopted as it is (addresses, up/down state);
    /// a missing one is created and left DOWN. An existing non-dummy link is an error.
    pub async fn ensure_with(handle: Handle, name: &str) -> Result<ServiceInterface, NetifError> {
        check_name(name)?;
        let mut created = false;
        let link = match lookup(&handle, name).await? {
            Some(link) => link,
            None => {
                let request = handle.link().add(LinkDummy::new(name).build());
                match request.execute().await {
                    Ok(()) => created = true,
                    // Someone created it between our look-up and our request: adopt it.
                    Err(error) if errno(&error) == Some(EEXIST) => {}
                    Err(error) => {
                        return Err(NetifError::Link {
                            action: "create",
                            name: name.to_owned(),
                            reason: describe(&error),
                        });
                    }
                }
                lookup(&handle, name)
                    .await?
                    .ok_or_else(|| NetifError::Link {
                        action: "find the just created",
                        name: name.to_owned(),
                        reason: "it disappeared right after creation".into(),
                    })?
            }
        };
        match link_kind(&link) {
            Some(InfoKind::Dummy) => {}
            other => {
                return Err(NetifError::NotDummy {
                    name: name.to_owned(),
                    kind: other.map_or_else(|| "device".to_owned(), |kind| kind.to_string()),
                });
            }
        }
        if created {
            tracing::info!(interface = name, "created the service address interface");
        }
        Ok(ServiceInterface {
            handle,
            name: name.to_owned(),
            index: link.header.index,
            created,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// True when this agent created the interface (rather than adopting one).
    pub fn created(&self) -> bool {
        self.created
    }

    async fn address_messages(&self) -> Result<Vec<AddressMessage>, NetifError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute()
            .try_collect()
            .await
            .map_err(|error| NetifError::List {
                name: self.name.clone(),
                reason: describe(&error),
            })
    }

    /// Every address bound on the interface (IPv6 link-local ones excluded: the
    /// kernel manages those when the link is up).
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>, NetifError> {
        Ok(self
            .address_messages()
            .await?
            .iter()
            .filter_map(message_address)
            .filter(|address| !is_ipv6_link_local(address))
            .collect())
    }

    /// Binds each address as a /32 or /128 (IPv6 with `nodad`), pipelined. Addresses
    /// already bound are not an error. Returns how many were newly bound.
    pub async fn add(
        &self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<usize, NetifError> {
        let requests = addresses.into_iter().map(|address| {
            let mut request = self.handle.address().add(self.index, address, 0);
            // The same message the batched path sends (host route, `nodad` for IPv6).
            *request.message_mut() = batch::new_address(self.index, address);
            async move {
                match request.execute().await {
                    Ok(()) => (address, Ok(true)),
                    Err(error) if errno(&error) == Some(EEXIST) => (address, Ok(false)),
                    Err(error) => (address, Err(describe(&error))),
                }
            }
        });
        self.pipeline("add", requests).await
    }

    /// A blocking [`AddressBinder`] for this interface, its socket opened in the
    /// calling thread's network namespace (open it where [`ServiceInterface::ensure`]
    /// ran, then move it to a blocking thread).
    pub fn binder(&self) -> Result<AddressBinder, NetifError> {
        AddressBinder::new(&self.name, self.index)
    }

    /// [`ServiceInterface::add`] with less CPU per address, for addresses that become
    /// ready over time: a blocking thread
    /// binds the addresses in batches of up to [`BATCH_CHUNK`] per system call, each
    /// batch being whatever the stream has yielded since the last one, so an address
    /// is requested as soon as the previous batch is answered. Same result: addresses
    /// already bound are not an error, refused ones are reported after the rest were
    /// bound, and the count of newly bound ones is returned.
    pub async fn add_batched(
        &self,
        addresses: impl Stream<Item = IpAddr>,
    ) -> Result<usize, NetifError> {
        // Opened here, not on the blocking thread, whose network namespace is the one
        // of whichever thread started it.
        let mut binder = self.binder()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let task = tokio::task::spawn_blocking(move || binder.add_from(&receiver));
        let mut addresses = std::pin::pin!(addresses);
        while let Some(address) = addresses.next().await {
            // Refused only once the binder stopped on an error, which the task returns.
            if sender.send(address).is_err() {
                break;
            }
        }
        drop(sender);
        task.await.unwrap_or_else(|error| {
            Err(NetifError::Batch {
                name: self.name.clone(),
                reason: format!("the binding thread failed: {error}"),
            })
        })
    }

    /// Removes each address from the interface (whatever its prefix length),
    /// pipelined. Addresses not bound are skipped. Returns how many were removed.
    pub async fn remove(
        &self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<usize, NetifError> {
        let unwanted: BTreeSet<IpAddr> = addresses.into_iter().collect();
        let messages = self
            .address_messages()
            .await?
            .into_iter()
            .filter(|message| message_address(message).is_some_and(|a| unwanted.contains(&a)));
        self.remove_messages(messages).await
    }

    async fn remove_messages(
        &self,
        messages: impl IntoIterator<Item = AddressMessage>,
    ) -> Result<usize, NetifError> {
        let requests = messages.into_iter().filter_map(|message| {
            let address = message_address(&message)?;
            let request = self.handle.address().del(message);
            Some(async move {
                match request.execute().await {
                    Ok(()) => (address, Ok(true)),
                    // Already gone (removed by someone else meanwhile): the goal is met.
                    Err(error) if errno(&error) == Some(EADDRNOTAVAIL) => (address, Ok(false)),
                    Err(error) => (address, Err(describe(&error))),
                }
            })
        });
        self.pipeline("delete", requests).await
    }

    async fn pipeline<F>(
        &self,
        action: &'static str,
        requests: impl Iterator<Item = F>,
    ) -> Result<usize, NetifError>
    where
        F: Future<Output = (IpAddr, Result<bool, String>)>,
    {
        let results: Vec<_> = stream::iter(requests)
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let total = results.len();
        let mut done = 0;
        let mut failures = Vec::new();
        for (address, result) in results {
            match result {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(reason) => failures.push((address, reason)),
            }
        }
        if failures.is_empty() {
            Ok(done)
        } else {
            failures.sort();
            Err(NetifError::Addresses {
                action,
                name: self.name.clone(),
                total,
                failures,
            })
        }
    }

    /// Makes the interface hold exactly `desired`: keeps what is already bound
    /// (nothing is flushed on restart), binds what is missing, removes the rest.
    pub async fn sync(&self, desired: &BTreeSet<IpAddr>) -> Result<AddressChanges, NetifError> {
        let mut stale = Vec::new();
        let mut bound = BTreeSet::new();
        for message in self.address_messages().await? {
            match message_address(&message) {
                Some(address) if is_ipv6_link_local(&address) => {}
                Some(address) if desired.contains(&address) => {
                    bound.insert(address);
                }
                Some(_) => stale.push(message),
                None => {}
            }
        }
        let added: Vec<IpAddr> = desired.difference(&bound).copied().collect();
        let removed: Vec<IpAddr> = stale.iter().filter_map(message_address).collect();
        // Remove first: a stale address never lingers because an add failed.
        self.remove_messages(stale).await?;
        self.add(added.iter().copied()).await?;
        Ok(AddressChanges {
            added,
            removed,
            kept: bound.len(),
        })
    }

    /// Deletes the interface (and with it every address) only if this agent created
    /// it; an adopted interface is left as found. Returns whether it was deleted.
    pub async fn release(self) -> Result<bool, NetifError> {
        if self.created {
            self.delete().await?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Deletes the interface whoever created it (for an explicit clean-up).
    pub async fn delete(self) -> Result<(), NetifError> {
        match self.handle.link().del(self.index).execute().await {
            Ok(()) => Ok(()),
            Err(error) if errno(&error) == Some(ENODEV) => Ok(()),
            Err(error) => Err(NetifError::Link {
                action: "delete",
                name: self.name,
                reason: describe(&error),
            }),
        }
    }
}

/// Looks a link up by name; `None` when there is none.
async fn lookup(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetifError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(error) if errno(&error) == Some(ENODEV) => Ok(None),
        Err(error) => Err(NetifError::Link {
            action: "look up",
            name: name.to_owned(),
            reason: describe(&error),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        assert!(check_name("kube-ipvs0").is_ok());
        assert!(check_name("eth0.100").is_ok());
        for bad in ["", "0123456789abcdef", "a/b", "a b", "..", "a:b"] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid interface name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn link_local_detection() {
        assert!(is_ipv6_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"fd00::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"10.0.0.1".parse().unwrap()));
    }
}
