//! edXML (QCVN 102:2016/BTTTT) document-exchange packages: the data model, the status codes and
//! their mapping to the bus's `TrangThaiHoSo`, and the reader and writer ([`read`], [`write`]).
//!
//! A package is one XML document: root `edXML` (namespace [`NS`]) → `edXMLEnvelope` →
//! `edXMLHeader` (`MessageHeader`, `TraceHeaderList`, an XML-DSig `Signature`) and
//! `edXMLBody/edXMLManifest/Reference`; the attachments sit outside the envelope in
//! `AttachmentEncoded/Attachment`, base64 in `ContentTransferEncoded`. Element names here and in
//! the JSON of [`Package`] are the standard's own (including its spelling `Bussiness`).
//! Facts are from docs/reference/edxml.md and the real samples in `schemas/samples/edxml/`;
//! the official list of status codes was not found, so unknown codes are kept verbatim.

/// Envelopes to packages and status packages to replies.
pub mod dossier;
/// Reading packages (streaming).
pub mod read;
/// Writing packages (streaming).
pub mod write;

use lienthong_core::envelope::TrangThaiHoSo;
use serde::{Deserialize, Serialize};

/// The edXML namespace URI (QCVN 102:2016).
pub const NS: &str = "http://www.mic.gov.vn/TBT/QCVN_102_2016";

/// An organisation in `From`, `To` (QCVN 102:2016 `MessageHeader`). Absent elements are `None`;
/// an empty element is `Some("")`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Organ {
    /// Organisation code (`000.00.00.H41`): the same code family as the bus's unit codes.
    pub organ_id: Option<String>,
    /// `OrganName`.
    pub organ_name: Option<String>,
    /// `OrganizationInCharge`.
    pub organization_in_charge: Option<String>,
    /// `OrganAdd` (address).
    pub organ_add: Option<String>,
    /// `Email`.
    pub email: Option<String>,
    /// `Telephone`.
    pub telephone: Option<String>,
    /// `Fax`.
    pub fax: Option<String>,
    /// `Website`.
    pub website: Option<String>,
}

/// `Code`: the document's number and notation (`7816` / `VPCP-TTĐT`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Code {
    /// `CodeNumber`.
    pub code_number: Option<String>,
    /// `CodeNotation`.
    pub code_notation: Option<String>,
}

/// `PromulgationInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PromulgationInfo {
    /// `Place`.
    pub place: Option<String>,
    /// `PromulgationDate`, `yyyy/MM/dd`.
    pub promulgation_date: Option<String>,
}

/// `DocumentType`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DocumentType {
    /// `Type`.
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    /// `TypeDetail`.
    pub type_detail: Option<String>,
    /// `TypeName` (e.g. `Công văn`).
    pub type_name: Option<String>,
}

/// `SignerInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignerInfo {
    /// `Competence`.
    pub competence: Option<String>,
    /// `Position`.
    pub position: Option<String>,
    /// `FullName`.
    pub full_name: Option<String>,
}

/// `OtherInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OtherInfo {
    /// `Priority`.
    pub priority: Option<String>,
    /// `SphereOfPromulgation`.
    pub sphere_of_promulgation: Option<String>,
    /// `TyperNotation`.
    pub typer_notation: Option<String>,
    /// `PromulgationAmount`.
    pub promulgation_amount: Option<String>,
    /// `PageAmount`.
    pub page_amount: Option<String>,
    /// `Direction`.
    pub direction: Option<String>,
    /// `Appendixes/Appendix`, in order.
    #[serde(default)]
    pub appendixes: Vec<String>,
}

/// `ResponseFor`: the document a reply or status refers to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResponseFor {
    /// `OrganId` of the original sender.
    pub organ_id: Option<String>,
    /// `Code` (`7816/VPCP-TTĐT`), as text.
    pub code: Option<String>,
    /// `PromulgationDate`.
    pub promulgation_date: Option<String>,
    /// `DocumentId` of the original document.
    pub document_id: Option<String>,
}

/// `StaffInfo`: the officer who handled it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaffInfo {
    /// `Department`.
    pub department: Option<String>,
    /// `Staff` (full name).
    pub staff: Option<String>,
    /// `Mobile`.
    pub mobile: Option<String>,
    /// `Email`.
    pub email: Option<String>,
}

/// `MessageHeader`. A document package has `To`, `DocumentId`, `Code`…; a status package has
/// `ResponseFor`, `StaffInfo`, `StatusCode`, `Description` and `Timestamp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageHeader {
    /// `From`.
    pub from: Option<Organ>,
    /// `To`, one per receiving organisation.
    #[serde(default)]
    pub to: Vec<Organ>,
    /// `DocumentId`: `<OrganId>,<yyyy/MM/dd>,<number>/<notation>`.
    pub document_id: Option<String>,
    /// `Code`.
    pub code: Option<Code>,
    /// `PromulgationInfo`.
    pub promulgation_info: Option<PromulgationInfo>,
    /// `DocumentType`.
    pub document_type: Option<DocumentType>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Content`.
    pub content: Option<String>,
    /// `SignerInfo`.
    pub signer_info: Option<SignerInfo>,
    /// `DueDate`, `yyyy/MM/dd`.
    pub due_date: Option<String>,
    /// `OtherInfo`.
    pub other_info: Option<OtherInfo>,
    /// `SteeringType`.
    pub steering_type: Option<String>,
    /// `ToPlaces/Place`, in order.
    #[serde(default)]
    pub to_places: Vec<String>,
    /// `ResponseFor`, one per document answered.
    #[serde(default)]
    pub response_for: Vec<ResponseFor>,
    /// `StaffInfo` (status packages).
    pub staff_info: Option<StaffInfo>,
    /// `StatusCode` (status packages), verbatim.
    pub status_code: Option<StatusCode>,
    /// `Description` (status packages).
    pub description: Option<String>,
    /// `Timestamp` (status packages), `yyyy/MM/dd HH:mm:ss`.
    pub timestamp: Option<String>,
}

/// `TraceHeader`: one per hop the package went through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TraceHeader {
    /// `OrganId` of the hop.
    pub organ_id: Option<String>,
    /// `Timestamp`, `yyyy/MM/dd HH:mm:ss`.
    pub timestamp: Option<String>,
}

/// `Receiver` in `BussinessDocumentInfo/ReceiverList`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Receiver {
    /// `OrganId`.
    pub organ_id: Option<String>,
    /// `ReceiverType`.
    pub receiver_type: Option<String>,
}

/// `BussinessDocumentInfo` (spelled so in the standard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BusinessDocumentInfo {
    /// `DocumentInfo`.
    pub document_info: Option<String>,
    /// `DocumentReceiver`.
    pub document_receiver: Option<String>,
    /// `ReceiverList/Receiver`.
    #[serde(default)]
    pub receiver_list: Vec<Receiver>,
}

/// `Bussiness` (spelled so): what the package does to an earlier document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Business {
    /// `DocumentId` of the document concerned.
    pub document_id: Option<String>,
    /// `BussinessDocType`: 0 new, 1 revocation, 2 update, 3 replacement (the values seen in
    /// the samples), verbatim.
    #[serde(rename = "BussinessDocType")]
    pub doc_type: Option<String>,
    /// `BussinessDocReason`.
    #[serde(rename = "BussinessDocReason")]
    pub doc_reason: Option<String>,
    /// `Paper`.
    pub paper: Option<String>,
    /// `BussinessDocumentInfo`.
    #[serde(rename = "BussinessDocumentInfo")]
    pub document_info: Option<BusinessDocumentInfo>,
    /// `StaffInfo`.
    pub staff_info: Option<StaffInfo>,
}

impl Business {
    /// `BussinessDocType` in words: `new`, `revocation`, `update`, `replacement`, or the
    /// value itself when it is none of those.
    pub fn doc_type_name(&self) -> Option<&str> {
        self.doc_type.as_deref().map(|t| match t.trim() {
            "0" => "new",
            "1" => "revocation",
            "2" => "update",
            "3" => "replacement",
            other => other,
        })
    }
}

/// `edXMLManifest/Reference`: one attachment announced in the body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Reference {
    /// `ContentId` (`cid:209`).
    pub content_id: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `AttachmentName`.
    pub attachment_name: Option<String>,
}

/// One `AttachmentEncoded/Attachment` as read: its fields and what its decoded content was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    /// `ContentId`.
    pub content_id: Option<String>,
    /// `AttachmentName`.
    pub attachment_name: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// Decoded size in bytes.
    pub size: u64,
    /// SHA-256 of the decoded content, lower-case hex.
    pub sha256: String,
}

/// A whole package (without attachment content, which is streamed; see [`read::read`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Package {
    /// `MessageHeader`.
    pub message_header: MessageHeader,
    /// `TraceHeaderList/TraceHeader`, in hop order.
    #[serde(default)]
    pub trace_headers: Vec<TraceHeader>,
    /// `TraceHeaderList/Bussiness`.
    pub business: Option<Business>,
    /// Whether the header carries an XML-DSig `Signature` (kept by the reader as present; the
    /// signature is not verified).
    #[serde(default)]
    pub signed: bool,
    /// `edXMLBody/edXMLManifest/Reference`.
    #[serde(default)]
    pub manifest: Vec<Reference>,
    /// `AttachmentEncoded/Attachment`, in document order.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

impl Package {
    /// Whether this is a status package (its header has a `StatusCode`).
    pub fn is_status(&self) -> bool {
        self.message_header.status_code.is_some()
    }
}

/// An edXML `StatusCode`, kept verbatim (`"03"`); [`StatusCode::meaning`] and
/// [`StatusCode::to_bus`] know the codes seen in practice: 01, 02, 03, 04, 05, 06, 13, 15, 16.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusCode(pub String);

impl StatusCode {
    /// 01: the package arrived at the receiver's system.
    pub const ARRIVED: &'static str = "01";
    /// 02: rejected by the receiver.
    pub const REJECTED: &'static str = "02";
    /// 03: accepted, registered in the incoming-document book.
    pub const ACCEPTED: &'static str = "03";
    /// 04: assigned to an officer.
    pub const ASSIGNED: &'static str = "04";
    /// 05: being handled.
    pub const HANDLING: &'static str = "05";
    /// 06: finished.
    pub const FINISHED: &'static str = "06";
    /// 13: the sender asks to recall the document.
    pub const RECALL_REQUESTED: &'static str = "13";
    /// 15: recall or update accepted.
    pub const RECALL_ACCEPTED: &'static str = "15";
    /// 16: recall or update refused.
    pub const RECALL_REFUSED: &'static str = "16";

    /// What the code means, or None for a code not in the list above.
    pub fn meaning(&self) -> Option<&'static str> {
        Some(match self.0.trim() {
            Self::ARRIVED => "arrived",
            Self::REJECTED => "rejected",
            Self::ACCEPTED => "accepted (registered)",
            Self::ASSIGNED => "assigned",
            Self::HANDLING => "being handled",
            Self::FINISHED => "finished",
            Self::RECALL_REQUESTED => "recall requested",
            Self::RECALL_ACCEPTED => "recall or update accepted",
            Self::RECALL_REFUSED => "recall or update refused",
            _ => return None,
        })
    }

    /// The bus status (`TrangThaiHoSo`, DVCQG values) a department's status means for the
    /// dossier, or None when it changes nothing (01 arrived is the hand-over receipt; 13 and 16
    /// are about a recall, not the dossier; an unknown code is reported, not guessed):
    ///
    /// | edXML | bus |
    /// |---|---|
    /// | 01 arrived | — (hand-over receipt) |
    /// | 02 rejected | 3 not accepted |
    /// | 03 accepted | 2 accepted |
    /// | 04 assigned, 05 being handled | 4 in progress |
    /// | 06 finished | 9 processed |
    /// | 13 recall requested, 16 recall refused | — |
    /// | 15 recall accepted | 8 processing stopped |
    ///
    /// This mapping is lienthong's reading of the code meanings (docs/reference/edxml.md); QCVN
    /// 102:2016 does not define it.
    pub fn to_bus(&self) -> Option<TrangThaiHoSo> {
        match self.0.trim() {
            Self::REJECTED => Some(TrangThaiHoSo::NOT_ACCEPTED),
            Self::ACCEPTED => Some(TrangThaiHoSo::ACCEPTED),
            Self::ASSIGNED | Self::HANDLING => Some(TrangThaiHoSo::IN_PROGRESS),
            Self::FINISHED => Some(TrangThaiHoSo::PROCESSED),
            Self::RECALL_ACCEPTED => Some(TrangThaiHoSo::STOPPED),
            _ => None,
        }
    }

    /// The edXML status to send a department for a bus status, or None when there is none:
    /// 2 → 03, 3 → 02, 4 → 05, 9 and 10 → 06, 7 (withdrawn) and 8 (stopped) → 13 (the bus
    /// asks the department to recall the document); 1, 5 and 6 have no edXML status.
    pub fn from_bus(s: TrangThaiHoSo) -> Option<StatusCode> {
        let c = match s {
            TrangThaiHoSo::ACCEPTED => Self::ACCEPTED,
            TrangThaiHoSo::NOT_ACCEPTED => Self::REJECTED,
            TrangThaiHoSo::IN_PROGRESS => Self::HANDLING,
            TrangThaiHoSo::PROCESSED | TrangThaiHoSo::RESULT_RETURNED => Self::FINISHED,
            TrangThaiHoSo::WITHDRAWN | TrangThaiHoSo::STOPPED => Self::RECALL_REQUESTED,
            _ => return None,
        };
        Some(StatusCode(c.to_string()))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn every_known_code_has_a_meaning_and_unknown_codes_are_kept() {
        for c in ["01", "02", "03", "04", "05", "06", "13", "15", "16"] {
            assert!(StatusCode(c.into()).meaning().is_some(), "{c}");
        }
        let odd = StatusCode("99".into());
        assert_eq!(odd.meaning(), None);
        assert_eq!(odd.to_bus(), None);
        assert_eq!(odd.0, "99");
    }

    #[test]
    fn bus_statuses_map_back_to_the_same_edxml_meaning() {
        for v in 1..=10u8 {
            let s = TrangThaiHoSo(v);
            if let Some(code) = StatusCode::from_bus(s)
                && let Some(back) = code.to_bus()
            {
                // 10 returned → 06 finished → 9 processed is the one lossy step.
                if v != 10 {
                    assert_eq!(back, s, "{v} → {} → {}", code.0, back.0);
                }
            }
        }
    }
}
