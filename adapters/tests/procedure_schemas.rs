//! The procedure data schemas (`schemas/procedures/`) and the adapters the shipped config puts on
//! each route agree: for each procedure, a minimal filing valid against its schema passes the
//! `check()` of every adapter that can take a step of its route (every unit with the step's role,
//! whichever centre files); removing any one field of it fails the schema with that field's JSON
//! pointer; and each such field is one an adapter's `check()` needs, or one the schema asks for
//! for a reason written down here (the reference interface the adapter speaks, or the process
//! manager).

use lienthong_core::envelope::{Envelope, EnvelopeValidator, Kind};
use lienthong_core::filing::FilingSchemas;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Registry, Settings};
use serde_json::{Value, json};

/// A minimal filing: the fields its procedure's schema requires for `choices`, nothing else.
struct Minimal {
    what: &'static str,
    ma_tthc: &'static str,
    payload: Value,
    /// Fields the schema requires although no adapter's `check()` does, and why.
    beyond_check: &'static [(&'static str, &'static str)],
}

fn minimal_filings() -> Vec<Minimal> {
    vec![
        Minimal {
            what: "birth",
            ma_tthc: "1.001193",
            payload: json!({
                "applicant": {"ho_ten": "Đinh Văn Lực"},
                "data": {"loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
                         "tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu"},
                         "noi_dang_ky_thuong_tru": "thôn Gò Da, xã Sơn Hải, huyện Sơn Hà, tỉnh Quảng Ngãi"}
            }),
            beyond_check: &[],
        },
        Minimal {
            what: "death, every optional step chosen",
            ma_tthc: "1.011537",
            payload: json!({
                "applicant": {"ho_ten": "Trần Kim Yến"},
                "data": {"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
                         "thu_tuc_lua_chon": ["xoa_thuong_tru", "tro_cap_mai_tang", "bhxh_tu_tuat"],
                         "nguoi_mat": {"ho_ten": "Nguyễn Quốc Hùng", "ngay_sinh": "1952-09-07",
                                       "gioi_tinh": "nam", "ngay_mat": "2026-11-01"},
                         "noi_dang_ky_thuong_tru": "thôn Cổ Lũy, xã Tịnh Khê, thành phố Quảng Ngãi"}
            }),
            beyond_check: &[
                (
                    "/payload/data/thu_tuc_lua_chon",
                    "the process manager chooses the optional steps from it",
                ),
                (
                    "/payload/data/nguoi_mat/ngay_mat",
                    "the civil-status interface requires NguoiMat.NgayMat (the mapped adapter leaves it out when missing)",
                ),
            ],
        },
        Minimal {
            what: "death, only the funeral allowance chosen",
            ma_tthc: "1.011537",
            payload: json!({
                "applicant": {"ho_ten": "Trần Kim Yến"},
                "data": {"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
                         "thu_tuc_lua_chon": ["tro_cap_mai_tang"],
                         "nguoi_mat": {"ho_ten": "Nguyễn Quốc Hùng", "ngay_mat": "2026-11-01"}}
            }),
            beyond_check: &[
                (
                    "/payload/data/thu_tuc_lua_chon",
                    "the process manager chooses the optional steps from it",
                ),
                (
                    "/payload/data/nguoi_mat",
                    "the civil-status interface requires TreEm or NguoiMat",
                ),
                (
                    "/payload/data/nguoi_mat/ho_ten",
                    "the civil-status interface requires NguoiMat.HoTen",
                ),
                (
                    "/payload/data/nguoi_mat/ngay_mat",
                    "the civil-status interface requires NguoiMat.NgayMat",
                ),
            ],
        },
        Minimal {
            what: "land ↔ tax",
            ma_tthc: "1.010059",
            payload: json!({
                "applicant": {"ho_ten": "Huỳnh Thị Lan"},
                "data": {"loai_bien_dong": "tang_cho",
                         "thua_dat": {"so_thua": "412", "so_to_ban_do": "17", "dien_tich_m2": 148.5,
                                      "dia_chi": "tổ dân phố 3, phường Trần Phú, thành phố Quảng Ngãi"}}
            }),
            beyond_check: &[],
        },
        Minimal {
            what: "customs (synthetic)",
            ma_tthc: "SYN.HQ.001",
            payload: json!({
                "applicant": {"ho_ten": "Trần Minh Khoa"},
                "data": {"to_khai_hai_quan": {"so_to_khai": "105600001001", "ngay_to_khai": "2026-11-18"}}
            }),
            beyond_check: &[],
        },
    ]
}

fn shipped() -> Settings {
    Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config")
}

/// The filing as JSON, from the provincial centre, without receiver.
fn filing(ma_tthc: &str, payload: &Value) -> Value {
    let env = Envelope::new(
        Kind::FORWARD,
        "000.20.01.H48-261130-0001",
        ma_tthc,
        "000.20.01.H48",
        None,
        &lienthong_core::envelope::new_message_id(),
    );
    let mut v = serde_json::to_value(&env).expect("envelope");
    v["payload"] = payload.clone();
    v
}

/// Every adapter that can take a step of `ma_tthc`'s route chosen by `payload` in the shipped
/// config (every unit with the step's role), with its unit code.
fn adapters_on_route(
    s: &Settings,
    ma_tthc: &str,
    payload: &Value,
) -> Vec<(String, std::sync::Arc<dyn lienthong_adapters::Adapter>)> {
    let p = s
        .procedures
        .iter()
        .find(|p| p.ma_tthc == ma_tthc)
        .expect("procedure");
    let chosen: Vec<&str> = payload["data"]["thu_tuc_lua_chon"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for step in &p.steps {
        if step.optional && !step.choice.as_deref().is_some_and(|c| chosen.contains(&c)) {
            continue;
        }
        for u in s.units.iter().filter(|u| {
            step.unit.as_deref() == Some(u.code.as_str())
                || step.role.as_ref().is_some_and(|r| u.roles.contains(r))
        }) {
            if matches!(u.reach, Reach::Adapter { .. }) {
                let a = lienthong_adapters::build(u, "http://127.0.0.1:9")
                    .unwrap_or_else(|e| panic!("{}: {e}", u.code));
                out.push((u.code.clone(), a));
            }
        }
    }
    out
}

/// JSON pointers of every object member under `/payload` (array items are not fields).
fn fields(v: &Value, at: &str, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, x) in m {
            let p = format!("{at}/{k}");
            out.push(p.clone());
            fields(x, &p, out);
        }
    }
}

fn without(v: &Value, pointer: &str) -> Value {
    let mut v = v.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent")
        .remove(key);
    v
}

#[test]
fn a_minimal_valid_filing_passes_every_adapter_on_its_route() {
    let s = shipped();
    let registry = Registry::new(&s);
    let schemas = FilingSchemas::load(&s).expect("schemas");
    let validator = EnvelopeValidator::new(&s.envelope).expect("validator");
    let mut covered = std::collections::BTreeSet::new();
    for m in minimal_filings() {
        let v = filing(m.ma_tthc, &m.payload);
        let env = validator
            .accept(v.to_string().as_bytes())
            .unwrap_or_else(|r| panic!("{}: not an envelope: {r}", m.what));
        schemas
            .check(&registry, &env)
            .unwrap_or_else(|r| panic!("{}: {r}", m.what));
        let adapters = adapters_on_route(&s, m.ma_tthc, &m.payload);
        assert!(!adapters.is_empty(), "{}: no adapter on the route", m.what);
        for (unit, a) in &adapters {
            let mut to_unit = env.clone();
            to_unit.receiver = Some(unit.clone());
            a.prepare(&to_unit)
                .unwrap_or_else(|e| panic!("{}: {} ({unit}) refuses it: {e}", m.what, a.name()));
            covered.insert(a.name());
        }
        covered.insert(m.ma_tthc);
    }
    // Every adapter the shipped catalogue's routes reach was tried.
    for name in [
        "mapped",
        "police-rest",
        "bhxh-xml",
        "edxml",
        "tax-xml",
        "customs-rest",
    ] {
        assert!(covered.contains(name), "{name} was not on any route tried");
    }
    // And every eligible procedure of the catalogue has a minimal filing here.
    for p in s.procedures.iter().filter(|p| p.eligible()) {
        assert!(
            covered.contains(p.ma_tthc.as_str()),
            "{} has no minimal filing",
            p.ma_tthc
        );
    }
}

#[test]
fn removing_any_field_of_a_minimal_filing_fails_with_its_pointer_and_an_adapter_or_a_stated_reason()
{
    let s = shipped();
    let registry = Registry::new(&s);
    let schemas = FilingSchemas::load(&s).expect("schemas");
    for m in minimal_filings() {
        let v = filing(m.ma_tthc, &m.payload);
        let adapters = adapters_on_route(&s, m.ma_tthc, &m.payload);
        let mut all = Vec::new();
        fields(&v["payload"], "/payload", &mut all);
        for pointer in all {
            let cut = without(&v, &pointer);
            let r = schemas
                .check_value(&registry, &cut)
                .expect_err(&format!("{}: without {pointer}", m.what));
            let f = r
                .fields
                .iter()
                .find(|f| f.pointer == pointer || f.alternatives.contains(&pointer))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: without {pointer} the errors name {:?}",
                        m.what,
                        r.fields.iter().map(|f| &f.pointer).collect::<Vec<_>>()
                    )
                });
            assert!(
                !f.needed_by.is_empty(),
                "{}: {pointer}: no step named",
                m.what
            );
            assert!(
                r.reason().contains(&pointer),
                "{}: the reason names {pointer}: {}",
                m.what,
                r.reason()
            );
            // Why the schema asks for it: an adapter's check() needs it, or a stated reason.
            // (Without the applicant's name the JSON is not an envelope at all.)
            let Ok(env) = serde_json::from_value::<Envelope>(cut) else {
                continue;
            };
            let refused_by = adapters.iter().find(|(unit, a)| {
                let mut to_unit = env.clone();
                to_unit.receiver = Some(unit.clone());
                a.prepare(&to_unit).is_err()
            });
            let stated = m.beyond_check.iter().find(|(p, _)| *p == pointer);
            assert!(
                refused_by.is_some() != stated.is_some(),
                "{}: {pointer}: refused by {:?}, stated reason {:?}: exactly one of them",
                m.what,
                refused_by.map(|(u, a)| (u, a.name())),
                stated
            );
        }
    }
}
