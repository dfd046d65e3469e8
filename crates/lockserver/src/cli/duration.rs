//! Durations on the command line: `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds;
//! fractions are allowed (`0.5`, `1.5m`). Parsed exactly (no floating point), so `0.3` is
//! 300 ms and never 299.999… ms.

use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses a command-line duration. The error is a short lower-case reason for clap to show
/// next to the option.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; expected e.g. 500ms, 5s, 2m, 1h or 0.5".into());
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let nanos_per_unit: u128 = match unit {
        "" | "s" => NANOS_PER_SECOND,
        "ms" => NANOS_PER_SECOND / 1_000,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        _ => {
            return Err(format!(
                "bad duration {text:?}: the unit must be ms, s, m or h (a bare number is seconds)"
            ))
        }
    };
    let bad_number = || format!("bad duration {text:?}: expected a number like 5, 0.5 or 1.5");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad_number());
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad_number())? };
    // The fraction of one unit, as a numerator over 10^digits.
    let mut fraction_numerator: u128 = 0;
    let mut fraction_denominator: u128 = 1;
    for digit in fraction.chars() {
        // More than 18 digits cannot change a nanosecond-resolution result any more.
        if fraction_denominator >= 10u128.pow(18) {
            break;
        }
        fraction_numerator = fraction_numerator * 10 + u128::from(digit.to_digit(10).unwrap_or(0));
        fraction_denominator *= 10;
    }
    let too_long = || format!("bad duration {text:?}: too long");
    let nanos = whole
        .checked_mul(nanos_per_unit)
        .and_then(|n| n.checked_add(fraction_numerator * nanos_per_unit / fraction_denominator))
        .ok_or_else(too_long)?;
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| too_long())?;
    let subsec = u32::try_from(nanos % NANOS_PER_SECOND).map_err(|_| too_long())?;
    Ok(Duration::new(seconds, subsec))
}

/// A short human rendering (`250ms`, `9.8s`, `3m05s`, `2h00m`) for listings and messages.
pub(crate) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    if millis < 60_000 {
        let tenths = millis / 100;
        return if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        };
    }
    let seconds = duration.as_secs();
    if seconds < 3_600 {
        return format!("{}m{:02}s", seconds / 60, seconds % 60);
    }
    format!("{}h{:02}m", seconds / 3_600, seconds % 3_600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn every_unit_and_a_bare_number_of_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("7"), Ok(ms(7_000)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3s "), Ok(ms(3_000)));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_duration("0.5"), Ok(ms(500)));
        assert_eq!(parse_duration("0.3"), Ok(ms(300)));
        assert_eq!(parse_duration(".25s"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5m"), Ok(ms(90_000)));
        assert_eq!(parse_duration("2."), Ok(ms(2_000)));
        assert_eq!(parse_duration("0.0005"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1_500)));
        assert_eq!(parse_duration("0.1234567891234s"), Ok(Duration::from_nanos(123_456_789)));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("s", "expected a number"),
            (".", "expected a number"),
            ("1.2.3", "expected a number"),
            ("-1", "unit must be"),
            ("5x", "unit must be"),
            ("5 s", "unit must be"),
            ("5sec", "unit must be"),
            ("1e3", "unit must be"),
            ("ten", "unit must be"),
            ("99999999999999999999999999999999999999999h", "expected a number"),
            ("9999999999999999999999h", "too long"),
        ] {
            let error = parse_duration(input).expect_err(input);
            assert!(error.contains(reason), "{input:?}: {error}");
        }
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(ms(9_840)), "9.8s");
        assert_eq!(format_duration(ms(10_000)), "10s");
        assert_eq!(format_duration(ms(185_000)), "3m05s");
        assert_eq!(format_duration(ms(7_200_000)), "2h00m");
    }
}
