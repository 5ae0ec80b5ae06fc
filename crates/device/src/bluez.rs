//! BLE backend with bluer (feature `bluez`, Linux): registers the localcert GATT service and an
//! advertisement on one adapter, feeds control-point writes to the engine and notifies what it
//! answers on the status characteristic.
//!
//! One central at a time: BlueZ sends a D-Bus characteristic's notifications to every
//! subscriber, so sessions of two centrals could not be kept apart. A write from another
//! central while one is active is refused with an ATT "in progress" error; a central that has
//! been idle for [`IDLE_TAKEOVER`] (no write, nothing waiting for the user) loses its session to
//! the next one, so an idle or hostile central cannot block provisioning. When the central
//! disconnects or unsubscribes, its session (and any half-sent message or request waiting for
//! the user) is dropped; pending keys stay until they expire, as the INSTALL may come later.
//! The ATT MTU BlueZ reports with each write sizes the fragments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicNotifier, CharacteristicNotify,
    CharacteristicNotifyMethod, CharacteristicRead, CharacteristicWrite, CharacteristicWriteMethod,
    ReqError, Service,
};
use bluer::{Address, DeviceEvent, DeviceProperty, Uuid};
use futures_util::{FutureExt, StreamExt};
use localcert_proto::gatt::{CONTROL_POINT_UUID, GattInfo, INFO_UUID, SERVICE_UUID, STATUS_UUID};
use tokio::sync::Mutex;

use crate::agent::Agent;
use crate::engine::SessionId;
use crate::error::Error;

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

/// How long a central may stay idle before another central can take over the session.
pub const IDLE_TAKEOVER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Link {
    session: Option<(Address, SessionId)>,
    last_write: Option<Instant>,
    notifier: Option<CharacteristicNotifier>,
}

fn ble_error(e: bluer::Error) -> Error {
    Error::Service(format!("BlueZ: {e}"))
}

async fn end_session(agent: &Agent, link: &Mutex<Link>, address: Option<Address>) {
    let mut l = link.lock().await;
    let Some((current, id)) = l.session else {
        l.notifier = None;
        return;
    };
    if address.is_some_and(|a| a != current) {
        return;
    }
    agent.with_device(|d| d.disconnect(id));
    l.session = None;
    l.notifier = None;
    tracing::info!(central = %current, "BLE session ended");
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
    let link = Arc::new(Mutex::new(Link::default()));

    let write_agent = agent.clone();
    let write_link = link.clone();
    let write_adapter = adapter.clone();
    let control_point = Characteristic {
        uuid: Uuid::from_u128(CONTROL_POINT_UUID),
        write: Some(CharacteristicWrite {
            write: true,
            write_without_response: true,
            method: CharacteristicWriteMethod::Fun(Box::new(move |value, request| {
                let agent = write_agent.clone();
                let link = write_link.clone();
                let adapter = write_adapter.clone();
                async move {
                    let address = request.device_address;
                    let now = Instant::now();
                    let id = {
                        let mut l = link.lock().await;
                        if let Some((current, old)) = l.session {
                            let idle = l
                                .last_write
                                .is_none_or(|t| now.duration_since(t) >= IDLE_TAKEOVER);
                            let busy = agent.with_device(|d| d.is_busy(old));
                            if current != address && idle && !busy {
                                tracing::info!(idle = %current, new = %address, "idle BLE session taken over");
                                agent.with_device(|d| d.disconnect(old));
                                l.session = None;
                                l.notifier = None;
                            }
                        }
                        l.last_write = Some(now);
                        match l.session {
                            Some((current, id)) if current == address => id,
                            Some(_) => return Err(ReqError::InProgress),
                            None => {
                                let id = agent.with_device(|d| d.connect(request.mtu));
                                l.session = Some((address, id));
                                tracing::info!(central = %address, mtu = request.mtu, "BLE session started");
                                watch_disconnect(agent.clone(), link.clone(), &adapter, address);
                                id
                            }
                        }
                    };
                    agent.with_device(|d| {
                        d.set_mtu(id, request.mtu);
                        d.handle_fragment(id, now, &value);
                    });
                    agent.kick();
                    Ok(())
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };

    let notify_link = link.clone();
    let notify_agent = agent.clone();
    let status = Characteristic {
        uuid: Uuid::from_u128(STATUS_UUID),
        notify: Some(CharacteristicNotify {
            notify: true,
            method: CharacteristicNotifyMethod::Fun(Box::new(move |notifier| {
                let link = notify_link.clone();
                let agent = notify_agent.clone();
                async move {
                    let stopped = notifier.stopped();
                    link.lock().await.notifier = Some(notifier);
                    agent.kick();
                    let link = link.clone();
                    tokio::spawn(async move {
                        stopped.await;
                        end_session(&agent, &link, None).await;
                    });
                }
                .boxed()
            })),
            ..Default::default()
        }),
        ..Default::default()
    };

    let info = Characteristic {
        uuid: Uuid::from_u128(INFO_UUID),
        read: Some(CharacteristicRead {
            read: true,
            fun: Box::new(|request| {
                async move {
                    let mut info = GattInfo::for_mtu(request.mtu);
                    info.max_fragment_len = info.max_fragment_len.min(BLUEZ_MAX_WRITE);
                    Ok(info.encode())
                }
                .boxed()
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
    let flusher = tokio::spawn(flush(agent, link));
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

/// Ends the session when the central disconnects.
fn watch_disconnect(
    agent: Arc<Agent>,
    link: Arc<Mutex<Link>>,
    adapter: &bluer::Adapter,
    address: Address,
) {
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
        end_session(&agent, &link, Some(address)).await;
    });
}

/// Sends the engine's fragments as notifications whenever the outbox may have changed.
async fn flush(agent: Arc<Agent>, link: Arc<Mutex<Link>>) {
    let mut changed = agent.outbox_changed();
    loop {
        {
            let mut guard = link.lock().await;
            let l = &mut *guard;
            // Without a subscriber the fragments stay queued in the engine.
            if let (Some((_, id)), Some(notifier)) = (l.session, l.notifier.as_mut()) {
                let fragments: Vec<Vec<u8>> =
                    agent.with_device(|d| std::iter::from_fn(|| d.poll_fragment(id)).collect());
                for fragment in fragments {
                    if let Err(e) = notifier.notify(fragment).await {
                        tracing::warn!(error = %e, "notification failed");
                        l.notifier = None;
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
