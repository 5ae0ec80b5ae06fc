// localcert-web: the client side of the localcert protocol (SPEC.md revision 2) for web pages.
export * from './constants.js';
export * from './csr.js';
export * from './errors.js';
export { Command, KeepAlive, Reassembler, fragment, type Frame } from './frame.js';
export * from './messages.js';
export * from './names.js';
export * from './objects.js';
export { encodeCbor } from './cbor.js';
export { Session, systemClock, type Answer, type Clock, type KeepAliveStatus, type Link, type OpenOptions, type RequestOptions } from './session.js';
export { WebBluetoothLink, bluetooth, chooseDevice, connect, type BluetoothDeviceLike, type BluetoothLike, type ConnectOptions, type GattCharacteristic } from './webbluetooth.js';
export { base64url, fromBase64url, list, provision, remove, type DeviceAnswer, type ProvisionOptions, type ProvisionResult, type Step } from './provision.js';
