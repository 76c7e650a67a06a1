//! `lienthong edxml inspect|build`: the edXML tools agency IT teams use to debug their side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lienthong_adapters::edxml::read::{self, AttachmentSink, Limits};
use lienthong_adapters::edxml::{Attachment, Package};
use lienthong_core::envelope::Envelope;
use lienthong_core::registry::Settings;
use serde_json::{Value, json};

/// Writes each attachment to `<dir>/<AttachmentName>` (a `.part` file until it is complete;
/// names are reduced to their last path component, and numbered when they repeat).
struct SaveTo {
    dir: PathBuf,
    current: Option<(PathBuf, std::fs::File)>,
    saved: Vec<PathBuf>,
}

impl AttachmentSink for SaveTo {
    fn start(&mut self, index: usize) -> std::io::Result<()> {
        let part = self.dir.join(format!("attachment-{index}.part"));
        let f = std::fs::File::create(&part)?;
        self.current = Some((part, f));
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.current {
            Some((_, f)) => f.write_all(chunk),
            None => Ok(()),
        }
    }
    fn end(&mut self, a: &Attachment) -> std::io::Result<()> {
        let Some((part, f)) = self.current.take() else {
            return Ok(());
        };
        f.sync_all()?;
        let mut base = a
            .attachment_name
            .as_deref()
            .and_then(|n| Path::new(n).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .unwrap_or_else(|| format!("attachment-{}", self.saved.len()));
        // File systems take 255 bytes per name: keep the end (the extension), at a char boundary.
        if base.len() > 200 {
            let mut cut = base.len() - 200;
            while !base.is_char_boundary(cut) {
                cut += 1;
            }
            base = base[cut..].to_string();
        }
        let mut target = self.dir.join(&base);
        let mut k = 1;
        while target.exists() {
            target = self.dir.join(format!("{k}-{base}"));
            k += 1;
        }
        if let Err(e) = std::fs::rename(&part, &target) {
            let _ = std::fs::remove_file(&part);
            return Err(std::io::Error::new(
                e.kind(),
                format!("saving attachment {} as {}: {e}", base, target.display()),
            ));
        }
        self.saved.push(target);
        Ok(())
    }
}

/// The JSON `inspect` prints: the package (element names as in QCVN 102:2016) plus, for a
/// status package, the code's meaning and the bus status it maps to, and the business
/// document type in words.
pub fn inspect_json(pkg: &Package) -> Value {
    let mut v = serde_json::to_value(pkg).unwrap_or(Value::Null);
    if let Some(code) = &pkg.message_header.status_code {
        v["Status"] = json!({
            "StatusCode": code.0,
            "meaning": code.meaning(),
            "TrangThaiHoSo": code.to_bus().map(|s| s.0),
        });
    }
    if let Some(t) = pkg.business.as_ref().and_then(|b| b.doc_type_name()) {
        v["BussinessDocTypeName"] = json!(t);
    }
    v
}

/// `lienthong edxml inspect <file> [--save-attachments <dir>]`.
pub fn inspect(file: &Path, save: Option<&Path>) -> ExitCode {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let result = match save {
        Some(dir) => {
            if dir.exists() && !dir.is_dir() {
                eprintln!("error: {}: not a directory", dir.display());
                return ExitCode::FAILURE;
            }
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("error: {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            let mut sink = SaveTo {
                dir: dir.to_path_buf(),
                current: None,
                saved: Vec::new(),
            };
            let r = read::read(f, &mut sink, Limits::default());
            if let Some((part, _)) = sink.current.take() {
                let _ = std::fs::remove_file(part);
            }
            r
        }
        None => read::read(f, &mut read::Discard, Limits::default()),
    };
    match result {
        Ok(pkg) => {
            let text = serde_json::to_string_pretty(&inspect_json(&pkg)).unwrap_or_default();
            let mut o = std::io::stdout().lock();
            match o
                .write_all(text.as_bytes())
                .and_then(|_| o.write_all(b"\n"))
                .and_then(|_| o.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `lienthong edxml build <envelope.json|-> [--to <unit>] [--out <file>]`: the package the edXML
/// adapter would send for this envelope. The receiving unit is `--to`, else the envelope's
/// `receiver`; its name comes from the registry.
pub fn build(settings: &Settings, input: &Path, to: Option<&str>, out: Option<&Path>) -> ExitCode {
    let bytes = if input == Path::new("-") {
        let mut b = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut b) {
            eprintln!("error: stdin: {e}");
            return ExitCode::FAILURE;
        }
        b
    } else {
        match std::fs::read(input) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", input.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}: not JSON: {e}", input.display());
            return ExitCode::FAILURE;
        }
    };
    // The same checks as the bus's ingress (schema, field rules, NFC).
    let validator = match lienthong_core::envelope::EnvelopeValidator::new(&settings.envelope) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env: Envelope = match validator.accept_value(value) {
        Ok(e) => e,
        Err(r) => {
            eprintln!(
                "error: {}: not a valid envelope: {}",
                input.display(),
                r.reason()
            );
            return ExitCode::FAILURE;
        }
    };
    let Some(to) = to.or(env.receiver.as_deref()).filter(|t| !t.is_empty()) else {
        eprintln!("error: the envelope has no receiver; name one with --to <unit code>");
        return ExitCode::FAILURE;
    };
    let Some(name) = settings
        .units
        .iter()
        .find(|u| u.code == to)
        .map(|u| u.name.clone())
    else {
        eprintln!("error: no unit {to} in the registry (give --config, or another --to)");
        return ExitCode::FAILURE;
    };
    // Exactly what the adapter sends: a document package for a forward, a recall (13) for a
    // withdrawal or stop; anything else is refused, as the adapter refuses it.
    let pkg = match lienthong_adapters::edxml_adapter::build_package(&env, to, &name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match out {
        Some(path) => match std::fs::write(path, &pkg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        None => {
            let mut o = std::io::stdout().lock();
            match o.write_all(&pkg).and_then(|_| o.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the package: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
