//! `BFDProfile`: the CRD's bounds, and the fields accepted but not acted on.

use std::time::Duration;

use super::report::{Report, Subject};
use super::{DEFAULT_BFD_INTERVAL_MS, DEFAULT_BFD_MULTIPLIER};
use crate::config::BfdProfile;
use crate::crd::BFDProfile;

pub(super) fn bfd_profile(
    subject: &Subject,
    object: &BFDProfile,
    report: &mut Report,
) -> Option<BfdProfile> {
    let spec = &object.spec;
    let mut ok = true;
    let mut check = |field: &str, value: Option<u32>, min: u32, max: u32, unit: &str| {
        if let Some(value) = value
            && !(min..=max).contains(&value)
        {
            subject.problem(
                report,
                format!("spec.{field}"),
                format!(
                    "{value} is out of range: give {min} to {max}{unit}; the profile is left out"
                ),
            );
            ok = false;
        }
    };
    check("receiveInterval", spec.receive_interval, 10, 60_000, " ms");
    check(
        "transmitInterval",
        spec.transmit_interval,
        10,
        60_000,
        " ms",
    );
    check("detectMultiplier", spec.detect_multiplier, 2, 255, "");
    check("echoInterval", spec.echo_interval, 10, 60_000, " ms");
    check("minimumTtl", spec.minimum_ttl, 1, 254, "");
    if !ok {
        return None;
    }
    if spec.echo_mode == Some(true) {
        subject.unsupported(
            report,
            "spec.echoMode",
            "BFD echo mode is not implemented: sessions run in asynchronous mode",
        );
    }
    if spec.echo_interval.is_some() {
        subject.unsupported(
            report,
            "spec.echoInterval",
            "BFD echo mode is not implemented, so the echo interval is not used",
        );
    }
    if spec.minimum_ttl.is_some() {
        subject.unsupported(
            report,
            "spec.minimumTtl",
            "multihop BFD is not implemented: single-hop sessions always use TTL 255",
        );
    }
    let interval = |value: Option<u32>| {
        Duration::from_millis(u64::from(value.unwrap_or(DEFAULT_BFD_INTERVAL_MS)))
    };
    Some(BfdProfile {
        name: subject.name.clone(),
        receive_interval: interval(spec.receive_interval),
        transmit_interval: interval(spec.transmit_interval),
        detect_multiplier: spec
            .detect_multiplier
            .map_or(DEFAULT_BFD_MULTIPLIER, |value| value as u8),
        passive: spec.passive_mode.unwrap_or(false),
        echo_mode: spec.echo_mode.unwrap_or(false),
        minimum_ttl: spec.minimum_ttl.map(|value| value as u8),
    })
}
