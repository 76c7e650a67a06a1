//! Fuzz target: every agency adapter's callback parser (`Adapter::parse_callback`, what an
//! agency POSTs to `/v1/callbacks/<unit>`), for each unit of the shipped registry that has an
//! adapter and for the mapped adapter in XML. The first byte picks the adapter and the
//! content type; the rest is the body.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use lienthong_adapters::Adapter;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings};

static ADAPTERS: LazyLock<Vec<Arc<dyn Adapter>>> = LazyLock::new(|| {
    let settings = Settings::from_toml(DEFAULT_CONFIG, false).expect("the shipped config");
    let mut out: Vec<Arc<dyn Adapter>> = settings
        .units
        .iter()
        .filter(|u| matches!(u.reach, Reach::Adapter { .. }))
        .filter_map(|u| lienthong_adapters::build(u, "http://127.0.0.1:1").ok())
        .collect();
    out.push(Arc::new(
        lienthong_adapters::mapped::Mapped::new(
            lienthong_adapters::http::Agent::plain(reqwest::Client::new()),
            "http://127.0.0.1:1",
            "http://127.0.0.1:2/cb",
            serde_json::json!({
                "format": "xml", "xml_root": "HoSo", "xml_namespace": "urn:example:agency:1",
                "request": {"MaHoSo": "/ma_ho_so"},
                "callback": {"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "TrangThai",
                             "status_map": {"DA_XONG": 9, "TU_CHOI": 3}, "result": {"so": "SoDangKy"}}
            })
            .as_object()
            .expect("object"),
        )
        .expect("the mapped XML settings"),
    ));
    assert!(out.len() >= 7, "the shipped adapters build ({})", out.len());
    out
});

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/xml; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let adapters = &*ADAPTERS;
    let adapter = &adapters[usize::from(pick) % adapters.len()];
    let ct = CONTENT_TYPES[usize::from(pick >> 5) % CONTENT_TYPES.len()];
    if let Ok(reply) = adapter.parse_callback(ct, body) {
        let _ = reply.cleaned();
    }
});
