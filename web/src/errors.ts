// Typed errors of the package. Every refusal is a class (so a page can `instanceof` it) with a
// stable `code`: the SPEC §6 name for device errors, the vector kind for codec errors, the
// backend's `error` code for RP backend refusals.

/** The base class of every error this package throws. */
export class LocalcertError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

// ---- codec errors (SPEC §3.2, §4, §8) ----

/** Kinds of SPEC §4 (as named in vectors/malformed.json) and §5. */
export type DecodeKind =
  | 'malformed' | 'wrong_type' | 'missing_key' | 'unknown_key' | 'key_order' | 'bad_length'
  | 'invalid_value' | 'invalid_origin' | 'invalid_label' | 'trailing_bytes' | 'non_canonical' | 'empty' | 'unknown_operation'
  | 'unknown_status';

/** A message, info value, attestation object or extension does not decode strictly. */
export class DecodeError extends LocalcertError {
  readonly kind: DecodeKind;
  readonly context: string;
  constructor(kind: DecodeKind, context: string) {
    super(kind, `${context}: ${kind.replace(/_/g, ' ')}`);
    this.kind = kind;
    this.context = context;
  }
}

/** Receiver rules of SPEC §3.2. */
export type FrameKind =
  | 'empty_fragment' | 'fragment_too_long' | 'unknown_command' | 'truncated_header'
  | 'message_too_long' | 'overrun' | 'unexpected_continuation' | 'sequence_gap'
  | 'duplicate_continuation' | 'interrupted' | 'timeout';

/** A notification from the device breaks the framing rules (the frame in progress is dropped). */
export class FrameError extends LocalcertError {
  readonly kind: FrameKind;
  constructor(kind: FrameKind, detail?: string) {
    super(kind, `device framing: ${kind.replace(/_/g, ' ')}${detail ? ` (${detail})` : ''}`);
    this.kind = kind;
  }
}

/** Rules of SPEC §8.1, snake case as in vectors/malformed.json. */
export type OriginRule =
  | 'too_long' | 'not_https' | 'not_an_origin' | 'not_serialized' | 'invalid_host' | 'ip_address'
  | 'invalid_port';

/** A string is not the ASCII serialization of a secure origin (SPEC §8.1). */
export class OriginError extends LocalcertError {
  readonly rule: OriginRule;
  constructor(rule: OriginRule, value: string) {
    super(rule, `not a valid origin (${rule.replace(/_/g, ' ')}): ${JSON.stringify(value.slice(0, 300))}`);
    this.rule = rule;
  }
}

/** Rules of SPEC §8.2 and §8.3. */
export type NameRule =
  | 'length' | 'character' | 'hyphen' | 'not_single_label_local' | 'outside_origin_namespace'
  | 'wrong_device';

/** A device label or `.local` name breaks the naming rules (SPEC §8.2, §8.3). */
export class NameError extends LocalcertError {
  readonly rule: NameRule;
  constructor(rule: NameRule, value: string) {
    super(rule, `not a valid label or name (${rule.replace(/_/g, ' ')}): ${JSON.stringify(value.slice(0, 300))}`);
    this.rule = rule;
  }
}

// ---- device errors: SPEC §6 ----

/** The SPEC §6 table: byte -> name. */
export const ERROR_CODES: Readonly<Record<number, string>> = Object.freeze({
  0x01: 'INVALID_COMMAND', 0x02: 'INVALID_PARAMETER', 0x03: 'INVALID_LENGTH',
  0x04: 'INVALID_SEQUENCE', 0x05: 'TIMEOUT', 0x06: 'BUSY', 0x10: 'INVALID_ORIGIN',
  0x11: 'INVALID_LABEL', 0x12: 'USER_DENIED', 0x13: 'PIN_REQUIRED', 0x14: 'PIN_INVALID',
  0x15: 'USER_TIMEOUT', 0x16: 'NO_PENDING', 0x17: 'CHAIN_MISMATCH', 0x18: 'UNTRUSTED_ISSUER',
  0x19: 'CERTIFICATE_INVALID', 0x1a: 'NOT_FOUND', 0x1b: 'STORAGE_FULL', 0x1c: 'CANCELLED',
  0x7f: 'OTHER',
});

/**
 * The device refused: an error status in a response, or an ERROR frame. `message` of a status
 * response is for people; this package never acts on it (SPEC §5).
 */
export class DeviceError extends LocalcertError {
  readonly byte: number;
  readonly source: 'response' | 'frame';
  readonly deviceMessage: string | undefined;
  constructor(byte: number, source: 'response' | 'frame' = 'response', deviceMessage?: string) {
    const name = ERROR_CODES[byte] ?? 'UNKNOWN';
    super(name, `device refused: ${name} (0x${byte.toString(16).padStart(2, '0')})${deviceMessage ? `: ${deviceMessage}` : ''}`);
    this.byte = byte;
    this.source = source;
    this.deviceMessage = deviceMessage;
  }
}
export class InvalidCommandError extends DeviceError {}
export class InvalidParameterError extends DeviceError {}
export class InvalidLengthError extends DeviceError {}
export class InvalidSequenceError extends DeviceError {}
/** The device's TIMEOUT (0x05): a frame we sent was not completed in time. */
export class DeviceTimeoutError extends DeviceError {}
export class BusyError extends DeviceError {}
export class InvalidOriginError extends DeviceError {}
export class InvalidLabelError extends DeviceError {}
export class UserDeniedError extends DeviceError {}
export class PinRequiredError extends DeviceError {}
export class PinInvalidError extends DeviceError {}
export class UserTimeoutError extends DeviceError {}
export class NoPendingError extends DeviceError {}
export class ChainMismatchError extends DeviceError {}
export class UntrustedIssuerError extends DeviceError {}
export class CertificateInvalidError extends DeviceError {}
export class NotFoundError extends DeviceError {}
export class StorageFullError extends DeviceError {}
export class CancelledError extends DeviceError {}
/** OTHER (0x7f): the device failed internally. */
export class DeviceInternalError extends DeviceError {}

const DEVICE_ERROR_CLASSES: Record<number, typeof DeviceError> = {
  0x01: InvalidCommandError, 0x02: InvalidParameterError, 0x03: InvalidLengthError,
  0x04: InvalidSequenceError, 0x05: DeviceTimeoutError, 0x06: BusyError,
  0x10: InvalidOriginError, 0x11: InvalidLabelError, 0x12: UserDeniedError,
  0x13: PinRequiredError, 0x14: PinInvalidError, 0x15: UserTimeoutError, 0x16: NoPendingError,
  0x17: ChainMismatchError, 0x18: UntrustedIssuerError, 0x19: CertificateInvalidError,
  0x1a: NotFoundError, 0x1b: StorageFullError, 0x1c: CancelledError, 0x7f: DeviceInternalError,
};

/** The typed error for a SPEC §6 code byte, or undefined for 0x00 and unassigned bytes. */
export function deviceError(byte: number, source: 'response' | 'frame', message?: string): DeviceError | undefined {
  const Class = DEVICE_ERROR_CLASSES[byte];
  return Class ? new Class(byte, source, message) : undefined;
}

// ---- session errors ----

/** The info characteristic is out of range (SPEC §2) or speaks another revision. */
export class DeviceInfoError extends LocalcertError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('device_info', message, options);
  }
}

/** A MSG frame arrived while no request was outstanding (or a second answer to one request). */
export class UnsolicitedResponseError extends LocalcertError {
  constructor() {
    super('unsolicited_response', 'the device sent a response to a request this page never sent');
  }
}

/** A frame a device must not send to a UA (CANCEL, an unrequested PING, an ERROR with an unassigned code). */
export class UnexpectedFrameError extends LocalcertError {
  constructor(what: string) {
    super('unexpected_frame', `the device sent an unexpected frame: ${what}`);
  }
}

/** Neither the response nor a KEEPALIVE arrived for 5 s (SPEC §3.3); CANCEL was sent. */
export class ResponseTimeoutError extends LocalcertError {
  constructor(ms: number) {
    super('response_timeout', `the device did not answer within ${ms} ms; the request was cancelled`);
  }
}

/** The caller's AbortSignal fired; CANCEL was sent to the device. */
export class AbortedError extends LocalcertError {
  constructor(reason?: unknown) {
    super('aborted', 'the request was aborted; the device was sent CANCEL', { cause: reason });
  }
}

/** The GATT link dropped, or could not be brought up within the allowed attempts. */
export class DisconnectedError extends LocalcertError {
  constructor(message = 'the device disconnected', options?: { cause?: unknown }) {
    super('disconnected', message, options);
  }
}

/** Web Bluetooth is missing or the user dismissed the device chooser. */
export class BluetoothUnavailableError extends LocalcertError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('bluetooth_unavailable', message, options);
  }
}
export class ChooserCancelledError extends LocalcertError {
  constructor(options?: { cause?: unknown }) {
    super('chooser_cancelled', 'no device was chosen', options);
  }
}

/** What the device says disagrees with what the backend or the spec expects (name, fingerprint). */
export class VerificationError extends LocalcertError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

// ---- RP backend errors (contracts: {"error": code, "detail": str}) ----

/** The RP backend refused; `code` is its `error` field, `status` the HTTP status. */
export class BackendError extends LocalcertError {
  readonly status: number;
  readonly detail: string;
  constructor(status: number, code: string, detail: string) {
    super(code, `backend refused (${status} ${code}): ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}
export class ForbiddenOriginError extends BackendError {}
export class UnauthenticatedError extends BackendError {}
export class RateLimitedError extends BackendError {}
export class BodyTooLargeError extends BackendError {}
export class BadRequestError extends BackendError {}
export class UnknownFlowError extends BackendError {}
export class FlowStateError extends BackendError {}
export class DeviceInvalidError extends BackendError {}
export class IssuerError extends BackendError {}

const BACKEND_ERROR_CLASSES: Record<string, typeof BackendError> = {
  forbidden_origin: ForbiddenOriginError, unauthenticated: UnauthenticatedError,
  rate_limited: RateLimitedError, body_too_large: BodyTooLargeError, bad_request: BadRequestError,
  unknown_flow: UnknownFlowError, flow_state: FlowStateError, device_invalid: DeviceInvalidError,
  issuer: IssuerError,
};

/** The typed error for a backend answer; unknown codes give a plain BackendError. */
export function backendError(status: number, code: string, detail: string): BackendError {
  const Class = Object.hasOwn(BACKEND_ERROR_CLASSES, code) ? BACKEND_ERROR_CLASSES[code]! : BackendError;
  return new Class(status, code, detail);
}

/** The backend answered something that is not its documented API. */
export class BackendProtocolError extends LocalcertError {
  constructor(message: string) {
    super('backend_protocol', message);
  }
}
