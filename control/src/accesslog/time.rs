//! `%START_TIME(...)%`'s formats: strftime's conversions in UTC, as Envoy prints them, with
//! Envoy's additions for sub-second precision (`%3f`, `%E3S`) and `%s`.

/// One conversion or literal text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Part {
    Text(String),
    Year,
    Year2,
    Month,
    Day,
    DaySpace,
    Hour,
    Minute,
    Second,
    /// Seconds with this many fractional digits (`%E3S`).
    SecondFrac(u8),
    /// This many fractional digits (`%3f`; `%f` is nine).
    Frac(u8),
    Epoch,
    MonthName,
    WeekdayName,
    DayOfYear,
    Zone,
    ZoneName,
}

/// A compiled time format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimeFormat(Vec<Part>);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

impl TimeFormat {
    /// `%START_TIME%` with no argument: `2016-04-15T20:17:00.310Z`.
    pub fn envoy_default() -> TimeFormat {
        TimeFormat::parse("%Y-%m-%dT%H:%M:%E3SZ").expect("the default format parses")
    }

    pub fn parse(s: &str) -> Result<TimeFormat, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let mut spec = chars.next().ok_or("a format ends in '%'")?;
            let mut digits = None;
            if let Some(d) = spec.to_digit(10).filter(|d| (1..=9).contains(d)) {
                digits = Some(d as u8);
                spec = chars.next().ok_or("a format ends in '%<digit>'")?;
            }
            let part = match (spec, digits) {
                ('%', None) => {
                    text.push('%');
                    continue;
                }
                ('Y', None) => Part::Year,
                ('y', None) => Part::Year2,
                ('m', None) => Part::Month,
                ('d', None) => Part::Day,
                ('e', None) => Part::DaySpace,
                ('H', None) => Part::Hour,
                ('M', None) => Part::Minute,
                ('S', None) => Part::Second,
                ('s', None) => Part::Epoch,
                ('b' | 'h', None) => Part::MonthName,
                ('a', None) => Part::WeekdayName,
                ('j', None) => Part::DayOfYear,
                ('z', None) => Part::Zone,
                ('Z', None) => Part::ZoneName,
                ('f', d) => Part::Frac(d.unwrap_or(9)),
                ('E', None) => {
                    let d = chars
                        .next()
                        .and_then(|d| d.to_digit(10))
                        .filter(|d| (1..=9).contains(d))
                        .ok_or("%E must be followed by a digit and S")?;
                    if chars.next() != Some('S') {
                        return Err("%E<digit> must be followed by S".into());
                    }
                    Part::SecondFrac(d as u8)
                }
                ('T', None) => {
                    parts.extend(flush(&mut text));
                    parts.extend([
                        Part::Hour,
                        Part::Text(":".into()),
                        Part::Minute,
                        Part::Text(":".into()),
                        Part::Second,
                    ]);
                    continue;
                }
                ('F', None) => {
                    parts.extend(flush(&mut text));
                    parts.extend([
                        Part::Year,
                        Part::Text("-".into()),
                        Part::Month,
                        Part::Text("-".into()),
                        Part::Day,
                    ]);
                    continue;
                }
                (c, _) => return Err(format!("%{c} is not supported by zerohop")),
            };
            parts.extend(flush(&mut text));
            parts.push(part);
        }
        parts.extend(flush(&mut text));
        Ok(TimeFormat(parts))
    }

    /// The time `unix_ns` nanoseconds after the epoch, in UTC.
    pub fn format(&self, unix_ns: u64) -> String {
        let secs = unix_ns / 1_000_000_000;
        let nanos = unix_ns % 1_000_000_000;
        let days = secs / 86_400;
        let (y, m, d) = civil(days as i64);
        let sod = secs % 86_400;
        let (hh, mm, ss) = (sod / 3600, sod % 3600 / 60, sod % 60);
        let frac = |n: u8| {
            let s = format!("{nanos:09}");
            s[..n as usize].to_string()
        };
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Year => out.push_str(&format!("{y:04}")),
                Part::Year2 => out.push_str(&format!("{:02}", y.rem_euclid(100))),
                Part::Month => out.push_str(&format!("{m:02}")),
                Part::Day => out.push_str(&format!("{d:02}")),
                Part::DaySpace => out.push_str(&format!("{d:2}")),
                Part::Hour => out.push_str(&format!("{hh:02}")),
                Part::Minute => out.push_str(&format!("{mm:02}")),
                Part::Second => out.push_str(&format!("{ss:02}")),
                Part::SecondFrac(n) => out.push_str(&format!("{ss:02}.{}", frac(*n))),
                Part::Frac(n) => out.push_str(&frac(*n)),
                Part::Epoch => out.push_str(&secs.to_string()),
                Part::MonthName => out.push_str(MONTHS[(m - 1) as usize]),
                Part::WeekdayName => out.push_str(DAYS[(days % 7) as usize]),
                Part::DayOfYear => {
                    let jan1 = days_from_civil(y, 1, 1);
                    out.push_str(&format!("{:03}", days as i64 - jan1 + 1));
                }
                Part::Zone => out.push_str("+0000"),
                Part::ZoneName => out.push_str("UTC"),
            }
        }
        out
    }
}

fn flush(text: &mut String) -> Option<Part> {
    (!text.is_empty()).then(|| Part::Text(std::mem::take(text)))
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_default_and_custom_formats() {
        // 2016-04-15T20:17:00.310Z, Envoy's documented example.
        let t = 1_460_751_420_310_000_000;
        assert_eq!(
            TimeFormat::envoy_default().format(t),
            "2016-04-15T20:17:00.310Z"
        );
        let f = TimeFormat::parse("%s|%3f|%6f|%f|%a %b %e %T %F %j %y %z %Z %%").unwrap();
        assert_eq!(
            f.format(t + 123_456),
            "1460751420|310|310123|310123456|Fri Apr 15 20:17:00 2016-04-15 106 16 +0000 UTC %"
        );
        // Leap day and the turn of a century.
        let leap = (days_from_civil(2000, 2, 29) * 86_400) as u64 * 1_000_000_000;
        assert_eq!(TimeFormat::parse("%F").unwrap().format(leap), "2000-02-29");
        assert_eq!(civil(days_from_civil(2026, 12, 7)), (2026, 12, 7));
    }

    #[test]
    fn unsupported_conversions_are_refused() {
        for bad in ["%Q", "%", "%E", "%E0S", "%E3x"] {
            assert!(TimeFormat::parse(bad).is_err(), "{bad}");
        }
    }
}
