//! The OpenAPI 3.1 document of the HTTP API, built from the handlers' `#[utoipa::path]`
//! annotations and the types they take and answer with, the envelope's JSON Schema
//! (`schemas/envelope.schema.json`, embedded) and the answers every route shares (401, 413, 429,
//! 503); served at `GET /openapi.json` and committed as `schemas/openapi.json` (`lienthong
//! openapi > schemas/openapi.json`; a test fails when the two differ).

use std::sync::OnceLock;

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::*;

/// The command that writes the committed document.
pub const REGENERATE: &str = "cargo run -p lienthong -- openapi > schemas/openapi.json";

/// The committed envelope schema, embedded as the `Envelope` component and its `$defs`.
const ENVELOPE_SCHEMA: &str = include_str!("../../schemas/envelope.schema.json");

/// What the document says of the API as a whole.
const DESCRIPTION: &str = "\
The HTTP API of lienthong, the integration bus for Vietnam's liên thông administrative \
procedures: for the one-stop centres' and units' software that does not speak AMQP (file an \
envelope, read the unit's queue as a pull inbox, read its own dossiers), for the agencies' \
systems (callbacks with their answers, the edXML pull of departments) and for the operators at \
the provincial Public Administration Centre (dossiers, traces, control sheets, overdue steps, \
dead letters, per-unit counts, metrics).

**Keys.** Every route but `/healthz`, `/readyz` and `/openapi.json` takes a key as \
`Authorization: Bearer <key>`, checked before the body is read: a unit's API key (`unitKey`), \
an agency's callback key for the unit in the path (`agencyKey`), or the operator key \
(`operatorKey`). A missing or wrong key, an unknown unit and a unit without callbacks all get \
the same 401. Each key has a rate (429 with Retry-After beyond it).

**Problems.** Every error is an RFC 9457 problem (`application/problem+json`) whose `type` is \
`urn:lienthong:problem:<code>` (the `Problem` schema lists every code); a 4xx means nothing was \
taken. Any route may answer 503 with Retry-After (the broker or the store unavailable, as many \
requests at once as the bus serves, or the request timed out).

**The envelope** is the committed JSON Schema `schemas/envelope.schema.json` (2020-12), \
embedded here as the `Envelope` schema (its `$defs` as `Envelope*` schemas); the AMQP side of \
the same contract is `schemas/asyncapi.yaml`.

**Not described here:** the operators' web console under `/console` (HTML pages with a cookie \
session and CSRF-protected forms, for people, not programs: see docs/operators.md), and \
`[http] metrics_listen`, a second address that serves only `GET /metrics` without a key.";

/// The document's routes and the schemas they name.
#[derive(OpenApi)]
#[openapi(
    info(title = "lienthong HTTP API", description = DESCRIPTION, license(name = "Apache-2.0", identifier = "Apache-2.0")),
    paths(
        super::ingress::submit,
        super::inbox::inbox,
        super::inbox::inbox_ack,
        super::inbox::inbox_reject,
        super::callbacks::callback,
        super::edxml::edxml_list,
        super::edxml::edxml_fetch,
        super::edxml::edxml_ack,
        super::reads::trace,
        super::reads::dossier,
        super::reads::control_sheet,
        super::reads::retry,
        super::lists::dossiers,
        super::reads::overdue,
        super::reads::dead_letters,
        super::reads::stats,
        super::reads::metrics,
        super::reads::blob,
        super::health::healthz,
        super::health::readyz,
        serve_document,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags(
        (name = "units", description = "A unit's software over HTTP: file envelopes, read its queue, fetch attachments (its unit's API key)"),
        (name = "agencies", description = "Agencies' systems: callbacks with their answers and the edXML pull (the unit's callback key)"),
        (name = "dossiers", description = "A dossier's trace, state and control sheet (the operator key, or a party's unit key); the dossier list (the operator key)"),
        (name = "operators", description = "The operators' reads and actions (the operator key)"),
        (name = "health", description = "Liveness and readiness (no key)"),
        (name = "contract", description = "This document (no key)"),
    )
)]
struct ApiDoc;

/// The three kinds of key, as HTTP bearer schemes.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let bearer = |about: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(about))
                    .build(),
            )
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "unitKey",
            bearer(
                "A unit's API key (`api_key` of its `[[units]]` entry in the registry): the unit \
                 files as itself, reads its own queue and its own dossiers.",
            ),
        );
        components.add_security_scheme(
            "agencyKey",
            bearer(
                "An agency's callback key (`callback_key` of an adapter unit): valid only on the \
                 routes whose `{unit}` is that unit.",
            ),
        );
        components.add_security_scheme(
            "operatorKey",
            bearer(
                "The operator key (`[http] operator_key`): every dossier's reads, the lists, \
                 retries and metrics.",
            ),
        );
    }
}

/// The answers every route shares, by status: (name in `components/responses`, description).
const SHARED: [(&str, &str, &str); 4] = [
    (
        "401",
        "Unauthorized",
        "`unauthorized`: no key, an unknown key, or a key that may not call this route",
    ),
    (
        "413",
        "TooLarge",
        "`too-large`: a declared `Content-Length` above the route's body limit",
    ),
    (
        "429",
        "RateLimited",
        "`rate-limited`: the key sent more requests than its rate allows; retry after Retry-After seconds",
    ),
    (
        "503",
        "Unavailable",
        "`unavailable` or `timeout`: the broker or the store cannot take the request now, the bus serves as many requests at once as it may, or the request took too long; retry after Retry-After seconds",
    ),
];

/// The document as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    embed_envelope(&mut doc);
    share_responses(&mut doc);
    // What `#[utoipa::path]` cannot say of a request body: the envelope (a reference) is
    // required, the retry's may be left out.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, method, required) in [
            ("/v1/messages", "post", true),
            ("/v1/dossiers/{ma_ho_so}/retry", "post", false),
        ] {
            if let Some(body) = paths
                .get_mut(path)
                .and_then(|p| p.get_mut(method))
                .and_then(|o| o.get_mut("requestBody"))
            {
                body["required"] = json!(required);
            }
        }
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.sort_keys();
    }
    doc["webhooks"] = webhooks();
    doc
}

/// OpenAPI 3.1 `webhooks`: what the bus POSTs to a unit reached by the `webhook` adapter
/// (`adapters/src/agencies/webhook.rs`), for the unit's developers to implement the receiver.
fn webhooks() -> Value {
    let header = |name: &str, description: &str| {
        json!({"name": name, "in": "header", "required": true, "description": description,
               "schema": {"type": "string"}})
    };
    json!({"unitMessage": {"post": {
        "operationId": "unitMessage",
        "summary": "A message for a unit, pushed to its webhook",
        "description": "Every message of the unit's queue, as the envelope's JSON (the bytes an AMQP consumer of the queue reads), POSTed to the `endpoint` of a unit whose `[units.reach]` is the `webhook` adapter. Check the signature over the raw body, store the message, then answer 2xx; deduplicate by `message_id` (a message whose answer was lost is sent again). docs/centres.md, \"Reading your queue over HTTP\".",
        "parameters": [
            header("X-Lienthong-Signature", "`t=<unix seconds>,v1=<hex>`: `<hex>` is HMAC-SHA256 (RFC 2104) of `<t>.<raw body>` under the unit's `webhook_secret`, computed when the attempt is sent. Compare in constant time; refuse a `t` more than five minutes from your clock."),
            header("X-Lienthong-Message-Id", "The envelope's `message_id`."),
            header("Idempotency-Key", "The envelope's `message_id` again."),
        ],
        "requestBody": {"required": true, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Envelope"}}}},
        "responses": {
            "2XX": {"description": "Stored: delivered."},
            "4XX": {"description": "Refused: the message is dead-lettered at once with the answer as its reason (408 and 429 are retried instead, 429 after its Retry-After)."},
            "5XX": {"description": "Not stored now: retried with backoff, then dead-lettered after the retry budget (`[retry]`)."}
        }
    }}})
}

/// The document as it is committed: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// The document.
///
/// This OpenAPI 3.1 document (also committed as `schemas/openapi.json`): generate a client
/// from it, e.g. with openapi-generator.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "contract",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub(super) async fn serve_document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        TEXT.get_or_init(document_text).clone(),
    )
        .into_response()
}

/// The component name of the envelope schema's `$defs` entry `def` (`unit_code` →
/// `EnvelopeUnitCode`).
fn def_name(def: &str) -> String {
    let mut name = String::from("Envelope");
    for part in def.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

/// Point every `#/$defs/<def>` reference of `v` at its component.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match (key.as_str(), item.as_str()) {
                    ("$ref", Some(r)) if r.starts_with("#/$defs/") => {
                        let def = &r["#/$defs/".len()..];
                        *item = json!(format!("#/components/schemas/{}", def_name(def)));
                    }
                    _ => rewrite_refs(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The envelope schema as components: `Envelope` (as committed, less `$schema`, `$id` and
/// `$defs`), `EnvelopeSubmission` (the same with `message_id` optional: what `POST
/// /v1/messages` takes) and one `Envelope*` schema per `$defs` entry.
fn embed_envelope(doc: &mut Value) {
    let Ok(Value::Object(mut envelope)) = serde_json::from_str::<Value>(ENVELOPE_SCHEMA) else {
        return;
    };
    let id = envelope.remove("$id").unwrap_or_default();
    envelope.remove("$schema");
    let defs = envelope.remove("$defs").unwrap_or_default();
    let about = envelope
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut envelope = Value::Object(envelope);
    rewrite_refs(&mut envelope);
    envelope["description"] = json!(format!(
        "{about}\n\nThe committed JSON Schema `schemas/envelope.schema.json` ($id `{}`), embedded; its `$defs` are the `Envelope*` schemas.",
        id.as_str().unwrap_or_default()
    ));
    let mut submission = envelope.clone();
    submission["title"] = json!("lienthong canonical envelope, as filed over HTTP");
    submission["description"] = json!(
        "The envelope (`Envelope`, `schemas/envelope.schema.json`) as `POST /v1/messages` takes it: `message_id` may be left out, and the bus gives one (a UUIDv7), the same again for a resend under the same `Idempotency-Key`."
    );
    if let Some(required) = submission["required"].as_array_mut() {
        required.retain(|r| r != "message_id");
    }
    let Some(schemas) = doc["components"]["schemas"].as_object_mut() else {
        return;
    };
    schemas.insert("Envelope".into(), envelope);
    schemas.insert("EnvelopeSubmission".into(), submission);
    if let Value::Object(defs) = defs {
        for (def, mut schema) in defs {
            rewrite_refs(&mut schema);
            schemas.insert(def_name(&def), schema);
        }
    }
}

/// The shared answers ([`SHARED`]) as `components/responses`, and a reference to each in every
/// operation that may give it and does not describe it itself: 503 on every route (the request
/// bound and timeout are in front of all), 401, 413 and 429 on every route that takes a key.
fn share_responses(doc: &mut Value) {
    let retry_after = json!({
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "required": true,
            "schema": {"type": "integer", "minimum": 1}
        }
    });
    let mut shared = serde_json::Map::new();
    for (status, name, about) in SHARED {
        let mut response = json!({
            "description": about,
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
        });
        if matches!(status, "429" | "503") {
            response["headers"] = retry_after.clone();
        }
        shared.insert(name.into(), response);
    }
    doc["components"]["responses"] = Value::Object(shared);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in operation.values_mut() {
            let keyed = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (status, name, _) in SHARED {
                if (keyed || status == "503") && !responses.contains_key(status) {
                    responses.insert(
                        status.into(),
                        json!({"$ref": format!("#/components/responses/{name}")}),
                    );
                }
            }
            responses.sort_keys();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document_text(),
            "schemas/openapi.json differs from the HTTP API's code: regenerate it with `{REGENERATE}` and commit it"
        );
    }

    #[test]
    fn every_route_of_the_router_is_in_the_document() {
        let doc = document();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        // The routes `app` and its groups declare (src/http_api/mod.rs), by method.
        let source = include_str!("mod.rs");
        let mut routes = 0;
        for line in source.lines() {
            let Some((_, rest)) = line.split_once(".route(\"") else {
                continue;
            };
            let Some((path, handler)) = rest.split_once("\", ") else {
                continue;
            };
            let method = handler.split('(').next().unwrap_or_default();
            routes += 1;
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} is routed but not in the OpenAPI document"
            );
        }
        assert!(routes >= 20, "found {routes} routes in mod.rs");
    }

    #[test]
    fn the_envelope_is_embedded_and_every_reference_resolves() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Envelope"]["properties"]["spec"]["const"],
            "lienthong.envelope/1"
        );
        let required = |name: &str| schemas[name]["required"].as_array().cloned();
        assert!(required("Envelope").is_some_and(|r| r.contains(&json!("message_id"))));
        assert!(required("EnvelopeSubmission").is_some_and(|r| !r.contains(&json!("message_id"))));
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, item) in m {
                        match (k.as_str(), item.as_str()) {
                            ("$ref", Some(r)) => out.push(r.to_string()),
                            _ => refs(item, out),
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|i| refs(i, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 40, "{} references", all.len());
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or("not local");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_problem_type_the_code_answers_is_in_the_document() {
        let doc = document();
        let types: Vec<String> =
            doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
        // Every literal code of a `Problem::new` / `Problem::hidden` call in src/.
        let mut seen = 0;
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // (Spelt in two halves, so that this line is not a call it finds.)
                for call in [
                    concat!("Problem::", "new("),
                    concat!("Problem::", "hidden("),
                ] {
                    for (at, _) in text.match_indices(call) {
                        let args = &text[at + call.len()..];
                        let Some(code) = args
                            .split_once(',')
                            .map(|(_, rest)| rest.trim_start())
                            .and_then(|rest| rest.strip_prefix('"'))
                            .and_then(|rest| rest.split_once('"'))
                            .map(|(code, _)| code)
                        else {
                            continue;
                        };
                        seen += 1;
                        assert!(
                            types.contains(&crate::problem::problem_type(code)),
                            "{}: problem type {code} is not in PROBLEM_TYPES (src/problem.rs)",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(seen > 25, "found {seen} problem codes in src/");
        for code in crate::problem::answered_rejections() {
            assert!(types.contains(&crate::problem::problem_type(code.as_str())));
        }
    }
}
