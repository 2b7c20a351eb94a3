//! `Community` aliases and community values in MetalLB's syntax. Kept apart because
//! both the aliases and the `BGPAdvertisement`s parse communities, and an alias that
//! is invalid must make an advertisement using it fail rather than silently drop it.

use std::collections::BTreeMap;

use super::report::{Report, Subject};
use crate::config::Community;
use crate::crd::Community as CommunityObject;

/// Why a community string is not a community.
pub(super) enum CommunityError {
    /// It has the shape of one (`a:b` or `large:a:b:c`) but a bad value.
    Value(String),
    /// It has not: MetalLB then takes it as an alias name.
    NotACommunity,
}

/// MetalLB's community syntax: two `:`-separated 16-bit numbers, or `large:` and
/// three 32-bit numbers; anything with another number of parts is an alias name.
pub(super) fn parse_community(text: &str) -> Result<Community, CommunityError> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |part: &str| part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty();
    match parts.as_slice() {
        [high, low] => match (high.parse::<u16>(), low.parse::<u16>()) {
            (Ok(high), Ok(low)) if number(parts[0]) && number(parts[1]) => {
                Ok(Community::Standard(u32::from(high) << 16 | u32::from(low)))
            }
            _ => Err(CommunityError::Value(format!(
                "{text:?} is not a valid community: each half must be a number from 0 to 65535"
            ))),
        },
        [marker, global, local1, local2] => {
            let parsed: Vec<Option<u32>> = [global, local1, local2]
                .iter()
                .map(|part| number(part).then(|| part.parse::<u32>().ok()).flatten())
                .collect();
            match (*marker, parsed.as_slice()) {
                ("large", [Some(global), Some(local1), Some(local2)]) => {
                    Ok(Community::Large(*global, *local1, *local2))
                }
                ("large", _) => Err(CommunityError::Value(format!(
                    "{text:?} is not a valid large community: each of the three numbers must be from 0 to 4294967295"
                ))),
                _ => Err(CommunityError::Value(format!(
                    "{text:?} is not a valid community: a four-part community must read large:<u32>:<u32>:<u32>"
                ))),
            }
        }
        _ => Err(CommunityError::NotACommunity),
    }
}

/// Alias → its value, or `Err(where it is defined)` for an alias whose definition is
/// invalid (so that an advertisement using it can point there).
pub(super) type Aliases = BTreeMap<String, Result<Community, String>>;

pub(super) fn community_aliases(
    objects: &[(Subject, &CommunityObject)],
    report: &mut Report,
) -> Aliases {
    let mut aliases: Aliases = BTreeMap::new();
    let mut defined_in: BTreeMap<String, String> = BTreeMap::new();
    for (subject, object) in objects {
        for (index, alias) in object.spec.communities.iter().enumerate() {
            let field = format!("spec.communities[{index}]");
            if alias.name.is_empty() {
                subject.problem(
                    report,
                    format!("{field}.name"),
                    "the alias has no name and is left out: give it one",
                );
                continue;
            }
            if let Some(first) = defined_in.get(&alias.name) {
                subject.problem(
                    report,
                    format!("{field}.name"),
                    format!(
                        "alias {:?} is already defined by {first}, which is kept; this definition is left out: rename or remove one",
                        alias.name
                    ),
                );
                continue;
            }
            let place = format!("{} {field}", subject.describe());
            defined_in.insert(alias.name.clone(), place.clone());
            let value = match parse_community(&alias.value) {
                Ok(community) => Ok(community),
                Err(CommunityError::Value(message)) => {
                    subject.problem(
                        report,
                        format!("{field}.value"),
                        format!("{message}; alias {:?} is left out", alias.name),
                    );
                    Err(place)
                }
                Err(CommunityError::NotACommunity) => {
                    subject.problem(
                        report,
                        format!("{field}.value"),
                        format!(
                            "{:?} is not a community: write <0-65535>:<0-65535> or large:<u32>:<u32>:<u32>; alias {:?} is left out",
                            alias.value, alias.name
                        ),
                    );
                    Err(place)
                }
            };
            aliases.insert(alias.name.clone(), value);
        }
    }
    aliases
}

/// Communities are a set (MetalLB keeps them in a map): an alias and a literal of
/// the same value are sent once.
pub(super) fn push_once(communities: &mut Vec<Community>, community: Community) {
    if !communities.contains(&community) {
        communities.push(community);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_follow_metallb_syntax() {
        assert!(matches!(
            parse_community("65535:65281"),
            Ok(Community::Standard(0xffff_ff01))
        ));
        assert!(matches!(
            parse_community("large:1:2:3"),
            Ok(Community::Large(1, 2, 3))
        ));
        assert!(matches!(
            parse_community("65536:1"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("+1:1"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("big:1:2:3"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("large:1:2:-3"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("no-export"),
            Err(CommunityError::NotACommunity)
        ));
        assert!(matches!(
            parse_community("1:2:3"),
            Err(CommunityError::NotACommunity)
        ));
    }
}
