//! Fuzz target: the readers of an agency's answer to a submit (the receipt rules of the JSON
//! agencies, of the XML agencies in their namespaces, of an edXML department, and of the
//! mapped adapter in JSON and in XML), under a success and a failure status. The first byte
//! picks the reader and the status; the rest is the body.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lienthong_adapters::http::{Agent, json_receipt};
use lienthong_adapters::mapped::Mapped;
use lienthong_adapters::xml::{read_flat, xml_receipt};
use lienthong_adapters::{bhxh_xml, edxml_adapter, tax_xml};
use reqwest::StatusCode;

fn mapped(settings: serde_json::Value) -> Mapped {
    Mapped::new(
        Agent::plain(reqwest::Client::new()),
        "http://127.0.0.1:1",
        "http://127.0.0.1:2/cb",
        settings.as_object().expect("object"),
    )
    .expect("mapped settings")
}

static MAPPED: LazyLock<[Mapped; 2]> = LazyLock::new(|| {
    [
        mapped(serde_json::json!({
            "format": "json", "request": {"MaHoSo": "/ma_ho_so"},
            "success": {"field": "/MaLoi", "equals": "00", "receipt": "/MaTiepNhan", "message": "/MoTaLoi"},
            "callback": {"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "KetQua"}
        })),
        mapped(serde_json::json!({
            "format": "xml", "xml_root": "HoSo", "xml_namespace": "urn:example:agency:1",
            "request": {"MaHoSo": "/ma_ho_so"},
            "success": {"field": "MaLoi", "equals": "00", "receipt": "MaTiepNhan"},
            "callback": {"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "TrangThai"}
        })),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = if pick & 0x80 == 0 {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match (pick & 0x7f) % 6 {
        0 => {
            let _ = json_receipt("submit", status, body);
        }
        1 => {
            let _ = xml_receipt("submit", status, body, tax_xml::NS);
            let _ = read_flat(body, tax_xml::NS);
        }
        2 => {
            let _ = xml_receipt("submit", status, body, bhxh_xml::NS);
        }
        3 => {
            let _ = edxml_adapter::push_answer("submit", status, body, "000.20.59.H48-261129-7500");
        }
        4 => {
            let _ = MAPPED[0].submit_answer(status, body);
        }
        _ => {
            let _ = MAPPED[1].submit_answer(status, body);
        }
    }
});
