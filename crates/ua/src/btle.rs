//! The btleplug BLE central (feature `btleplug`): scan for the localcert service, connect with
//! bounded retries, and speak to the device through its three characteristics.

use std::pin::Pin;
use std::time::{Duration, Instant};

use btleplug::api::{
    Central, CharPropFlags, Characteristic, Manager as _, Peripheral as _, ScanFilter,
    ValueNotification, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral};
use futures::{Stream, StreamExt};
use localcert_proto::gatt::{CONTROL_POINT_UUID, INFO_UUID, SERVICE_UUID, STATUS_UUID};
use uuid::Uuid;

use crate::link::{BleLink, LinkError};
use crate::provision::Connector;

fn backend(e: impl std::fmt::Display) -> LinkError {
    LinkError::Backend(e.to_string())
}

/// A device seen in a scan.
#[derive(Clone, Debug)]
pub struct Found {
    /// The Bluetooth address.
    pub address: String,
    /// The advertised name, if any.
    pub name: Option<String>,
    /// Signal strength, if known.
    pub rssi: Option<i16>,
    peripheral: Peripheral,
}

impl Found {
    /// A connector for this device.
    pub fn connector(&self) -> BtleConnector {
        BtleConnector {
            peripheral: self.peripheral.clone(),
            attempts: 3,
        }
    }
}

/// Picks an adapter: by name (`hci1`, the first word of its info), or the first one.
pub async fn adapter(name: Option<&str>) -> Result<Adapter, LinkError> {
    let manager = Manager::new().await.map_err(backend)?;
    let adapters = manager.adapters().await.map_err(backend)?;
    for adapter in adapters {
        let info = adapter.adapter_info().await.map_err(backend)?;
        if name.is_none_or(|n| info.split_whitespace().next() == Some(n)) {
            return Ok(adapter);
        }
    }
    Err(LinkError::Backend(match name {
        Some(n) => format!("no Bluetooth adapter named {n}"),
        None => "no Bluetooth adapter".into(),
    }))
}

/// Scans for `duration` and lists the devices that advertise the localcert service.
pub async fn scan(adapter: &Adapter, duration: Duration) -> Result<Vec<Found>, LinkError> {
    let service = Uuid::from_u128(SERVICE_UUID);
    adapter
        .start_scan(ScanFilter {
            services: vec![service],
        })
        .await
        .map_err(backend)?;
    tokio::time::sleep(duration).await;
    // Stopping is best effort: the list is what matters.
    let _ = adapter.stop_scan().await;
    let mut found = vec![];
    for peripheral in adapter.peripherals().await.map_err(backend)? {
        let Some(props) = peripheral.properties().await.map_err(backend)? else {
            continue;
        };
        if !props.services.contains(&service) {
            continue;
        }
        found.push(Found {
            address: props.address.to_string(),
            name: props.local_name.or(props.advertisement_name),
            rssi: props.rssi,
            peripheral,
        });
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.rssi.unwrap_or(i16::MIN)));
    Ok(found)
}

/// Connects to one scanned device, again after a drop.
#[derive(Clone, Debug)]
pub struct BtleConnector {
    peripheral: Peripheral,
    attempts: u32,
}

impl Connector for BtleConnector {
    type Link = BtleLink;

    async fn connect(&mut self) -> Result<BtleLink, LinkError> {
        let mut last = LinkError::Disconnected;
        // Connecting right after a scan can lose a race with BlueZ; try a few times.
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match BtleLink::open(self.peripheral.clone()).await {
                Ok(link) => return Ok(link),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "connect failed");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// A connection to a device through btleplug.
pub struct BtleLink {
    peripheral: Peripheral,
    control: Characteristic,
    info: Characteristic,
    write_type: WriteType,
    notifications: Pin<Box<dyn Stream<Item = ValueNotification> + Send>>,
}

impl std::fmt::Debug for BtleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtleLink")
            .field("peripheral", &self.peripheral.address())
            .finish_non_exhaustive()
    }
}

impl BtleLink {
    async fn open(peripheral: Peripheral) -> Result<Self, LinkError> {
        if !peripheral.is_connected().await.map_err(backend)? {
            peripheral
                .connect_with_timeout(Duration::from_secs(10))
                .await
                .map_err(backend)?;
        }
        peripheral
            .discover_services_with_timeout(Duration::from_secs(10))
            .await
            .map_err(backend)?;
        let find = |uuid: u128| {
            peripheral
                .characteristics()
                .into_iter()
                .find(|c| {
                    c.uuid == Uuid::from_u128(uuid)
                        && c.service_uuid == Uuid::from_u128(SERVICE_UUID)
                })
                .ok_or_else(|| {
                    LinkError::Backend(format!(
                        "the device has no characteristic {}",
                        Uuid::from_u128(uuid)
                    ))
                })
        };
        let (control, status, info) = (
            find(CONTROL_POINT_UUID)?,
            find(STATUS_UUID)?,
            find(INFO_UUID)?,
        );
        // Without response is faster; with response is the fallback the spec requires too.
        let write_type = if control
            .properties
            .contains(CharPropFlags::WRITE_WITHOUT_RESPONSE)
        {
            WriteType::WithoutResponse
        } else {
            WriteType::WithResponse
        };
        let notifications = peripheral.notifications().await.map_err(backend)?;
        peripheral.subscribe(&status).await.map_err(backend)?;
        Ok(Self {
            peripheral,
            control,
            info,
            write_type,
            notifications,
        })
    }
}

impl BleLink for BtleLink {
    fn att_mtu(&self) -> u16 {
        self.peripheral.mtu()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    async fn read_info(&mut self) -> Result<Vec<u8>, LinkError> {
        self.peripheral.read(&self.info).await.map_err(backend)
    }

    async fn write(&mut self, fragment: &[u8]) -> Result<(), LinkError> {
        self.peripheral
            .write(&self.control, fragment, self.write_type)
            .await
            .map_err(backend)
    }

    async fn notification(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, LinkError> {
        let status = Uuid::from_u128(STATUS_UUID);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.notifications.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(LinkError::Disconnected),
                Ok(Some(n)) if n.uuid == status => return Ok(Some(n.value)),
                Ok(Some(_)) => {}
            }
        }
    }

    async fn disconnect(&mut self) {
        // Best effort: the device may be gone already.
        let _ = self.peripheral.disconnect().await;
    }
}
