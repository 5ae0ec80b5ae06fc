//! Web origins as the spec accepts them: the ASCII serialization of an `https` origin with a
//! DNS host (RFC 6454 §6.2), already normalized, so equal origins are equal strings.

use core::fmt;

use crate::error::OriginError;

/// `https://` + a 253-byte host + `:65535`.
pub const MAX_ORIGIN_LEN: usize = 8 + 253 + 6;

const SCHEME: &str = "https://";

/// A validated secure web origin, e.g. `https://vod.example.com` or `https://app.test:8443`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    serialized: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses and validates the ASCII serialization of an origin.
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        if s.len() > MAX_ORIGIN_LEN {
            return Err(OriginError::TooLong);
        }
        let Some(rest) = s.strip_prefix(SCHEME) else {
            let lower_prefix = s.get(..SCHEME.len()).map(str::to_ascii_lowercase);
            return Err(if lower_prefix.as_deref() == Some(SCHEME) {
                OriginError::NotSerialized
            } else {
                OriginError::NotHttps
            });
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(OriginError::NotAnOrigin);
        }
        if !rest.is_ascii() || rest.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(OriginError::NotSerialized);
        }
        if rest.starts_with('[') {
            return Err(OriginError::IpAddress);
        }
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (rest, None),
        };
        check_host(host)?;
        Ok(Self {
            serialized: s.to_owned(),
            port,
        })
    }

    /// The serialization, e.g. `https://vod.example.com`.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// The host, e.g. `vod.example.com`.
    pub fn host(&self) -> &str {
        let rest = &self.serialized[SCHEME.len()..];
        rest.split_once(':').map_or(rest, |(host, _)| host)
    }

    /// The port, when it is not the default 443.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl core::str::FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn parse_port(port: &str) -> Result<u16, OriginError> {
    let digits_only = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || port.starts_with('0') {
        return Err(OriginError::InvalidPort);
    }
    match port.parse::<u16>() {
        Ok(443) | Err(_) => Err(OriginError::InvalidPort),
        Ok(port) => Ok(port),
    }
}

fn check_host(host: &str) -> Result<(), OriginError> {
    if host.is_empty() || host.len() > 253 {
        return Err(OriginError::InvalidHost);
    }
    for label in host.split('.') {
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ldh {
            return Err(OriginError::InvalidHost);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(OriginError::InvalidHost);
        }
    }
    // No top-level domain is all digits, so such a host is an IPv4 address (or a shorthand
    // for one, such as `https://2130706433`).
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OriginError::IpAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_serialized_origins() {
        for s in [
            "https://vod.example.com",
            "https://app.test:8443",
            "https://localhost",
            "https://xn--bcher-kva.example",
            "https://a-b.c1",
        ] {
            let o = Origin::parse(s).unwrap();
            assert_eq!(o.as_str(), s);
        }
        let o = Origin::parse("https://app.test:8443").unwrap();
        assert_eq!((o.host(), o.port()), ("app.test", Some(8443)));
    }

    #[test]
    fn refuses_everything_else() {
        use OriginError::*;
        for (s, err) in [
            ("http://vod.example.com", NotHttps),
            ("wss://vod.example.com", NotHttps),
            ("HTTPS://vod.example.com", NotSerialized),
            ("https://Vod.example.com", NotSerialized),
            ("https://bücher.example", NotSerialized),
            ("https://vod.example.com/", NotAnOrigin),
            ("https://vod.example.com/app", NotAnOrigin),
            ("https://user@vod.example.com", NotAnOrigin),
            ("https://vod.example.com?x", NotAnOrigin),
            ("https://vod.example.com:443", InvalidPort),
            ("https://vod.example.com:0", InvalidPort),
            ("https://vod.example.com:08443", InvalidPort),
            ("https://vod.example.com:65536", InvalidPort),
            ("https://vod.example.com:", InvalidPort),
            ("https://vod.example.com:1:2", InvalidPort),
            ("https://192.168.1.10", IpAddress),
            ("https://[::1]", IpAddress),
            ("https://", InvalidHost),
            ("https://vod..example.com", InvalidHost),
            ("https://vod.example.com.", InvalidHost),
            ("https://-vod.example.com", InvalidHost),
            ("https://vod_1.example.com", InvalidHost),
        ] {
            assert_eq!(Origin::parse(s), Err(err), "{s}");
        }
        let long = format!("https://{}.com", "a.".repeat(140));
        assert_eq!(Origin::parse(&long), Err(TooLong));
        let long_label = format!("https://{}.com", "a".repeat(64));
        assert_eq!(Origin::parse(&long_label), Err(InvalidHost));
    }
}
