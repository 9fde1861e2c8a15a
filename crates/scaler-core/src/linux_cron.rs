//! Five-field Linux cron schedules, evaluated in a time zone, as KEDA's cron scaler reads them.
//!
//! KEDA parses with robfig/cron's `Minute | Hour | Dom | Month | Dow` parser. This module
//! parses the same language itself (so the errors and the day-of-week numbering are KEDA's:
//! 0 and 7 are Sunday, 1 is Monday) and hands the `cron` crate an expression of explicit
//! values, which sidesteps that crate's own numbering (Sunday = 1) entirely.
//!
//! Day matching follows Vixie cron and robfig: when both day-of-month and day-of-week are
//! restricted (neither starts with `*` or `?`), a day matches if *either* does; otherwise
//! both must. The OR case is two `cron` schedules whose next times are merged.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};

/// A parsed five-field schedule.
#[derive(Debug, Clone)]
pub struct LinuxCron {
    schedules: Vec<cron::Schedule>,
}

struct Bounds {
    min: u32,
    max: u32,
    /// The largest value accepted when written out (day-of-week takes 7 for Sunday).
    value_max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    names_base: u32,
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    value_max: 59,
    names: &[],
    names_base: 0,
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    value_max: 23,
    names: &[],
    names_base: 0,
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    value_max: 31,
    names: &[],
    names_base: 0,
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    value_max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_base: 1,
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    value_max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_base: 0,
};

/// Values set in one field, and whether the field was a wildcard (`*`, `?`, `*/1`).
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn values(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64).filter(move |i| self.bits & (1u64 << i) != 0)
    }

    fn list(&self) -> String {
        self.values()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_value(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(b.names_base + i as u32);
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}"))
}

fn parse_range(part: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = part.split('/').collect();
    if range_and_step.len() > 2 {
        return Err(format!("too many slashes: {part}"));
    }
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    if low_high.len() > 2 {
        return Err(format!("too many hyphens: {part}"));
    }
    let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
        if low_high.len() == 2 {
            return Err(format!("a range cannot start with a wildcard: {part}"));
        }
        (b.min, b.max, true)
    } else {
        let start = parse_value(low_high[0], b)?;
        let end = match low_high.get(1) {
            Some(h) => parse_value(h, b)?,
            None => start,
        };
        (start, end, false)
    };
    let step = match range_and_step.get(1) {
        None => 1,
        Some(s) => {
            let step: u32 = s
                .parse()
                .map_err(|_| format!("failed to parse int from {s}"))?;
            if step == 0 {
                return Err(format!("step of range should be a positive number: {part}"));
            }
            // `N/step` means `N-max/step`.
            if low_high.len() == 1 && !star {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {part}",
            b.min
        ));
    }
    if end > b.value_max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {part}",
            b.value_max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {part}"
        ));
    }
    // `step_by` stops at the end without adding past it: a step near u32::MAX used to
    // overflow (a panic, or in release a wrap to 0 that set minute 0 too).
    let step = usize::try_from(step).unwrap_or(usize::MAX);
    let bits = (start..=end)
        .step_by(step)
        .fold(0u64, |bits, v| bits | (1u64 << v));
    Ok((bits, star))
}

fn parse_field(field: &str, b: &Bounds) -> Result<Field, String> {
    let mut out = Field {
        bits: 0,
        star: false,
    };
    for part in field.split(',') {
        let (bits, star) = parse_range(part, b)?;
        out.bits |= bits;
        out.star |= star;
    }
    Ok(out)
}

impl FromStr for LinuxCron {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        if spec.starts_with('@') {
            return Err(format!("parser does not accept descriptors: {spec}"));
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let minute = parse_field(fields[0], &MINUTE)?;
        let hour = parse_field(fields[1], &HOUR)?;
        let dom = parse_field(fields[2], &DOM)?;
        let month = parse_field(fields[3], &MONTH)?;
        let mut dow = parse_field(fields[4], &DOW)?;
        // 7 is Sunday too.
        if dow.bits & (1 << 7) != 0 {
            dow.bits = (dow.bits & !(1 << 7)) | 1;
        }
        const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        let dow_list = dow
            .values()
            .map(|d| DAY_NAMES[d as usize])
            .collect::<Vec<_>>()
            .join(",");
        let build = |dom: &str, dow: &str| {
            let expr = format!(
                "0 {} {} {dom} {} {dow}",
                minute.list(),
                hour.list(),
                month.list()
            );
            cron::Schedule::from_str(&expr).map_err(|e| format!("{spec}: {e}"))
        };
        let schedules = if dom.star || dow.star {
            vec![build(&dom.list(), &dow_list)?]
        } else {
            vec![build(&dom.list(), "*")?, build("*", &dow_list)?]
        };
        Ok(LinuxCron { schedules })
    }
}

impl LinuxCron {
    /// The first time strictly after `t` that the schedule fires, in `t`'s time zone.
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(t).next())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc, Weekday};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn next(spec: &str, from: &str) -> DateTime<Utc> {
        let c: LinuxCron = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
        c.next_after(&at(from)).expect("a next time")
    }

    #[test]
    fn day_of_week_numbers_are_linux_ones() {
        // 2026-11-22 is a Sunday.
        let from = "2026-11-22T12:00:00Z";
        assert_eq!(next("0 0 * * 1", from).weekday(), Weekday::Mon);
        assert_eq!(next("0 0 * * 0", from).weekday(), Weekday::Sun);
        assert_eq!(next("0 0 * * 7", from).weekday(), Weekday::Sun);
        assert_eq!(next("0 0 * * 6", from).weekday(), Weekday::Sat);
        assert_eq!(next("0 0 * * 5-7", from).weekday(), Weekday::Fri);
        assert_eq!(next("0 0 * * Thu", from).weekday(), Weekday::Thu);
        assert_eq!(next("0 0 * * MON-FRI", from).weekday(), Weekday::Mon);
        // 1-5 from a Monday evening is Tuesday.
        assert_eq!(
            next("0 8 * * 1-5", "2026-11-23T19:00:00Z"),
            at("2026-11-24T08:00:00Z")
        );
        // Sunday's 0 and 7 never make Saturday.
        assert_eq!(
            next("0 8 * * 6,7", "2026-11-23T19:00:00Z"),
            at("2026-11-28T08:00:00Z")
        );
    }

    #[test]
    fn fields_steps_and_ranges() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-22T12:07:00Z"),
            at("2026-11-22T12:15:00Z")
        );
        assert_eq!(
            next("5/20 * * * *", "2026-11-22T12:26:00Z"),
            at("2026-11-22T12:45:00Z")
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-11-22T14:00:00Z"),
            at("2026-11-22T17:00:00Z")
        );
        assert_eq!(
            next("30 2 1 jan *", "2026-11-22T14:00:00Z"),
            at("2027-01-01T02:30:00Z")
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-11-22T14:00:00Z"),
            at("2028-02-29T00:00:00Z")
        );
        // Strictly after: at exactly 12:15 the next quarter is 12:30.
        assert_eq!(
            next("*/15 * * * *", "2026-11-22T12:15:00Z"),
            at("2026-11-22T12:30:00Z")
        );
    }

    #[test]
    fn restricted_dom_and_dow_are_ored() {
        // The 1st of the month or a Monday, whichever comes first.
        assert_eq!(
            next("0 0 1 * 1", "2026-11-22T12:00:00Z"),
            at("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            next("0 0 1 * 1", "2026-11-30T12:00:00Z"),
            at("2026-12-01T00:00:00Z")
        );
        // With a wildcard day-of-week, both must hold (every day of month 1).
        assert_eq!(
            next("0 0 1 * *", "2026-11-22T12:00:00Z"),
            at("2026-12-01T00:00:00Z")
        );
        // */2 in day-of-week is a restriction, so OR applies with dom 1.
        let t = next("0 0 1 * */2", "2026-11-22T12:00:00Z");
        assert_eq!(t, at("2026-11-24T00:00:00Z"));
    }

    #[test]
    fn time_zones_shift_the_hour() {
        let c: LinuxCron = "00 08 * * 1-5".parse().expect("valid");
        let tz: chrono_tz::Tz = "Europe/Paris".parse().expect("tz");
        let t = c
            .next_after(&at("2026-11-23T06:00:00Z").with_timezone(&tz))
            .expect("next");
        assert_eq!(t.hour(), 8);
        assert_eq!(t.with_timezone(&Utc), at("2026-11-23T07:00:00Z"));
    }

    /// robfig adds the step to a 64-bit value: a step past the field's range selects the
    /// start alone. Adding it to a u32 overflowed (a panic in debug builds, in release a wrap
    /// that selected other minutes or hours too); seen while writing the cron_schedule fuzz
    /// target, whose corpus keeps the input.
    #[test]
    fn a_huge_step_selects_the_start_alone() {
        for (spec, from, want) in [
            (
                "1/4294967295 * * * *",
                "2026-11-22T12:05:00Z",
                "2026-11-22T13:01:00Z",
            ),
            (
                "59/4294967295 * * * *",
                "2026-11-22T12:05:00Z",
                "2026-11-22T12:59:00Z",
            ),
            (
                "0 23/4294967290 * * *",
                "2026-11-22T12:05:00Z",
                "2026-11-22T23:00:00Z",
            ),
        ] {
            assert_eq!(next(spec, from), at(want), "{spec}");
        }
    }

    #[test]
    fn rejects_what_robfig_rejects() {
        for (spec, want) in [
            ("* * * *", "expected exactly 5 fields"),
            ("0 0 * * * *", "expected exactly 5 fields"),
            ("@hourly", "does not accept descriptors"),
            ("60 * * * *", "above maximum"),
            ("* 24 * * *", "above maximum"),
            ("* * 0 * *", "below minimum"),
            ("* * * 13 *", "above maximum"),
            ("* * * * 8", "above maximum"),
            ("5-1 * * * *", "beyond end of range"),
            ("*/0 * * * *", "positive number"),
            ("1-2-3 * * * *", "too many hyphens"),
            ("1/2/3 * * * *", "too many slashes"),
            ("x * * * *", "failed to parse int"),
            ("* * * * funday", "failed to parse int"),
        ] {
            let err = spec.parse::<LinuxCron>().expect_err(spec);
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
