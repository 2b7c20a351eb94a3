//! OPEN (RFC 4271 §4.2) with optional parameters and capabilities (RFC 5492).

use super::notification::{ErrorCode, OpenError};
use super::{AS_TRANS, Family, Reader};
use crate::error::Error;
use bytes::{BufMut, BytesMut};
use std::net::Ipv4Addr;

/// The BGP version this codec speaks.
pub const BGP_VERSION: u8 = 4;

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The protocol version (4).
    pub version: u8,
    /// The 2-octet My AS field: the sender's AS, or [`AS_TRANS`] when it does not fit.
    pub my_as: u16,
    /// The proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// The sender's BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// The optional parameters in the order received.
    pub params: Vec<OptionalParameter>,
}

/// An optional parameter of OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionalParameter {
    /// Type 2: capabilities (RFC 5492). Speakers differ in whether they put all
    /// capabilities in one parameter or one per parameter; both are kept as sent.
    Capabilities(Vec<Capability>),
    /// Any other type (the obsolete authentication parameter, type 1, for one).
    Unknown {
        /// The parameter type.
        kind: u8,
        /// The parameter value.
        value: Vec<u8>,
    },
}

/// A capability advertised in OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Code 1: multiprotocol extensions for a family (RFC 4760).
    MultiProtocol(Family),
    /// Code 2: route refresh (RFC 2918).
    RouteRefresh,
    /// Code 64: graceful restart (RFC 4724).
    GracefulRestart(GracefulRestart),
    /// Code 65: 4-octet AS numbers, with the sender's AS (RFC 6793).
    FourOctetAs(u32),
    /// Any other capability, kept as received.
    Unknown {
        /// The capability code.
        code: u8,
        /// The capability value.
        value: Vec<u8>,
    },
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestart {
    /// The four restart flag bits, high bit first: [`GracefulRestart::RESTART_STATE`]
    /// (R) and [`GracefulRestart::NOTIFICATION`] (N, RFC 8538).
    pub flags: u8,
    /// Seconds the peer should keep our routes after the session drops (12 bits).
    pub restart_time: u16,
    /// The families whose forwarding state the sender can preserve.
    pub families: Vec<GracefulRestartFamily>,
}

/// A family in the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// The family.
    pub family: Family,
    /// The per-family flags: [`GracefulRestartFamily::FORWARDING`] (F).
    pub flags: u8,
}

impl GracefulRestartFamily {
    /// The F bit: forwarding state was preserved across the restart.
    pub const FORWARDING: u8 = 0x80;

    /// Whether the F bit is set.
    pub fn forwarding(&self) -> bool {
        self.flags & Self::FORWARDING != 0
    }
}

impl GracefulRestart {
    /// The R bit: the sender has restarted.
    pub const RESTART_STATE: u8 = 0x8;
    /// The N bit: the sender supports graceful restart for NOTIFICATIONs (RFC 8538).
    pub const NOTIFICATION: u8 = 0x4;

    /// Whether the R bit is set.
    pub fn restart_state(&self) -> bool {
        self.flags & Self::RESTART_STATE != 0
    }

    fn decode(value: &[u8]) -> Option<GracefulRestart> {
        if value.len() < 2 || (value.len() - 2) % 4 != 0 {
            return None;
        }
        let head = u16::from_be_bytes([value[0], value[1]]);
        let families = value[2..]
            .chunks_exact(4)
            .map(|c| GracefulRestartFamily {
                family: Family {
                    afi: u16::from_be_bytes([c[0], c[1]]),
                    safi: c[2],
                },
                flags: c[3],
            })
            .collect();
        Some(GracefulRestart {
            flags: (head >> 12) as u8,
            restart_time: head & 0x0fff,
            families,
        })
    }

    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16((u16::from(self.flags & 0xf) << 12) | (self.restart_time & 0x0fff));
        for f in &self.families {
            dst.put_u16(f.family.afi);
            dst.put_u8(f.family.safi);
            dst.put_u8(f.flags);
        }
    }
}

fn open_error(subcode: OpenError, reason: &str) -> Error {
    Error::reset(ErrorCode::Open(subcode), Vec::new(), reason)
}

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::MultiProtocol(_) => 1,
            Capability::RouteRefresh => 2,
            Capability::GracefulRestart(_) => 64,
            Capability::FourOctetAs(_) => 65,
            Capability::Unknown { code, .. } => *code,
        }
    }

    fn decode(code: u8, value: &[u8]) -> Result<Capability, Error> {
        let bad = || open_error(OpenError::Unspecific, "malformed capability");
        Ok(match code {
            1 => {
                let [a0, a1, _reserved, safi] = value.try_into().map_err(|_| bad())?;
                Capability::MultiProtocol(Family {
                    afi: u16::from_be_bytes([a0, a1]),
                    safi,
                })
            }
            2 if value.is_empty() => Capability::RouteRefresh,
            2 => return Err(bad()),
            64 => Capability::GracefulRestart(GracefulRestart::decode(value).ok_or_else(bad)?),
            65 => Capability::FourOctetAs(u32::from_be_bytes(value.try_into().map_err(|_| bad())?)),
            code => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        })
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u8(self.code());
        let len_at = dst.len();
        dst.put_u8(0);
        match self {
            Capability::MultiProtocol(f) => {
                dst.put_u16(f.afi);
                dst.put_u8(0);
                dst.put_u8(f.safi);
            }
            Capability::RouteRefresh => {}
            Capability::GracefulRestart(gr) => gr.encode(dst),
            Capability::FourOctetAs(asn) => dst.put_u32(*asn),
            Capability::Unknown { value, .. } => dst.put_slice(value),
        }
        dst[len_at] = u8::try_from(dst.len() - len_at - 1)
            .map_err(|_| Error::Unencodable("a capability longer than 255 octets"))?;
        Ok(())
    }
}

impl Open {
    /// An OPEN for `asn` (put as [`AS_TRANS`] in My AS when it needs 4 octets; the
    /// 4-octet AS capability is added if `capabilities` lacks it) with all
    /// `capabilities` in one optional parameter.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Open {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            params: vec![OptionalParameter::Capabilities(capabilities)],
        }
    }

    /// Every capability, over all optional parameters.
    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptionalParameter::Capabilities(caps) => caps.as_slice(),
            OptionalParameter::Unknown { .. } => &[],
        })
    }

    /// The sender's 4-octet ASN from its capability, if it sent one.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// The sender's AS: from the 4-octet AS capability, else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The families the sender announced with the multiprotocol capability.
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.capabilities().filter_map(|c| match c {
            Capability::MultiProtocol(f) => Some(*f),
            _ => None,
        })
    }

    /// The sender's graceful restart capability.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    /// Whether the sender can refresh routes (RFC 2918).
    pub fn route_refresh(&self) -> bool {
        self.capabilities()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Open, Error> {
        let mut r = Reader::new(body);
        let short = || open_error(OpenError::Unspecific, "truncated OPEN");
        let version = r.u8().ok_or_else(short)?;
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(short)?);
        let params_len = r.u8().ok_or_else(short)? as usize;
        if r.remaining() != params_len {
            return Err(open_error(
                OpenError::Unspecific,
                "optional parameters length disagrees with the message length",
            ));
        }
        let mut params = Vec::new();
        while r.remaining() > 0 {
            let bad = || open_error(OpenError::Unspecific, "malformed optional parameter");
            let kind = r.u8().ok_or_else(bad)?;
            let len = r.u8().ok_or_else(bad)? as usize;
            let value = r.take(len).ok_or_else(bad)?;
            params.push(if kind == 2 {
                let mut caps = Vec::new();
                let mut c = Reader::new(value);
                while c.remaining() > 0 {
                    let code = c.u8().ok_or_else(bad)?;
                    let len = c.u8().ok_or_else(bad)? as usize;
                    caps.push(Capability::decode(code, c.take(len).ok_or_else(bad)?)?);
                }
                OptionalParameter::Capabilities(caps)
            } else {
                OptionalParameter::Unknown {
                    kind,
                    value: value.to_vec(),
                }
            });
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            params,
        })
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u8(self.version);
        dst.put_u16(self.my_as);
        dst.put_u16(self.hold_time);
        dst.put_u32(self.bgp_id.into());
        let params_at = dst.len();
        dst.put_u8(0);
        for p in &self.params {
            let len_at = dst.len() + 1;
            match p {
                OptionalParameter::Capabilities(caps) => {
                    dst.put_u8(2);
                    dst.put_u8(0);
                    for c in caps {
                        c.encode(dst)?;
                    }
                }
                OptionalParameter::Unknown { kind, value } => {
                    dst.put_u8(*kind);
                    dst.put_u8(0);
                    dst.put_slice(value);
                }
            }
            dst[len_at] = u8::try_from(dst.len() - len_at - 1)
                .map_err(|_| Error::Unencodable("an optional parameter longer than 255 octets"))?;
        }
        dst[params_at] = u8::try_from(dst.len() - params_at - 1)
            .map_err(|_| Error::Unencodable("optional parameters longer than 255 octets"))?;
        Ok(())
    }
}
