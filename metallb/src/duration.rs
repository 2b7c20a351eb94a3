//! Kubernetes `metav1.Duration` strings: Go's `time.ParseDuration` syntax (`90s`,
//! `1m30s`, `300ms`, `1.5h`, `0`) and Go's way of printing whole seconds (`1m30s`,
//! `2m0s`), which MetalLB's converter writes.

use std::fmt::Write;
use std::time::Duration;

/// Go's largest duration (`math.MaxInt64` nanoseconds, about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// A parsed duration that may be negative (Go durations are signed; MetalLB refuses
/// negative timers, so the sign is kept for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    /// Whether a `-` was given (and the value is not zero).
    pub negative: bool,
    /// The magnitude.
    pub magnitude: Duration,
}

/// Parses a duration the way Go's `time.ParseDuration` does: an optional sign, then
/// one or more decimal numbers (with an optional fraction) each followed by a unit
/// `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m` or `h`; `0` alone needs no unit. The error
/// says what is wrong and shows the expected syntax.
pub fn parse(text: &str) -> Result<GoDuration, String> {
    let hint = "write a Go duration such as \"90s\", \"1m30s\" or \"300ms\"";
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(GoDuration {
            negative: false,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(format!("{text:?} is not a duration: {hint}"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let whole = &rest[..digits];
        rest = &rest[digits..];
        let mut fraction = "";
        if let Some(stripped) = rest.strip_prefix('.') {
            let fraction_digits = stripped.bytes().take_while(u8::is_ascii_digit).count();
            fraction = &stripped[..fraction_digits];
            rest = &stripped[fraction_digits..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(format!("{text:?} is not a duration: {hint}"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(index, _)| index);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "{text:?} is not a duration: a number has no unit; {hint}"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?} is not a duration: unknown unit {other:?} (ns, us, ms, s, m, h)"
                ));
            }
        };
        let overflow = || format!("{text:?} is too long a duration");
        let mut value: u128 = 0;
        for digit in whole.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit - b'0')))
                .filter(|v| *v <= MAX_NANOS)
                .ok_or_else(overflow)?;
        }
        let mut nanos = value.checked_mul(nanos_per_unit).ok_or_else(overflow)?;
        // The fraction: as Go, digits beyond what can matter are ignored.
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes() {
            if scale < 10 {
                break;
            }
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total
            .checked_add(nanos)
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(overflow)?;
    }
    let magnitude = Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    );
    Ok(GoDuration {
        negative: negative && !magnitude.is_zero(),
        magnitude,
    })
}

/// Prints a duration of whole seconds as Go does (`0s`, `30s`, `1m30s`, `2m0s`,
/// `1h0m0s`); fractions of a second are dropped (callers round first).
pub fn format_seconds(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h{minutes}m{secs}s");
    } else if minutes > 0 {
        let _ = write!(out, "{minutes}m{secs}s");
    } else {
        let _ = write!(out, "{secs}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u128 {
        let parsed = parse(text).unwrap();
        assert!(!parsed.negative, "{text}");
        parsed.magnitude.as_millis()
    }

    #[test]
    fn go_syntax_is_accepted() {
        assert_eq!(ms("90s"), 90_000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("300ms"), 300);
        assert_eq!(ms("1.5h"), 5_400_000);
        assert_eq!(ms(".5s"), 500);
        assert_eq!(ms("1.s"), 1_000);
        assert_eq!(ms("0"), 0);
        assert_eq!(ms("+3s"), 3_000);
        assert_eq!(ms("2h45m"), 9_900_000);
        assert_eq!(
            parse("1500us").unwrap().magnitude,
            Duration::from_micros(1500)
        );
        assert_eq!(parse("1µs").unwrap().magnitude, Duration::from_micros(1));
        assert_eq!(parse("7ns").unwrap().magnitude, Duration::from_nanos(7));
        assert!(parse("-3s").unwrap().negative);
        assert!(!parse("-0s").unwrap().negative);
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "", "90", "s", "1x", "1.2.3s", "-", "3 s", "1e3s", ".s", "3S", "1d", "9999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("90").unwrap_err().contains("no unit"));
        assert!(parse("1d").unwrap_err().contains("unknown unit \"d\""));
    }

    #[test]
    fn whole_seconds_print_as_go_prints_them() {
        for (seconds, text) in [
            (0, "0s"),
            (30, "30s"),
            (90, "1m30s"),
            (120, "2m0s"),
            (3600, "1h0m0s"),
            (3725, "1h2m5s"),
        ] {
            assert_eq!(format_seconds(Duration::from_secs(seconds)), text);
            assert_eq!(parse(text).unwrap().magnitude.as_secs(), seconds);
        }
    }
}
