//! Tests of the procedure data schemas: the shipped ones against the sample dossiers and the
//! example envelope of docs/centres.md, the errors' pointers and steps, and the startup errors.

use super::*;
use crate::envelope::EnvelopeValidator;
use crate::registry::DEFAULT_CONFIG;

fn shipped() -> Settings {
    Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config")
}

fn samples() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/samples/dossiers.jsonl"
    );
    std::fs::read_to_string(path)
        .expect("schemas/samples/dossiers.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The first sample of `ma_tthc` filed by `sender`, as an accepted envelope.
fn sample(ma_tthc: &str, sender: &str) -> Value {
    samples()
        .into_iter()
        .find(|v| v["ma_tthc"] == ma_tthc && v["sender"] == sender)
        .expect("a sample of that procedure and centre")
}

fn check(v: &Value) -> Result<(), Rejection> {
    let s = shipped();
    let env = EnvelopeValidator::new(&s.envelope)
        .expect("validator")
        .accept(v.to_string().as_bytes())
        .expect("a valid envelope");
    FilingSchemas::load(&s)
        .expect("schemas")
        .check(&Registry::new(&s), &env)
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object")
        .remove(key)
        .expect("the field was there");
}

fn steps(f: &FieldError) -> Vec<(String, Option<String>)> {
    f.needed_by
        .iter()
        .map(|n| (n.step.clone(), n.unit.clone()))
        .collect()
}

#[test]
fn every_eligible_procedure_of_the_shipped_catalogues_has_a_schema_that_compiles() {
    for text in [
        DEFAULT_CONFIG,
        include_str!("../../../deploy/config/quang-ngai-2025.toml"),
    ] {
        let s = Settings::from_toml(text, false).expect("config");
        let schemas = FilingSchemas::load(&s).expect("schemas");
        for p in s.procedures.iter().filter(|p| p.eligible()) {
            assert_eq!(
                schemas.path(&p.ma_tthc),
                Some(format!("schemas/procedures/{}.schema.json", p.ma_tthc).as_str()),
                "{}",
                p.ma_tthc
            );
        }
    }
}

#[test]
fn the_embedded_schemas_are_the_files_of_schemas_procedures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/procedures");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("schemas/procedures")
        .filter_map(|e| e.ok())
        .map(|e| format!("schemas/procedures/{}", e.file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = EMBEDDED.iter().map(|(p, _)| p.to_string()).collect();
    embedded.sort();
    assert_eq!(embedded, on_disk, "embed every file of schemas/procedures/");
}

#[test]
fn every_sample_dossier_passes_its_procedure_schema() {
    let s = shipped();
    let validator = EnvelopeValidator::new(&s.envelope).expect("validator");
    let schemas = FilingSchemas::load(&s).expect("schemas");
    let registry = Registry::new(&s);
    let all = samples();
    assert_eq!(all.len(), 240);
    for v in all {
        let env = validator
            .accept(v.to_string().as_bytes())
            .expect("a valid envelope");
        assert!(schemas.path(&env.ma_tthc).is_some(), "{}", env.ma_tthc);
        if let Err(r) = schemas.check(&registry, &env) {
            panic!("{}: {}", env.ma_ho_so, r.reason());
        }
    }
}

#[test]
fn a_birth_filing_without_a_residence_address_names_the_field_and_police() {
    let mut v = sample("1.001193", "000.20.59.H48");
    remove(&mut v, "/payload/data/noi_dang_ky_thuong_tru");
    remove(&mut v, "/payload/applicant/dia_chi");
    let r = check(&v).expect_err("no residence address");
    assert_eq!(r.code, RejectCode::ProcedureDataInvalid);
    assert_eq!(r.fields.len(), 1, "{:?}", r.fields);
    let f = &r.fields[0];
    assert_eq!(f.pointer, "/payload/data/noi_dang_ky_thuong_tru");
    assert_eq!(
        f.alternatives,
        [
            "/payload/data/tre/noi_thuong_tru",
            "/payload/applicant/dia_chi"
        ]
    );
    assert_eq!(
        steps(f),
        [("thuong-tru".to_string(), Some("CA.H48".to_string()))]
    );
    assert_eq!(
        f.needed_by[0].unit_name.as_deref(),
        Some("Công an tỉnh Quảng Ngãi")
    );
    // Over AMQP the reason is all there is: it carries the pointers and who needs them.
    let reason = r.reason();
    assert!(
        reason.starts_with("procedure-data-invalid: ")
            && reason.contains("/payload/data/noi_dang_ky_thuong_tru (or /payload/data/tre/noi_thuong_tru, /payload/applicant/dia_chi): missing")
            && reason.contains("thuong-tru at CA.H48")
            && reason.contains("schemas/procedures/1.001193.schema.json"),
        "{reason}"
    );
    // Any one of the alternatives will do.
    let mut with_child = v.clone();
    with_child["payload"]["data"]["tre"]["noi_thuong_tru"] = json!("thôn Gò Da, xã Sơn Hải");
    check(&with_child).expect("the child's residence");
    let mut with_applicant = v.clone();
    with_applicant["payload"]["applicant"]["dia_chi"] = json!("thôn Gò Da, xã Sơn Hải");
    check(&with_applicant).expect("the applicant's address");
    // Blanks are not an address: an agency would refuse it two hops later.
    let mut blank = v;
    blank["payload"]["data"]["noi_dang_ky_thuong_tru"] = json!("   ");
    let r = check(&blank).expect_err("a blank address");
    assert_eq!(r.fields[0].pointer, "/payload/data/noi_dang_ky_thuong_tru");
}

#[test]
fn a_missing_or_wrong_child_field_names_each_step_that_needs_it_with_the_centres_units() {
    let mut v = sample("1.001193", "000.20.59.H48");
    v["payload"]["data"]["tre"]["ngay_sinh"] = json!("2026-02-30");
    remove(&mut v, "/payload/data/tre/gioi_tinh");
    v["payload"]["data"]["noi_dang_ky_thuong_tru"] = json!("");
    let r = check(&v).expect_err("three problems");
    let by: HashMap<&str, &FieldError> = r.fields.iter().map(|f| (f.pointer.as_str(), f)).collect();
    let date = by["/payload/data/tre/ngay_sinh"];
    assert!(date.detail.contains("date"), "{}", date.detail);
    assert_eq!(
        steps(date),
        [
            ("khai-sinh".to_string(), Some("000.10.59.H48".to_string())),
            ("thuong-tru".to_string(), Some("CA.H48".to_string())),
            ("the-bhyt".to_string(), Some("BHXH.H48".to_string())),
        ],
        "Sơn Hà's civil-status office takes khai-sinh for Sơn Hà's centre"
    );
    let sex = by["/payload/data/tre/gioi_tinh"];
    assert_eq!(sex.detail, "missing");
    assert_eq!(
        steps(sex),
        [("the-bhyt".to_string(), Some("BHXH.H48".to_string()))]
    );
    assert!(by.contains_key("/payload/data/noi_dang_ky_thuong_tru"));
    assert_eq!(r.fields.len(), 3, "{:?}", r.fields);
}

#[test]
fn the_death_schema_asks_for_what_the_chosen_steps_need_only() {
    let mut v = sample("1.011537", "000.20.51.H48");
    for k in ["ngay_sinh", "gioi_tinh", "noi_thuong_tru", "ma_so_bhxh"] {
        v["payload"]["data"]["nguoi_mat"]
            .as_object_mut()
            .expect("nguoi_mat")
            .remove(k);
    }
    v["payload"]["applicant"]
        .as_object_mut()
        .expect("applicant")
        .remove("dia_chi");
    // The funeral allowance alone (the Department of Labour's edXML system) needs no more.
    v["payload"]["data"]["thu_tuc_lua_chon"] = json!(["khai_tu", "tro_cap_mai_tang"]);
    check(&v)
        .expect("the funeral allowance needs nothing of the deceased but the civil-status fields");
    // Removal of residence and survivor benefits need the date of birth: one field, two steps.
    v["payload"]["data"]["thu_tuc_lua_chon"] = json!(["khai_tu", "xoa_thuong_tru", "bhxh_tu_tuat"]);
    let r = check(&v).expect_err("Police and Social Insurance need more");
    let by: HashMap<&str, &FieldError> = r.fields.iter().map(|f| (f.pointer.as_str(), f)).collect();
    assert_eq!(
        steps(by["/payload/data/nguoi_mat/ngay_sinh"]),
        [
            ("xoa-thuong-tru".to_string(), Some("CA.H48".to_string())),
            ("bhxh-tu-tuat".to_string(), Some("BHXH.H48".to_string())),
        ]
    );
    assert_eq!(
        steps(by["/payload/data/nguoi_mat/gioi_tinh"]),
        [("bhxh-tu-tuat".to_string(), Some("BHXH.H48".to_string()))]
    );
    let residence = by["/payload/data/noi_dang_ky_thuong_tru"];
    assert_eq!(
        residence.alternatives,
        [
            "/payload/data/nguoi_mat/noi_thuong_tru",
            "/payload/applicant/dia_chi"
        ]
    );
    assert_eq!(r.fields.len(), 3, "{:?}", r.fields);
    // A choice the catalogue does not know, and no optional step at all, are refused.
    v["payload"]["data"]["thu_tuc_lua_chon"] = json!(["khai_tu", "xoa_thuong_tu"]);
    let r = check(&v).expect_err("a misspelt choice");
    assert!(
        r.fields
            .iter()
            .any(|f| f.pointer.starts_with("/payload/data/thu_tuc_lua_chon")),
        "{:?}",
        r.fields
    );
}

#[test]
fn the_land_schema_does_not_ask_for_the_land_offices_form() {
    let mut v = sample("1.010059", "000.20.51.H48");
    assert!(v["payload"]["data"].get("phieu_chuyen_thong_tin").is_none());
    check(&v).expect("a filing carries the parcel, not the form");
    remove(&mut v, "/payload/data/thua_dat/dien_tich_m2");
    let r = check(&v).expect_err("no area");
    assert_eq!(r.fields[0].pointer, "/payload/data/thua_dat/dien_tich_m2");
    assert_eq!(
        steps(&r.fields[0]),
        [("thue".to_string(), Some("CT.H48".to_string()))]
    );
}

#[test]
fn a_procedure_without_a_schema_is_not_checked() {
    let mut s = shipped();
    for p in &mut s.procedures {
        p.data_schema = None;
    }
    let mut v = sample("1.001193", "000.20.59.H48");
    remove(&mut v, "/payload/data/tre");
    let env = EnvelopeValidator::new(&s.envelope)
        .expect("validator")
        .accept(v.to_string().as_bytes())
        .expect("envelope");
    FilingSchemas::load(&s)
        .expect("no schema")
        .check(&Registry::new(&s), &env)
        .expect("nothing to check");
}

/// A scratch directory for schema files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lienthong-filing-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The shipped settings as if read from a file, with the birth procedure's schema at `path`.
fn from_file_with_birth_schema(path: &str) -> Result<Settings, ConfigError> {
    let text = DEFAULT_CONFIG
        .replace(
            "data_schema = \"schemas/procedures/1.001193.schema.json\"",
            &format!("data_schema = {path:?}"),
        )
        .replace(
            "data_schema = \"schemas/procedures/",
            &format!(
                "data_schema = \"{}/../schemas/procedures/",
                env!("CARGO_MANIFEST_DIR")
            ),
        );
    let settings =
        Settings::from_toml_with(&text, false, ConfigSource::File("test-config.toml".into()))?;
    FilingSchemas::load(&settings)?;
    Ok(settings)
}

#[test]
fn a_config_file_reads_schemas_from_disk_and_a_bad_one_stops_startup_naming_procedure_and_path() {
    let dir = scratch("config");
    // The shipped file, read from disk by absolute path: accepted.
    let good = format!(
        "{}/../schemas/procedures/1.001193.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    from_file_with_birth_schema(&good).expect("the shipped schema from disk");
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("missing.json", None, "cannot read it"),
        ("not-json.json", Some("{ not json"), "not JSON"),
        (
            "draft7.json",
            Some(r#"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}"#),
            "2020-12",
        ),
        (
            "bad-type.json",
            Some(
                r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "objekt"}"#,
            ),
            "not a valid JSON Schema 2020-12",
        ),
        (
            "unknown-step.json",
            Some(
                r#"{"type": "object", "properties": {"payload": {"x-needed-by": ["khai-sinh", "thue"]}}}"#,
            ),
            "thue",
        ),
    ];
    for (file, content, says) in cases {
        let path = dir.join(file);
        if let Some(c) = content {
            std::fs::write(&path, c).expect("write");
        }
        let e = from_file_with_birth_schema(&path.display().to_string())
            .expect_err(file)
            .to_string();
        assert!(
            e.contains("procedure 1.001193")
                && e.contains(&path.display().to_string())
                && e.contains(says),
            "{file}: {e}"
        );
    }
    // A relative path is read from the config file's directory, and the error says so.
    let e = from_file_with_birth_schema("no/such/schema.json")
        .expect_err("relative and missing")
        .to_string();
    assert!(
        e.contains("the file's directory") && e.contains("no/such/schema.json"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_embedded_config_can_only_name_compiled_in_schemas() {
    let text = DEFAULT_CONFIG.replace(
        "schemas/procedures/1.011537.schema.json",
        "schemas/procedures/1.011537-local.schema.json",
    );
    let settings = Settings::from_toml(&text, false).expect("the registry itself is sound");
    let e = match FilingSchemas::load(&settings) {
        Ok(_) => panic!("not compiled in, yet loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("procedure 1.011537")
            && e.contains("schemas/procedures/1.011537-local.schema.json")
            && e.contains("compiled into this binary"),
        "{e}"
    );
}

/// The JSON block of the section "The envelope" of docs/centres.md.
fn readme_example() -> String {
    let readme = include_str!("../../../docs/centres.md");
    let section = readme
        .split("\n## The envelope\n")
        .nth(1)
        .expect("docs/centres.md has a section \"The envelope\"");
    let block = section
        .split("```json\n")
        .nth(1)
        .expect("a ```json block in it");
    block
        .split("\n```")
        .next()
        .expect("the block ends")
        .to_string()
}

#[test]
fn the_readme_example_envelope_is_accepted_as_printed() {
    let s = shipped();
    let registry = Registry::new(&s);
    let text = readme_example();
    let env = EnvelopeValidator::new(&s.envelope)
        .expect("validator")
        .accept(text.as_bytes())
        .unwrap_or_else(|r| panic!("doc example refused at ingress: {}", r.reason()));
    let decision = crate::routing::check(&registry, &env, None)
        .unwrap_or_else(|r| panic!("doc example refused by routing: {}", r.reason()));
    assert!(decision.records_origin, "it is the centre's filing");
    FilingSchemas::load(&s)
        .expect("schemas")
        .check(&registry, &env)
        .unwrap_or_else(|r| panic!("doc example lacks procedure data: {}", r.reason()));
    for a in &env.attachments {
        assert!(
            a.sha256.len() == 64 && a.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "a real SHA-256: {}",
            a.sha256
        );
    }
}
