//! The IPAM's Events on Services, each also logged.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::ACTION;
use crate::model::ServiceKey;
use crate::observe::k8s_events::EventReporter;

/// Events. The ones following a write are news by definition; the refusals, computed
/// on every pass, are published once per Service and distinct message while leading
/// (again after the Service was served in between).
pub(super) struct Reporter {
    pub(super) events: EventReporter,
    pub(super) reported: HashMap<ServiceKey, String>,
}

impl Reporter {
    pub(super) fn now(
        &mut self,
        key: &ServiceKey,
        uid: &Option<String>,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        match type_ {
            EventType::Normal => info!(service = %key, "IPAM: {reason}: {note}"),
            EventType::Warning => warn!(service = %key, "IPAM: {reason}: {note}"),
        }
        self.events
            .publish(key, Some(reference(key, uid)), type_, reason, ACTION, note);
    }

    pub(super) fn once(
        &mut self,
        key: &ServiceKey,
        uid: &Option<String>,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let text = format!("{reason}: {note}");
        if self.reported.get(key) == Some(&text) {
            return;
        }
        self.now(key, uid, type_, reason, note);
        self.reported.insert(key.clone(), text);
    }
}

pub(super) fn reference(key: &ServiceKey, uid: &Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Service".to_string()),
        namespace: Some(key.namespace.to_string()),
        name: Some(key.name.to_string()),
        uid: uid.clone(),
        ..ObjectReference::default()
    }
}
