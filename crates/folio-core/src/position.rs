//! Read-your-writes across servers and replicas: where a write left the
//! database ([`Position`]), and where a read may be served from
//! ([`Reads`]).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The longest position token accepted.
pub const MAX_POSITION: usize = 255;

/// Where a committed write left its database: an opaque token that a later
/// read sends back ([`Reads::After`]) to be answered only from a state that
/// includes that write and every write committed before it.
///
/// Each engine writes its own form (PostgreSQL: `lsn:` and the log
/// position after the commit; the embedded engine: `etag:` and its last
/// etag). Over HTTP it is the `Folio-Position` header of a write's answer
/// and the `Folio-After` header of a read. Printable ASCII (`!` to `~`), at
/// most [`MAX_POSITION`] characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position(String);

impl Position {
    /// A position token, checked: 1 to [`MAX_POSITION`] characters from `!`
    /// to `~`.
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        if token.is_empty() || token.len() > MAX_POSITION {
            return Err(Error::InvalidInput(format!(
                "a position (Folio-After) has 1 to {MAX_POSITION} characters, as a write's \
                 Folio-Position gave it, not {}",
                token.len()
            )));
        }
        if let Some(bad) = token.chars().find(|c| !('!'..='~').contains(c)) {
            return Err(Error::InvalidInput(format!(
                "a position (Folio-After) holds printable ASCII characters only (`!` to `~`), \
                 not {bad:?}"
            )));
        }
        Ok(Position(token))
    }

    /// The token, as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number after `prefix` (`lsn:`, `etag:`) in a token of that
    /// form: how an engine reads back the tokens it writes. `None` for a
    /// token of another form.
    pub fn number_after(&self, prefix: &str) -> Option<u64> {
        let digits = self.0.strip_prefix(prefix)?;
        // Hexadecimal `high/low` as PostgreSQL prints log positions, or
        // decimal.
        if let Some((high, low)) = digits.split_once('/') {
            let high = u64::from_str_radix(high, 16).ok()?;
            let low = u64::from_str_radix(low, 16).ok()?;
            return (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX))
                .then_some((high << 32) | low);
        }
        digits.parse().ok()
    }

    /// `lsn:` and a PostgreSQL log position, printed as PostgreSQL does
    /// (`lsn:16/B374D848`).
    pub fn log(lsn: u64) -> Self {
        Position(format!("lsn:{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF))
    }

    /// `etag:` and a database's last etag.
    pub fn etag(etag: u64) -> Self {
        Position(format!("etag:{etag}"))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Position {
    type Err = Error;

    fn from_str(token: &str) -> Result<Self> {
        Position::new(token)
    }
}

/// Where the reads of an engine handle are served from
/// ([`crate::Engine::reads`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reads {
    /// From the primary: every committed write is seen. What an engine
    /// handle does unless told otherwise, and what a read that decides a
    /// write must do.
    #[default]
    Primary,
    /// From any node, standbys included: a standby may not show the newest
    /// writes yet (never a write that was not committed, never a version
    /// that a failover can lose). Served while no primary answers.
    Any,
    /// From any node that shows the write at this position and every write
    /// committed before it: a standby that replayed that far (waiting for
    /// it, bounded), else the primary.
    After(Position),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_printable_ascii_of_bounded_length() {
        assert!(Position::new("lsn:0/16B3748").is_ok());
        assert!(Position::new("").is_err());
        assert!(Position::new("a b").is_err());
        assert!(Position::new("é").is_err());
        assert!(Position::new("x".repeat(MAX_POSITION)).is_ok());
        assert!(Position::new("x".repeat(MAX_POSITION + 1)).is_err());
    }

    #[test]
    fn log_positions_read_back_as_written() {
        for lsn in [0, 1, 0x16_B374_D848, u64::from(u32::MAX) << 32] {
            let position = Position::log(lsn);
            assert_eq!(position.number_after("lsn:"), Some(lsn), "{position}");
        }
        assert_eq!(Position::log(0x16_B374_D848).as_str(), "lsn:16/B374D848");
        assert_eq!(Position::etag(42).number_after("etag:"), Some(42));
        assert_eq!(Position::etag(42).number_after("lsn:"), None);
        assert_eq!(
            Position::new("lsn:1/2/3").unwrap().number_after("lsn:"),
            None
        );
        assert_eq!(
            Position::new("lsn:100000000/0")
                .unwrap()
                .number_after("lsn:"),
            None
        );
    }
}
