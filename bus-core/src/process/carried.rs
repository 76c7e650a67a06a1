//! What a hand-over carries besides the route: the results of the steps done before it, and
//! the data the centre added since (shared by the rules and the blocked-step retries).

use serde_json::{Map, Value};

use crate::envelope::Envelope;

use super::state::{Process, StepRun};

/// Put the results of `steps` into `data`: each as `ket_qua_<step id>`, and its top-level fields
/// where `data` lacks them.
pub fn carry_results<'a>(data: &mut Map<String, Value>, steps: impl Iterator<Item = &'a StepRun>) {
    for s in steps {
        if let Some(r) = &s.result {
            data.insert(
                format!("ket_qua_{}", snake_id(&s.id)),
                Value::Object(r.clone()),
            );
            for (k, v) in r {
                if !data.contains_key(k) {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Merge the keys of the centre's `payload.data` (except `ngay_tiep_nhan`) and its new
/// attachments into the dossier's forward.
pub fn merge_centre_data(p: &mut Process, env: &Envelope) {
    let mut data = p.forward.payload.data.clone().unwrap_or_default();
    for (k, v) in env.payload.data.clone().unwrap_or_default() {
        if k != "ngay_tiep_nhan" {
            data.insert(k, v);
        }
    }
    p.forward.payload.data = Some(data);
    p.forward
        .attachments
        .extend(env.attachments.iter().cloned());
}

/// A step id as a JSON key: `khai-sinh` → `khai_sinh`.
pub fn snake_id(id: &str) -> String {
    id.replace(['-', '.', ' '], "_")
}
