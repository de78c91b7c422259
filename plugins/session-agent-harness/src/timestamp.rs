//! Server timestamps (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`) as comparable instants.
//!
//! Comparing the strings is wrong as soon as precisions differ (`…:00Z` sorts after `…:00.5Z`),
//! and item cursors need "one second earlier" to overlap consecutive fetches.

/// Seconds since 1970 and nanoseconds, or `None` for a string that is not a UTC timestamp.
pub fn parse(ts: &str) -> Option<(i64, u32)> {
    let ts = ts.strip_suffix('Z').or_else(|| ts.strip_suffix("+00:00"))?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let s: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + h * 3600 + m * 60 + s, nanos))
}

/// Howard Hinnant's days-from-civil.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Formats seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        (r / 60) % 60,
        r % 60
    )
}

/// Orders two timestamps; unparseable ones fall back to string order (after parseable ones).
pub fn cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `ts` minus `secs` whole seconds, at second precision (an exclusive lower bound that is
/// guaranteed to be earlier than `ts`); `None` if `ts` does not parse.
pub fn earlier(ts: &str, secs: i64) -> Option<String> {
    let (s, _) = parse(ts)?;
    Some(format(s - secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn parses_and_orders_mixed_precision() {
        assert_eq!(parse("1970-01-01T00:00:01Z"), Some((1, 0)));
        assert_eq!(parse("1970-01-01T00:00:01.5Z"), Some((1, 500_000_000)));
        assert_eq!(
            cmp("2026-05-01T10:00:00Z", "2026-05-01T10:00:00.5Z"),
            Ordering::Less
        );
        assert_eq!(
            cmp("2026-05-01T10:00:00.123456Z", "2026-05-01T10:00:00.123456Z"),
            Ordering::Equal
        );
        assert!(parse("yesterday").is_none());
        assert!(parse("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn formats_and_steps_back_across_days() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            earlier("2026-03-01T00:00:00.25Z", 1).unwrap(),
            "2026-02-28T23:59:59Z"
        );
        assert_eq!(
            earlier("2024-03-01T00:00:00Z", 1).unwrap(),
            "2024-02-29T23:59:59Z"
        );
        let (s, _) = parse("2026-11-23T04:32:32Z").unwrap();
        assert_eq!(format(s), "2026-11-23T04:32:32Z");
    }
}
