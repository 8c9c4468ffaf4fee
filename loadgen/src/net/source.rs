//! Source addresses for client sockets (`--source`).
//!
//! A TCP connection is named by (source address, source port, destination address,
//! destination port); with one source address and one destination port, about 28 000
//! ephemeral ports (Linux's default range) cap the connections. Each extra source address on
//! the loopback range (all of 127.0.0.0/8 is local) brings another range, so
//! `--source 127.0.0.1-127.0.0.32` allows far more than 64k connections to one port.
//!
//! Syntax: a comma-separated list of addresses and inclusive IPv4 ranges
//! (`127.0.0.1-127.0.0.32`, or `127.0.0.1-32` for the last octet).

use std::net::{IpAddr, Ipv4Addr};

/// Most addresses one `--source` may expand to.
pub const MAX_SOURCES: usize = 65_536;

/// Why a source list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Not an address.
    #[error("invalid source address {0:?}")]
    Address(String),
    /// A range whose end is before its start, or that is not IPv4.
    #[error("invalid source range {0:?} (IPv4 only, start <= end)")]
    Range(String),
    /// Too many addresses.
    #[error("source list expands to more than {MAX_SOURCES} addresses")]
    TooMany,
}

/// Parses a `--source` value.
pub fn parse_sources(s: &str) -> Result<Vec<IpAddr>, SourceError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            None => out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| SourceError::Address(part.into()))?,
            ),
            Some((a, b)) => {
                let start: Ipv4Addr = a
                    .trim()
                    .parse()
                    .map_err(|_| SourceError::Range(part.into()))?;
                let b = b.trim();
                let end: Ipv4Addr = if b.contains('.') {
                    b.parse().map_err(|_| SourceError::Range(part.into()))?
                } else {
                    let last: u8 = b.parse().map_err(|_| SourceError::Range(part.into()))?;
                    let o = start.octets();
                    Ipv4Addr::new(o[0], o[1], o[2], last)
                };
                let (s, e) = (u32::from(start), u32::from(end));
                if e < s {
                    return Err(SourceError::Range(part.into()));
                }
                if (e - s) as usize + out.len() >= MAX_SOURCES {
                    return Err(SourceError::TooMany);
                }
                out.extend((s..=e).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
            }
        }
        if out.len() > MAX_SOURCES {
            return Err(SourceError::TooMany);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse_sources("127.0.0.1-127.0.0.3, 127.0.1.1").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(parse_sources("127.0.0.1-32").unwrap().len(), 32);
        assert_eq!(parse_sources("127.0.0.255-127.0.1.1").unwrap().len(), 3);
        assert_eq!(parse_sources("::1").unwrap().len(), 1);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_sources("nope"),
            Err(SourceError::Address(_))
        ));
        assert!(matches!(
            parse_sources("127.0.0.9-3"),
            Err(SourceError::Range(_))
        ));
        assert!(matches!(
            parse_sources("::1-::2"),
            Err(SourceError::Range(_))
        ));
        assert_eq!(
            parse_sources("10.0.0.0-10.255.255.255"),
            Err(SourceError::TooMany)
        );
    }
}
