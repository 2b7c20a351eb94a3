//! The async handle on tokio, for the node agent.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_GENERIC};
use tokio::io::unix::AsyncFd;

use crate::blocking::{check_length, libc_flags};
use crate::convert::{self, Request};
use crate::error::{Error, libc_errno};
use crate::exchange::{
    self, Batch, FLAGS_ACK, FLAGS_DUMP, RECEIVE_BUFFER, Reply, encode_family_request,
    parse_family_reply,
};
use crate::packet::IpvsMessage;
use crate::socket::{Limits, configure};
use crate::types::*;

/// An async connection (tokio) to the kernel's IPVS table of the network namespace the
/// handle was created in. It must be created and used inside a tokio runtime.
pub struct AsyncIpvsHandle {
    socket: AsyncFd<Socket>,
    family: u16,
    seq: u32,
    limits: Limits,
    buffer: Vec<u8>,
    out: Vec<u8>,
    sends: u64,
    ack_every_change: bool,
}

impl std::fmt::Debug for AsyncIpvsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncIpvsHandle")
            .field("family", &self.family)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AsyncIpvsHandle {
    /// Opens a generic-netlink socket and resolves the IPVS family.
    ///
    /// Fails with [`Error::IpvsUnavailable`] when the `ip_vs` module is not loaded.
    pub async fn new() -> Result<AsyncIpvsHandle, Error> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|source| Error::Socket {
            action: "open",
            source,
        })?;
        let limits = configure(&mut socket)?;
        socket
            .set_non_blocking(true)
            .map_err(|source| Error::Socket {
                action: "set non-blocking",
                source,
            })?;
        // `AsyncFd::register` is the non-deprecated way but is `unsafe`; the crate forbids
        // unsafe code. The deprecation is about borrowed fds being closed while registered;
        // here the AsyncFd owns the socket, so the fd outlives the registration.
        #[allow(deprecated)]
        let socket = AsyncFd::new(socket).map_err(|source| Error::Socket {
            action: "register with tokio",
            source,
        })?;
        let mut handle = AsyncIpvsHandle {
            socket,
            family: 0,
            seq: 1,
            limits,
            buffer: vec![0; RECEIVE_BUFFER],
            out: Vec::with_capacity(limits.max_bytes + 4096),
            sends: 0,
            ack_every_change: false,
        };
        handle.family = handle.resolve_family().await?;
        Ok(handle)
    }

    /// The generic-netlink id the kernel assigned to IPVS.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    async fn resolve_family(&mut self) -> Result<u16, Error> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send(&encode_family_request(seq)).await?;
        loop {
            let length = self.receive().await?;
            if let Some(result) = parse_family_reply(&self.buffer[..length], seq) {
                return result;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        loop {
            let mut guard = self
                .socket
                .writable()
                .await
                .map_err(|source| Error::Socket {
                    action: "wait for writable",
                    source,
                })?;
            match guard.try_io(|socket| socket.get_ref().send(bytes, 0)) {
                Ok(result) => {
                    self.sends += 1;
                    return result.map(drop).map_err(|source| Error::Socket {
                        action: "send",
                        source,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram into `self.buffer`; returns its length.
    async fn receive(&mut self) -> Result<usize, Error> {
        loop {
            let mut guard = self
                .socket
                .readable()
                .await
                .map_err(|source| Error::Socket {
                    action: "wait for readable",
                    source,
                })?;
            let buffer = &mut self.buffer;
            let result = guard.try_io(|socket| {
                let mut slice = &mut buffer[..];
                socket.get_ref().recv(&mut slice, libc_flags(false))
            });
            match result {
                Ok(Ok(length)) => return check_length(length, self.buffer.len()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(source)) => {
                    return Err(Error::Socket {
                        action: "receive",
                        source,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one already queued datagram, if any, without waiting.
    fn receive_queued(&mut self) -> Option<usize> {
        let mut slice = &mut self.buffer[..];
        let length = self
            .socket
            .get_ref()
            .recv(&mut slice, libc_flags(true))
            .ok()?;
        check_length(length, self.buffer.len()).ok()
    }

    /// Sends `requests` in as few `sendmsg` calls as the buffers allow and collects every
    /// reply. Fails only if the socket itself fails.
    async fn run(&mut self, requests: &[Request], flags: u16) -> Result<Vec<Reply>, Error> {
        let mut batch = Batch::new(
            requests,
            self.family,
            flags,
            self.limits.max_bytes,
            if flags == FLAGS_DUMP {
                1
            } else {
                self.limits.max_requests
            },
            !self.ack_every_change,
        );
        let mut out = std::mem::take(&mut self.out);
        let result = async {
            while batch.next_chunk(&mut self.seq, &mut out) > 0 {
                self.send(&out).await?;
                while !batch.current().is_complete() {
                    match self.receive().await {
                        Ok(length) => batch.current().feed(&self.buffer[..length]),
                        Err(Error::Socket { source, .. })
                            if source.raw_os_error() == Some(libc_errno::ENOBUFS) =>
                        {
                            tracing::warn!("netlink receive buffer overrun: acknowledgements lost");
                            batch.current().overran();
                            // The kernel handled the whole chunk inside sendmsg: whatever
                            // it queued is there now; the rest is lost.
                            while let Some(length) = self.receive_queued() {
                                batch.current().feed(&self.buffer[..length]);
                            }
                            batch.current().abandon();
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        }
        .await;
        self.out = out;
        result.map(|()| batch.into_replies())
    }

    async fn one(
        &mut self,
        request: Request,
        flags: u16,
    ) -> Result<(Request, Vec<IpvsMessage>), Error> {
        let reply = self
            .run(std::slice::from_ref(&request), flags)
            .await?
            .pop()
            .unwrap_or(Reply {
                messages: vec![],
                status: exchange::Status::Lost,
            });
        let messages = reply.into_result(&request)?;
        Ok((request, messages))
    }

    /// Applies many changes with few system calls. The outer error is a socket failure; the
    /// inner results say, per change and in order, whether the kernel applied it.
    pub async fn apply_batch(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut results: Vec<Result<(), Error>> = Vec::with_capacity(changes.len());
        let mut requests = Vec::with_capacity(changes.len());
        let mut slots = Vec::with_capacity(changes.len());
        for change in changes {
            match convert::change_request(change) {
                Ok(request) => {
                    slots.push(results.len());
                    results.push(Ok(()));
                    requests.push(request);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let replies = self.run(&requests, FLAGS_ACK).await?;
        for ((slot, request), reply) in slots.into_iter().zip(&requests).zip(replies) {
            results[slot] = reply.into_result(request).map(drop);
        }
        Ok(results)
    }

    async fn apply_one(&mut self, change: Change) -> Result<(), Error> {
        let request = convert::change_request(&change)?;
        self.one(request, FLAGS_ACK).await.map(drop)
    }

    /// Whether every change of a batch asks for its own acknowledgement (`NLM_F_ACK`).
    ///
    /// Off by default: only the last change of each `sendmsg` chunk asks for one. The kernel
    /// reports a failed change whether or not it asked, and handles a chunk in order, so the
    /// final acknowledgement proves that every change before it without an error worked; this
    /// saves one kernel message and one `recv` per change. After a receive-buffer overrun
    /// the unconfirmed changes are reported as [`Error::AckLost`] either way.
    pub fn set_ack_every_change(&mut self, on: bool) {
        self.ack_every_change = on;
    }

    /// How many `sendmsg` calls this handle has made (batches need few).
    pub fn sendmsg_count(&self) -> u64 {
        self.sends
    }

    /// Sends one raw request (for attributes or commands the typed API does not cover) and
    /// returns the kernel's reply messages. `dump` sets `NLM_F_DUMP` instead of `NLM_F_ACK`.
    pub async fn execute(
        &mut self,
        request: Request,
        dump: bool,
    ) -> Result<Vec<IpvsMessage>, Error> {
        let flags = if dump { FLAGS_DUMP } else { FLAGS_ACK };
        self.one(request, flags).await.map(|(_, messages)| messages)
    }

    /// Adds a service.
    pub async fn add_service(&mut self, service: &Service) -> Result<(), Error> {
        self.apply_one(Change::AddService(service.clone())).await
    }

    /// Replaces scheduler, flags, timeout, netmask and persistence engine of a service.
    pub async fn edit_service(&mut self, service: &Service) -> Result<(), Error> {
        self.apply_one(Change::EditService(service.clone())).await
    }

    /// Deletes a service and its destinations.
    pub async fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.apply_one(Change::DeleteService(*key)).await
    }

    /// Adds a destination to a service.
    pub async fn add_destination(
        &mut self,
        key: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), Error> {
        self.apply_one(Change::AddDestination(*key, dest.clone()))
            .await
    }

    /// Replaces forwarding method, weight, thresholds and tunnel settings of a destination.
    pub async fn edit_destination(
        &mut self,
        key: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), Error> {
        self.apply_one(Change::EditDestination(*key, dest.clone()))
            .await
    }

    /// Deletes a destination.
    pub async fn delete_destination(
        &mut self,
        key: &ServiceKey,
        dest: &DestinationKey,
    ) -> Result<(), Error> {
        self.apply_one(Change::DeleteDestination(*key, *dest)).await
    }

    /// Lists every service.
    pub async fn services(&mut self) -> Result<Vec<Service>, Error> {
        let (request, messages) = self
            .one(convert::list_services_request(), FLAGS_DUMP)
            .await?;
        convert::decode_services(&request, &messages)
    }

    /// Reads one service (errno ESRCH when it does not exist).
    pub async fn service(&mut self, key: &ServiceKey) -> Result<Service, Error> {
        let (request, messages) = self
            .one(convert::get_service_request(key), FLAGS_ACK)
            .await?;
        let mut services = convert::decode_services(&request, &messages)?;
        convert::single(&request, &messages)?;
        Ok(services.remove(0))
    }

    /// Lists the destinations of a service.
    pub async fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, Error> {
        let (request, messages) = self
            .one(convert::list_destinations_request(key), FLAGS_DUMP)
            .await?;
        convert::decode_destinations(&request, key.family(), &messages)
    }

    /// Lists every service with its destinations.
    pub async fn services_with_destinations(
        &mut self,
    ) -> Result<Vec<(Service, Vec<Destination>)>, Error> {
        let services = self.services().await?;
        let mut all = Vec::with_capacity(services.len());
        for service in services {
            let destinations = self.destinations(&service.key).await?;
            all.push((service, destinations));
        }
        Ok(all)
    }

    /// Reads the IPVS version and connection table size.
    pub async fn info(&mut self) -> Result<Info, Error> {
        let (request, messages) = self.one(convert::info_request(), FLAGS_ACK).await?;
        convert::decode_info(&request, &messages)
    }

    /// Lists the running connection-synchronisation daemons (none, master, backup or
    /// both), master first.
    pub async fn daemons(&mut self) -> Result<Vec<SyncDaemon>, Error> {
        let (request, messages) = self
            .one(convert::list_daemons_request(), FLAGS_DUMP)
            .await?;
        convert::decode_daemons(&request, &messages)
    }

    /// Reads the connection timeouts.
    pub async fn timeouts(&mut self) -> Result<Timeouts, Error> {
        let (request, messages) = self.one(convert::timeouts_request(), FLAGS_ACK).await?;
        Ok(convert::timeouts_from_message(convert::single(
            &request, &messages,
        )?))
    }

    /// Sets the connection timeouts; a 0 field leaves that timeout unchanged.
    pub async fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), Error> {
        self.one(convert::set_timeouts_request(timeouts), FLAGS_ACK)
            .await
            .map(drop)
    }

    /// Zeroes the counters of one service, or of every service with `None`.
    pub async fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), Error> {
        self.one(convert::zero_request(key), FLAGS_ACK)
            .await
            .map(drop)
    }

    /// Deletes every service and destination of the network namespace.
    ///
    /// Dangerous: this also removes services other programs (kube-proxy, keepalived, an
    /// operator's manual entries) created. Prefer deleting the services you own.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.one(convert::flush_request(), FLAGS_ACK)
            .await
            .map(drop)
    }
}
