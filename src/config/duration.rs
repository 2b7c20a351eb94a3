//! Go `time.Duration` strings, the format of every duration field in kube-proxy's
//! configuration.

use std::time::Duration;

/// Parses a Go `time.Duration` string such as `30s`, `1m0s`, `1h30m`, `250ms` or `0`.
///
/// The syntax is Go's (the same parser reads MetalLB's timers,
/// [`metallb_config::duration::parse`]). Negative durations are rejected: no
/// configuration field accepts them. On error the message describes the accepted syntax.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const SYNTAX: &str =
        "a non-negative Go duration such as 30s, 1m0s, 1h30m or 250ms (units ns, us, ms, s, m, h)";
    let text = text.trim();
    // "-0s" is zero to Go, but a sign says the writer meant a negative value.
    if text.starts_with('-') {
        return Err(SYNTAX.into());
    }
    match metallb_config::duration::parse(text) {
        Ok(parsed) if !parsed.negative => Ok(parsed.magnitude),
        _ => Err(SYNTAX.into()),
    }
}
