//! Label selectors checked the way MetalLB checks them, so that a selector MetalLB
//! refuses is refused here too (with the field named) instead of matching nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::report::{Report, Subject};
use crate::selector::Selector;

/// Parses a list of selectors the way MetalLB checks them: each must parse, label keys
/// and values must be well-formed, and no selector, expression or value may be
/// repeated. `None` (with problems reported) when any is wrong.
pub(super) fn selectors(
    subject: &Subject,
    field: &str,
    list: &[LabelSelector],
    report: &mut Report,
) -> Option<Vec<Selector>> {
    let mut parsed: Vec<Selector> = Vec::with_capacity(list.len());
    let mut ok = true;
    for (index, selector) in list.iter().enumerate() {
        let path = format!("{field}[{index}]");
        match one_selector(selector) {
            Ok(selector) => {
                if let Some(first) = parsed.iter().position(|seen| *seen == selector) {
                    subject.problem(
                        report,
                        &path,
                        format!("the same selector as {field}[{first}]: remove one of them"),
                    );
                    ok = false;
                }
                parsed.push(selector);
            }
            Err(message) => {
                subject.problem(report, &path, format!("{message}; the object is left out"));
                ok = false;
            }
        }
    }
    ok.then_some(parsed)
}

/// One selector, checked and with its values sorted (so two selectors differing only
/// in value order compare equal, as MetalLB compares them).
pub(super) fn one_selector(selector: &LabelSelector) -> Result<Selector, String> {
    let mut parsed = Selector::parse(selector)?;
    parsed.check_syntax()?;
    for (index, requirement) in parsed.requirements.iter_mut().enumerate() {
        if let crate::selector::Operator::In(values) | crate::selector::Operator::NotIn(values) =
            &mut requirement.operator
        {
            values.sort();
            if let Some(pair) = values.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(format!(
                    "matchExpressions[{index}]: value {:?} is given twice: remove one",
                    pair[0]
                ));
            }
        }
    }
    for (index, requirement) in parsed.requirements.iter().enumerate() {
        if let Some(first) = parsed.requirements[..index]
            .iter()
            .position(|earlier| earlier == requirement)
        {
            return Err(format!(
                "matchExpressions[{index}] repeats matchExpressions[{first}]: remove one"
            ));
        }
    }
    Ok(parsed)
}
