//! `lienthong edxml inspect` and `edxml build` as an agency IT team runs them: every shipped
//! sample prints as JSON, a broken package gives a clear error with its position and exit 1,
//! and a built package inspects back to the envelope's dossier.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_lienthong");

fn samples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/samples/edxml")
}

fn inspect(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(EXE)
        .args(["edxml", "inspect"])
        .arg(path)
        .output()
        .expect("run lienthong");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_sample_inspects_as_json() {
    let mut n = 0;
    for entry in std::fs::read_dir(samples()).expect("samples") {
        let path = entry.expect("entry").path();
        let (ok, out, err) = inspect(&path);
        assert!(ok, "{}: {err}", path.display());
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert!(v["MessageHeader"]["From"]["OrganId"].is_string(), "{v}");
        n += 1;
    }
    assert_eq!(n, 3);
    let (_, out, _) = inspect(&samples().join("status_acceptance_03.edxml"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["Status"]["StatusCode"], "03");
    assert_eq!(v["Status"]["TrangThaiHoSo"], 2);
    let (_, out, _) = inspect(&samples().join("edoc_update.edxml"));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["BussinessDocTypeName"], "update");
    let a = &v["Attachments"][0];
    assert_eq!(a["ContentType"], "application/zip");
    assert!(a["Size"].as_u64().is_some_and(|s| s > 200_000), "{a}");
    assert_eq!(a["Sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn a_broken_package_is_a_clear_error_with_its_position() {
    let dir = std::env::temp_dir().join(format!("lienthong-edxml-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = std::fs::read_to_string(samples().join("status_finish_06.edxml")).expect("sample");
    let broken = dir.join("broken.edxml");
    std::fs::write(
        &broken,
        good.replace("</edXML:StatusCode>", "</edXML:StatusCod>"),
    )
    .expect("write");
    let (ok, _, err) = inspect(&broken);
    assert!(!ok);
    assert!(
        err.contains("not well-formed XML at byte") && err.contains("broken.edxml"),
        "{err}"
    );
    let junk = dir.join("junk.edxml");
    std::fs::write(&junk, format!("Content-Type: text/xml\n\n{good}")).expect("write");
    let (ok, _, err) = inspect(&junk);
    assert!(!ok);
    assert!(err.contains("before the XML declaration"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_built_package_inspects_back_to_its_dossier() {
    let dir = std::env::temp_dir().join(format!("lienthong-edxml-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let line = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/samples/dossiers.jsonl"),
    )
    .expect("samples");
    let first = line.lines().next().expect("a dossier");
    let env: serde_json::Value = serde_json::from_str(first).expect("JSON");
    let input = dir.join("env.json");
    std::fs::write(&input, first).expect("write");
    let out = dir.join("pkg.edxml");
    let st = Command::new(EXE)
        .args(["edxml", "build"])
        .arg(&input)
        .args(["--to", "000.00.15.H48", "--out"])
        .arg(&out)
        .status()
        .expect("run");
    assert!(st.success());
    let saved = dir.join("attachments");
    let o = Command::new(EXE)
        .args(["edxml", "inspect"])
        .arg(&out)
        .arg("--save-attachments")
        .arg(&saved)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let h = &v["MessageHeader"];
    assert_eq!(h["Code"]["CodeNumber"], env["ma_ho_so"]);
    assert_eq!(h["To"][0]["OrganId"], "000.00.15.H48");
    assert!(
        h["DocumentId"]
            .as_str()
            .is_some_and(|d| d.ends_with(env["message_id"].as_str().unwrap_or("?"))),
        "{h}"
    );
    // The sample's inline attachment is an edXML attachment of its own, byte for byte.
    let attachments = v["Attachments"].as_array().expect("attachments");
    let first = &env["attachments"][0];
    let a = attachments
        .iter()
        .find(|a| a["AttachmentName"] == first["name"])
        .expect("the dossier's attachment in the package");
    assert_eq!(a["Sha256"], first["sha256"]);
    assert_eq!(a["Size"], first["size_bytes"]);
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("envelope.json")).expect("attachment"))
            .expect("the attached envelope");
    for field in ["message_id", "ma_ho_so", "ma_tthc", "sender"] {
        assert_eq!(back[field], env[field], "{field}");
    }
    assert_eq!(
        back["payload"]["applicant"]["ho_ten"],
        env["payload"]["applicant"]["ho_ten"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
