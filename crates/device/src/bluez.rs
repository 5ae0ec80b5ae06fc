//! BLE backend with bluer (feature `bluez`, Linux): registers the localcert GATT service and an
//! advertisement on one adapter, and adapts BlueZ's callbacks to the session driver
//! ([`crate::gatt::GattServer`]: one central at a time, idle takeover, the ATT MTU BlueZ
//! reports with each write): control-point writes go in, a refused write is an ATT "in
//! progress" error, and what the engine answers is notified on the status characteristic.
//!
//! BlueZ sends a D-Bus characteristic's notifications to every subscriber and starts and stops
//! notifying once for all of them, so the subscription belongs to the service, not to a
//! central: when the last central unsubscribes, the session ends; when a central disconnects,
//! its session ends.

use std::sync::Arc;
use std::time::Instant;

use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicNotifier, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicRead, CharacteristicWrite, CharacteristicWriteMethod,
    ReqError, Service,
};
use bluer::{Address, DeviceEvent, DeviceProperty, Uuid};
use futures_util::{FutureExt, StreamExt};
use localcert_proto::gatt::{CONTROL_POINT_UUID, INFO_UUID, SERVICE_UUID, STATUS_UUID};
use localcert_proto::peripheral::WriteRefused;
use tokio::sync::Mutex;

use crate::agent::Agent;
use crate::error::Error;
use crate::gatt::{GattServer, Written};

/// The longest control-point write bluetoothd 5.66 accepts: it refuses 512-byte values
/// (ATT error 0x0D with response; silently dropped without), found in the BlueZ VM suite. The
/// info characteristic caps the fragment size there, and UAs honour it (SPEC §2.1).
const BLUEZ_MAX_WRITE: u64 = 510;

/// Where and how to advertise.
#[derive(Clone, Debug)]
pub struct BleOptions {
    /// The adapter, e.g. `hci0`; the default adapter when `None`.
    pub adapter: Option<String>,
    /// The advertised local name (keep it short: it shares 31 bytes with the service UUID).
    pub local_name: String,
}

/// The registered service and advertisement; dropping it unregisters both.
pub struct BleHandle {
    _app: ApplicationHandle,
    _adv: AdvertisementHandle,
    flusher: tokio::task::JoinHandle<()>,
    adapter: String,
}

impl core::fmt::Debug for BleHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BleHandle")
            .field("adapter", &self.adapter)
            .finish_non_exhaustive()
    }
}

impl BleHandle {
    /// The adapter in use.
    pub fn adapter(&self) -> &str {
        &self.adapter
    }
}

impl Drop for BleHandle {
    fn drop(&mut self) {
        self.flusher.abort();
    }
}

/// The BlueZ central's session driver: centrals are Bluetooth addresses.
type Server = GattServer<Address>;

/// The status characteristic's notifier, while any central is subscribed.
type Notifier = Mutex<Option<CharacteristicNotifier>>;

fn ble_error(e: bluer::Error) -> Error {
    Error::Service(format!("BlueZ: {e}"))
}

/// Registers the GATT application and advertisement, and starts sending notifications.
pub async fn start(agent: Arc<Agent>, options: &BleOptions) -> Result<BleHandle, Error> {
    let session = bluer::Session::new().await.map_err(ble_error)?;
    let adapter = match &options.adapter {
        Some(name) => session.adapter(name),
        None => session.default_adapter().await,
    }
    .map_err(ble_error)?;
    adapter.set_powered(true).await.map_err(ble_error)?;
    let server = Arc::new(Server::new(agent.clone()).with_max_fragment_len(BLUEZ_MAX_WRITE));
    let notifier: Arc<Notifier> = Arc::new(Mutex::new(None));

    let write_server = server.clone();
    let write_adapter = adapter.clone();
    let control_point = Characteristic {
        uuid: Uuid::from_u128(CONTROL_POINT_UUID),
        write: Some(CharacteristicWrite {
            write: true,
            write_without_response: true,
            method: CharacteristicWriteMethod::Fun(Box::new(move |value, request| {
                let server = write_server.clone();
                let adapter = write_adapter.clone();
                async move {
                    let address = request.device_address;
                    match server.write(address, Instant::now(), request.mtu, &value) {
                        Ok(Written::Continued) => {}
                        Ok(Written::Started | Written::TookOver(_)) => {
                            watch_disconnect(server, &adapter, address);
                        }
                        Err(WriteRefused::Busy) => return Err(ReqError::InProgress),
                        Err(_) => return Err(ReqError::Failed),
                    }
                    Ok(())
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };

    let notify_server = server.clone();
    let notify_slot = notifier.clone();
    let status = Characteristic {
        uuid: Uuid::from_u128(STATUS_UUID),
        notify: Some(CharacteristicNotify {
            notify: true,
            method: CharacteristicNotifyMethod::Fun(Box::new(move |new| {
                let server = notify_server.clone();
                let slot = notify_slot.clone();
                async move {
                    let stopped = new.stopped();
                    *slot.lock().await = Some(new);
                    server.set_notifying(true);
                    server.agent().kick();
                    tokio::spawn(async move {
                        stopped.await;
                        let mut slot = slot.lock().await;
                        // BlueZ may have started notifying again meanwhile (a central
                        // subscribed anew): the new notifier is in the slot, and its session
                        // stays.
                        if slot.as_ref().is_none_or(CharacteristicNotifier::is_stopped) {
                            *slot = None;
                            server.set_notifying(false);
                            server.end_session();
                        }
                    });
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };

    let info_server = server.clone();
    let info = Characteristic {
        uuid: Uuid::from_u128(INFO_UUID),
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(move |request| {
                let value = info_server.info(request.mtu);
                async move { Ok(value) }.boxed()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let app = Application {
        services: vec![Service {
            uuid: Uuid::from_u128(SERVICE_UUID),
            primary: true,
            characteristics: vec![control_point, status, info],
            ..Default::default()
        }],
        ..Default::default()
    };
    let app_handle = adapter
        .serve_gatt_application(app)
        .await
        .map_err(ble_error)?;
    let advertisement = Advertisement {
        service_uuids: [Uuid::from_u128(SERVICE_UUID)].into_iter().collect(),
        discoverable: Some(true),
        local_name: Some(options.local_name.clone()),
        ..Default::default()
    };
    let adv_handle = adapter.advertise(advertisement).await.map_err(ble_error)?;
    let flusher = tokio::spawn(flush(server, notifier));
    tracing::info!(
        adapter = adapter.name(),
        "GATT service registered and advertising"
    );
    Ok(BleHandle {
        _app: app_handle,
        _adv: adv_handle,
        flusher,
        adapter: adapter.name().to_owned(),
    })
}

/// Ends the session of `address` when it disconnects.
fn watch_disconnect(server: Arc<Server>, adapter: &bluer::Adapter, address: Address) {
    let device = adapter.device(address);
    tokio::spawn(async move {
        let Ok(device) = device else {
            return;
        };
        let Ok(mut events) = device.events().await else {
            return;
        };
        while let Some(event) = events.next().await {
            if matches!(
                event,
                DeviceEvent::PropertyChanged(DeviceProperty::Connected(false))
            ) {
                break;
            }
        }
        server.disconnect(address);
    });
}

/// Notifies the session's fragments whenever the outbox may have changed.
async fn flush(server: Arc<Server>, notifier: Arc<Notifier>) {
    let mut changed = server.agent().outbox_changed();
    loop {
        {
            let mut slot = notifier.lock().await;
            // Without a subscriber the fragments stay queued in the engine.
            if let Some(n) = slot.as_mut() {
                let fragments = server.take_notifications().map(|(_, f)| f);
                for fragment in fragments.into_iter().flatten() {
                    if let Err(e) = n.notify(fragment).await {
                        tracing::warn!(error = %e, "notification failed");
                        *slot = None;
                        break;
                    }
                }
            }
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}
