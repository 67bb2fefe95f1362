//! Time as the service stores it: UTC, whole milliseconds (both stores keep milliseconds, so a
//! value read back equals the value written).

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Now, in UTC, truncated to milliseconds.
pub fn now() -> OffsetDateTime {
    from_millis(to_millis(OffsetDateTime::now_utc()))
}

pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The instant `ms` milliseconds after the epoch (the epoch itself when out of range). Whole
/// seconds and the millisecond part are set apart in 64-bit arithmetic: every stored timestamp is
/// read through here.
pub fn from_millis(ms: i64) -> OffsetDateTime {
    let nanos = (ms.rem_euclid(1000) * 1_000_000) as u32;
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .and_then(|t| t.replace_nanosecond(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC, e.g. `2026-11-25T15:16:03.123Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [
            0,
            1,
            999,
            1000,
            -1,
            -999,
            -1000,
            -1001,
            1_764_620_163_123,
            -62_135_596_800_000,
            253_402_300_799_999,
        ] {
            let t = from_millis(ms);
            assert_eq!(to_millis(t), ms, "{ms}");
            let reference =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            assert_eq!(t, reference, "{ms}");
        }
    }

    #[test]
    fn out_of_range_milliseconds_read_as_the_epoch() {
        assert_eq!(from_millis(i64::MAX), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(from_millis(i64::MIN), OffsetDateTime::UNIX_EPOCH);
    }
}
