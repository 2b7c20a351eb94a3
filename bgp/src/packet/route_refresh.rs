//! ROUTE-REFRESH (RFC 2918, with RFC 7313's subtype octet).

use super::Family;
use bytes::{BufMut, BytesMut};

/// A ROUTE-REFRESH message: asks the peer to send its routes of a family again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// The family to refresh.
    pub family: Family,
    /// The octet between AFI and SAFI: reserved (0) in RFC 2918, the message subtype
    /// (1 = BoRR, 2 = EoRR) in RFC 7313.
    pub subtype: u8,
}

impl RouteRefresh {
    /// A plain refresh request for `family`.
    pub fn new(family: Family) -> RouteRefresh {
        RouteRefresh { family, subtype: 0 }
    }

    pub(crate) fn decode(body: &[u8]) -> RouteRefresh {
        // The header check made the body exactly four octets.
        RouteRefresh {
            family: Family {
                afi: u16::from_be_bytes([body[0], body[1]]),
                safi: body[3],
            },
            subtype: body[2],
        }
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        dst.put_u16(self.family.afi);
        dst.put_u8(self.subtype);
        dst.put_u8(self.family.safi);
    }
}
