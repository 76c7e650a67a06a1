//! The process manager's state machine: one [`Process`] per dossier that a centre filed without
//! naming a receiver, advanced by each message of that dossier into the messages the bus sends
//! next (the route of the catalogue: step by step, parallel groups fanning out and joining,
//! pauses, refusal, stop and withdrawal), with a due time and a before / on / past
//! classification for every hand-over (working days of [`crate::calendar`]).
//!
//! This module is pure (no I/O, no SQL): [`advance`] takes the stored state, the incoming
//! envelope and "now", and returns the new state and the envelopes to publish. Persistence (with
//! an inbox for idempotency and a transactional outbox) is the store's
//! (`crate::store::process`, written through the group commit).
//!
//! Files: [`state`] (the types), [`route`] (whose message, which unit takes a role),
//! [`rules`] (start and advance), [`due`] (due times and the overdue scan), [`blocked`] (dead
//! letters of the dossier's messages), [`carried`] (results and data a hand-over carries),
//! `tests`.
//!
//! ## Rules (docs/reference/process-manager.md documents them for operators)
//!
//! * **Start.** A `dossier.forward` from a centre with no `receiver`, for a dossier the bus has
//!   not seen, starts the procedure's route. The optional steps are the ones whose `choice` is in
//!   `payload.data.thu_tuc_lua_chon` (the procedures the applicant chose). A role is resolved to
//!   the unit with that role nearest to the receiving centre in the registry's parent tree.
//! * **Clock.** The dossier is received at `payload.data.ngay_tiep_nhan` (RFC 3339) when the
//!   centre gives it, else at the envelope's `sent_at`. The first group's steps fall due
//!   [`crate::calendar::WorkCalendar::due`] working days after the receipt, with the procedure's
//!   cut-off; a later group's steps count from the hand-over to them (no cut-off: a hand-over
//!   after office hours counts from the next working day). The dossier falls due after the
//!   procedure's `deadline_working_days` (`deadline_working_days_with_verification` when
//!   `payload.data.can_xac_minh` is true), else the sum over groups of the longest step.
//! * **Step done.** A `dossier.result`, or a `dossier.status` 9 or 10, from a unit holding an open
//!   step closes that step, classified against its due time. When every step of the group is
//!   closed, the next group is forwarded, carrying each earlier step's result as
//!   `payload.data.ket_qua_<step id>` (and its top-level fields where `payload.data` lacks them,
//!   e.g. the land office's `phieu_chuyen_thong_tin` for Tax). After the last group, one
//!   `dossier.result` (status 9) goes to the receiving centre with every step's result.
//! * **Refusal (3) or stop (8)** from any unit ends the dossier: the other open units get a
//!   `dossier.status` 8 (stop), the centre gets the refusal with its reason.
//! * **Pause (5 supplement, 6 financial obligation).** The step's status goes to the centre and
//!   the step's clock (and the dossier's) stops, when the status is one of the procedure's
//!   `clock_pausing_statuses`. The centre answers with a `dossier.forward` with
//!   no receiver: the office time paused is added to the due times and the same step resumes (the
//!   unit gets the forward with the centre's new data).
//! * **Withdrawal (7)** by the centre cancels every open step (`dossier.status` 7 to each unit).
//!   A `dossier.status` 8 from the centre stops them the same way.
//! * **Result returned (10)** from the centre after completion records the return time.
//! * Anything for an ended dossier is recorded and otherwise ignored (no status regression).

pub mod blocked;
pub mod carried;
pub mod due;
pub mod route;
pub mod rules;
pub mod state;
#[cfg(test)]
mod tests;

pub use blocked::{DeadLetterNotice, dead_lettered, replayed, retry_blocked};
pub use carried::snake_id;
pub use due::{AlertLevel, OverdueItem, dvcqg_time, overdue_items, parse_ts};
pub use route::{manages, resolve_role, starts_process};
pub use rules::{advance, start};
pub use state::{BlockedMessage, Context, Phase, Process, StepPhase, StepRun, Transition};
