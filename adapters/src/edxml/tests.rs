//! Tests of the edXML reader and writer on the real samples and on crafted packages.

use super::read::{InMemory, Limits, ReadError, read, read_bytes};
use super::write::{OutAttachment, write};
use super::*;

fn sample(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/samples/edxml")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn the_status_samples_parse_with_their_codes() {
    for (file, code, bus) in [
        (
            "status_acceptance_03.edxml",
            "03",
            Some(TrangThaiHoSo::ACCEPTED),
        ),
        (
            "status_finish_06.edxml",
            "06",
            Some(TrangThaiHoSo::PROCESSED),
        ),
    ] {
        let p = read_bytes(&sample(file)).expect(file);
        let h = &p.message_header;
        assert!(p.is_status());
        assert_eq!(h.status_code.as_ref().map(|c| c.0.as_str()), Some(code));
        assert_eq!(h.status_code.as_ref().and_then(StatusCode::to_bus), bus);
        assert_eq!(
            h.from.as_ref().and_then(|f| f.organ_id.as_deref()),
            Some("000.00.00.H41")
        );
        assert_eq!(h.response_for.len(), 1);
        assert_eq!(
            h.response_for[0].document_id.as_deref(),
            Some("000.00.00.G22,2015/09/30,7816/VPCP-TTĐT")
        );
        assert_eq!(
            h.staff_info.as_ref().and_then(|s| s.staff.as_deref()),
            Some("Nguyễn Văn A")
        );
        assert_eq!(h.timestamp.as_deref(), Some("2015/09/20 11:08:36"));
        assert!(
            h.description
                .as_deref()
                .is_some_and(|d| d.starts_with("Văn thư"))
        );
    }
}

#[test]
fn the_update_sample_parses_every_part() {
    let bytes = sample("edoc_update.edxml");
    let mut sink = InMemory::default();
    let p = read(&bytes[..], &mut sink, Limits::default()).expect("edoc_update");
    let h = &p.message_header;
    assert!(!p.is_status());
    assert_eq!(h.to.len(), 3);
    assert_eq!(h.to[1].organ_id.as_deref(), Some("000.00.00.H14"));
    assert_eq!(
        h.document_id.as_deref(),
        Some("000.00.00.G22,2015/09/30,7816/VPCP-TTĐT")
    );
    let code = h.code.as_ref().expect("code");
    assert_eq!(code.code_number.as_deref(), Some("7816"));
    assert_eq!(code.code_notation.as_deref(), Some("VPCP-TTĐT"));
    assert_eq!(
        h.document_type
            .as_ref()
            .and_then(|d| d.type_name.as_deref()),
        Some("Công văn")
    );
    assert_eq!(
        h.signer_info.as_ref().and_then(|s| s.full_name.as_deref()),
        Some("Trần Thị B")
    );
    let other = h.other_info.as_ref().expect("other info");
    assert_eq!(other.page_amount.as_deref(), Some("22"));
    assert_eq!(other.appendixes.len(), 1);
    assert_eq!(h.steering_type.as_deref(), Some("1"));
    assert_eq!(h.to_places.len(), 2);
    assert_eq!(p.trace_headers.len(), 1);
    assert_eq!(
        p.trace_headers[0].timestamp.as_deref(),
        Some("2018/09/28 00:00:00")
    );
    let b = p.business.as_ref().expect("business block");
    assert_eq!(b.doc_type_name(), Some("update"));
    assert_eq!(
        b.document_info.as_ref().map(|d| d.receiver_list.len()),
        Some(2)
    );
    assert_eq!(
        b.staff_info.as_ref().and_then(|s| s.department.as_deref()),
        Some("Văn thư văn phòng")
    );
    assert!(p.signed);
    assert_eq!(p.manifest.len(), 1);
    assert_eq!(p.manifest[0].content_id.as_deref(), Some("cid:209"));
    assert_eq!(p.attachments.len(), 1);
    let a = &p.attachments[0];
    assert_eq!(a.content_id.as_deref(), Some("cid:209"));
    assert_eq!(a.content_type.as_deref(), Some("application/zip"));
    let content = &sink.0[0];
    assert!(content.starts_with(b"PK\x03\x04"), "a zip");
    assert_eq!(a.size, content.len() as u64);
    assert_eq!(a.sha256, sha256_hex(content));
}

/// The status sample rewritten with another prefix, and with the default namespace only.
#[test]
fn any_prefix_or_the_default_namespace_reads_the_same() {
    let text = String::from_utf8(sample("status_acceptance_03.edxml")).expect("utf-8");
    let base = read_bytes(text.as_bytes()).expect("base");
    let other_prefix = text
        .replace("edXML:", "q:")
        .replace("xmlns:edXML=", "xmlns:q=");
    assert_eq!(read_bytes(other_prefix.as_bytes()).expect("q:"), base);
    let default_only = text.replace("edXML:", "").replace(
        " xmlns:edXML=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"",
        "",
    );
    assert_eq!(read_bytes(default_only.as_bytes()).expect("default"), base);
}

#[test]
fn the_right_names_in_a_wrong_namespace_are_refused() {
    let text = String::from_utf8(sample("status_acceptance_03.edxml")).expect("utf-8");
    let root = text.replacen(NS, "urn:not-edxml", 1);
    assert!(matches!(
        read_bytes(root.as_bytes()),
        Err(ReadError::Root { .. })
    ));
    let inner = text.replace(
        "xmlns:edXML=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"",
        "xmlns:edXML=\"urn:not-edxml\"",
    );
    let e = read_bytes(inner.as_bytes()).expect_err("wrong namespace");
    assert!(
        matches!(&e, ReadError::Namespace { name, ns, .. } if name == "edXML:edXMLEnvelope" && ns == "urn:not-edxml"),
        "{e}"
    );
}

#[test]
fn bom_and_crlf_are_accepted_and_the_prelude_rules_hold() {
    let text = sample("status_finish_06.edxml");
    assert!(text.windows(2).any(|w| w == b"\r\n"), "the sample has CRLF");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(&text);
    assert_eq!(
        read_bytes(&bom).expect("BOM"),
        read_bytes(&text).expect("plain")
    );
    let mut junk = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    junk.extend_from_slice(&text);
    let e = read_bytes(&junk).expect_err("junk first");
    assert!(matches!(e, ReadError::BeforeDeclaration(19)), "{e}");
    assert!(e.to_string().contains("before the XML declaration"));
    let mut space = b"  \n".to_vec();
    space.extend_from_slice(&text);
    assert!(matches!(
        read_bytes(&space),
        Err(ReadError::BeforeDeclaration(3))
    ));
    let utf16 = [0xFF, 0xFE, b'<', 0];
    assert!(matches!(read_bytes(&utf16), Err(ReadError::Encoding(_))));
}

#[test]
fn a_doctype_a_legacy_encoding_and_bad_utf8_are_clear_errors() {
    let doctype = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE edXML [<!ENTITY x \"y\">]><edXML xmlns=\"{NS}\"/>"
    );
    assert!(matches!(
        read_bytes(doctype.as_bytes()),
        Err(ReadError::Doctype(_))
    ));
    let legacy = String::from_utf8(sample("status_finish_06.edxml"))
        .expect("utf-8")
        .replace("encoding=\"UTF-8\"", "encoding=\"windows-1258\"");
    let e = read_bytes(legacy.as_bytes()).expect_err("legacy");
    assert!(
        matches!(&e, ReadError::Encoding(n) if n == "windows-1258"),
        "{e}"
    );
    assert!(e.to_string().contains("iconv"));
    // "Nguyễn" in windows-1258 bytes, declared UTF-8.
    let mut bad = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><edXML xmlns=\"{NS}\"><edXML:edXMLEnvelope xmlns:edXML=\"{NS}\"><edXML:edXMLHeader><edXML:MessageHeader><edXML:Subject>")
        .into_bytes();
    bad.extend_from_slice(b"Nguy\xEA\xDEn");
    bad.extend_from_slice(
        b"</edXML:Subject></edXML:MessageHeader></edXML:edXMLHeader></edXML:edXMLEnvelope></edXML>",
    );
    let e = read_bytes(&bad).expect_err("not UTF-8");
    assert!(matches!(e, ReadError::Xml { .. }), "{e}");
}

fn package_with_attachment(content_b64: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<edXML xmlns=\"{NS}\">\r\n<edXML:edXMLEnvelope xmlns:edXML=\"{NS}\"><edXML:edXMLHeader><edXML:MessageHeader><edXML:Subject>x</edXML:Subject></edXML:MessageHeader></edXML:edXMLHeader></edXML:edXMLEnvelope>\r\n<AttachmentEncoded><Attachment><ContentId>cid:7</ContentId><AttachmentName>to-khai.pdf</AttachmentName><ContentType>application/pdf</ContentType><edXML:ContentTransferEncoded xmlns:edXML=\"{NS}\">{content_b64}</edXML:ContentTransferEncoded></Attachment></AttachmentEncoded></edXML>"
    )
}

#[test]
fn invalid_base64_names_the_attachment() {
    let e =
        read_bytes(package_with_attachment("SGVsbG8*d29ybGQ=").as_bytes()).expect_err("bad base64");
    let msg = e.to_string();
    assert!(
        msg.contains("cid:7") && msg.contains("to-khai.pdf"),
        "{msg}"
    );
    assert!(msg.contains("character 8"), "{msg}");
}

#[test]
fn base64_split_by_crlf_and_char_references_decodes() {
    let mut sink = InMemory::default();
    let p = read(
        package_with_attachment("SGVs\r\nbG8g&#13;&#10;d29y\tbGQ=").as_bytes(),
        &mut sink,
        Limits::default(),
    )
    .expect("package");
    assert_eq!(sink.0[0], b"Hello world");
    assert_eq!(p.attachments[0].size, 11);
    assert_eq!(p.attachments[0].sha256, sha256_hex(b"Hello world"));
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn organ(id: &str) -> Organ {
    Organ {
        organ_id: s(id),
        organ_name: s("UBND huyện Sơn Hà"),
        organization_in_charge: s("UBND tỉnh Quảng Ngãi"),
        organ_add: s("Thị trấn Di Lăng, huyện Sơn Hà"),
        email: s("sonha@quangngai.gov.vn"),
        telephone: s("0255 3000000"),
        fax: s(""),
        website: s("sonha.quangngai.gov.vn"),
    }
}

/// Every header field set, with characters that need escaping.
fn full_package() -> Package {
    Package {
        message_header: MessageHeader {
            from: Some(organ("000.20.59.H48")),
            to: vec![organ("000.00.15.H48"), organ("000.00.07.H48")],
            document_id: s("000.20.59.H48,2026/11/29,000.20.59.H48-261129-0001/LT"),
            code: Some(Code {
                code_number: s("0001"),
                code_notation: s("LT-ĐĐ"),
            }),
            promulgation_info: Some(PromulgationInfo {
                place: s("Sơn Hà"),
                promulgation_date: s("2026/11/29"),
            }),
            document_type: Some(DocumentType {
                kind: s("1"),
                type_detail: s("0"),
                type_name: s("Hồ sơ liên thông"),
            }),
            subject: s("Hồ sơ <liên thông> & \"đất đai\""),
            content: s("Dòng 1\nDòng 2"),
            signer_info: Some(SignerInfo {
                competence: s("KT. CHỦ TỊCH"),
                position: s("Phó Chủ tịch"),
                full_name: s("Đinh Văn Lực"),
            }),
            due_date: s("2026/12/04"),
            other_info: Some(OtherInfo {
                priority: s("0"),
                sphere_of_promulgation: s("Liên thông"),
                typer_notation: s("VT"),
                promulgation_amount: s("1"),
                page_amount: s("3"),
                direction: s("false"),
                appendixes: vec!["Phụ lục 1".into(), "Phụ lục 2".into()],
            }),
            steering_type: s("1"),
            to_places: vec!["Sở Tài nguyên và Môi trường".into(), "Chi cục Thuế".into()],
            response_for: vec![ResponseFor {
                organ_id: s("000.00.15.H48"),
                code: s("12/STNMT"),
                promulgation_date: s("2026/11/28"),
                document_id: s("000.00.15.H48,2026/11/28,12/STNMT"),
            }],
            staff_info: Some(StaffInfo {
                department: s("Bộ phận một cửa"),
                staff: s("Phạm Thị Hoa"),
                mobile: s("0905000000"),
                email: s("hoa@sonha.gov.vn"),
            }),
            status_code: Some(StatusCode("05".into())),
            description: s("Đang xử lý"),
            timestamp: s("2026/11/29 10:15:00"),
        },
        trace_headers: vec![
            TraceHeader {
                organ_id: s("000.20.59.H48"),
                timestamp: s("2026/11/29 10:00:00"),
            },
            TraceHeader {
                organ_id: s("000.00.00.H48"),
                timestamp: s("2026/11/29 10:00:02"),
            },
        ],
        business: Some(Business {
            document_id: s("000.20.59.H48,2026/11/29,0001/LT"),
            doc_type: s("3"),
            doc_reason: s("Thay thế"),
            paper: s("0"),
            document_info: Some(BusinessDocumentInfo {
                document_info: s("1"),
                document_receiver: s("1"),
                receiver_list: vec![Receiver {
                    organ_id: s("000.00.15.H48"),
                    receiver_type: s("0"),
                }],
            }),
            staff_info: Some(StaffInfo {
                department: s("Văn thư"),
                staff: s("Lê Văn Tâm"),
                mobile: None,
                email: s("tam@sonha.gov.vn"),
            }),
        }),
        signed: false,
        manifest: vec![],
        attachments: vec![],
    }
}

#[test]
fn build_then_parse_round_trips_every_header_field() {
    let pkg = full_package();
    let pdf: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (out, written) = write(
        &pkg,
        vec![OutAttachment {
            content_id: "cid:1".into(),
            attachment_name: "to-khai.pdf".into(),
            description: s("Tờ khai"),
            content_type: "application/pdf".into(),
            content: Box::new(&pdf[..]),
        }],
        Vec::new(),
    )
    .expect("write");
    let mut sink = InMemory::default();
    let back = read(&out[..], &mut sink, Limits::default()).expect("read back");
    assert_eq!(back.message_header, pkg.message_header);
    assert_eq!(back.trace_headers, pkg.trace_headers);
    assert_eq!(back.business, pkg.business);
    assert_eq!(
        back.business.as_ref().and_then(Business::doc_type_name),
        Some("replacement")
    );
    assert_eq!(back.manifest.len(), 1);
    assert_eq!(back.attachments, written);
    assert_eq!(sink.0[0], pdf);
    assert_eq!(written[0].sha256, sha256_hex(&pdf));
}

#[test]
fn an_unknown_status_code_is_kept_verbatim() {
    let text = String::from_utf8(sample("status_finish_06.edxml"))
        .expect("utf-8")
        .replace(">06<", ">42<");
    let p = read_bytes(text.as_bytes()).expect("parses");
    let c = p.message_header.status_code.expect("kept");
    assert_eq!(c.0, "42");
    assert_eq!(c.meaning(), None);
}

#[test]
fn a_cut_off_package_is_an_error_never_a_partial_success() {
    let full = sample("edoc_update.edxml");
    let e = read_bytes(&full[..1500]).expect_err("cut in the header");
    assert!(e.to_string().contains("cut off"), "{e}");
    let e = read_bytes(&full[..full.len() - 2000]).expect_err("cut in the base64");
    let msg = e.to_string();
    assert!(
        msg.contains("ends inside the content of attachment"),
        "{msg}"
    );
    assert!(!msg.contains("at byte 0:"), "a real position: {msg}");
}

#[test]
fn base64_interrupted_by_cdata_a_comment_or_an_element_is_refused() {
    for (what, content) in [
        ("CDATA", "<![CDATA[SGVsbG8gd29ybGQ=]]>"),
        ("comment", "SGVsbG8g<!-- x -->d29ybGQ="),
        ("element", "SGVsbG8g<edXML:X/>d29ybGQ="),
    ] {
        let e = read_bytes(package_with_attachment(content).as_bytes()).expect_err(what);
        assert!(
            matches!(&e, ReadError::Base64 { msg, .. } if msg.contains("interrupted")),
            "{what}: {e}"
        );
    }
}

#[test]
fn content_after_the_root_is_refused() {
    let mut text = String::from_utf8(sample("status_finish_06.edxml")).expect("utf-8");
    text.push_str("<edXML xmlns=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\"/>junk");
    let e = read_bytes(text.as_bytes()).expect_err("junk");
    assert!(e.to_string().contains("after the end of the root"), "{e}");
}
