//! Go `time.Duration` strings, the format of every duration field in kube-proxy's
//! configuration.

use std::time::Duration;

/// Parses a Go `time.Duration` string such as `30s`, `1m0s`, `1h30m`, `250ms` or `0`.
///
/// Negative durations are rejected: no configuration field accepts them. On error the
/// message describes the accepted syntax.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const SYNTAX: &str =
        "a non-negative Go duration such as 30s, 1m0s, 1h30m or 250ms (units ns, us, ms, s, m, h)";
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(SYNTAX.into());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| SYNTAX.to_string())?;
        if number_len == 0 {
            return Err(SYNTAX.into());
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(SYNTAX.into()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(SYNTAX.into());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| SYNTAX.to_string())?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| SYNTAX.to_string())?;
        let mut scale = unit_nanos;
        for digit in fraction.chars() {
            scale /= 10;
            nanos += u128::from(digit.to_digit(10).ok_or_else(|| SYNTAX.to_string())?) * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| SYNTAX.to_string())?;
        rest = after;
    }
    let seconds = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| SYNTAX.to_string())?;
    Ok(Duration::new(seconds, (total_nanos % 1_000_000_000) as u32))
}
