//! From the desired state and the configuration to [`RuleInputs`]: the one place where
//! the iptables adapter reads the model. Pure, so the agent only decides *when* rules are
//! installed, never what they are.

use crate::config::Config;
use crate::model::{self, DesiredState, IpsetMembers};

use super::{Family, KubeSet, LocalTraffic, MasqueradeMark, RuleInputs};

impl From<model::Family> for Family {
    fn from(family: model::Family) -> Family {
        match family {
            model::Family::V4 => Family::V4,
            model::Family::V6 => Family::V6,
        }
    }
}

impl From<Family> for model::Family {
    fn from(family: Family) -> model::Family {
        match family {
            Family::V4 => model::Family::V4,
            Family::V6 => model::Family::V6,
        }
    }
}

/// The rules `family` should have for `desired`.
///
/// `random_fully`: whether MASQUERADE takes `--random-fully` here (probed once).
/// `kept_sets`: sets whose rules stay whatever the desired state says, because the
/// kernel's sets still hold members (a sync from a partial model).
pub fn rule_inputs(
    desired: &DesiredState,
    config: &Config,
    family: Family,
    random_fully: bool,
    kept_sets: Option<&IpsetMembers>,
) -> RuleInputs {
    let model_family = model::Family::from(family);
    let mut inputs = RuleInputs::new(family);
    inputs.masquerade_all = config.iptables.masquerade_all;
    inputs.random_fully = random_fully;
    if let Ok(mark) = MasqueradeMark::from_bit(u32::from(config.iptables.masquerade_bit)) {
        inputs.masquerade_mark = mark;
    }
    if let Some(cidr) = config
        .cluster_cidrs
        .iter()
        .find(|cidr| model::Family::of(cidr.addr()) == model_family)
    {
        inputs.local_traffic = LocalTraffic::Cidr(*cidr);
    }
    for set in KubeSet::ALL {
        let set_id = model::SetId::new(set, model_family);
        if desired.ipsets.has_members(set_id)
            || kept_sets.is_some_and(|kept| kept.has_members(set_id))
        {
            inputs.non_empty_sets.insert(set);
        }
    }
    inputs
}
