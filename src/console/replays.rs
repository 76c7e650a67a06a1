//! Console replays as background jobs: the dead-letters page's confirmation starts one on its
//! own task (a replay outlives the request, the request timeout and a closed browser), and the
//! operator watches it on its own page, which reloads itself until the replay has finished.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};

use crate::replay::Report;

use super::frame::{layout, layout_reloading, urlencode};
use super::i18n::t;
use super::{Console, Viewer};

/// How many finished replays the console remembers (the oldest is forgotten first).
const KEPT: usize = 20;

/// How long the confirmation waits for a replay to finish before it sends the operator to the
/// replay's page (a small replay shows its result at once).
const WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The replays started from this console (process memory: forgotten on restart; the trace and
/// the dead-letter log keep what each did).
#[derive(Default)]
pub(super) struct Jobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

/// One replay started from the console.
pub(super) struct Job {
    /// A random id (UUIDv7), the page's path segment.
    pub id: String,
    /// The account that confirmed it.
    pub user: String,
    /// The message ids it was asked to replay.
    pub ids: Vec<String>,
    state: Mutex<JobState>,
    done: tokio::sync::Notify,
}

#[derive(Default, Clone)]
struct JobState {
    report: Report,
    /// `None` while it runs; then `Ok` or the error that stopped it.
    outcome: Option<Result<(), String>>,
}

impl Jobs {
    /// The running replay, if one is.
    pub(super) fn running(&self) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| !j.finished()).cloned()
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().iter().find(|j| j.id == id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, job: Arc<Job>) {
        let mut jobs = self.lock();
        jobs.push_back(job);
        while jobs.len() > KEPT {
            match jobs.iter().position(|j| j.finished()) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
    }
}

impl Job {
    /// Whether the replay has finished (without copying its report).
    fn finished(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .outcome
            .is_some()
    }

    fn snapshot(&self) -> JobState {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, f: impl FnOnce(&mut JobState)) {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The replay pages' routes.
pub(super) fn routes() -> Router<Console> {
    Router::new().route("/dead-letters/replays/{id}", get(page))
}

/// Start replaying `ids` as `v`'s account on a task of its own; wait a little for it, then
/// send the operator to its page.
pub(super) async fn start(c: &Console, v: &Viewer, ids: Vec<String>) -> Response {
    let job = Arc::new(Job {
        id: uuid::Uuid::now_v7().to_string(),
        user: v.session.user.clone(),
        ids,
        state: Mutex::default(),
        done: tokio::sync::Notify::new(),
    });
    c.replays.add(job.clone());
    tracing::info!(
        message = "console replay",
        user = %job.user,
        count = job.ids.len(),
        job = %job.id
    );
    let (ctx, task_job) = (c.ctx.clone(), job.clone());
    let done = job.done.notified();
    tokio::spawn(async move {
        let job = task_job;
        let who = crate::replay::Replayer {
            writer: &ctx.writer,
            by: format!("console:{}", job.user),
            component: "console",
        };
        let filter = crate::replay::Filter {
            ids: job.ids.clone(),
            ..Default::default()
        };
        let progress = |r: &Report| job.set(|s| s.report = r.clone());
        let result =
            crate::replay::replay_with(&ctx.settings, &filter, false, &who, &progress).await;
        let outcome = match result {
            Ok(report) => {
                job.set(|s| s.report = report);
                Ok(())
            }
            Err(e) => {
                tracing::error!(message = "console replay failed", user = %job.user, job = %job.id, error = %e);
                Err(e.to_string())
            }
        };
        job.set(|s| s.outcome = Some(outcome));
        job.done.notify_waiters();
    });
    let _ = tokio::time::timeout(WAIT, done).await;
    Redirect::to(&format!("/console/dead-letters/replays/{}", job.id)).into_response()
}

async fn page(State(c): State<Console>, v: Viewer, Path(id): Path<String>) -> Response {
    let lang = v.lang;
    if !v.operator() {
        return (
            StatusCode::FORBIDDEN,
            layout(
                &v,
                "dead_letters",
                t(lang, "replay"),
                html! { p.error { (t(lang, "operators_only")) } },
            ),
        )
            .into_response();
    }
    let Some(job) = c.replays.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            layout(
                &v,
                "dead_letters",
                t(lang, "replay"),
                html! { p { (t(lang, "replay_forgotten")) } p { a href="/console/dead-letters?state=replayed" { (t(lang, "back")) } } },
            ),
        )
            .into_response();
    };
    let s = job.snapshot();
    let body = body(&v, &job, &s);
    if s.outcome.is_none() {
        layout_reloading(&v, "dead_letters", t(lang, "replay"), body, 1).into_response()
    } else {
        layout(&v, "dead_letters", t(lang, "replay"), body).into_response()
    }
}

fn body(v: &Viewer, job: &Job, s: &JobState) -> Markup {
    let lang = v.lang;
    let r = &s.report;
    let replayed: std::collections::HashSet<&str> = r.replayed.iter().map(String::as_str).collect();
    let missing: Vec<&String> = job
        .ids
        .iter()
        .filter(|id| !replayed.contains(id.as_str()))
        .collect();
    html! {
        p { (t(lang, "replay_by")) " " strong { (job.user) } " · " (job.ids.len()) " " (t(lang, "replay_asked")) }
        @match &s.outcome {
            None => {
                p #replay-progress aria-live="polite" {
                    (t(lang, "replay_running")) " " (r.replayed.len()) " / " (job.ids.len())
                    " (" (t(lang, "replay_examined")) " " (r.examined) " / " (r.total) ")"
                }
            }
            Some(Ok(())) => {
                p.ok #replay-result { (t(lang, "replayed_n")) ": " (r.replayed.len()) }
            }
            Some(Err(e)) => {
                p.bad role="alert" #replay-result {
                    (t(lang, "replay_failed")) ": " (e) " — " (t(lang, "replayed_n")) ": " (r.replayed.len())
                }
            }
        }
        @if let Some(e) = &r.unrecorded { p.bad { (t(lang, "replay_unrecorded")) ": " (e) } }
        @if s.outcome.is_some() && !missing.is_empty() {
            p.bad { (t(lang, "replay_missing")) ": " (missing.len()) }
            ul { @for id in missing.iter().take(100) { li { a href={ "/console/dead-letters/" (urlencode(id)) } { (id) } } } }
        }
        ul #replayed-ids { @for id in r.replayed.iter().take(100) { li { a href={ "/console/dead-letters/" (urlencode(id)) } { (id) } } } }
        @if r.replayed.len() > 100 { p { "… " (r.replayed.len() - 100) } }
        p { a href="/console/dead-letters" { (t(lang, "back")) } }
    }
}
