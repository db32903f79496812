//! Durations as keys.toml writes them: a whole number and a unit (s, m, h, d).

use jiff::SignedDuration;

/// Parses `"90d"`, `"10m"`, `"60s"`, `"12h"`.
///
/// # Errors
/// A message naming what is wrong, for a config diagnostic.
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err("a duration is a whole number and a unit (s, m, h, d), such as \"90d\"".into());
    }
    let number: i64 = number
        .parse()
        .map_err(|_| "the number of a duration is too large".to_string())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => {
            return Err(format!(
                "missing unit: write \"{number}s\", \"{number}m\", \"{number}h\" or \"{number}d\""
            ));
        }
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    let seconds = number
        .checked_mul(seconds_per_unit)
        .filter(|s| *s <= 100 * 366 * 86_400)
        .ok_or_else(|| "a duration must be under 100 years".to_string())?;
    Ok(SignedDuration::from_secs(seconds))
}

/// The shortest exact rendering: `90d`, `1h30m`, `45s`, `0s`.
pub fn format(duration: SignedDuration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if seconds < 0 {
        out.push('-');
        seconds = -seconds;
    }
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("90d").unwrap(), SignedDuration::from_hours(90 * 24));
        assert_eq!(parse("10m").unwrap(), SignedDuration::from_mins(10));
        assert_eq!(parse("60s").unwrap(), SignedDuration::from_secs(60));
        assert_eq!(parse("12h").unwrap(), SignedDuration::from_hours(12));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        assert!(parse("").is_err());
        assert!(parse("d").is_err());
        assert!(parse("10").unwrap_err().contains("missing unit"));
        assert!(parse("10w").unwrap_err().contains("unknown unit"));
        assert!(parse("-1d").is_err());
        assert!(parse("99999999999999d").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(SignedDuration::from_secs(5400)), "1h30m");
        assert_eq!(format(parse("90d").unwrap()), "90d");
        assert_eq!(format(SignedDuration::ZERO), "0s");
    }
}
