//! The GATT service: UUIDs, MTU bounds and the value of the info characteristic.
//!
//! UUIDs are random (version 4) 128-bit values, outside the Bluetooth base UUID range, so none
//! of them is on the Web Bluetooth GATT blocklist (checked in the tests below).

// UUIDs are written in their usual 8-4-4-4-12 grouping.
#![allow(clippy::unusual_byte_groupings)]

use minicbor::Decoder;

use crate::cbor::{self, IntMap};
use crate::error::DecodeError;
use crate::frame::MAX_MESSAGE_LEN;

/// The primary service.
pub const SERVICE_UUID: u128 = 0x52620000_f2e2_4679_934e_b35464ebab15;
/// Control point: the UA writes request fragments (write and write-without-response).
pub const CONTROL_POINT_UUID: u128 = 0x52620001_f2e2_4679_934e_b35464ebab15;
/// Status: the device notifies response, keep-alive and error fragments.
pub const STATUS_UUID: u128 = 0x52620002_f2e2_4679_934e_b35464ebab15;
/// Info: read-only, a CBOR [`GattInfo`].
pub const INFO_UUID: u128 = 0x52620003_f2e2_4679_934e_b35464ebab15;

/// The smallest ATT MTU (Bluetooth Core, Vol 3, Part F, §3.2.8).
pub const MIN_ATT_MTU: u16 = 23;
/// The largest ATT MTU.
pub const MAX_ATT_MTU: u16 = 517;
/// Bytes of the ATT MTU that a fragment leaves unused: 3 for the ATT header plus 2 of margin,
/// as BlueZ's acquired write and notify sockets may report the MTU before their own headers.
pub const ATT_MARGIN: u16 = 5;
/// The largest characteristic value (Bluetooth Core, Vol 3, Part F, §3.2.9).
pub const MAX_VALUE_LEN: usize = 512;
/// The protocol revision this crate implements.
pub const PROTOCOL_REVISION: u64 = 2;

/// The fragment size for an ATT MTU: `min(clamp(mtu, 23, 517) - 5, 512)`.
///
/// 18 bytes at MTU 23, 242 at 247, 512 at 517.
pub const fn fragment_len(att_mtu: u16) -> usize {
    let mtu = if att_mtu < MIN_ATT_MTU {
        MIN_ATT_MTU
    } else if att_mtu > MAX_ATT_MTU {
        MAX_ATT_MTU
    } else {
        att_mtu
    };
    let len = (mtu - ATT_MARGIN) as usize;
    if len > MAX_VALUE_LEN {
        MAX_VALUE_LEN
    } else {
        len
    }
}

/// The smallest fragment, at the smallest MTU.
pub const MIN_FRAGMENT_LEN: usize = fragment_len(MIN_ATT_MTU);

/// The value of the info characteristic: `{1: revision, 2: max fragment, 3: max message}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GattInfo {
    /// Protocol revision, [`PROTOCOL_REVISION`].
    pub revision: u64,
    /// The largest fragment the device sends and accepts on this connection.
    pub max_fragment_len: u64,
    /// The largest message the device accepts.
    pub max_message_len: u64,
}

impl GattInfo {
    /// The info for a connection with the given ATT MTU.
    pub fn for_mtu(att_mtu: u16) -> Self {
        Self {
            revision: PROTOCOL_REVISION,
            max_fragment_len: fragment_len(att_mtu) as u64,
            max_message_len: MAX_MESSAGE_LEN as u64,
        }
    }

    /// The deterministic CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(|e| {
            e.map(3)?.u8(1)?.u64(self.revision)?;
            e.u8(2)?.u64(self.max_fragment_len)?;
            e.u8(3)?.u64(self.max_message_len)?;
            Ok(())
        })
    }

    /// Strict decoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        const CTX: &str = "GattInfo";
        cbor::decode_canonical(bytes, CTX, decode_info, Self::encode).and_then(|info| {
            let fragment_ok =
                (MIN_FRAGMENT_LEN as u64..=MAX_VALUE_LEN as u64).contains(&info.max_fragment_len);
            if info.revision == 0 || !fragment_ok || info.max_message_len == 0 {
                return Err(DecodeError::InvalidValue(CTX));
            }
            Ok(info)
        })
    }
}

fn decode_info(d: &mut Decoder<'_>) -> Result<GattInfo, DecodeError> {
    const CTX: &str = "GattInfo";
    let (mut revision, mut fragment, mut message) = (None, None, None);
    let mut map = IntMap::begin(d, CTX)?;
    while let Some(key) = map.next_key(d)? {
        match key {
            1 => revision = Some(cbor::uint(d, CTX)?),
            2 => fragment = Some(cbor::uint(d, CTX)?),
            3 => message = Some(cbor::uint(d, CTX)?),
            _ => return map.unknown(key),
        }
    }
    Ok(GattInfo {
        revision: cbor::required(revision, CTX, 1)?,
        max_fragment_len: cbor::required(fragment, CTX, 2)?,
        max_message_len: cbor::required(message, CTX, 3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of the Web Bluetooth GATT blocklist (WebBluetoothCG/registries,
    /// `gatt_blocklist.txt`): services, characteristics and descriptors.
    const BLOCKLIST: [u128; 12] = [
        0x00001812_0000_1000_8000_00805f9b34fb,
        0x00001530_1212_efde_1523_785feabcd123,
        0xf000ffc0_0451_4000_b000_000000000000,
        0x00060000_0000_1000_8000_00805f9b34fb,
        0x0000fffd_0000_1000_8000_00805f9b34fb,
        0x0000fff9_0000_1000_8000_00805f9b34fb,
        0x0000fde2_0000_1000_8000_00805f9b34fb,
        0x00002a02_0000_1000_8000_00805f9b34fb,
        0x00002a03_0000_1000_8000_00805f9b34fb,
        0x00002a25_0000_1000_8000_00805f9b34fb,
        0x00002902_0000_1000_8000_00805f9b34fb,
        0x00002903_0000_1000_8000_00805f9b34fb,
    ];
    const BASE_UUID_LOW: u128 = 0x0000_1000_8000_00805f9b34fb;

    #[test]
    fn uuids_are_off_the_blocklist_and_outside_the_base_range() {
        for uuid in [SERVICE_UUID, CONTROL_POINT_UUID, STATUS_UUID, INFO_UUID] {
            assert!(!BLOCKLIST.contains(&uuid));
            assert_ne!(
                uuid & ((1 << 96) - 1),
                BASE_UUID_LOW,
                "{uuid:x} is in the base range"
            );
            assert_eq!((uuid >> 76) & 0xf, 4, "version 4");
        }
    }

    #[test]
    fn fragment_sizes() {
        assert_eq!(fragment_len(0), 18);
        assert_eq!(fragment_len(23), 18);
        assert_eq!(fragment_len(185), 180);
        assert_eq!(fragment_len(247), 242);
        assert_eq!(fragment_len(517), 512);
        assert_eq!(fragment_len(u16::MAX), 512);
    }

    #[test]
    fn info_round_trip_and_limits() {
        let info = GattInfo::for_mtu(247);
        assert_eq!(GattInfo::decode(&info.encode()), Ok(info));
        let bad = GattInfo {
            max_fragment_len: 4,
            ..GattInfo::for_mtu(23)
        };
        assert_eq!(
            GattInfo::decode(&bad.encode()),
            Err(DecodeError::InvalidValue("GattInfo"))
        );
    }
}
