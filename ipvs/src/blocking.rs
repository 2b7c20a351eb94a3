//! The blocking handle, for command-line tools.

use std::io;

use netlink_sys::{Socket, protocols::NETLINK_GENERIC};

use crate::convert::{self, Request};
use crate::error::{Error, libc_errno};
use crate::exchange::{
    self, Batch, FLAGS_ACK, FLAGS_DUMP, RECEIVE_BUFFER, Reply, encode_family_request,
    parse_family_reply,
};
use crate::packet::IpvsMessage;
use crate::socket::{Limits, configure};
use crate::types::*;

/// A blocking connection to the kernel's IPVS table of the calling thread's network
/// namespace.
pub struct IpvsHandle {
    socket: Socket,
    family: u16,
    seq: u32,
    limits: Limits,
    buffer: Vec<u8>,
    out: Vec<u8>,
    sends: u64,
    ack_every_change: bool,
}

impl std::fmt::Debug for IpvsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsHandle")
            .field("family", &self.family)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl IpvsHandle {
    /// Opens a generic-netlink socket and resolves the IPVS family.
    ///
    /// Fails with [`Error::IpvsUnavailable`] when the `ip_vs` module is not loaded.
    pub fn new() -> Result<IpvsHandle, Error> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|source| Error::Socket {
            action: "open",
            source,
        })?;
        let limits = configure(&mut socket)?;
        let mut handle = IpvsHandle {
            socket,
            family: 0,
            seq: 1,
            limits,
            buffer: vec![0; RECEIVE_BUFFER],
            out: Vec::with_capacity(limits.max_bytes + 4096),
            sends: 0,
            ack_every_change: false,
        };
        handle.family = handle.resolve_family()?;
        Ok(handle)
    }

    /// The generic-netlink id the kernel assigned to IPVS.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn resolve_family(&mut self) -> Result<u16, Error> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.send(&encode_family_request(seq))?;
        loop {
            let length = self.receive(false)?;
            if let Some(result) = parse_family_reply(&self.buffer[..length], seq) {
                return result;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.sends += 1;
        self.socket
            .send(bytes, 0)
            .map(drop)
            .map_err(|source| Error::Socket {
                action: "send",
                source,
            })
    }

    /// Receives one datagram into `self.buffer`; returns its length.
    fn receive(&mut self, dont_wait: bool) -> Result<usize, Error> {
        let flags = libc_flags(dont_wait);
        loop {
            let mut slice = &mut self.buffer[..];
            match self.socket.recv(&mut slice, flags) {
                Ok(length) => return check_length(length, self.buffer.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Socket {
                        action: "receive",
                        source,
                    });
                }
            }
        }
    }

    /// Sends `requests` in as few `sendmsg` calls as the buffers allow and collects every
    /// reply. Fails only if the socket itself fails.
    fn run(&mut self, requests: &[Request], flags: u16) -> Result<Vec<Reply>, Error> {
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
        let result = (|| {
            while batch.next_chunk(&mut self.seq, &mut out) > 0 {
                self.send(&out)?;
                while !batch.current().is_complete() {
                    match self.receive(false) {
                        Ok(length) => batch.current().feed(&self.buffer[..length]),
                        Err(Error::Socket { source, .. })
                            if source.raw_os_error() == Some(libc_errno::ENOBUFS) =>
                        {
                            tracing::warn!("netlink receive buffer overrun: acknowledgements lost");
                            batch.current().overran();
                            // The kernel handled the whole chunk inside sendmsg: whatever
                            // it queued is there now; the rest is lost.
                            while let Ok(length) = self.receive(true) {
                                batch.current().feed(&self.buffer[..length]);
                            }
                            batch.current().abandon();
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        })();
        self.out = out;
        result.map(|()| batch.into_replies())
    }

    fn one(&mut self, request: Request, flags: u16) -> Result<(Request, Vec<IpvsMessage>), Error> {
        let reply = self
            .run(std::slice::from_ref(&request), flags)?
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
    pub fn apply_batch(&mut self, changes: &[Change]) -> Result<Vec<Result<(), Error>>, Error> {
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
        let replies = self.run(&requests, FLAGS_ACK)?;
        for ((slot, request), reply) in slots.into_iter().zip(&requests).zip(replies) {
            results[slot] = reply.into_result(request).map(drop);
        }
        Ok(results)
    }

    fn apply_one(&mut self, change: Change) -> Result<(), Error> {
        let request = convert::change_request(&change)?;
        self.one(request, FLAGS_ACK).map(drop)
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
    pub fn execute(&mut self, request: Request, dump: bool) -> Result<Vec<IpvsMessage>, Error> {
        let flags = if dump { FLAGS_DUMP } else { FLAGS_ACK };
        self.one(request, flags).map(|(_, messages)| messages)
    }

    /// Adds a service.
    pub fn add_service(&mut self, service: &Service) -> Result<(), Error> {
        self.apply_one(Change::AddService(service.clone()))
    }

    /// Replaces scheduler, flags, timeout, netmask and persistence engine of a service.
    pub fn edit_service(&mut self, service: &Service) -> Result<(), Error> {
        self.apply_one(Change::EditService(service.clone()))
    }

    /// Deletes a service and its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.apply_one(Change::DeleteService(*key))
    }

    /// Adds a destination to a service.
    pub fn add_destination(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), Error> {
        self.apply_one(Change::AddDestination(*key, dest.clone()))
    }

    /// Replaces forwarding method, weight, thresholds and tunnel settings of a destination.
    pub fn edit_destination(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), Error> {
        self.apply_one(Change::EditDestination(*key, dest.clone()))
    }

    /// Deletes a destination.
    pub fn delete_destination(
        &mut self,
        key: &ServiceKey,
        dest: &DestinationKey,
    ) -> Result<(), Error> {
        self.apply_one(Change::DeleteDestination(*key, *dest))
    }

    /// Lists every service.
    pub fn services(&mut self) -> Result<Vec<Service>, Error> {
        let (request, messages) = self.one(convert::list_services_request(), FLAGS_DUMP)?;
        convert::decode_services(&request, &messages)
    }

    /// Reads one service (errno ESRCH when it does not exist).
    pub fn service(&mut self, key: &ServiceKey) -> Result<Service, Error> {
        let (request, messages) = self.one(convert::get_service_request(key), FLAGS_ACK)?;
        let mut services = convert::decode_services(&request, &messages)?;
        convert::single(&request, &messages)?;
        Ok(services.remove(0))
    }

    /// Lists the destinations of a service.
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, Error> {
        let (request, messages) = self.one(convert::list_destinations_request(key), FLAGS_DUMP)?;
        convert::decode_destinations(&request, key.family(), &messages)
    }

    /// Lists every service with its destinations.
    pub fn services_with_destinations(
        &mut self,
    ) -> Result<Vec<(Service, Vec<Destination>)>, Error> {
        let services = self.services()?;
        let mut all = Vec::with_capacity(services.len());
        for service in services {
            let destinations = self.destinations(&service.key)?;
            all.push((service, destinations));
        }
        Ok(all)
    }

    /// Reads the IPVS version and connection table size.
    pub fn info(&mut self) -> Result<Info, Error> {
        let (request, messages) = self.one(convert::info_request(), FLAGS_ACK)?;
        convert::decode_info(&request, &messages)
    }

    /// Lists the running connection-synchronisation daemons (none, master, backup or
    /// both), master first.
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>, Error> {
        let (request, messages) = self.one(convert::list_daemons_request(), FLAGS_DUMP)?;
        convert::decode_daemons(&request, &messages)
    }

    /// Reads the connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, Error> {
        let (request, messages) = self.one(convert::timeouts_request(), FLAGS_ACK)?;
        Ok(convert::timeouts_from_message(convert::single(
            &request, &messages,
        )?))
    }

    /// Sets the connection timeouts; a 0 field leaves that timeout unchanged.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), Error> {
        self.one(convert::set_timeouts_request(timeouts), FLAGS_ACK)
            .map(drop)
    }

    /// Zeroes the counters of one service, or of every service with `None`.
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), Error> {
        self.one(convert::zero_request(key), FLAGS_ACK).map(drop)
    }

    /// Deletes every service and destination of the network namespace.
    ///
    /// Dangerous: this also removes services other programs (kube-proxy, keepalived, an
    /// operator's manual entries) created. Prefer deleting the services you own.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.one(convert::flush_request(), FLAGS_ACK).map(drop)
    }
}

pub(crate) fn libc_flags(dont_wait: bool) -> i32 {
    // MSG_TRUNC makes recv report the datagram's real length, so truncation is detected.
    let flags = nix::sys::socket::MsgFlags::MSG_TRUNC;
    if dont_wait {
        (flags | nix::sys::socket::MsgFlags::MSG_DONTWAIT).bits()
    } else {
        flags.bits()
    }
}

/// Rejects a datagram that was longer than the receive buffer (MSG_TRUNC reports the real
/// length).
pub(crate) fn check_length(length: usize, capacity: usize) -> Result<usize, Error> {
    if length > capacity {
        return Err(Error::Socket {
            action: "receive",
            source: io::Error::other(format!(
                "a {length}-byte datagram did not fit the {capacity}-byte buffer"
            )),
        });
    }
    Ok(length)
}
