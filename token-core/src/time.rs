//! UTC timestamps in the two spellings QLAM Core writes.
//!
//! Top-level fields of a credentials file use Python's `str(datetime)`:
//! `2026-11-22 23:42:28.883757+00:00` (no fraction when it is zero), while
//! `token_data.created_at` uses `isoformat()`: `2026-11-22T23:42:28.883757+00:00`.
//! [`Timestamp::parse`] reads both (and `Z` or any `±HH:MM` offset); the writers produce exactly
//! Python's output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time with microsecond resolution, as Python's `datetime` has.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Microseconds since the Unix epoch.
    micros: i64,
}

const MICROS: i64 = 1_000_000;

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp {
            micros: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// From whole seconds since the epoch.
    pub fn from_unix_seconds(secs: i64) -> Self {
        Timestamp {
            micros: secs.saturating_mul(MICROS),
        }
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn unix_seconds(&self) -> i64 {
        self.micros.div_euclid(MICROS)
    }

    /// This time plus `secs` seconds (may be negative).
    pub fn plus_seconds(&self, secs: i64) -> Self {
        Timestamp {
            micros: self.micros.saturating_add(secs.saturating_mul(MICROS)),
        }
    }

    /// Truncated to the whole minute, as QLAM Core does before adding `expires_in`.
    pub fn truncated_to_minute(&self) -> Self {
        Timestamp {
            micros: self.micros - self.micros.rem_euclid(60 * MICROS),
        }
    }

    /// Seconds from `self` until `later` (negative if `later` is earlier).
    pub fn seconds_until(&self, later: Timestamp) -> i64 {
        (later.micros - self.micros).div_euclid(MICROS)
    }

    /// Python `str(datetime)` in UTC: `YYYY-MM-DD HH:MM:SS[.ffffff]+00:00`.
    pub fn to_python_str(&self) -> String {
        self.format(' ')
    }

    /// Python `datetime.isoformat()` in UTC: `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`.
    pub fn to_isoformat(&self) -> String {
        self.format('T')
    }

    fn format(&self, sep: char) -> String {
        let secs = self.micros.div_euclid(MICROS);
        let frac = self.micros.rem_euclid(MICROS);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let mut s = format!(
            "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        );
        if frac != 0 {
            s.push_str(&format!(".{frac:06}"));
        }
        s.push_str("+00:00");
        s
    }

    /// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.f{1,6}]](Z|±HH:MM|±HHMM)`. A missing offset is refused:
    /// QLAM Core only writes timezone-aware times.
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 16 || b.len() > 40 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(r)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let year = num(0..4)?;
        if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't') {
            return None;
        }
        let month = num(5..7)?;
        let day = num(8..10)?;
        let hour = num(11..13)?;
        if b[13] != b':' {
            return None;
        }
        let minute = num(14..16)?;
        let mut i = 16;
        let mut second = 0;
        let mut micros = 0;
        if b.get(i) == Some(&b':') {
            second = num(i + 1..i + 3)?;
            i += 3;
            if b.get(i) == Some(&b'.') {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                let digits = &text[start..end];
                if digits.is_empty() || digits.len() > 9 {
                    return None;
                }
                let mut padded: String = digits.chars().take(6).collect();
                while padded.len() < 6 {
                    padded.push('0');
                }
                micros = padded.parse().ok()?;
                i = end;
            }
        }
        let offset_secs = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') => {
                let rest = &text[i + 1..];
                let (oh, om) = match rest.len() {
                    5 if rest.as_bytes()[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                    4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                    _ => return None,
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => return None,
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        Some(Timestamp {
            micros: secs * MICROS + micros,
        })
    }
}

impl Timestamp {
    /// Parses an HTTP date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`), as in a
    /// server's `Date` header (clock-skew checks).
    pub fn parse_http_date(s: &str) -> Option<Self> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = f.as_slice() else {
            return None;
        };
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
        let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
        let t: Vec<i64> = time
            .split(':')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [h, m, sec] = t.as_slice() else {
            return None;
        };
        if !(1..=days_in_month(year, month)).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
            return None;
        }
        Some(Timestamp::from_unix_seconds(
            days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec,
        ))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_isoformat())
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_python_spellings() {
        for s in [
            "2026-11-22 23:42:28.883757+00:00",
            "2026-11-22 23:44:00+00:00",
            "2024-02-29T00:00:01.000001+00:00",
            "1970-01-01T00:00:00+00:00",
        ] {
            let t = Timestamp::parse(s).expect(s);
            let again = if s.contains('T') {
                t.to_isoformat()
            } else {
                t.to_python_str()
            };
            assert_eq!(again, s);
        }
    }

    #[test]
    fn offsets_and_z_are_understood() {
        let utc = Timestamp::parse("2026-11-22T10:00:00+00:00").unwrap();
        assert_eq!(Timestamp::parse("2026-11-22T11:00:00+01:00"), Some(utc));
        assert_eq!(Timestamp::parse("2026-11-22T10:00:00Z"), Some(utc));
        assert_eq!(Timestamp::parse("2026-11-22T05:30:00-0430"), Some(utc));
        assert_eq!(utc.unix_seconds(), 1_795_341_600);
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "2026-11-22",
            "2026-11-22T10:00:00",
            "2026-13-01T00:00:00+00:00",
            "2026-02-29T00:00:00+00:00",
            "2026-11-22T24:00:00+00:00",
            "2026-11-22T10:00:00+00:00junk",
            "２０２６-11-22T10:00:00+00:00",
        ] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            Timestamp::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Timestamp::from_unix_seconds(784_111_777))
        );
        assert_eq!(
            Timestamp::parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Timestamp::from_unix_seconds(0))
        );
        assert_eq!(
            Timestamp::parse_http_date("Sun, 29 Feb 2032 12:00:00 GMT"),
            Some(Timestamp::from_unix_seconds(1_961_668_800))
        );
        assert_eq!(
            Timestamp::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            None
        );
        assert_eq!(
            Timestamp::parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"),
            None
        );
        assert_eq!(Timestamp::parse_http_date(""), None);
    }

    #[test]
    fn truncation_matches_qlam_core_expiry_rule() {
        let t = Timestamp::parse("2026-11-22 10:00:59.999999+00:00").unwrap();
        assert_eq!(
            t.truncated_to_minute().to_python_str(),
            "2026-11-22 10:00:00+00:00"
        );
        assert_eq!(
            t.truncated_to_minute().plus_seconds(86_400).to_python_str(),
            "2026-11-23 10:00:00+00:00"
        );
    }
}
