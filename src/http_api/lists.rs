//! `GET /v1/dossiers`: the dossier list (the same filters as `lienthong dossiers`), as JSON or
//! exported for Excel (CSV, XLSX); and the export of any sheet (a dossier's trace too).

use super::*;
use crate::dossier_list::{self, ListParams, Sheet};

/// The dossier list.
///
/// `GET /v1/dossiers`: the dossiers matching the query's filters (the same as `lienthong
/// dossiers`), newest received first: JSON `{total, offset, items}`, or with `format=csv` /
/// `format=xlsx` the page as a download for Excel.
#[utoipa::path(
    get,
    path = "/v1/dossiers",
    tag = "dossiers",
    operation_id = "dossiers",
    security(("operatorKey" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "One page of dossiers",
            content(
                (lienthong_core::store::DossierPage = "application/json"),
                (String = "text/csv"),
                (inline(Binary) = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            )
        ),
        (status = 400, description = "`bad-query`: an unknown parameter, a bad phase, limit or time", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store`, `internal`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn dossiers(
    State(api): State<Api>,
    q: Result<Query<ListParams>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(p) = api.operator(&headers) {
        return p.into_response();
    }
    let bad = |detail: String| {
        Problem::new(StatusCode::BAD_REQUEST, "bad-query", "Bad query", detail).into_response()
    };
    let params = match q {
        Ok(Query(p)) => p,
        Err(e) => return bad(e.body_text()),
    };
    let query = match params.to_query() {
        Ok(q) => q,
        Err(e) => return bad(e),
    };
    let store = api.ctx.store.clone();
    let now = lienthong_core::clock::now_ms();
    let page = match tokio::task::spawn_blocking(move || store.dossiers(&query, now)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return store_error(e),
        Err(e) => return internal_error(e),
    };
    match params.format.as_deref() {
        None | Some("json") => Json(page).into_response(),
        Some(f) => export(&dossier_list::dossier_sheet(&page.items), f, "dossiers"),
    }
}

/// `sheet` as a download in `format` (`csv` or `xlsx`) named `<name>.<format>`; any other
/// format is a 400.
pub(super) fn export(sheet: &Sheet, format: &str, name: &str) -> Response {
    let (bytes, content_type) = match format {
        "csv" => (dossier_list::to_csv(sheet), "text/csv; charset=utf-8"),
        "xlsx" => (
            dossier_list::to_xlsx(sheet, name),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        other => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-query",
                "Bad query",
                format!("format {other:?}: json, csv or xlsx"),
            )
            .into_response();
        }
    };
    // A file name of safe characters only (a dossier code comes from the URL).
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match bytes {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}.{format}\""),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            ],
            b,
        )
            .into_response(),
        Err(e) => internal_error(e),
    }
}
