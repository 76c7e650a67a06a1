//! The mapping between bus envelopes and edXML packages: a `dossier.forward` becomes a document
//! package whose `DocumentId` carries the dossier code and the message id (the idempotency key
//! of edXML deliveries), with the whole envelope attached as `envelope.json`; a department's
//! status package becomes an [`AgencyReply`].

use chrono::{FixedOffset, Utc};
use lienthong_core::envelope::Envelope;
use serde_json::{Map, Value};

use super::write::{OutAttachment, write};
use super::*;
use crate::outcome::AgencyReply;

/// Vietnam's offset (UTC+7): edXML dates and timestamps are local time.
fn vn() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero"))
}

/// `ContentId` of the attached envelope.
pub const ENVELOPE_CID: &str = "cid:envelope";

/// The `DocumentId` of the package for `env`: `<sender>,<yyyy/MM/dd>,<ma_ho_so>/<message_id>`,
/// the standard's `<OrganId>,<date>,<number>/<notation>` shape with the dossier code as the
/// number and the message id as the notation. A department's system that keeps one document
/// per `DocumentId` (as document systems do) thereby deduplicates redeliveries: it is the
/// idempotency key of edXML deliveries.
pub fn document_id(env: &Envelope, date: &str) -> String {
    format!("{},{date},{}/{}", env.sender, env.ma_ho_so, env.message_id)
}

/// Split a `DocumentId` made by [`document_id`] into (sender, date, ma_ho_so, message_id).
/// None for a `DocumentId` of another shape.
pub fn split_document_id(id: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = id.splitn(3, ',');
    let sender = parts.next()?;
    let date = parts.next()?;
    let rest = parts.next()?;
    let (ma, message_id) = rest.rsplit_once('/')?;
    if sender.is_empty() || ma.is_empty() || message_id.is_empty() {
        return None;
    }
    Some((sender, date, ma, message_id))
}

/// The document package for a `dossier.forward` from `env.sender` to the unit `to` (code and
/// name), dated by the envelope's `sent_at` (Vietnam time). Subject and content are in Vietnamese; the envelope is attached whole.
pub fn package_for(env: &Envelope, to_code: &str, to_name: &str) -> Package {
    // The envelope's own time, so that a retry (even after midnight) builds the same
    // DocumentId, the idempotency key.
    let when = chrono::DateTime::parse_from_rfc3339(&env.sent_at)
        .map(|t| t.with_timezone(&vn()))
        .unwrap_or_else(|_| Utc::now().with_timezone(&vn()));
    let date = when.format("%Y/%m/%d").to_string();
    let stamp = when.format("%Y/%m/%d %H:%M:%S").to_string();
    let doc_id = document_id(env, &date);
    let applicant = env
        .payload
        .applicant
        .as_ref()
        .map(|a| a.ho_ten.clone())
        .unwrap_or_default();
    Package {
        message_header: MessageHeader {
            from: Some(Organ {
                organ_id: Some(env.sender.clone()),
                ..Default::default()
            }),
            to: vec![Organ {
                organ_id: Some(to_code.to_string()),
                organ_name: Some(to_name.to_string()),
                ..Default::default()
            }],
            document_id: Some(doc_id.clone()),
            code: Some(Code {
                code_number: Some(env.ma_ho_so.clone()),
                code_notation: Some(env.ma_tthc.clone()),
            }),
            promulgation_info: Some(PromulgationInfo {
                place: None,
                promulgation_date: Some(date),
            }),
            document_type: Some(DocumentType {
                kind: None,
                type_detail: None,
                type_name: Some("Hồ sơ liên thông".into()),
            }),
            subject: Some(format!(
                "Hồ sơ liên thông {} (thủ tục {})",
                env.ma_ho_so, env.ma_tthc
            )),
            content: Some(if applicant.is_empty() {
                format!("Hồ sơ {}", env.ma_ho_so)
            } else {
                format!("Hồ sơ {} của {applicant}", env.ma_ho_so)
            }),
            ..Default::default()
        },
        trace_headers: vec![TraceHeader {
            organ_id: Some(env.sender.clone()),
            timestamp: Some(stamp),
        }],
        business: Some(Business {
            document_id: Some(doc_id),
            doc_type: Some("0".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The whole package for `env` as bytes: [`package_for`], then each of the envelope's inline
/// attachments as an edXML attachment (`cid:1`, `cid:2`, … in order; decoded from the
/// envelope's base64 as it is written), then `envelope.json` (the whole envelope, whose
/// claim-checked attachments keep their `reference` for the department to fetch).
///
/// Errors: an inline attachment whose base64 is invalid (named), or a write error.
pub fn build(env: &Envelope, to_code: &str, to_name: &str) -> std::io::Result<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD;
    use base64::read::DecoderReader;
    let pkg = package_for(env, to_code, to_name);
    let json = env.to_bytes();
    let mut files = Vec::new();
    for (i, a) in env.attachments.iter().enumerate() {
        if let Some(b64) = &a.content_base64 {
            files.push(OutAttachment {
                content_id: format!("cid:{}", i + 1),
                attachment_name: a.name.clone(),
                description: None,
                content_type: a.media_type.clone(),
                content: Box::new(DecoderReader::new(b64.as_bytes(), &STANDARD)),
            });
        }
    }
    files.push(OutAttachment {
        content_id: ENVELOPE_CID.into(),
        attachment_name: "envelope.json".into(),
        description: Some("Thông điệp lienthong (lienthong.envelope/1)".into()),
        content_type: "application/json".into(),
        content: Box::new(&json[..]),
    });
    let (out, written) = write(&pkg, files, Vec::with_capacity(json.len() * 2 + 4096))?;
    // The decoded attachments must be what the envelope announced.
    for a in &env.attachments {
        if a.content_base64.is_some()
            && let Some(w) = written
                .iter()
                .find(|w| w.attachment_name.as_deref() == Some(a.name.as_str()))
            && w.sha256 != a.sha256
        {
            return Err(std::io::Error::other(format!(
                "attachment {}: its content's SHA-256 is {}, the envelope says {}",
                a.name, w.sha256, a.sha256
            )));
        }
    }
    Ok(out)
}

/// A department's status package in bus terms. `06` finished becomes status 9 with the
/// document's `Description` as what was done; `02` becomes 3 with it as the reason; codes that
/// change nothing for the dossier (01, 13, 16, unknown) give `status` 0 and are traced, not
/// forwarded (see [`StatusCode::to_bus`]).
///
/// Errors: not a status package, or its `ResponseFor/DocumentId` is not one the bus made.
pub fn reply_from_status(pkg: &Package) -> Result<AgencyReply, String> {
    let h = &pkg.message_header;
    let code = h
        .status_code
        .as_ref()
        .ok_or("not a status package: no MessageHeader/StatusCode")?;
    let doc = h
        .response_for
        .iter()
        .find_map(|r| r.document_id.as_deref())
        .ok_or("the status package has no ResponseFor/DocumentId")?;
    let (_, _, ma, message_id) = split_document_id(doc).ok_or_else(|| {
        format!(
            "ResponseFor/DocumentId {doc:?} is not a lienthong document id (<sender>,<yyyy/MM/dd>,<ma_ho_so>/<message id>)"
        )
    })?;
    let mut result = Map::new();
    result.insert("edxml_status_code".into(), Value::String(code.0.clone()));
    if let Some(m) = code.meaning() {
        result.insert("edxml_status".into(), Value::String(m.into()));
    }
    if let Some(t) = &h.timestamp {
        result.insert("edxml_timestamp".into(), Value::String(t.clone()));
    }
    let status = code.to_bus().map(|s| s.0).unwrap_or(0);
    // A code that changes nothing for the dossier is traced, not forwarded: its reason names
    // the edXML code so that the trace says what the department sent.
    let reason = if status == 0 {
        Some(format!(
            "edXML status {} {}{}",
            code.0,
            code.meaning().unwrap_or("(unknown code)"),
            h.description
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ))
    } else {
        h.description.clone()
    };
    Ok(AgencyReply {
        ma_ho_so: ma.to_string(),
        reference: message_id.to_string(),
        receipt: None,
        status,
        result,
        reason,
        officer: h.staff_info.as_ref().and_then(|s| s.staff.clone()),
    }
    .cleaned())
}

/// A status package answering `document_id`, from `from` (an organisation code), as a
/// department's system would send it: for the mock and for tests.
pub fn status_package(
    from: &str,
    document_id: &str,
    code: &str,
    description: &str,
    staff: &str,
) -> Package {
    let now = Utc::now().with_timezone(&vn());
    Package {
        message_header: MessageHeader {
            from: Some(Organ {
                organ_id: Some(from.to_string()),
                ..Default::default()
            }),
            response_for: vec![ResponseFor {
                organ_id: split_document_id(document_id).map(|p| p.0.to_string()),
                document_id: Some(document_id.to_string()),
                ..Default::default()
            }],
            staff_info: Some(StaffInfo {
                staff: Some(staff.to_string()),
                ..Default::default()
            }),
            status_code: Some(StatusCode(code.to_string())),
            description: Some(description.to_string()),
            timestamp: Some(now.format("%Y/%m/%d %H:%M:%S").to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}
