//! The working-day calendar: which days are worked, when a step's clock starts, when it falls
//! due, and whether a hand-over was before, on or past its deadline (trước hạn / đúng hạn /
//! quá hạn).
//!
//! **Counting rule** (lienthong's, documented in docs/reference/working-days.md; the sources
//! give only the 15:00 cut-off of the birth group, the rest is unverified and configurable):
//! 1. A day is worked unless it is a weekend day, a public holiday, or a day off announced for
//!    the year; a day the year's announcement makes worked (a compensatory Saturday) is worked.
//! 2. The clock starts on the day of receipt if that day is worked and the dossier arrived
//!    before the procedure's cut-off (or before the end of office hours when there is none);
//!    otherwise on the next worked day.
//! 3. A deadline of N working days falls due at the end of office hours of the N-th worked day,
//!    the start day being day 1.
//! 4. A pause (supplement requested, financial obligation) moves the due time forward by the
//!    office time it lasted.
//! 5. A hand-over on an earlier day than the due day is before the deadline; on the due day, at
//!    or before the due time, on the deadline; after the due time, past it.
//!
//! Holidays (Labour Code 2019, Art. 112, as quoted by secondary sources; see
//! docs/reference/working-days.md): 1 January, Tết (5 days), Hùng Kings' day (10th day of the
//! 3rd lunar month), 30 April, 1 May, 2 September and one adjacent day. Lunar dates are computed
//! for the UTC+7 meridian (Hồ Ngọc Đức's algorithm, crate `amlich-core`), so Tết 1985 and 2007
//! differ from China's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone, Weekday};
use serde::{Deserialize, Serialize};

/// Vietnam's offset, +07:00.
pub fn vn() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero"))
}

/// One year's announced changes (`[[calendar.years]]`): the Prime Minister fixes the Tết and
/// National Day days off each year and civil servants' schedules swap Saturdays in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearOverride {
    /// The year.
    pub year: i32,
    /// Extra days off (`YYYY-MM-DD`), e.g. the days around Tết.
    #[serde(default)]
    pub days_off: Vec<String>,
    /// Days worked although they would not be (compensatory Saturdays).
    #[serde(default)]
    pub days_worked: Vec<String>,
    /// Where the announcement comes from.
    #[serde(default)]
    pub source: Option<String>,
    /// Whether it was checked against the official text.
    #[serde(default)]
    pub verified: bool,
}

/// `[calendar]` settings. Every default is marked with its source in
/// docs/reference/working-days.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSettings {
    /// Office hours, `HH:MM-HH:MM` blocks in +07:00 (default 07:30-11:30, 13:30-17:00;
    /// docs/reference/working-days.md: differs by province).
    pub office_hours: Vec<String>,
    /// Days of the week not worked (`sat`, `sun`, …).
    pub weekend: Vec<String>,
    /// Fixed-date public holidays, `MM-DD`.
    pub fixed_holidays: Vec<String>,
    /// The day adjacent to 2 September (`MM-DD`; the year's announcement may choose another,
    /// through `years`).
    pub national_day_adjacent: String,
    /// Tết: days off before lunar 1/1 (default 1, the last day of the lunar year) and from it
    /// (default 4: lunar 1/1 to 1/4); five in all. Which five is fixed each year: unverified.
    pub tet_days_before: u32,
    /// See `tet_days_before`.
    pub tet_days_from: u32,
    /// Lunar public holidays other than Tết, `MM-DD` lunar (default Hùng Kings' day, `03-10`).
    pub lunar_holidays: Vec<String>,
    /// The years' announcements.
    pub years: Vec<YearOverride>,
}

impl Default for CalendarSettings {
    fn default() -> Self {
        CalendarSettings {
            office_hours: vec!["07:30-11:30".into(), "13:30-17:00".into()],
            weekend: vec!["sat".into(), "sun".into()],
            fixed_holidays: vec![
                "01-01".into(),
                "04-30".into(),
                "05-01".into(),
                "09-02".into(),
            ],
            national_day_adjacent: "09-01".into(),
            tet_days_before: 1,
            tet_days_from: 4,
            lunar_holidays: vec!["03-10".into()],
            years: Vec::new(),
        }
    }
}

/// Before / on / past the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Timeliness {
    /// Trước hạn: on a day before the due day.
    Early,
    /// Đúng hạn: on the due day, at or before the due time.
    OnTime,
    /// Quá hạn: after the due time.
    Late,
}

impl Timeliness {
    /// The Vietnamese term.
    pub fn vi(self) -> &'static str {
        match self {
            Timeliness::Early => "Trước hạn",
            Timeliness::OnTime => "Đúng hạn",
            Timeliness::Late => "Quá hạn",
        }
    }
}

/// The calendar, ready to count.
#[derive(Debug, Clone)]
pub struct WorkCalendar {
    hours: Vec<(NaiveTime, NaiveTime)>,
    weekend: Vec<Weekday>,
    fixed: Vec<(u32, u32)>,
    adjacent: (u32, u32),
    tet_before: u32,
    tet_from: u32,
    lunar: Vec<(i32, i32)>,
    off: BTreeSet<NaiveDate>,
    worked: BTreeSet<NaiveDate>,
    /// Each year's worked days, computed once per year on first use and shared by clones.
    years: Arc<Mutex<HashMap<i32, Arc<YearDays>>>>,
}

/// One Gregorian year's worked days: `worked[i]` for the day of ordinal `i` (0-based), and
/// `before[i]` = worked days before it in the year (so a span's count is two look-ups).
#[derive(Debug)]
struct YearDays {
    worked: Vec<bool>,
    before: Vec<u32>,
}

/// Years a cache keeps before it is emptied (bounds memory against far-away dates: ~3 KB each).
const CACHED_YEARS: usize = 64;

fn md(s: &str, what: &str) -> Result<(u32, u32), String> {
    let (m, d) = s
        .split_once('-')
        .ok_or_else(|| format!("calendar: {what} {s:?} is not MM-DD"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("calendar: {what} {s:?} is not MM-DD"))?;
    let d: u32 = d
        .parse()
        .map_err(|_| format!("calendar: {what} {s:?} is not MM-DD"))?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(format!("calendar: {what} {s:?} is not MM-DD"));
    }
    Ok((m, d))
}

fn date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("calendar: {s:?} is not YYYY-MM-DD"))
}

/// Parse `HH:MM` (a cut-off time).
pub fn hhmm(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not HH:MM"))
}

/// The solar date of lunar day `d` of lunar month `m` of lunar year `y`, for the UTC+7 meridian.
pub fn lunar_to_solar(d: i32, m: i32, y: i32) -> Option<NaiveDate> {
    let (dd, mm, yy) = amlich_core::lunar::convert_lunar_to_solar(d, m, y, false, 7.0);
    NaiveDate::from_ymd_opt(yy, mm as u32, dd as u32)
}

/// Tết (lunar 1/1) of lunar year `y`, for the UTC+7 meridian.
pub fn tet(y: i32) -> Option<NaiveDate> {
    lunar_to_solar(1, 1, y)
}

impl WorkCalendar {
    /// Build from settings. Errors name the bad value.
    pub fn new(s: &CalendarSettings) -> Result<WorkCalendar, String> {
        let mut hours = Vec::new();
        for b in &s.office_hours {
            let (a, z) = b
                .split_once('-')
                .ok_or_else(|| format!("calendar: office hours {b:?} are not HH:MM-HH:MM"))?;
            let (a, z) = (hhmm(a)?, hhmm(z)?);
            if z <= a {
                return Err(format!(
                    "calendar: office hours {b:?} end before they start"
                ));
            }
            hours.push((a, z));
        }
        hours.sort();
        if hours.is_empty() {
            return Err("calendar: no office hours".into());
        }
        let mut weekend = Vec::new();
        for w in &s.weekend {
            weekend.push(
                w.parse::<Weekday>()
                    .map_err(|_| format!("calendar: weekend day {w:?}"))?,
            );
        }
        let mut off = BTreeSet::new();
        let mut worked = BTreeSet::new();
        for y in &s.years {
            for d in &y.days_off {
                off.insert(date(d)?);
            }
            for d in &y.days_worked {
                worked.insert(date(d)?);
            }
        }
        let lunar = s
            .lunar_holidays
            .iter()
            .map(|x| md(x, "lunar holiday").map(|(m, d)| (m as i32, d as i32)))
            .collect::<Result<_, _>>()?;
        Ok(WorkCalendar {
            hours,
            weekend,
            fixed: s
                .fixed_holidays
                .iter()
                .map(|x| md(x, "holiday"))
                .collect::<Result<_, _>>()?,
            adjacent: md(&s.national_day_adjacent, "national_day_adjacent")?,
            tet_before: s.tet_days_before,
            tet_from: s.tet_days_from,
            lunar,
            off,
            worked,
            years: Arc::default(),
        })
    }

    /// The worked days of `year`, from the cache or computed (holidays once per year).
    fn year(&self, year: i32) -> Arc<YearDays> {
        let mut cache = self.years.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(y) = cache.get(&year) {
            return y.clone();
        }
        let holidays = self.holidays(year);
        let mut worked = Vec::with_capacity(366);
        let mut before = Vec::with_capacity(367);
        let mut n = 0u32;
        let mut d = NaiveDate::from_yo_opt(year, 1);
        while let Some(day) = d.filter(|x| x.year() == year) {
            let w = self.worked.contains(&day)
                || !(self.weekend.contains(&day.weekday())
                    || self.off.contains(&day)
                    || holidays.contains_key(&day));
            before.push(n);
            worked.push(w);
            n += u32::from(w);
            d = day.succ_opt();
        }
        before.push(n);
        let y = Arc::new(YearDays { worked, before });
        if cache.len() >= CACHED_YEARS {
            cache.clear();
        }
        cache.insert(year, y.clone());
        y
    }

    /// Worked days from `a` to `b`, both included (0 when `b < a`): O(1) per year crossed.
    pub fn working_days_between(&self, a: NaiveDate, b: NaiveDate) -> i64 {
        let mut total = 0i64;
        let mut from = a;
        while from <= b {
            let y = self.year(from.year());
            let end_of_year = NaiveDate::from_ymd_opt(from.year(), 12, 31).unwrap_or(b);
            let to = b.min(end_of_year);
            let (i, j) = (from.ordinal0() as usize, to.ordinal0() as usize + 1);
            total += i64::from(
                y.before.get(j).copied().unwrap_or(0) - y.before.get(i).copied().unwrap_or(0),
            );
            match end_of_year.succ_opt() {
                Some(next) if to == end_of_year => from = next,
                _ => break,
            }
        }
        total
    }

    /// The public holidays of Gregorian year `year` by law (before the year's announcement),
    /// with their names.
    pub fn holidays(&self, year: i32) -> BTreeMap<NaiveDate, &'static str> {
        let mut h = BTreeMap::new();
        for (m, d) in &self.fixed {
            if let Some(x) = NaiveDate::from_ymd_opt(year, *m, *d) {
                h.insert(x, "public holiday");
            }
        }
        if let Some(x) = NaiveDate::from_ymd_opt(year, self.adjacent.0, self.adjacent.1) {
            h.insert(x, "National Day (adjacent day)");
        }
        // Tết of this Gregorian year, and of the next (its last lunar day may fall in December).
        for ly in [year, year + 1] {
            if let Some(t) = tet(ly) {
                for i in -(self.tet_before as i64)..(self.tet_from as i64) {
                    let x = t + Duration::days(i);
                    if x.year() == year {
                        h.insert(x, "Tết");
                    }
                }
            }
        }
        for (m, d) in &self.lunar {
            if let Some(x) = lunar_to_solar(*d, *m, year)
                && x.year() == year
            {
                h.insert(x, "lunar public holiday");
            }
        }
        h
    }

    /// Whether `d` is worked.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        self.year(d.year())
            .worked
            .get(d.ordinal0() as usize)
            .copied()
            .unwrap_or(false)
    }

    fn next_working_day(&self, mut d: NaiveDate) -> NaiveDate {
        loop {
            d += Duration::days(1);
            if self.is_working_day(d) {
                return d;
            }
        }
    }

    fn at(&self, d: NaiveDate, t: NaiveTime) -> DateTime<FixedOffset> {
        vn().from_local_datetime(&d.and_time(t))
            .single()
            .unwrap_or_else(|| vn().from_utc_datetime(&d.and_time(t)))
    }

    fn day_end(&self, d: NaiveDate) -> DateTime<FixedOffset> {
        self.at(d, self.hours.last().map(|h| h.1).unwrap_or(NaiveTime::MIN))
    }

    /// The first counted day for something received at `received`, with the procedure's
    /// `cutoff` (rule 2).
    pub fn clock_start(
        &self,
        received: DateTime<FixedOffset>,
        cutoff: Option<NaiveTime>,
    ) -> NaiveDate {
        let local = received.with_timezone(&vn());
        let d = local.date_naive();
        let limit =
            cutoff.unwrap_or_else(|| self.hours.last().map(|h| h.1).unwrap_or(NaiveTime::MIN));
        if self.is_working_day(d) && local.time() < limit {
            d
        } else {
            self.next_working_day(d)
        }
    }

    /// When a step of `days` working days received at `received` falls due (rules 2 and 3).
    pub fn due(
        &self,
        received: DateTime<FixedOffset>,
        days: u32,
        cutoff: Option<NaiveTime>,
    ) -> DateTime<FixedOffset> {
        let mut d = self.clock_start(received, cutoff);
        for _ in 1..days.max(1) {
            d = self.next_working_day(d);
        }
        self.day_end(d)
    }

    /// Office time (seconds) between `a` and `b` on worked days: the first and last day
    /// counted hour by hour, the days between by the per-year tables (O(1) per year crossed).
    pub fn office_seconds(&self, a: DateTime<FixedOffset>, b: DateTime<FixedOffset>) -> i64 {
        if b <= a {
            return 0;
        }
        let (a, b) = (a.with_timezone(&vn()), b.with_timezone(&vn()));
        let in_day = |d: NaiveDate| -> i64 {
            if !self.is_working_day(d) {
                return 0;
            }
            let mut total = 0;
            for (s, e) in &self.hours {
                let (s, e) = (self.at(d, *s), self.at(d, *e));
                let lo = s.max(a);
                let hi = e.min(b);
                if hi > lo {
                    total += (hi - lo).num_seconds();
                }
            }
            total
        };
        let (first, last) = (a.date_naive(), b.date_naive());
        if first == last {
            return in_day(first);
        }
        let full_day: i64 = self
            .hours
            .iter()
            .map(|(s, e)| (*e - *s).num_seconds())
            .sum();
        let middle = match (first.succ_opt(), last.pred_opt()) {
            (Some(x), Some(y)) if x <= y => self.working_days_between(x, y) * full_day,
            _ => 0,
        };
        in_day(first) + middle + in_day(last)
    }

    /// `t` moved forward by `secs` of office time (rule 4).
    pub fn add_office_seconds(&self, t: DateTime<FixedOffset>, secs: i64) -> DateTime<FixedOffset> {
        let mut left = secs;
        let mut cur = t.with_timezone(&vn());
        if left <= 0 {
            return cur;
        }
        let mut d = cur.date_naive();
        loop {
            if self.is_working_day(d) {
                for (s, e) in &self.hours {
                    let (s, e) = (self.at(d, *s), self.at(d, *e));
                    let from = s.max(cur);
                    if e > from {
                        let room = (e - from).num_seconds();
                        if room >= left {
                            return from + Duration::seconds(left);
                        }
                        left -= room;
                        cur = e;
                    }
                }
            }
            d += Duration::days(1);
            cur = cur.max(self.at(d, NaiveTime::MIN));
        }
    }

    /// Before / on / past `due` for a hand-over at `done` (rule 5).
    pub fn classify(&self, done: DateTime<FixedOffset>, due: DateTime<FixedOffset>) -> Timeliness {
        let (done, due) = (done.with_timezone(&vn()), due.with_timezone(&vn()));
        if done > due {
            Timeliness::Late
        } else if done.date_naive() < due.date_naive() {
            Timeliness::Early
        } else {
            Timeliness::OnTime
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("time")
    }

    fn d(s: &str) -> NaiveDate {
        date(s).expect("date")
    }

    /// The 2026 announcement (docs/reference/working-days.md), as shipped in the config.
    fn cal_2026() -> WorkCalendar {
        let mut s = CalendarSettings::default();
        s.years.push(YearOverride {
            year: 2026,
            days_off: vec!["2026-01-02".into(), "2026-08-31".into()],
            days_worked: vec!["2026-01-10".into(), "2026-08-22".into()],
            source: None,
            verified: false,
        });
        WorkCalendar::new(&s).expect("calendar")
    }

    #[test]
    fn tet_is_computed_for_the_utc7_meridian() {
        // Vietnam's Tết differs from China's (UTC+8) in 1985 and 2007.
        assert_eq!(tet(1985), Some(d("1985-01-21")));
        assert_eq!(tet(2007), Some(d("2007-02-17")));
        assert_eq!(tet(2026), Some(d("2026-02-17")));
        assert_eq!(tet(2025), Some(d("2025-01-29")));
        // Hùng Kings' day 2026: 10th day of the 3rd lunar month.
        assert_eq!(lunar_to_solar(10, 3, 2026), Some(d("2026-04-26")));
    }

    #[test]
    fn holidays_weekends_and_the_years_announcement() {
        let c = cal_2026();
        assert!(!c.is_working_day(d("2026-01-01")), "New Year");
        assert!(!c.is_working_day(d("2026-01-02")), "announced day off");
        assert!(c.is_working_day(d("2026-01-10")), "compensatory Saturday");
        assert!(!c.is_working_day(d("2026-01-17")), "an ordinary Saturday");
        for x in [
            "2026-02-16",
            "2026-02-17",
            "2026-02-18",
            "2026-02-19",
            "2026-02-20",
        ] {
            assert!(!c.is_working_day(d(x)), "Tết {x}");
        }
        assert!(c.is_working_day(d("2026-02-23")));
        assert!(!c.is_working_day(d("2026-04-30")) && !c.is_working_day(d("2026-05-01")));
        assert!(!c.is_working_day(d("2026-09-01")) && !c.is_working_day(d("2026-09-02")));
        assert!(c.is_working_day(d("2026-08-22")), "compensatory Saturday");
    }

    /// The due-date table of the issue, checked against the documented rule.
    #[test]
    fn due_dates() {
        let c = cal_2026();
        let cut = Some(hhmm("15:00").expect("cut-off"));
        let cases = [
            // Friday afternoon after the cut-off: counts from Monday; 3 days → Wednesday.
            (
                "2026-11-27T15:30:00+07:00",
                3,
                cut,
                "2026-12-02T17:00:00+07:00",
            ),
            // Friday before the cut-off: Friday is day 1 → Tuesday.
            (
                "2026-11-27T10:00:00+07:00",
                3,
                cut,
                "2026-12-01T17:00:00+07:00",
            ),
            // Across Tết: received Friday 13 February 2026; 3 days → 13, 23, 24 February.
            (
                "2026-02-13T09:00:00+07:00",
                3,
                cut,
                "2026-02-24T17:00:00+07:00",
            ),
            // Across a compensatory Saturday: 9 January (Fri) + 2 days → 9, 10 (Sat, worked).
            (
                "2026-01-09T09:00:00+07:00",
                2,
                cut,
                "2026-01-10T17:00:00+07:00",
            ),
            // A 5-day step over 30 April and 1 May 2026 (Thu, Fri): 28, 29 Apr, 4, 5, 6 May.
            (
                "2026-04-28T08:00:00+07:00",
                5,
                None,
                "2026-05-06T17:00:00+07:00",
            ),
            // Received on a holiday: counts from the next worked day.
            (
                "2026-09-02T09:00:00+07:00",
                1,
                cut,
                "2026-09-03T17:00:00+07:00",
            ),
        ];
        for (received, days, cutoff, want) in cases {
            assert_eq!(
                c.due(t(received), days, cutoff),
                t(want),
                "{received} + {days}"
            );
        }
    }

    #[test]
    fn a_pause_moves_the_due_time_by_the_office_time_it_lasted() {
        let c = cal_2026();
        let due = t("2026-12-02T17:00:00+07:00");
        // Paused Monday 13:30 to Tuesday 11:30: 3.5 h + 4 h = 7.5 h of office time.
        let paused = c.office_seconds(
            t("2026-11-30T13:30:00+07:00"),
            t("2026-12-01T11:30:00+07:00"),
        );
        assert_eq!(paused, 7 * 3600 + 1800);
        // 17:00 Wednesday + 7.5 h of office time → Thursday 17:00 (a whole office day).
        assert_eq!(
            c.add_office_seconds(due, paused),
            t("2026-12-03T17:00:00+07:00")
        );
    }

    #[test]
    fn office_seconds_by_year_tables_match_the_day_walk() {
        let c = cal_2026();
        let walk = |a: DateTime<FixedOffset>, b: DateTime<FixedOffset>| -> i64 {
            let mut total = 0;
            let mut d = a.date_naive();
            while d <= b.date_naive() {
                if c.is_working_day(d) {
                    for (s, e) in &c.hours {
                        let (s, e) = (c.at(d, *s), c.at(d, *e));
                        let (lo, hi) = (s.max(a), e.min(b));
                        if hi > lo {
                            total += (hi - lo).num_seconds();
                        }
                    }
                }
                d += Duration::days(1);
            }
            total
        };
        for (a, b) in [
            ("2025-12-30T10:00:00+07:00", "2027-01-05T15:30:00+07:00"),
            ("2026-02-13T16:00:00+07:00", "2026-02-24T08:30:00+07:00"),
            ("2026-05-04T07:00:00+07:00", "2026-05-04T18:00:00+07:00"),
            ("2026-05-04T12:00:00+07:00", "2026-05-05T12:00:00+07:00"),
        ] {
            assert_eq!(c.office_seconds(t(a), t(b)), walk(t(a), t(b)), "{a} … {b}");
        }
        // Year 1 to year 9999: one table per year, no walk of 3.6 million days.
        let far = c.office_seconds(
            t("0001-01-01T08:00:00+07:00"),
            t("9999-12-31T08:00:00+07:00"),
        );
        assert!(far > 0);
    }

    #[test]
    fn classification() {
        let c = cal_2026();
        let due = t("2026-12-02T17:00:00+07:00");
        assert_eq!(
            c.classify(t("2026-12-01T16:00:00+07:00"), due),
            Timeliness::Early
        );
        assert_eq!(
            c.classify(t("2026-12-02T08:00:00+07:00"), due),
            Timeliness::OnTime
        );
        assert_eq!(
            c.classify(t("2026-12-02T17:00:01+07:00"), due),
            Timeliness::Late
        );
        assert_eq!(Timeliness::Late.vi(), "Quá hạn");
    }
}
