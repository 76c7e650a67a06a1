//! Writes an edXML package as a stream: the header from a [`Package`], then each attachment's
//! content base64-encoded from a reader in chunks, so memory stays bounded whatever their size.
//! The output uses the `edXML:` prefix as the national samples do; [`super::read`] reads any
//! prefix.

use std::io::{self, Read, Write};

use base64::Engine as _;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use sha2::{Digest, Sha256};

use super::*;

/// An attachment to write: its fields and its raw (not encoded) content.
pub struct OutAttachment<'a> {
    /// `ContentId` (`cid:1`); referenced from the manifest.
    pub content_id: String,
    /// `AttachmentName` (file name).
    pub attachment_name: String,
    /// `Description`.
    pub description: Option<String>,
    /// `ContentType` (`application/pdf`).
    pub content_type: String,
    /// The content, read once.
    pub content: Box<dyn Read + 'a>,
}

type W<O> = Writer<O>;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn open<O: Write>(w: &mut W<O>, name: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(format!("edXML:{name}"))))
        .map_err(io_err)
}

fn close<O: Write>(w: &mut W<O>, name: &str) -> io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(format!("edXML:{name}"))))
        .map_err(io_err)
}

/// `<edXML:name>text</edXML:name>` when `v` is Some (an empty string writes an empty element).
fn leaf<O: Write>(w: &mut W<O>, name: &str, v: &Option<String>) -> io::Result<()> {
    if let Some(v) = v {
        w.create_element(format!("edXML:{name}"))
            .write_text_content(BytesText::new(v))
            .map_err(io_err)?;
    }
    Ok(())
}

fn organ<O: Write>(w: &mut W<O>, name: &str, o: &Organ) -> io::Result<()> {
    open(w, name)?;
    leaf(w, "OrganId", &o.organ_id)?;
    leaf(w, "OrganName", &o.organ_name)?;
    leaf(w, "OrganizationInCharge", &o.organization_in_charge)?;
    leaf(w, "OrganAdd", &o.organ_add)?;
    leaf(w, "Email", &o.email)?;
    leaf(w, "Telephone", &o.telephone)?;
    leaf(w, "Fax", &o.fax)?;
    leaf(w, "Website", &o.website)?;
    close(w, name)
}

fn staff<O: Write>(w: &mut W<O>, s: &StaffInfo) -> io::Result<()> {
    open(w, "StaffInfo")?;
    leaf(w, "Department", &s.department)?;
    leaf(w, "Staff", &s.staff)?;
    leaf(w, "Mobile", &s.mobile)?;
    leaf(w, "Email", &s.email)?;
    close(w, "StaffInfo")
}

fn message_header<O: Write>(w: &mut W<O>, h: &MessageHeader) -> io::Result<()> {
    open(w, "MessageHeader")?;
    if let Some(f) = &h.from {
        organ(w, "From", f)?;
    }
    for t in &h.to {
        organ(w, "To", t)?;
    }
    for r in &h.response_for {
        open(w, "ResponseFor")?;
        leaf(w, "OrganId", &r.organ_id)?;
        leaf(w, "Code", &r.code)?;
        leaf(w, "PromulgationDate", &r.promulgation_date)?;
        leaf(w, "DocumentId", &r.document_id)?;
        close(w, "ResponseFor")?;
    }
    leaf(w, "DocumentId", &h.document_id)?;
    if let Some(c) = &h.code {
        open(w, "Code")?;
        leaf(w, "CodeNumber", &c.code_number)?;
        leaf(w, "CodeNotation", &c.code_notation)?;
        close(w, "Code")?;
    }
    if let Some(p) = &h.promulgation_info {
        open(w, "PromulgationInfo")?;
        leaf(w, "Place", &p.place)?;
        leaf(w, "PromulgationDate", &p.promulgation_date)?;
        close(w, "PromulgationInfo")?;
    }
    if let Some(d) = &h.document_type {
        open(w, "DocumentType")?;
        leaf(w, "Type", &d.kind)?;
        leaf(w, "TypeDetail", &d.type_detail)?;
        leaf(w, "TypeName", &d.type_name)?;
        close(w, "DocumentType")?;
    }
    leaf(w, "Subject", &h.subject)?;
    leaf(w, "Content", &h.content)?;
    if let Some(s) = &h.signer_info {
        open(w, "SignerInfo")?;
        leaf(w, "Competence", &s.competence)?;
        leaf(w, "Position", &s.position)?;
        leaf(w, "FullName", &s.full_name)?;
        close(w, "SignerInfo")?;
    }
    leaf(w, "DueDate", &h.due_date)?;
    if let Some(o) = &h.other_info {
        open(w, "OtherInfo")?;
        leaf(w, "Priority", &o.priority)?;
        leaf(w, "SphereOfPromulgation", &o.sphere_of_promulgation)?;
        leaf(w, "TyperNotation", &o.typer_notation)?;
        leaf(w, "PromulgationAmount", &o.promulgation_amount)?;
        leaf(w, "PageAmount", &o.page_amount)?;
        leaf(w, "Direction", &o.direction)?;
        if !o.appendixes.is_empty() {
            open(w, "Appendixes")?;
            for a in &o.appendixes {
                leaf(w, "Appendix", &Some(a.clone()))?;
            }
            close(w, "Appendixes")?;
        }
        close(w, "OtherInfo")?;
    }
    leaf(w, "SteeringType", &h.steering_type)?;
    if !h.to_places.is_empty() {
        open(w, "ToPlaces")?;
        for p in &h.to_places {
            leaf(w, "Place", &Some(p.clone()))?;
        }
        close(w, "ToPlaces")?;
    }
    if let Some(s) = &h.staff_info {
        staff(w, s)?;
    }
    leaf(
        w,
        "StatusCode",
        &h.status_code.as_ref().map(|c| c.0.clone()),
    )?;
    leaf(w, "Description", &h.description)?;
    leaf(w, "Timestamp", &h.timestamp)?;
    close(w, "MessageHeader")
}

fn trace_list<O: Write>(w: &mut W<O>, pkg: &Package) -> io::Result<()> {
    if pkg.trace_headers.is_empty() && pkg.business.is_none() {
        return Ok(());
    }
    open(w, "TraceHeaderList")?;
    for t in &pkg.trace_headers {
        open(w, "TraceHeader")?;
        leaf(w, "OrganId", &t.organ_id)?;
        leaf(w, "Timestamp", &t.timestamp)?;
        close(w, "TraceHeader")?;
    }
    if let Some(b) = &pkg.business {
        open(w, "Bussiness")?;
        leaf(w, "DocumentId", &b.document_id)?;
        leaf(w, "BussinessDocType", &b.doc_type)?;
        leaf(w, "BussinessDocReason", &b.doc_reason)?;
        leaf(w, "Paper", &b.paper)?;
        if let Some(d) = &b.document_info {
            open(w, "BussinessDocumentInfo")?;
            leaf(w, "DocumentInfo", &d.document_info)?;
            leaf(w, "DocumentReceiver", &d.document_receiver)?;
            if !d.receiver_list.is_empty() {
                open(w, "ReceiverList")?;
                for r in &d.receiver_list {
                    open(w, "Receiver")?;
                    leaf(w, "OrganId", &r.organ_id)?;
                    leaf(w, "ReceiverType", &r.receiver_type)?;
                    close(w, "Receiver")?;
                }
                close(w, "ReceiverList")?;
            }
            close(w, "BussinessDocumentInfo")?;
        }
        if let Some(s) = &b.staff_info {
            staff(w, s)?;
        }
        close(w, "Bussiness")?;
    }
    close(w, "TraceHeaderList")
}

/// Counts and hashes what passes through to the inner writer's base64 encoder.
struct Tee<'a, E: Write> {
    inner: &'a mut E,
    hash: Sha256,
    size: u64,
}

impl<E: Write> Write for Tee<'_, E> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write `pkg` to `out`, followed by `attachments` (their content base64-encoded as it is read).
/// `pkg.attachments` is ignored: the attachments written are `attachments`, returned with their
/// size and SHA-256. The manifest is `pkg.manifest`, or one `Reference` per attachment when it
/// is empty.
///
/// Errors: writing to `out` or reading an attachment failed.
pub fn write<O: Write>(
    pkg: &Package,
    attachments: Vec<OutAttachment<'_>>,
    out: O,
) -> io::Result<(O, Vec<Attachment>)> {
    let mut w = Writer::new_with_indent(out, b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io_err)?;
    let mut root = BytesStart::new("edXML");
    root.push_attribute(("xmlns", NS));
    root.push_attribute(("xmlns:edXML", NS));
    w.write_event(Event::Start(root)).map_err(io_err)?;
    open(&mut w, "edXMLEnvelope")?;
    open(&mut w, "edXMLHeader")?;
    message_header(&mut w, &pkg.message_header)?;
    trace_list(&mut w, pkg)?;
    close(&mut w, "edXMLHeader")?;
    let manifest: Vec<Reference> = if pkg.manifest.is_empty() {
        attachments
            .iter()
            .map(|a| Reference {
                content_id: Some(a.content_id.clone()),
                content_type: Some(a.content_type.clone()),
                description: a.description.clone(),
                attachment_name: Some(a.attachment_name.clone()),
            })
            .collect()
    } else {
        pkg.manifest.clone()
    };
    open(&mut w, "edXMLBody")?;
    if !manifest.is_empty() {
        let mut m = BytesStart::new("edXML:edXMLManifest");
        m.push_attribute(("version", "1.0"));
        w.write_event(Event::Start(m)).map_err(io_err)?;
        for r in &manifest {
            open(&mut w, "Reference")?;
            leaf(&mut w, "ContentId", &r.content_id)?;
            leaf(&mut w, "ContentType", &r.content_type)?;
            leaf(&mut w, "Description", &r.description)?;
            leaf(&mut w, "AttachmentName", &r.attachment_name)?;
            close(&mut w, "Reference")?;
        }
        close(&mut w, "edXMLManifest")?;
    }
    close(&mut w, "edXMLBody")?;
    close(&mut w, "edXMLEnvelope")?;
    let mut written = Vec::new();
    if !attachments.is_empty() {
        open(&mut w, "AttachmentEncoded")?;
        for mut a in attachments {
            open(&mut w, "Attachment")?;
            leaf(&mut w, "ContentId", &Some(a.content_id.clone()))?;
            leaf(&mut w, "AttachmentName", &Some(a.attachment_name.clone()))?;
            leaf(&mut w, "Description", &a.description)?;
            leaf(&mut w, "ContentType", &Some(a.content_type.clone()))?;
            open(&mut w, "ContentTransferEncoded")?;
            let (size, sha256) = {
                let inner = w.get_mut();
                let mut enc = base64::write::EncoderWriter::new(
                    inner,
                    &base64::engine::general_purpose::STANDARD,
                );
                let mut tee = Tee {
                    inner: &mut enc,
                    hash: Sha256::new(),
                    size: 0,
                };
                io::copy(&mut a.content, &mut tee).map_err(|e| {
                    io::Error::new(e.kind(), format!("attachment {}: {e}", a.attachment_name))
                })?;
                let size = tee.size;
                let digest = tee.hash.finalize();
                enc.finish()?;
                (size, digest.iter().map(|b| format!("{b:02x}")).collect())
            };
            close(&mut w, "ContentTransferEncoded")?;
            close(&mut w, "Attachment")?;
            written.push(Attachment {
                content_id: Some(a.content_id),
                attachment_name: Some(a.attachment_name),
                description: a.description,
                content_type: Some(a.content_type),
                size,
                sha256,
            });
        }
        close(&mut w, "AttachmentEncoded")?;
    }
    w.write_event(Event::End(BytesEnd::new("edXML")))
        .map_err(io_err)?;
    Ok((w.into_inner(), written))
}

/// Base64 of `bytes` (standard alphabet, padded): for callers that already hold small content.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
