//! Authenticated denial by compact denial of existence (RFC 9824, NSEC "black lies"): one NSEC
//! per negative answer, made for the name asked, whose next name is the name's immediate
//! successor (`\000.name`). It covers no other name, so nothing can be walked and no chain is
//! precomputed. A name that does not exist is answered as if it existed with no data at all:
//! the NSEC lists only RRSIG, NSEC and NXNAME. A name that exists lists the types it has, minus
//! the one asked for.

use crate::zone::key::push_name_wire;
use crate::zone::{Name, RecordType, Zone};

pub const DS: u16 = 43;
pub const RRSIG: u16 = 46;
pub const NSEC: u16 = 47;
pub const DNSKEY: u16 = 48;
pub const CDS: u16 = 59;
pub const CDNSKEY: u16 = 60;
/// The NXNAME meta type (RFC 9824 section 3.1): "this name does not exist".
pub const NXNAME: u16 = 128;

/// The NSEC RDATA for `owner` with `types` in its bitmap (sorted and deduplicated here).
pub fn nsec_rdata(owner: &Name, types: &mut Vec<u16>) -> Vec<u8> {
    let mut out = Vec::with_capacity(owner.as_str().len() + 16);
    // The immediate successor: `\000.owner` (RFC 4471 section 3.1.2, RFC 9824 section 3). A
    // name too long to take one more label gets itself: the NSEC then covers nothing at all,
    // which still proves what the bitmap says of the owner.
    let mut successor = vec![1, 0];
    push_name_wire(&mut successor, owner.as_str());
    if successor.len() > 255 {
        successor.drain(..2);
    }
    out.extend_from_slice(&successor);
    out.extend_from_slice(&type_bitmap(types));
    out
}

/// The type bit maps field (RFC 4034 section 4.1.2): per window of 256 types, the window
/// number, the bitmap's length and the bitmap, trailing zero octets left off.
pub fn type_bitmap(types: &mut Vec<u16>) -> Vec<u8> {
    types.sort_unstable();
    types.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < types.len() {
        let window = (types[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < types.len() && (types[i] >> 8) as u8 == window {
            let low = (types[i] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
    out
}

/// The types that exist at `name` in a signed zone (RRSIG and NSEC always: the NSEC made for
/// the name and its signature).
pub fn types_at(zone: &Zone, name: &Name) -> Vec<u16> {
    let mut types = vec![RRSIG, NSEC];
    // A name a wildcard synthesizes has the wildcard's types: signed answers treat it as a
    // name of its own (see `Signer::secure`).
    if let Some((node, _)) = zone.lookup(name) {
        types.extend(node.rrsets.iter().map(|s| s.rtype.code()));
        if let Some(service) = &node.service {
            let (v4, v6) = service
                .dcs
                .iter()
                .flat_map(|d| &d.endpoints)
                .fold((false, false), |(v4, v6), ip| {
                    (v4 || ip.is_ipv4(), v6 || ip.is_ipv6())
                });
            if v4 {
                types.push(RecordType::A.code());
            }
            if v6 {
                types.push(RecordType::Aaaa.code());
            }
        }
    }
    if *name == zone.apex {
        types.extend([
            RecordType::Soa.code(),
            RecordType::Ns.code(),
            DNSKEY,
            CDS,
            CDNSKEY,
        ]);
    }
    types
}

/// The types a denial's NSEC lists: for a name that does not exist RRSIG, NSEC and NXNAME;
/// else what the name has, without the type asked for (which is what the NSEC denies).
pub fn denial_types(zone: &Zone, name: &Name, qtype: u16, exists: bool) -> Vec<u16> {
    if !exists {
        return vec![RRSIG, NSEC, NXNAME];
    }
    let mut types = types_at(zone, name);
    types.retain(|&t| t != qtype);
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_follow_rfc_4034_windows() {
        // RFC 4034 section 4.3's example: A MX RRSIG NSEC TYPE1234.
        let mut types = vec![1, 15, 46, 47, 1234];
        let mut want = vec![0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1b];
        want.extend_from_slice(&[0; 26]);
        want.push(0x20);
        assert_eq!(type_bitmap(&mut types), want);
    }

    #[test]
    fn the_next_name_is_the_immediate_successor() {
        let owner = Name::parse("nx.api.example.com").unwrap();
        let rdata = nsec_rdata(&owner, &mut vec![NXNAME, RRSIG, NSEC]);
        assert_eq!(&rdata[..5], b"\x01\x00\x02nx");
        // Window 0: RRSIG (46) and NSEC (47) in octet 5; NXNAME (128) in octet 16.
        let bitmap = &rdata[rdata.len() - 19..];
        assert_eq!(bitmap[..2], [0, 17]);
        assert_eq!(bitmap[2 + 5], 0x03);
        assert_eq!(bitmap[2 + 16], 0x80);
    }
}
