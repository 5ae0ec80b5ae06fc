//! The crate's error type, and [`Refusal`]: why a request was refused, mapped to an ACME error
//! type so that every refusal reaches the client as a precise RFC 7807 problem document.

use std::path::PathBuf;

/// Everything that can go wrong in the issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file that init would write already exists.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    /// The relying party is already registered.
    #[error("{0} is already registered")]
    AlreadyRegistered(String),
    /// A certificate or key could not be generated, loaded or encoded.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The store cannot be reached for now (database down or restarting): retry later.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A request was refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Self::Certificate(e.to_string())
    }
}

impl From<der::Error> for Error {
    fn from(e: der::Error) -> Self {
        Self::Certificate(e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.to_string())
    }
}

/// ACME error types (RFC 8555 §6.7, RFC 8739, draft-ietf-acme-device-attest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemType {
    /// `accountDoesNotExist`
    AccountDoesNotExist,
    /// `alreadyRevoked`
    AlreadyRevoked,
    /// `badAttestationStatement`
    BadAttestationStatement,
    /// `badCSR`
    BadCsr,
    /// `badNonce`
    BadNonce,
    /// `badPublicKey`
    BadPublicKey,
    /// `badRevocationReason`
    BadRevocationReason,
    /// `badSignatureAlgorithm`
    BadSignatureAlgorithm,
    /// `externalAccountRequired`
    ExternalAccountRequired,
    /// `incorrectResponse`
    IncorrectResponse,
    /// `malformed`
    Malformed,
    /// `orderNotReady`
    OrderNotReady,
    /// `rejectedIdentifier`
    RejectedIdentifier,
    /// `serverInternal`
    ServerInternal,
    /// `unauthorized`
    Unauthorized,
    /// `unsupportedIdentifier`
    UnsupportedIdentifier,
    /// `autoRenewalCanceled` (RFC 8739)
    AutoRenewalCanceled,
    /// `autoRenewalExpired` (RFC 8739)
    AutoRenewalExpired,
    /// `invalidProfile` (draft-aaron-acme-profiles)
    InvalidProfile,
}

impl ProblemType {
    /// The full type URN, e.g. `urn:ietf:params:acme:error:badNonce`.
    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    /// The short name, e.g. `badNonce`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::AlreadyRevoked => "alreadyRevoked",
            Self::BadAttestationStatement => "badAttestationStatement",
            Self::BadCsr => "badCSR",
            Self::BadNonce => "badNonce",
            Self::BadPublicKey => "badPublicKey",
            Self::BadRevocationReason => "badRevocationReason",
            Self::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::IncorrectResponse => "incorrectResponse",
            Self::Malformed => "malformed",
            Self::OrderNotReady => "orderNotReady",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::ServerInternal => "serverInternal",
            Self::Unauthorized => "unauthorized",
            Self::UnsupportedIdentifier => "unsupportedIdentifier",
            Self::AutoRenewalCanceled => "autoRenewalCanceled",
            Self::AutoRenewalExpired => "autoRenewalExpired",
            Self::InvalidProfile => "invalidProfile",
        }
    }

    /// The HTTP status the problem is sent with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized | Self::ExternalAccountRequired => 403,
            Self::AccountDoesNotExist | Self::AutoRenewalCanceled | Self::AutoRenewalExpired => 403,
            Self::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// Why a request was refused. Each variant names one specific check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The attestation object is not valid CBOR of our format.
    #[error("attestation object does not decode: {0}")]
    AttestationMalformed(String),
    /// A certificate in the attestation chain does not parse.
    #[error("attestation certificate does not parse")]
    AttestationCertificateMalformed,
    /// The attestation chain does not lead to a configured manufacturer root.
    #[error("attestation chain does not lead to a trusted manufacturer root")]
    AttestationUntrusted,
    /// A certificate in the attestation chain is expired or not yet valid.
    #[error("attestation certificate is not valid at this time")]
    AttestationExpired,
    /// The attestation chain is invalid for another reason.
    #[error("attestation chain does not verify: {0}")]
    AttestationChain(String),
    /// A certificate in the attestation chain is on the revocation list.
    #[error("attestation certificate {0} is revoked")]
    AttestationRevoked(String),
    /// The attestation signature is not over the expected transcript.
    #[error("invalid attestation signature")]
    AttestationSignature,
    /// The attested key is not the key in the order's CSR, or not P-256.
    #[error("attested key is not an acceptable P-256 key")]
    AttestedKey,
    /// The challenge was already answered.
    #[error("challenge was already used")]
    ChallengeUsed,
    /// The challenge expired.
    #[error("challenge expired")]
    ChallengeExpired,
    /// The CSR does not parse or its signature is invalid.
    #[error("CSR is invalid: {0}")]
    CsrInvalid(&'static str),
    /// The CSR's key is not the key the device attested.
    #[error("CSR key is not the attested key")]
    CsrKeyMismatch,
    /// The CSR's names are not the order's identifiers.
    #[error("CSR names do not match the order's identifiers")]
    CsrNamesMismatch,
    /// The CSR asks for an IP address, e-mail, URI or other non-DNS name.
    #[error("CSR requests a non-DNS name")]
    CsrNonDnsName,
    /// An identifier is an IP address.
    #[error("IP address identifiers are not issued: {0}")]
    IpIdentifier(String),
    /// An identifier is a wildcard.
    #[error("wildcard identifiers are not issued: {0}")]
    WildcardIdentifier(String),
    /// An identifier is not a single-label `.local` name.
    #[error("{0} is not a single-label .local name")]
    NotLocalName(String),
    /// An identifier is outside the account's origin namespace.
    #[error("{name} is outside the namespace of {origin}")]
    OutsideNamespace {
        /// The name.
        name: String,
        /// The account's origin.
        origin: String,
    },
    /// A name is not the attested device's name.
    #[error("{0} does not name the attested device")]
    WrongDevice(String),
    /// An identifier type other than `dns`.
    #[error("identifier type {0:?} is not supported")]
    UnsupportedIdentifier(String),
    /// The order has no identifiers, or too many, or duplicates.
    #[error("order identifiers are invalid: {0}")]
    Identifiers(&'static str),
    /// The request is not well-formed (JWS, JSON, base64url, content type, size).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request body is larger than the limit.
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    /// A POST whose Content-Type is not `application/jose+json` (RFC 8555 §6.2).
    #[error("Content-Type must be application/jose+json")]
    UnsupportedMediaType,
    /// The certificate to revoke belongs to another account.
    #[error("the certificate was issued to another account")]
    NotYourCertificate,
    /// The nonce is unknown, used or expired.
    #[error("unknown, used or expired nonce")]
    BadNonce,
    /// The JWS uses an algorithm other than ES256.
    #[error("unsupported JWS algorithm {0:?}; use ES256")]
    BadSignatureAlgorithm(String),
    /// The JWS signature does not verify.
    #[error("invalid JWS signature")]
    BadSignature,
    /// The JWS `url` is not the request's URL.
    #[error("JWS url does not match the request URL")]
    UrlMismatch,
    /// newAccount without an External Account Binding.
    #[error("an external account binding is required")]
    ExternalAccountRequired,
    /// The External Account Binding is invalid.
    #[error("external account binding is invalid: {0}")]
    ExternalAccountBinding(&'static str),
    /// newAccount with an EAB key id that already has an account (one account per key id;
    /// the account key is rotated with keyChange).
    #[error(
        "this external account key is already bound to an account; use keyChange to rotate its key"
    )]
    EabKeyBound,
    /// A keyChange whose inner object does not match the account and its current key.
    #[error("keyChange refused: {0}")]
    KeyChange(&'static str),
    /// A keyChange to a key that another account has (sent with 409 and its Location).
    #[error("the new key is already the key of another account")]
    KeyInUse,
    /// No account for this key or key id.
    #[error("no account for this key")]
    AccountDoesNotExist,
    /// The account is deactivated or revoked.
    #[error("account is not valid")]
    AccountNotValid,
    /// The resource does not exist (or belongs to another account).
    #[error("no such resource")]
    NotFound,
    /// The order is not in a state that allows this.
    #[error("order is not ready: it is {0}")]
    OrderNotReady(&'static str),
    /// The order expired before it was authorized.
    #[error("order expired")]
    OrderExpired,
    /// The STAR order was canceled.
    #[error("auto-renewal was canceled")]
    AutoRenewalCanceled,
    /// The STAR delegation reached its end-date and its last certificate expired.
    #[error("auto-renewal ended at its end-date")]
    AutoRenewalExpired,
    /// The certificate is already revoked.
    #[error("certificate is already revoked")]
    AlreadyRevoked,
    /// The revocation reason is not allowed.
    #[error("revocation reason {0} is not allowed")]
    BadRevocationReason(i64),
    /// The auto-renewal request is outside policy.
    #[error("auto-renewal request is invalid: {0}")]
    AutoRenewal(&'static str),
    /// The issuing intermediate cannot sign this leaf now: it is expired or not yet valid, or
    /// expires before the leaf would. The operator's to fix (the startup log warns).
    #[error(
        "the issuing CA cannot sign now: its intermediate is valid from {not_before} to \
         {not_after} and this certificate would end at {leaf_end}; the operator must renew the \
         intermediate"
    )]
    IssuerNotValid {
        /// The intermediate's notBefore (RFC 3339).
        not_before: String,
        /// Its notAfter.
        not_after: String,
        /// The end of the leaf that was to be signed.
        leaf_end: String,
    },
    /// The newOrder names a profile the server does not offer.
    #[error("unknown profile: this server offers \"default\" and \"star\"")]
    InvalidProfile,
}

impl Refusal {
    /// The ACME error type this refusal is reported as.
    pub fn problem_type(&self) -> ProblemType {
        match self {
            Self::AttestationMalformed(_)
            | Self::AttestationCertificateMalformed
            | Self::AttestationUntrusted
            | Self::AttestationExpired
            | Self::AttestationChain(_)
            | Self::AttestationRevoked(_)
            | Self::AttestationSignature
            | Self::AttestedKey => ProblemType::BadAttestationStatement,
            Self::ChallengeUsed | Self::ChallengeExpired => ProblemType::Unauthorized,
            Self::CsrInvalid(_)
            | Self::CsrKeyMismatch
            | Self::CsrNamesMismatch
            | Self::CsrNonDnsName => ProblemType::BadCsr,
            Self::IpIdentifier(_)
            | Self::WildcardIdentifier(_)
            | Self::NotLocalName(_)
            | Self::OutsideNamespace { .. }
            | Self::WrongDevice(_)
            | Self::Identifiers(_) => ProblemType::RejectedIdentifier,
            Self::UnsupportedIdentifier(_) => ProblemType::UnsupportedIdentifier,
            Self::Malformed(_)
            | Self::TooLarge(_)
            | Self::UnsupportedMediaType
            | Self::NotFound
            | Self::AutoRenewal(_)
            | Self::OrderExpired => ProblemType::Malformed,
            Self::BadNonce => ProblemType::BadNonce,
            Self::BadSignatureAlgorithm(_) => ProblemType::BadSignatureAlgorithm,
            Self::BadSignature
            | Self::UrlMismatch
            | Self::ExternalAccountBinding(_)
            | Self::NotYourCertificate
            | Self::EabKeyBound
            | Self::KeyChange(_)
            | Self::AccountNotValid => ProblemType::Unauthorized,
            Self::KeyInUse => ProblemType::Malformed,
            Self::ExternalAccountRequired => ProblemType::ExternalAccountRequired,
            Self::AccountDoesNotExist => ProblemType::AccountDoesNotExist,
            Self::OrderNotReady(_) => ProblemType::OrderNotReady,
            Self::AutoRenewalCanceled => ProblemType::AutoRenewalCanceled,
            Self::AutoRenewalExpired => ProblemType::AutoRenewalExpired,
            Self::AlreadyRevoked => ProblemType::AlreadyRevoked,
            Self::BadRevocationReason(_) => ProblemType::BadRevocationReason,
            Self::InvalidProfile => ProblemType::InvalidProfile,
            Self::IssuerNotValid { .. } => ProblemType::ServerInternal,
        }
    }

    /// The HTTP status the problem is sent with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::TooLarge(_) => 413,
            Self::UnsupportedMediaType => 415,
            // RFC 8555 §7.4: finalizing an order that is not ready is forbidden.
            Self::OrderNotReady(_) => 403,
            // RFC 8555 §7.3.5: Conflict, with the other account's URL in Location.
            Self::KeyInUse => 409,
            // The server cannot issue until its operator renews the intermediate.
            Self::IssuerNotValid { .. } => 503,
            _ => self.problem_type().http_status(),
        }
    }
}
