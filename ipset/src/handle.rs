//! The blocking client: one NETLINK_NETFILTER socket speaking ipset.

use std::collections::HashMap;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL};
use nfnetlink_base::{NfnlSocket, Verdict};
use tracing::debug;

use crate::entry::{Entry, Member};
use crate::error::{Error, Result, describe_code};
use crate::packet::constants::*;
use crate::packet::{CmdAttr, Command, EntryAttr, IpsetMessage};
use crate::set::{Family, SetHeader, SetInfo, SetSpec, SetType};

/// How many add/del messages go into one `sendmsg` before the replies are read: small
/// enough that a refusal for every entry of a chunk (each echoes its request) still fits
/// the socket's receive buffer.
const BATCH_CHUNK: usize = 256;

/// The result of a batch: how many entries were applied and which failed.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Entries the kernel accepted.
    pub applied: usize,
    /// Entries the kernel refused: their index in the input and the error.
    pub failures: Vec<(usize, Error)>,
}

impl BatchOutcome {
    /// Whether every entry was applied.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A connection to the kernel's ipset over nfnetlink. Blocking; use it from one thread
/// (e.g. inside `spawn_blocking`).
pub struct IpsetHandle {
    socket: NfnlSocket,
    protocol: u8,
}

/// What the kernel answered to one request.
enum Answer {
    /// Success, with the data messages (empty for plain acks).
    Ok(Vec<IpsetMessage>),
    /// A negative netlink error, as a positive code.
    Refused(i32),
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Protocol => "protocol",
        Command::Create => "create",
        Command::Destroy => "destroy",
        Command::Flush => "flush",
        Command::Rename => "rename",
        Command::Swap => "swap",
        Command::List => "list",
        Command::Save => "save",
        Command::Add => "add",
        Command::Del => "del",
        Command::Test => "test",
        Command::Header => "header",
        Command::Type => "type",
        Command::Other(_) => "other",
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= IPSET_MAXNAMELEN || name.contains('\0') {
        return Err(Error::InvalidInput {
            what: format!("set name {name:?}"),
            reason: format!(
                "a set name needs 1 to {} bytes and no NUL",
                IPSET_MAXNAMELEN - 1
            ),
        });
    }
    Ok(())
}

fn check_member(member: &Member) -> Result<()> {
    if let Some(comment) = &member.comment
        && (comment.len() > IPSET_MAX_COMMENT_SIZE || comment.contains('\0'))
    {
        return Err(Error::InvalidInput {
            what: format!("comment of entry {}", member.entry),
            reason: format!("comments hold at most {IPSET_MAX_COMMENT_SIZE} bytes and no NUL"),
        });
    }
    Ok(())
}

impl IpsetHandle {
    /// Opens the socket in the current network namespace and does the protocol
    /// handshake.
    pub fn new() -> Result<IpsetHandle> {
        let mut handle = IpsetHandle {
            socket: NfnlSocket::open().map_err(Error::netlink("open"))?,
            protocol: IPSET_PROTOCOL,
        };
        handle.handshake()?;
        Ok(handle)
    }

    /// The protocol version in use (the kernel's, 6 or 7).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    fn handshake(&mut self) -> Result<()> {
        let request = IpsetMessage::new(Command::Protocol, vec![CmdAttr::Protocol(IPSET_PROTOCOL)]);
        let reply = match self.request(request, 0)? {
            Answer::Ok(reply) => reply,
            Answer::Refused(code) => {
                return Err(Error::NotAvailable {
                    reason: format!(
                        "protocol handshake refused: {}",
                        nfnetlink_base::describe_errno(code)
                    ),
                });
            }
        };
        let message = reply.first().ok_or_else(|| Error::NotAvailable {
            reason: "no reply to the protocol handshake".into(),
        })?;
        let kernel_max = message
            .find(|a| match a {
                CmdAttr::Protocol(p) => Some(*p),
                _ => None,
            })
            .ok_or_else(|| Error::Decode {
                command: "protocol",
                reason: "reply without IPSET_ATTR_PROTOCOL".into(),
            })?;
        let kernel_min = message
            .find(|a| match a {
                CmdAttr::ProtocolMin(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(kernel_max);
        let protocol = kernel_max.min(IPSET_PROTOCOL);
        if protocol < IPSET_PROTOCOL_MIN || protocol < kernel_min {
            return Err(Error::ProtocolMismatch {
                kernel_min,
                kernel_max,
            });
        }
        debug!(kernel_min, kernel_max, protocol, "ipset protocol handshake");
        self.protocol = protocol;
        Ok(())
    }

    /// Sends one request and collects the answer: data messages up to the ack or
    /// NLMSG_DONE, or the error.
    fn request(&mut self, message: IpsetMessage, flags: u16) -> Result<Answer> {
        let command = command_name(message.command);
        let mut data = Vec::new();
        let verdict = self
            .socket
            .request(message, flags, |reply| data.push(reply))
            .map_err(Error::netlink(command))?;
        Ok(match verdict {
            Verdict::Done => Answer::Ok(data),
            Verdict::Refused(code) => Answer::Refused(code),
        })
    }

    /// Turns a refusal of a command on `set` into the error saying what happened.
    fn refusal(command: Command, set: &str, code: i32, is_bitmap: bool) -> Error {
        let name = command_name(command);
        match code {
            ENOENT => Error::SetNotFound {
                command: name,
                set: set.to_string(),
            },
            ERR_BUSY | ERR_REFERENCED | EBUSY => Error::SetInUse {
                command: name,
                set: set.to_string(),
            },
            code => Error::Kernel {
                command: name,
                set: set.to_string(),
                code,
                meaning: describe_code(code, is_bitmap),
            },
        }
    }

    /// A simple command on one set, answered by an ack.
    fn simple(
        &mut self,
        command: Command,
        set: &str,
        attrs: Vec<CmdAttr>,
        flags: u16,
    ) -> Result<std::result::Result<(), i32>> {
        let mut attributes = vec![CmdAttr::Protocol(self.protocol)];
        attributes.extend(attrs);
        let _ = set;
        match self.request(IpsetMessage::new(command, attributes), flags)? {
            Answer::Ok(_) => Ok(Ok(())),
            Answer::Refused(code) => Ok(Err(code)),
        }
    }

    /// The revisions (lowest, highest) of `set_type` for `family` the kernel supports.
    pub fn type_revisions(&mut self, set_type: &SetType, family: Family) -> Result<(u8, u8)> {
        let attributes = vec![
            CmdAttr::Protocol(self.protocol),
            CmdAttr::TypeName(set_type.name().to_string()),
            CmdAttr::Family(family.number()),
        ];
        let not_supported = || Error::TypeNotSupported {
            set_type: set_type.name().to_string(),
            family: family.to_string(),
            module: set_type.module(),
        };
        let reply = match self.request(IpsetMessage::new(Command::Type, attributes), 0)? {
            Answer::Ok(reply) => reply,
            Answer::Refused(ERR_FIND_TYPE) => return Err(not_supported()),
            Answer::Refused(code) => {
                return Err(Self::refusal(Command::Type, "", code, false));
            }
        };
        let message = reply.first().ok_or_else(not_supported)?;
        let max = message
            .find(|a| match a {
                CmdAttr::Revision(r) => Some(*r),
                _ => None,
            })
            .ok_or_else(|| Error::Decode {
                command: "type",
                reason: "reply without IPSET_ATTR_REVISION".into(),
            })?;
        let min = message
            .find(|a| match a {
                CmdAttr::ProtocolMin(r) => Some(*r),
                _ => None,
            })
            .unwrap_or(max);
        Ok((min, max))
    }

    /// Creates a set. With `exist`, an existing set of the same type and options is
    /// accepted (`ipset create -exist`).
    pub fn create(&mut self, spec: &SetSpec, exist: bool) -> Result<()> {
        check_name(&spec.name)?;
        if spec.set_type == SetType::BitmapPort && spec.port_range.is_none() {
            return Err(Error::InvalidInput {
                what: format!("spec of set {}", spec.name),
                reason: "bitmap:port needs a port range".into(),
            });
        }
        let (_, revision) = self.type_revisions(&spec.set_type, spec.family)?;
        let attrs = vec![
            CmdAttr::SetName(spec.name.clone()),
            CmdAttr::TypeName(spec.set_type.name().to_string()),
            CmdAttr::Revision(revision),
            CmdAttr::Family(spec.family.number()),
            CmdAttr::Header(spec.header_attrs()),
        ];
        let flags = if exist { 0 } else { NLM_F_EXCL };
        match self.simple(Command::Create, &spec.name, attrs, flags)? {
            Ok(()) => Ok(()),
            Err(EEXIST) => Err(Error::SetExists {
                set: spec.name.clone(),
            }),
            Err(ERR_FIND_TYPE) => Err(Error::TypeNotSupported {
                set_type: spec.set_type.name().to_string(),
                family: spec.family.to_string(),
                module: spec.set_type.module(),
            }),
            Err(code) => Err(Self::refusal(
                Command::Create,
                &spec.name,
                code,
                !spec.set_type.is_hash(),
            )),
        }
    }

    /// Destroys a set. A set an iptables rule references gives [`Error::SetInUse`]; a
    /// missing set gives [`Error::SetNotFound`] unless `exist` (`ipset destroy -exist`).
    pub fn destroy(&mut self, set: &str, exist: bool) -> Result<()> {
        check_name(set)?;
        let attrs = vec![CmdAttr::SetName(set.to_string())];
        let flags = if exist { 0 } else { NLM_F_EXCL };
        self.simple(Command::Destroy, set, attrs, flags)?
            .map_err(|code| Self::refusal(Command::Destroy, set, code, false))
    }

    /// Removes every entry of a set.
    pub fn flush(&mut self, set: &str) -> Result<()> {
        check_name(set)?;
        let attrs = vec![CmdAttr::SetName(set.to_string())];
        self.simple(Command::Flush, set, attrs, 0)?
            .map_err(|code| Self::refusal(Command::Flush, set, code, false))
    }

    /// Renames `set` to `to`.
    pub fn rename(&mut self, set: &str, to: &str) -> Result<()> {
        check_name(set)?;
        check_name(to)?;
        let attrs = vec![
            CmdAttr::SetName(set.to_string()),
            CmdAttr::SetName2(to.to_string()),
        ];
        match self.simple(Command::Rename, set, attrs, 0)? {
            Ok(()) => Ok(()),
            Err(ERR_EXIST_SETNAME2) => Err(Error::RenameTargetExists {
                set: set.to_string(),
                to: to.to_string(),
            }),
            Err(code) => Err(Self::refusal(Command::Rename, set, code, false)),
        }
    }

    /// Swaps two sets atomically: rules referencing `a` now see `b`'s entries and the
    /// other way round. Both must have the same type and family.
    pub fn swap(&mut self, a: &str, b: &str) -> Result<()> {
        check_name(a)?;
        check_name(b)?;
        let attrs = vec![
            CmdAttr::SetName(a.to_string()),
            CmdAttr::SetName2(b.to_string()),
        ];
        match self.simple(Command::Swap, a, attrs, 0)? {
            Ok(()) => Ok(()),
            Err(ERR_EXIST_SETNAME2) => Err(Error::SwapPartnerMissing {
                set: a.to_string(),
                other: b.to_string(),
            }),
            Err(ERR_TYPE_MISMATCH) => Err(Error::SwapTypeMismatch {
                set: a.to_string(),
                other: b.to_string(),
            }),
            Err(code) => Err(Self::refusal(Command::Swap, a, code, false)),
        }
    }

    fn dump(&mut self, set: Option<&str>, header_only: bool) -> Result<Vec<SetInfo>> {
        let mut attributes = vec![CmdAttr::Protocol(self.protocol)];
        if let Some(set) = set {
            check_name(set)?;
            attributes.push(CmdAttr::SetName(set.to_string()));
        }
        if header_only {
            attributes.push(CmdAttr::Flags(FLAG_LIST_HEADER));
        }
        let messages =
            match self.request(IpsetMessage::new(Command::List, attributes), NLM_F_DUMP)? {
                Answer::Ok(messages) => messages,
                Answer::Refused(code) => {
                    return Err(Self::refusal(Command::List, set.unwrap_or(""), code, false));
                }
            };
        // A big set spans several messages, each naming the set; group them in order.
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<IpsetMessage>> = HashMap::new();
        for message in messages {
            let name = message
                .find(|a| match a {
                    CmdAttr::SetName(s) => Some(s.clone()),
                    _ => None,
                })
                .ok_or_else(|| Error::Decode {
                    command: "list",
                    reason: "list reply without set name".into(),
                })?;
            if !groups.contains_key(&name) {
                order.push(name.clone());
            }
            groups.entry(name).or_default().push(message);
        }
        order
            .into_iter()
            .map(|name| {
                SetInfo::from_messages(&groups[&name]).map_err(|reason| Error::Decode {
                    command: "list",
                    reason,
                })
            })
            .collect()
    }

    /// Lists one set with its members.
    pub fn list(&mut self, set: &str) -> Result<SetInfo> {
        self.dump(Some(set), false)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::SetNotFound {
                command: "list",
                set: set.to_string(),
            })
    }

    /// Lists every set of the namespace with its members.
    pub fn list_all(&mut self) -> Result<Vec<SetInfo>> {
        self.dump(None, false)
    }

    /// The header of one set, without members.
    pub fn header(&mut self, set: &str) -> Result<SetHeader> {
        Ok(self
            .dump(Some(set), true)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::SetNotFound {
                command: "list",
                set: set.to_string(),
            })?
            .header)
    }

    /// The headers of every set.
    pub fn headers(&mut self) -> Result<Vec<SetHeader>> {
        Ok(self
            .dump(None, true)?
            .into_iter()
            .map(|s| s.header)
            .collect())
    }

    fn entry_message(&self, command: Command, set: &str, attrs: Vec<EntryAttr>) -> IpsetMessage {
        IpsetMessage::new(
            command,
            vec![
                CmdAttr::Protocol(self.protocol),
                CmdAttr::SetName(set.to_string()),
                CmdAttr::Entry(attrs),
            ],
        )
    }

    fn entry_refusal(command: Command, set: &str, entry: &Entry, code: i32) -> Error {
        match (command, code) {
            (Command::Add, ERR_EXIST) => Error::ElementExists {
                set: set.to_string(),
                entry: entry.to_string(),
            },
            (Command::Del, ERR_EXIST) => Error::ElementMissing {
                set: set.to_string(),
                entry: entry.to_string(),
            },
            (_, ERR_PROTOCOL) => Error::Kernel {
                command: command_name(command),
                set: format!("{set} (entry {entry})"),
                code: ERR_PROTOCOL,
                meaning: "the set cannot read this entry: it is of another set type, or its \
                          address is of the other family (IPv4 entry in an inet6 set or the \
                          reverse)"
                    .into(),
            },
            (_, code) => {
                let is_bitmap = matches!(entry, Entry::Port(_));
                match Self::refusal(command, set, code, is_bitmap) {
                    Error::Kernel {
                        command, meaning, ..
                    } => Error::Kernel {
                        command,
                        set: format!("{set} (entry {entry})"),
                        code,
                        meaning,
                    },
                    other => other,
                }
            }
        }
    }

    /// Adds one entry. With `exist`, an entry already present is not an error (and its
    /// timeout and comment are updated).
    pub fn add(&mut self, set: &str, member: impl Into<Member>, exist: bool) -> Result<()> {
        let member = member.into();
        let outcome = self.batch(Command::Add, set, std::slice::from_ref(&member), exist)?;
        outcome
            .failures
            .into_iter()
            .next()
            .map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Deletes one entry. With `exist`, a missing entry is not an error.
    pub fn del(&mut self, set: &str, entry: &Entry, exist: bool) -> Result<()> {
        let member = Member::from(entry.clone());
        let outcome = self.batch(Command::Del, set, std::slice::from_ref(&member), exist)?;
        outcome
            .failures
            .into_iter()
            .next()
            .map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Whether `entry` is in `set`.
    pub fn test(&mut self, set: &str, entry: &Entry) -> Result<bool> {
        check_name(set)?;
        let message = self.entry_message(Command::Test, set, entry.to_attrs());
        match self.request(message, 0)? {
            Answer::Ok(_) => Ok(true),
            Answer::Refused(ERR_EXIST) => Ok(false),
            Answer::Refused(code) => Err(Self::entry_refusal(Command::Test, set, entry, code)),
        }
    }

    /// Adds many entries: one netlink message per entry, many per `sendmsg`, one
    /// acknowledgement per `sendmsg`; entries the kernel refuses are reported in the
    /// outcome, the rest apply.
    pub fn add_batch(
        &mut self,
        set: &str,
        members: &[Member],
        exist: bool,
    ) -> Result<BatchOutcome> {
        self.batch(Command::Add, set, members, exist)
    }

    /// Deletes many entries, like [`IpsetHandle::add_batch`].
    pub fn del_batch(&mut self, set: &str, entries: &[Entry], exist: bool) -> Result<BatchOutcome> {
        let members: Vec<Member> = entries.iter().cloned().map(Member::from).collect();
        self.batch(Command::Del, set, &members, exist)
    }

    fn batch(
        &mut self,
        command: Command,
        set: &str,
        members: &[Member],
        exist: bool,
    ) -> Result<BatchOutcome> {
        check_name(set)?;
        for member in members {
            check_member(member)?;
        }
        // Without exist the kernel must refuse duplicates (add) / missing entries (del):
        // that is what NLM_F_EXCL asks for; its absence means IPSET_FLAG_EXIST.
        let flags = if exist { 0 } else { NLM_F_EXCL };
        let mut outcome = BatchOutcome::default();
        for (chunk_number, chunk) in members.chunks(BATCH_CHUNK).enumerate() {
            let base = chunk_number * BATCH_CHUNK;
            let mut pending: HashMap<u32, usize> = HashMap::with_capacity(chunk.len());
            let mut bytes = Vec::new();
            let mut last_sequence = 0;
            // Only the chunk's last entry asks for an acknowledgement: the kernel answers
            // a refused entry whether or not it asked, and handles a chunk in order, so
            // the last acknowledgement proves every entry before it without an error
            // applied. One reply per chunk instead of one per entry.
            for (i, member) in chunk.iter().enumerate() {
                let message = self.entry_message(command, set, member.to_attrs());
                let ack = if i + 1 == chunk.len() { NLM_F_ACK } else { 0 };
                let (sequence, frame) = self.socket.frame(message, flags | ack);
                pending.insert(sequence, base + i);
                last_sequence = sequence;
                bytes.extend_from_slice(&frame);
            }
            let name = command_name(command);
            self.socket.send(&bytes).map_err(Error::netlink(name))?;
            let mut refused = 0;
            self.socket
                .acks(|sequence, code| {
                    let Some(index) = pending.remove(&sequence) else {
                        return false;
                    };
                    if let Some(code) = code {
                        refused += 1;
                        let entry = &members[index].entry;
                        let error = Self::entry_refusal(command, set, entry, code);
                        outcome.failures.push((index, error));
                    }
                    sequence == last_sequence
                })
                .map_err(Error::netlink(name))?;
            outcome.applied += chunk.len() - refused;
        }
        debug!(
            set,
            command = command_name(command),
            applied = outcome.applied,
            failed = outcome.failures.len(),
            "ipset batch"
        );
        Ok(outcome)
    }
}
