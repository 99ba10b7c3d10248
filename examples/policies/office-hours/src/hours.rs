//! Office hours: the `office_open`, `office_close`, `utc_offset_minutes` and `office_days`
//! configuration keys, and whether a moment (the clock import's Unix seconds) falls inside
//! them. Not here: what the policy does outside them.

use std::fmt;

/// The configuration keys this module reads.
pub const KEYS: &[&str] = &[
    "office_open",
    "office_close",
    "utc_offset_minutes",
    "office_days",
];

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Office hours in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    /// Minutes after local midnight.
    open: u32,
    close: u32,
    utc_offset_minutes: i32,
    /// Monday first.
    days: [bool; 7],
}

/// Why the office-hours keys were refused; each names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoursError {
    NotATime { key: &'static str, value: String },
    NotAnOffset { value: String },
    NotDays { value: String },
    ClosesBeforeOpening { open: String, close: String },
}

impl fmt::Display for HoursError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoursError::NotATime { key, value } => {
                write!(
                    f,
                    "policy config: `{key}`: {value:?} is not a time like \"08:00\""
                )
            }
            HoursError::NotAnOffset { value } => write!(
                f,
                "policy config: `utc_offset_minutes`: {value:?} is not minutes between \
                 -1440 and 1440"
            ),
            HoursError::NotDays { value } => write!(
                f,
                "policy config: `office_days`: {value:?} is not days like \"mon-fri\" or \
                 \"mon,wed,fri\""
            ),
            HoursError::ClosesBeforeOpening { open, close } => write!(
                f,
                "policy config: `office_close` ({close}) must be after `office_open` ({open})"
            ),
        }
    }
}

impl std::error::Error for HoursError {}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
}

/// `HH:MM` (24 h; `24:00` allowed as a close) in minutes after midnight.
fn minutes(key: &'static str, value: &str) -> Result<u32, HoursError> {
    let bad = || HoursError::NotATime {
        key,
        value: value.to_owned(),
    };
    let (h, m) = value.split_once(':').ok_or_else(bad)?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h * 60 + m > 24 * 60 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn day(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    DAY_NAMES.iter().position(|d| *d == name)
}

/// `mon-fri`, `mon,wed,fri`, `fri-mon` (wrapping), `sat-sun`.
fn days(value: &str) -> Result<[bool; 7], HoursError> {
    let bad = || HoursError::NotDays {
        value: value.to_owned(),
    };
    let mut days = [false; 7];
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
            None => {
                let d = day(item).ok_or_else(bad)?;
                (d, d)
            }
        };
        let mut d = first;
        loop {
            days[d] = true;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    if days.iter().any(|d| *d) {
        Ok(days)
    } else {
        Err(bad())
    }
}

impl Hours {
    /// Read the office-hours keys; defaults 08:00-18:00, UTC, Monday to Friday.
    pub fn parse(pairs: &[(String, String)]) -> Result<Hours, HoursError> {
        let open_text = get(pairs, "office_open").unwrap_or("08:00");
        let close_text = get(pairs, "office_close").unwrap_or("18:00");
        let open = minutes("office_open", open_text)?;
        let close = minutes("office_close", close_text)?;
        if close <= open {
            return Err(HoursError::ClosesBeforeOpening {
                open: open_text.to_owned(),
                close: close_text.to_owned(),
            });
        }
        let utc_offset_minutes = match get(pairs, "utc_offset_minutes") {
            None => 0,
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|m| m.abs() <= 24 * 60)
                .ok_or_else(|| HoursError::NotAnOffset {
                    value: v.to_owned(),
                })?,
        };
        let days = days(get(pairs, "office_days").unwrap_or("mon-fri"))?;
        Ok(Hours {
            open,
            close,
            utc_offset_minutes,
            days,
        })
    }

    /// Whether the office is open at `now` (Unix seconds, UTC).
    pub fn is_open(&self, now: u64) -> bool {
        let local =
            i64::try_from(now).unwrap_or(i64::MAX) + i64::from(self.utc_offset_minutes) * 60;
        let day_number = local.div_euclid(86_400);
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = (day_number + 3).rem_euclid(7) as usize;
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        self.days[weekday] && minute >= self.open && minute < self.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(items: &[(&str, &str)]) -> Result<Hours, HoursError> {
        let pairs: Vec<_> = items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Hours::parse(&pairs)
    }

    /// Wednesday 2025-11-26 00:00 UTC.
    const WED: u64 = 1_764_115_200;

    #[test]
    fn default_hours_are_eight_to_six_monday_to_friday() {
        let h = hours(&[]).unwrap();
        assert!(!h.is_open(WED + 7 * 3600 + 59 * 60));
        assert!(h.is_open(WED + 8 * 3600));
        assert!(h.is_open(WED + 17 * 3600 + 59 * 60));
        assert!(!h.is_open(WED + 18 * 3600));
        assert!(!h.is_open(WED + 3 * 86_400 + 10 * 3600), "Saturday");
        assert!(h.is_open(WED + 5 * 86_400 + 10 * 3600), "Monday");
    }

    #[test]
    fn day_lists_and_wrapping_ranges() {
        assert_eq!(
            days("mon-fri").unwrap(),
            [true, true, true, true, true, false, false]
        );
        assert_eq!(
            days("fri-mon").unwrap(),
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            days("Mon, wed,FRI").unwrap(),
            [true, false, true, false, true, false, false]
        );
        assert!(days("weekdays").is_err());
        assert!(days("").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("office_open", "8am"),
            ("office_close", "25:00"),
            ("utc_offset_minutes", "PST"),
            ("office_days", "someday"),
        ] {
            let err = hours(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_negative_offset_before_the_epoch_day_boundary_still_counts_days() {
        let h = hours(&[("utc_offset_minutes", "-300"), ("office_days", "tue")]).unwrap();
        // Wednesday 02:00 UTC is Tuesday 21:00 in UTC-5: Tuesday, but after closing.
        assert!(!h.is_open(WED + 2 * 3600));
        // Tuesday 14:00 UTC is Tuesday 09:00 in UTC-5: open.
        assert!(h.is_open(WED - 10 * 3600));
    }
}
