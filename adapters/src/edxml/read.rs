//! Reads an edXML package as a stream: header fields into a [`Package`], attachment content
//! base64-decoded in chunks into an [`AttachmentSink`] with its size and SHA-256, so memory stays
//! bounded (about 200 KiB) whatever the size of the attachments.
//!
//! Rules, in the order they apply:
//! - A UTF-8 byte order mark is skipped; a UTF-16 one is refused (convert to UTF-8).
//! - Nothing may come before the XML declaration: any byte before `<?xml` is an error giving
//!   the count. A package without a declaration may start with whitespace.
//! - Encoding: UTF-8 only. A declared `encoding` other than UTF-8 (e.g. `windows-1258`,
//!   `TCVN3`) is refused with an error naming it, never read as mojibake; bytes that are not
//!   valid UTF-8 are an error with their position.
//! - A DOCTYPE is refused (no entity expansion, no external fetches).
//! - Elements are matched on namespace URI + local name, so `edXML:`-prefixed, default-namespace
//!   and other-prefix documents read the same. An element in another namespace is refused,
//!   except inside `Signature` (XML-DSig, skipped whatever its namespace). Elements in no
//!   namespace are accepted only inside `AttachmentEncoded`, where real packages use them.
//! - CRLF and tabs are whitespace; text is trimmed; an empty element reads as `""`.
//! - Unknown elements in the edXML namespace are skipped (later versions may add some).

use std::io::{self, BufRead, BufReader, Read};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use sha2::{Digest, Sha256};

use super::*;

/// Where decoded attachment content goes. Calls come in order: `start`, any number of
/// `write`, then `end` with the attachment's fields, size and SHA-256.
pub trait AttachmentSink {
    /// Attachment number `index` (0-based, document order) starts.
    fn start(&mut self, index: usize) -> io::Result<()>;
    /// A chunk of decoded bytes (at most 48 KiB).
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// The attachment is complete. Its fields are those read so far: the ones after
    /// `ContentTransferEncoded` in the document are filled in the returned [`Package`].
    fn end(&mut self, attachment: &Attachment) -> io::Result<()>;
}

/// Keeps nothing: the reader still records each attachment's size and SHA-256.
pub struct Discard;

impl AttachmentSink for Discard {
    fn start(&mut self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Attachment) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps every attachment's bytes in memory (small packages and tests).
#[derive(Default)]
pub struct InMemory(pub Vec<Vec<u8>>);

impl AttachmentSink for InMemory {
    fn start(&mut self, _: usize) -> io::Result<()> {
        self.0.push(Vec::new());
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if let Some(last) = self.0.last_mut() {
            last.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn end(&mut self, _: &Attachment) -> io::Result<()> {
        Ok(())
    }
}

/// Limits of [`read`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest total of element text outside attachment content, in bytes (default 4 MiB).
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 4 << 20,
        }
    }
}

/// Why a package could not be read. `Display` gives the reason and, where there is one, the
/// byte position in the input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Bytes before the XML declaration.
    #[error(
        "{0} byte(s) before the XML declaration at the start of the package; an edXML package must start with `<?xml` (a UTF-8 byte order mark is allowed)"
    )]
    BeforeDeclaration(u64),
    /// A declared encoding other than UTF-8, or a UTF-16 byte order mark.
    #[error(
        "the package is in {0}; lienthong reads edXML in UTF-8 only: convert it first (e.g. `iconv -f {0} -t UTF-8`)"
    )]
    Encoding(String),
    /// A DOCTYPE.
    #[error("a DOCTYPE is not accepted in an edXML package (at byte {0})")]
    Doctype(u64),
    /// Not well-formed XML, or not UTF-8.
    #[error("not well-formed XML at byte {pos}: {msg}")]
    Xml {
        /// Byte position in the input.
        pos: u64,
        /// What the XML parser said.
        msg: String,
    },
    /// The root is not `edXML` (or `edXMLEnvelope`) in the edXML namespace.
    #[error("the root element is <{found}>; expected <edXML> in namespace {NS}")]
    Root {
        /// The root's qualified name and namespace.
        found: String,
    },
    /// An element in a namespace other than edXML's.
    #[error("<{name}> at byte {pos} is in namespace {ns:?}; expected {NS}")]
    Namespace {
        /// Qualified name as written.
        name: String,
        /// Its namespace URI (empty: none).
        ns: String,
        /// Byte position.
        pos: u64,
    },
    /// Attachment content that is not base64.
    #[error("attachment {which}: invalid base64: {msg}")]
    Base64 {
        /// `#n (ContentId, AttachmentName)` as far as known.
        which: String,
        /// What is wrong, with the character position in the attachment's content.
        msg: String,
    },
    /// More header text than [`Limits::max_text_bytes`].
    #[error("more than {0} bytes of header text: not an edXML package this reader accepts")]
    TooLarge(usize),
    /// Reading the input or writing an attachment failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

const BUF: usize = 64 << 10;

fn engine() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// Read a whole package held in memory, keeping no attachment content.
pub fn read_bytes(bytes: &[u8]) -> Result<Package, ReadError> {
    read(bytes, &mut Discard, Limits::default())
}

/// Read a package from `input`, streaming attachment content into `sink`.
///
/// Errors: see [`ReadError`]; the rules are in this module's documentation.
pub fn read<R: Read>(
    input: R,
    sink: &mut dyn AttachmentSink,
    limits: Limits,
) -> Result<Package, ReadError> {
    let mut input = BufReader::with_capacity(BUF, input);
    let skipped_bom = prelude(&mut input)?;
    let mut r = NsReader::from_reader(input);
    let mut st = State {
        pkg: Package::default(),
        stack: Vec::new(),
        text: String::new(),
        text_total: 0,
        limits,
        extra: skipped_bom,
        root_seen: false,
    };
    // Elements open, the root included; whether the root has been closed; whether the last
    // attachment content was streamed and its end tag must come next.
    let mut open = 0usize;
    let mut root_closed = false;
    let mut after_content = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let pos = r.buffer_position() + st.extra;
        let (res, ev) = r
            .read_resolved_event_into(&mut buf)
            .map_err(|e| ReadError::Xml {
                pos,
                msg: e.to_string(),
            })?;
        let ns = match &res {
            ResolveResult::Bound(n) => Some(n.as_ref().to_string()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => {
                return Err(ReadError::Xml {
                    pos,
                    msg: format!("undeclared namespace prefix {:?}", p),
                });
            }
        };
        if after_content {
            let interrupted = match &ev {
                Event::End(_) => None,
                Event::Text(t) if t.xml10_content().trim().is_empty() => None,
                Event::CData(_) => Some("a CDATA section"),
                Event::Comment(_) => Some("a comment"),
                Event::PI(_) => Some("a processing instruction"),
                Event::Start(_) | Event::Empty(_) => Some("an element"),
                Event::Eof => Some("the end of the package"),
                _ => Some("other content"),
            };
            if let Some(what) = interrupted {
                return Err(ReadError::Base64 {
                    which: st.which_attachment(),
                    msg: format!(
                        "its content is interrupted by {what} at byte {pos}; attachment content must be one run of base64 text"
                    ),
                });
            }
            after_content = false;
        }
        if root_closed {
            let junk = match &ev {
                Event::Start(_) | Event::Empty(_) | Event::CData(_) => true,
                Event::Text(t) => !t.xml10_content().trim().is_empty(),
                _ => false,
            };
            if junk {
                return Err(ReadError::Xml {
                    pos,
                    msg: "content after the end of the root element".into(),
                });
            }
        }
        match ev {
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| ReadError::Xml {
                        pos,
                        msg: e.to_string(),
                    })?;
                    let enc = enc.to_string();
                    if !enc.eq_ignore_ascii_case("utf-8") && !enc.eq_ignore_ascii_case("utf8") {
                        return Err(ReadError::Encoding(enc));
                    }
                }
            }
            Event::DocType(_) => return Err(ReadError::Doctype(pos)),
            Event::Start(ref s) | Event::Empty(ref s) if !st.root_seen => {
                let local = s.local_name().as_ref().to_string();
                if ns.as_deref() != Some(NS) || (local != "edXML" && local != "edXMLEnvelope") {
                    return Err(ReadError::Root {
                        found: format!(
                            "{} in namespace {:?}",
                            s.name().as_ref(),
                            ns.unwrap_or_default()
                        ),
                    });
                }
                st.root_seen = true;
                if matches!(ev, Event::Start(_)) {
                    open = 1;
                } else {
                    root_closed = true;
                }
                if local == "edXMLEnvelope" && open == 1 {
                    st.stack.push(local);
                }
            }
            Event::Start(s) => {
                let local = s.local_name().as_ref().to_string();
                if local == "Signature" && st.in_header() {
                    st.pkg.signed = true;
                    let end = s.to_end().into_owned();
                    let mut skip = Vec::new();
                    r.read_to_end_into(end.name(), &mut skip)
                        .map_err(|e| ReadError::Xml {
                            pos,
                            msg: e.to_string(),
                        })?;
                    continue;
                }
                st.check_ns(&s, ns.as_deref(), &local, pos)?;
                open += 1;
                st.stack.push(local);
                st.text.clear();
                st.on_start();
                if st.at(&["Attachment", "ContentTransferEncoded"]) {
                    let at = r.buffer_position() + st.extra;
                    let n = stream_base64(r.get_mut(), &mut st, sink, at)?;
                    st.extra += n;
                    after_content = true;
                }
            }
            Event::Empty(s) => {
                let local = s.local_name().as_ref().to_string();
                if local == "Signature" && st.in_header() {
                    st.pkg.signed = true;
                    continue;
                }
                st.check_ns(&s, ns.as_deref(), &local, pos)?;
                st.stack.push(local);
                st.text.clear();
                st.on_start();
                if st.at(&["Attachment", "ContentTransferEncoded"]) {
                    sink.start(st.pkg.attachments.len().saturating_sub(1))?;
                    st.end_attachment(sink, 0, Sha256::new())?;
                }
                st.on_end();
                st.stack.pop();
            }
            Event::Text(t) => st.push_text(&t.xml10_content())?,
            Event::CData(t) => {
                let t = t.as_ref().to_string();
                st.push_text(&t)?
            }
            Event::GeneralRef(g) => {
                let ent = format!("&{};", &*g);
                let v = quick_xml::escape::unescape(&ent).map_err(|e| ReadError::Xml {
                    pos,
                    msg: format!("entity {ent}: {e}"),
                })?;
                st.push_text(&v)?
            }
            Event::End(_) => {
                open = open.saturating_sub(1);
                if open == 0 {
                    root_closed = true;
                }
                if st.stack.is_empty() {
                    continue;
                }
                st.on_end();
                st.stack.pop();
                st.text.clear();
            }
            Event::Eof => {
                if open > 0 {
                    return Err(ReadError::Xml {
                        pos,
                        msg: format!(
                            "the package ends inside <{}> ({open} element(s) still open): it is cut off",
                            st.stack.last().map(String::as_str).unwrap_or("edXML")
                        ),
                    });
                }
                break;
            }
            _ => {}
        }
    }
    if !st.root_seen {
        return Err(ReadError::Xml {
            pos: 0,
            msg: "no root element".into(),
        });
    }
    Ok(st.pkg)
}

/// Skip a UTF-8 BOM, refuse a UTF-16 one and anything before the XML declaration. Returns the
/// number of bytes consumed (the BOM).
fn prelude<R: Read>(input: &mut BufReader<R>) -> Result<u64, ReadError> {
    let head = input.fill_buf()?;
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(ReadError::Encoding("UTF-16".into()));
    }
    let bom = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        3
    } else {
        0
    };
    let rest = &head[bom..];
    let lead = rest.iter().position(|b| *b == b'<').unwrap_or(rest.len());
    if lead > 0 {
        let all_space = rest[..lead].iter().all(u8::is_ascii_whitespace);
        let decl_follows = rest[lead..].starts_with(b"<?xml");
        if !all_space || decl_follows {
            return Err(ReadError::BeforeDeclaration(lead as u64));
        }
    }
    input.consume(bom);
    Ok(bom as u64)
}

struct State {
    pkg: Package,
    /// Local names below the root.
    stack: Vec<String>,
    text: String,
    text_total: usize,
    limits: Limits,
    /// Bytes consumed outside quick-xml (BOM, attachment content), for error positions.
    extra: u64,
    root_seen: bool,
}

impl State {
    /// Whether the open elements end with `suffix`.
    fn at(&self, suffix: &[&str]) -> bool {
        self.stack.len() >= suffix.len()
            && self.stack[self.stack.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(a, b)| a == b)
    }

    fn in_header(&self) -> bool {
        self.stack.iter().any(|s| s == "edXMLHeader")
    }

    fn in_attachments(&self) -> bool {
        self.stack.iter().any(|s| s == "AttachmentEncoded")
    }

    fn check_ns(
        &self,
        s: &quick_xml::events::BytesStart,
        ns: Option<&str>,
        local: &str,
        pos: u64,
    ) -> Result<(), ReadError> {
        let ok = match ns {
            Some(u) => u == NS,
            // Real packages write the attachment elements without a namespace.
            None => self.in_attachments() || local == "AttachmentEncoded",
        };
        if ok {
            Ok(())
        } else {
            Err(ReadError::Namespace {
                name: s.name().as_ref().to_string(),
                ns: ns.unwrap_or_default().to_string(),
                pos,
            })
        }
    }

    fn push_text(&mut self, t: &str) -> Result<(), ReadError> {
        self.text_total += t.len();
        if self.text_total > self.limits.max_text_bytes {
            return Err(ReadError::TooLarge(self.limits.max_text_bytes));
        }
        self.text.push_str(t);
        Ok(())
    }

    /// A group element opened: start its record.
    fn on_start(&mut self) {
        if self.at(&["MessageHeader", "To"]) {
            self.pkg.message_header.to.push(Organ::default());
        } else if self.at(&["MessageHeader", "ResponseFor"]) {
            self.pkg
                .message_header
                .response_for
                .push(ResponseFor::default());
        } else if self.at(&["TraceHeaderList", "TraceHeader"]) {
            self.pkg.trace_headers.push(TraceHeader::default());
        } else if self.at(&["TraceHeaderList", "Bussiness"]) {
            self.pkg.business.get_or_insert_with(Business::default);
        } else if self.at(&["ReceiverList", "Receiver"]) {
            if let Some(b) = &mut self.pkg.business {
                b.document_info
                    .get_or_insert_with(Default::default)
                    .receiver_list
                    .push(Receiver::default());
            }
        } else if self.at(&["edXMLManifest", "Reference"]) {
            self.pkg.manifest.push(Reference::default());
        } else if self.at(&["AttachmentEncoded", "Attachment"]) {
            self.pkg.attachments.push(Attachment::default());
        }
    }

    /// A leaf closed: put its text where it belongs.
    fn on_end(&mut self) {
        let v = Some(self.text.trim().to_string());
        let n = self.stack.len();
        if n < 2 {
            return;
        }
        let leaf = self.stack[n - 1].as_str();
        let parent = self.stack[n - 2].as_str();
        let grand = if n >= 3 {
            self.stack[n - 3].as_str()
        } else {
            ""
        };
        let h = &mut self.pkg.message_header;
        match (grand, parent, leaf) {
            (_, "MessageHeader", f) => match f {
                "DocumentId" => h.document_id = v,
                "Subject" => h.subject = v,
                "Content" => h.content = v,
                "DueDate" => h.due_date = v,
                "SteeringType" => h.steering_type = v,
                "StatusCode" => h.status_code = v.map(StatusCode),
                "Description" => h.description = v,
                "Timestamp" => h.timestamp = v,
                _ => {}
            },
            ("MessageHeader", "From", f) => {
                set_organ(h.from.get_or_insert_with(Organ::default), f, v)
            }
            ("MessageHeader", "To", f) => {
                if let Some(o) = h.to.last_mut() {
                    set_organ(o, f, v)
                }
            }
            ("MessageHeader", "Code", f) => {
                let c = h.code.get_or_insert_with(Code::default);
                match f {
                    "CodeNumber" => c.code_number = v,
                    "CodeNotation" => c.code_notation = v,
                    _ => {}
                }
            }
            ("MessageHeader", "PromulgationInfo", f) => {
                let p = h.promulgation_info.get_or_insert_with(Default::default);
                match f {
                    "Place" => p.place = v,
                    "PromulgationDate" => p.promulgation_date = v,
                    _ => {}
                }
            }
            ("MessageHeader", "DocumentType", f) => {
                let d = h.document_type.get_or_insert_with(Default::default);
                match f {
                    "Type" => d.kind = v,
                    "TypeDetail" => d.type_detail = v,
                    "TypeName" => d.type_name = v,
                    _ => {}
                }
            }
            ("MessageHeader", "SignerInfo", f) => {
                let s = h.signer_info.get_or_insert_with(Default::default);
                match f {
                    "Competence" => s.competence = v,
                    "Position" => s.position = v,
                    "FullName" => s.full_name = v,
                    _ => {}
                }
            }
            ("MessageHeader", "OtherInfo", f) => {
                let o = h.other_info.get_or_insert_with(Default::default);
                match f {
                    "Priority" => o.priority = v,
                    "SphereOfPromulgation" => o.sphere_of_promulgation = v,
                    "TyperNotation" => o.typer_notation = v,
                    "PromulgationAmount" => o.promulgation_amount = v,
                    "PageAmount" => o.page_amount = v,
                    "Direction" => o.direction = v,
                    _ => {}
                }
            }
            ("OtherInfo", "Appendixes", "Appendix") => h
                .other_info
                .get_or_insert_with(Default::default)
                .appendixes
                .extend(v),
            ("MessageHeader", "ToPlaces", "Place") => h.to_places.extend(v),
            ("MessageHeader", "ResponseFor", f) => {
                if let Some(r) = h.response_for.last_mut() {
                    match f {
                        "OrganId" => r.organ_id = v,
                        "Code" => r.code = v,
                        "PromulgationDate" => r.promulgation_date = v,
                        "DocumentId" => r.document_id = v,
                        _ => {}
                    }
                }
            }
            ("MessageHeader", "StaffInfo", f) => {
                set_staff(h.staff_info.get_or_insert_with(Default::default), f, v)
            }
            ("TraceHeaderList", "TraceHeader", f) => {
                if let Some(t) = self.pkg.trace_headers.last_mut() {
                    match f {
                        "OrganId" => t.organ_id = v,
                        "Timestamp" => t.timestamp = v,
                        _ => {}
                    }
                }
            }
            ("TraceHeaderList", "Bussiness", f) => {
                let b = self.pkg.business.get_or_insert_with(Default::default);
                match f {
                    "DocumentId" => b.document_id = v,
                    "BussinessDocType" => b.doc_type = v,
                    "BussinessDocReason" => b.doc_reason = v,
                    "Paper" => b.paper = v,
                    _ => {}
                }
            }
            ("Bussiness", "StaffInfo", f) => set_staff(
                self.pkg
                    .business
                    .get_or_insert_with(Default::default)
                    .staff_info
                    .get_or_insert_with(Default::default),
                f,
                v,
            ),
            ("Bussiness", "BussinessDocumentInfo", f) => {
                let d = self
                    .pkg
                    .business
                    .get_or_insert_with(Default::default)
                    .document_info
                    .get_or_insert_with(Default::default);
                match f {
                    "DocumentInfo" => d.document_info = v,
                    "DocumentReceiver" => d.document_receiver = v,
                    _ => {}
                }
            }
            ("ReceiverList", "Receiver", f) => {
                if let Some(r) = self
                    .pkg
                    .business
                    .as_mut()
                    .and_then(|b| b.document_info.as_mut())
                    .and_then(|d| d.receiver_list.last_mut())
                {
                    match f {
                        "OrganId" => r.organ_id = v,
                        "ReceiverType" => r.receiver_type = v,
                        _ => {}
                    }
                }
            }
            ("edXMLManifest", "Reference", f) => {
                if let Some(r) = self.pkg.manifest.last_mut() {
                    match f {
                        "ContentId" => r.content_id = v,
                        "ContentType" => r.content_type = v,
                        "Description" => r.description = v,
                        "AttachmentName" => r.attachment_name = v,
                        _ => {}
                    }
                }
            }
            ("AttachmentEncoded", "Attachment", f) => {
                if let Some(a) = self.pkg.attachments.last_mut() {
                    match f {
                        "ContentId" => a.content_id = v,
                        "AttachmentName" => a.attachment_name = v,
                        "Description" => a.description = v,
                        "ContentType" => a.content_type = v,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn which_attachment(&self) -> String {
        let n = self.pkg.attachments.len();
        let a = self.pkg.attachments.last();
        let id = a.and_then(|a| a.content_id.clone()).unwrap_or_default();
        let name = a
            .and_then(|a| a.attachment_name.clone())
            .unwrap_or_default();
        match (id.is_empty(), name.is_empty()) {
            (true, true) => format!("#{n}"),
            (false, true) => format!("#{n} ({id})"),
            (true, false) => format!("#{n} ({name})"),
            (false, false) => format!("#{n} ({id}, {name})"),
        }
    }

    fn end_attachment(
        &mut self,
        sink: &mut dyn AttachmentSink,
        size: u64,
        hash: Sha256,
    ) -> Result<(), ReadError> {
        let digest = hash.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(a) = self.pkg.attachments.last_mut() {
            a.size = size;
            a.sha256 = hex;
            sink.end(a)?;
        }
        Ok(())
    }
}

fn set_organ(o: &mut Organ, f: &str, v: Option<String>) {
    match f {
        "OrganId" => o.organ_id = v,
        "OrganName" => o.organ_name = v,
        "OrganizationInCharge" => o.organization_in_charge = v,
        "OrganAdd" => o.organ_add = v,
        "Email" => o.email = v,
        "Telephone" => o.telephone = v,
        "Fax" => o.fax = v,
        "Website" => o.website = v,
        _ => {}
    }
}

fn set_staff(s: &mut StaffInfo, f: &str, v: Option<String>) {
    match f {
        "Department" => s.department = v,
        "Staff" => s.staff = v,
        "Mobile" => s.mobile = v,
        "Email" => s.email = v,
        _ => {}
    }
}

/// Base64 characters decoded per chunk (a multiple of 4): 64 KiB in, 48 KiB out.
const CHUNK: usize = 64 << 10;

/// Decode the content of a `ContentTransferEncoded` element straight from the input, up to
/// (not including) the next `<`, into `sink`. Whitespace and the character references of
/// whitespace (`&#13;`, `&#xD;`, `&#10;`, `&#xA;`, `&#9;`) are skipped. `at` is the byte
/// position where the content starts (for errors). Returns the bytes consumed.
fn stream_base64<R: BufRead>(
    input: &mut R,
    st: &mut State,
    sink: &mut dyn AttachmentSink,
    at: u64,
) -> Result<u64, ReadError> {
    let index = st.pkg.attachments.len().saturating_sub(1);
    sink.start(index)?;
    let eng = engine();
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK + 4);
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut chars = 0u64;
    let mut consumed = 0u64;
    let mut entity: Option<Vec<u8>> = None;
    let mut flush = |pending: &mut Vec<u8>,
                     last: bool,
                     st: &State,
                     sink: &mut dyn AttachmentSink,
                     chars: &mut u64|
     -> Result<(), ReadError> {
        let take = if last {
            pending.len()
        } else {
            pending.len() / 4 * 4
        };
        out.clear();
        if let Err(e) = eng.decode_vec(&pending[..take], &mut out) {
            let msg = match e {
                base64::DecodeError::InvalidByte(off, b) => format!(
                    "byte 0x{b:02X} ({:?}) at character {} of its content",
                    b as char,
                    *chars + off as u64 + 1
                ),
                base64::DecodeError::InvalidLength(n) => {
                    format!("{n} base64 characters in the last group (length not valid)")
                }
                base64::DecodeError::InvalidLastSymbol(off, b) => format!(
                    "invalid last symbol {:?} at character {}",
                    b as char,
                    *chars + off as u64 + 1
                ),
                base64::DecodeError::InvalidPadding => "invalid padding".to_string(),
            };
            return Err(ReadError::Base64 {
                which: st.which_attachment(),
                msg,
            });
        }
        *chars += take as u64;
        pending.drain(..take);
        hash.update(&out);
        size += out.len() as u64;
        sink.write(&out)?;
        Ok(())
    };
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Err(ReadError::Xml {
                pos: at + consumed,
                msg: format!(
                    "the package ends inside the content of attachment {}",
                    st.which_attachment()
                ),
            });
        }
        let end = buf.iter().position(|b| *b == b'<');
        let part = &buf[..end.unwrap_or(buf.len())];
        for &b in part {
            if let Some(ent) = &mut entity {
                if b == b';' {
                    let name = String::from_utf8_lossy(ent).to_ascii_lowercase();
                    if !matches!(name.as_str(), "#13" | "#xd" | "#10" | "#xa" | "#9" | "#x9") {
                        return Err(ReadError::Base64 {
                            which: st.which_attachment(),
                            msg: format!("entity &{name}; inside base64 content"),
                        });
                    }
                    entity = None;
                } else if ent.len() > 8 {
                    return Err(ReadError::Base64 {
                        which: st.which_attachment(),
                        msg: "an unterminated entity inside base64 content".into(),
                    });
                } else {
                    ent.push(b);
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'&' => entity = Some(Vec::new()),
                _ => pending.push(b),
            }
            if pending.len() >= CHUNK {
                flush(&mut pending, false, st, sink, &mut chars)?;
            }
        }
        let n = part.len();
        input.consume(n);
        consumed += n as u64;
        if end.is_some() {
            break;
        }
    }
    flush(&mut pending, true, st, sink, &mut chars)?;
    st.end_attachment(sink, size, hash)?;
    Ok(consumed)
}
