//! Strict CBOR helpers shared by the message, info and attestation codecs.
//!
//! Decoding accepts only definite lengths, checks types before reading, bounds every length,
//! requires map keys in ascending order and, last, re-encodes the value and compares: any input
//! that is not exactly the deterministic encoding (RFC 8949 §4.2) is refused.

use core::convert::Infallible;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use crate::error::DecodeError;

pub(crate) type Enc = Encoder<Vec<u8>>;
pub(crate) type EncResult = Result<(), minicbor::encode::Error<Infallible>>;

/// Runs an encoder into a fresh buffer.
pub(crate) fn encode(f: impl FnOnce(&mut Enc) -> EncResult) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new());
    // Writing into a Vec cannot fail and our encoders raise no errors of their own.
    let _ = f(&mut e);
    e.into_writer()
}

/// Decodes exactly one value from `bytes`, then checks that it re-encodes to the same bytes.
pub(crate) fn decode_canonical<'b, T>(
    bytes: &'b [u8],
    ctx: &'static str,
    decode: impl FnOnce(&mut Decoder<'b>) -> Result<T, DecodeError>,
    reencode: impl FnOnce(&T) -> Vec<u8>,
) -> Result<T, DecodeError> {
    let mut d = Decoder::new(bytes);
    let value = decode(&mut d)?;
    if d.position() != bytes.len() {
        return Err(DecodeError::TrailingBytes(ctx));
    }
    if reencode(&value) != bytes {
        return Err(DecodeError::NonCanonical(ctx));
    }
    Ok(value)
}

fn malformed(ctx: &'static str) -> impl Fn(minicbor::decode::Error) -> DecodeError {
    move |_| DecodeError::Malformed(ctx)
}

fn expect_type(d: &Decoder<'_>, ctx: &'static str, ok: &[Type]) -> Result<(), DecodeError> {
    let ty = d.datatype().map_err(malformed(ctx))?;
    if ok.contains(&ty) {
        Ok(())
    } else {
        Err(DecodeError::WrongType(ctx))
    }
}

fn check_len(len: usize, min: usize, max: usize, ctx: &'static str) -> Result<(), DecodeError> {
    if (min..=max).contains(&len) {
        Ok(())
    } else {
        Err(DecodeError::BadLength(ctx))
    }
}

pub(crate) fn uint(d: &mut Decoder<'_>, ctx: &'static str) -> Result<u64, DecodeError> {
    expect_type(d, ctx, &[Type::U8, Type::U16, Type::U32, Type::U64])?;
    d.u64().map_err(malformed(ctx))
}

pub(crate) fn int(d: &mut Decoder<'_>, ctx: &'static str) -> Result<i64, DecodeError> {
    expect_type(
        d,
        ctx,
        &[
            Type::U8,
            Type::U16,
            Type::U32,
            Type::U64,
            Type::I8,
            Type::I16,
            Type::I32,
            Type::I64,
        ],
    )?;
    d.i64().map_err(|_| DecodeError::InvalidValue(ctx))
}

pub(crate) fn boolean(d: &mut Decoder<'_>, ctx: &'static str) -> Result<bool, DecodeError> {
    expect_type(d, ctx, &[Type::Bool])?;
    d.bool().map_err(malformed(ctx))
}

pub(crate) fn text<'b>(
    d: &mut Decoder<'b>,
    ctx: &'static str,
    min: usize,
    max: usize,
) -> Result<&'b str, DecodeError> {
    expect_type(d, ctx, &[Type::String])?;
    let s = d.str().map_err(malformed(ctx))?;
    check_len(s.len(), min, max, ctx)?;
    Ok(s)
}

pub(crate) fn bytes<'b>(
    d: &mut Decoder<'b>,
    ctx: &'static str,
    min: usize,
    max: usize,
) -> Result<&'b [u8], DecodeError> {
    expect_type(d, ctx, &[Type::Bytes])?;
    let b = d.bytes().map_err(malformed(ctx))?;
    check_len(b.len(), min, max, ctx)?;
    Ok(b)
}

/// A fixed-size byte string, such as a SHA-256 digest.
pub(crate) fn byte_array<const N: usize>(
    d: &mut Decoder<'_>,
    ctx: &'static str,
) -> Result<[u8; N], DecodeError> {
    bytes(d, ctx, N, N)?
        .try_into()
        .map_err(|_| DecodeError::BadLength(ctx))
}

pub(crate) fn array_len(
    d: &mut Decoder<'_>,
    ctx: &'static str,
    min: usize,
    max: usize,
) -> Result<usize, DecodeError> {
    expect_type(d, ctx, &[Type::Array])?;
    let n = d
        .array()
        .map_err(malformed(ctx))?
        .ok_or(DecodeError::WrongType(ctx))?;
    let n = usize::try_from(n).map_err(|_| DecodeError::BadLength(ctx))?;
    check_len(n, min, max, ctx)?;
    Ok(n)
}

/// An array of byte strings, such as a certificate chain.
pub(crate) fn bytes_array(
    d: &mut Decoder<'_>,
    ctx: &'static str,
    (min_items, max_items): (usize, usize),
    (min_len, max_len): (usize, usize),
) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = array_len(d, ctx, min_items, max_items)?;
    (0..n)
        .map(|_| bytes(d, ctx, min_len, max_len).map(<[u8]>::to_vec))
        .collect()
}

/// An array of text strings, each checked by `valid`.
pub(crate) fn text_array(
    d: &mut Decoder<'_>,
    ctx: &'static str,
    (min_items, max_items): (usize, usize),
    max_len: usize,
    valid: impl Fn(&str) -> bool,
) -> Result<Vec<String>, DecodeError> {
    let n = array_len(d, ctx, min_items, max_items)?;
    (0..n)
        .map(|_| {
            let s = text(d, ctx, 1, max_len)?;
            if valid(s) {
                Ok(s.to_owned())
            } else {
                Err(DecodeError::InvalidValue(ctx))
            }
        })
        .collect()
}

/// Walks a map with unsigned integer keys, which must be strictly ascending.
pub(crate) struct IntMap {
    ctx: &'static str,
    remaining: usize,
    last: Option<u64>,
}

impl IntMap {
    pub(crate) fn begin(d: &mut Decoder<'_>, ctx: &'static str) -> Result<Self, DecodeError> {
        expect_type(d, ctx, &[Type::Map])?;
        let n = d
            .map()
            .map_err(malformed(ctx))?
            .ok_or(DecodeError::WrongType(ctx))?;
        // No structure in the spec has more than 16 keys; anything larger is refused before
        // reading it.
        let remaining = usize::try_from(n)
            .ok()
            .filter(|&n| n <= 16)
            .ok_or(DecodeError::BadLength(ctx))?;
        Ok(Self {
            ctx,
            remaining,
            last: None,
        })
    }

    /// The next key, or `None` after the last entry.
    pub(crate) fn next_key(&mut self, d: &mut Decoder<'_>) -> Result<Option<u64>, DecodeError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let key = uint(d, self.ctx)?;
        if self.last.is_some_and(|last| key <= last) {
            return Err(DecodeError::KeyOrder(self.ctx));
        }
        self.last = Some(key);
        Ok(Some(key))
    }

    pub(crate) fn unknown<T>(&self, key: u64) -> Result<T, DecodeError> {
        Err(DecodeError::UnknownKey(self.ctx, key))
    }
}

/// Unwraps a required field after the map walk.
pub(crate) fn required<T>(value: Option<T>, ctx: &'static str, key: u64) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingKey(ctx, key))
}

/// Walks a map whose text keys are all required, in the canonical order of `keys` (shorter
/// keys first, then bytewise), as the attestation object has them.
pub(crate) struct TextMap {
    ctx: &'static str,
    keys: &'static [&'static str],
    next: usize,
}

impl TextMap {
    pub(crate) fn begin(
        d: &mut Decoder<'_>,
        ctx: &'static str,
        keys: &'static [&'static str],
    ) -> Result<Self, DecodeError> {
        expect_type(d, ctx, &[Type::Map])?;
        let n = d
            .map()
            .map_err(malformed(ctx))?
            .ok_or(DecodeError::WrongType(ctx))?;
        match usize::try_from(n).map(|n| n.cmp(&keys.len())) {
            Ok(core::cmp::Ordering::Equal) => Ok(Self { ctx, keys, next: 0 }),
            Ok(core::cmp::Ordering::Less) => Err(DecodeError::MissingTextKey(ctx)),
            _ => Err(DecodeError::UnknownTextKey(ctx)),
        }
    }

    /// Reads the next key, which must be the next of `keys`.
    pub(crate) fn key(&mut self, d: &mut Decoder<'_>) -> Result<&'static str, DecodeError> {
        let key = text(d, self.ctx, 0, 64)?;
        let expected = self
            .keys
            .get(self.next)
            .copied()
            .ok_or(DecodeError::UnknownTextKey(self.ctx))?;
        if key != expected {
            return Err(if self.keys.contains(&key) {
                DecodeError::KeyOrder(self.ctx)
            } else {
                DecodeError::UnknownTextKey(self.ctx)
            });
        }
        self.next += 1;
        Ok(expected)
    }
}
