//! The console's words in Vietnamese (the default) and English (a switch kept in a cookie).

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Tiếng Việt.
    Vi,
    /// English.
    En,
}

/// The language cookie's name.
pub const COOKIE: &str = "lt_lang";

impl Lang {
    /// The language a request asks for (its cookie; Vietnamese without one).
    pub fn of(headers: &axum::http::HeaderMap) -> Lang {
        match super::session::cookie(headers, COOKIE) {
            Some("en") => Lang::En,
            _ => Lang::Vi,
        }
    }

    /// The `lang` attribute of the page.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }
}

/// (key, Vietnamese, English).
const WORDS: &[(&str, &str, &str)] = &[
    (
        "title",
        "Trục liên thông — bảng điều hành",
        "lienthong — operators' console",
    ),
    ("dossiers", "Hồ sơ", "Dossiers"),
    ("overdue", "Sắp đến hạn / quá hạn", "Due soon / overdue"),
    ("units", "Đơn vị", "Units"),
    ("dead_letters", "Thông điệp lỗi", "Dead letters"),
    ("live", "Trực tiếp", "Live"),
    ("logout", "Đăng xuất", "Log out"),
    ("login", "Đăng nhập", "Log in"),
    ("user", "Tên đăng nhập", "User name"),
    ("password", "Mật khẩu", "Password"),
    (
        "login_hint",
        "Để trống tên đăng nhập để đăng nhập bằng khóa điều hành (operator key).",
        "Leave the user name empty to log in with the operator key.",
    ),
    (
        "login_failed",
        "Sai tên đăng nhập hoặc mật khẩu.",
        "Wrong user name or password.",
    ),
    (
        "login_locked",
        "Quá nhiều lần đăng nhập sai; thử lại sau 5 phút.",
        "Too many failed logins; try again in 5 minutes.",
    ),
    ("search", "Tìm", "Search"),
    (
        "search_hint",
        "Mã hồ sơ, mã thủ tục hoặc tên người nộp (gõ không dấu cũng được)",
        "Dossier code, procedure code or applicant's name (diacritics optional)",
    ),
    ("procedure", "Thủ tục", "Procedure"),
    ("centre", "Trung tâm", "Centre"),
    ("holder", "Đơn vị đang giữ", "Held by"),
    ("phase", "Giai đoạn", "Phase"),
    ("any", "Tất cả", "Any"),
    ("open", "Đang mở", "Open"),
    ("ended", "Đã kết thúc", "Ended"),
    ("late_only", "Chỉ hồ sơ quá hạn", "Late only"),
    ("since", "Từ ngày", "From"),
    ("until", "Đến ngày", "To"),
    ("code", "Mã hồ sơ", "Dossier code"),
    ("applicant", "Người nộp", "Applicant"),
    ("status", "Trạng thái", "Status"),
    ("received", "Tiếp nhận", "Received"),
    ("due", "Hạn", "Due"),
    ("ended_at", "Kết thúc", "Ended"),
    ("timeliness", "Tiến độ", "Timeliness"),
    ("found", "hồ sơ", "dossiers"),
    ("prev", "← Trang trước", "← Previous"),
    ("next", "Trang sau →", "Next →"),
    ("export", "Tải về", "Download"),
    ("none", "Không có gì.", "Nothing."),
    ("timeline", "Các lần chuyển giao", "Hand-overs"),
    ("at", "Thời điểm", "At"),
    ("event", "Sự kiện", "Event"),
    ("from", "Từ", "From"),
    ("to", "Đến", "To"),
    ("attempt", "Lần", "Attempt"),
    ("elapsed", "Sau (ms)", "After (ms)"),
    ("reason", "Lý do", "Reason"),
    (
        "steps",
        "Các bước (quy trình liên thông)",
        "Steps (the procedure's route)",
    ),
    ("step", "Bước", "Step"),
    ("unit", "Đơn vị", "Unit"),
    ("control_sheet", "Phiếu kiểm soát", "Control sheet"),
    (
        "chain_ok",
        "Nhật ký vết của hồ sơ toàn vẹn (chuỗi băm khớp).",
        "The dossier's trace verifies (hash chain intact).",
    ),
    (
        "chain_bad",
        "Nhật ký vết của hồ sơ KHÔNG toàn vẹn",
        "The dossier's trace does NOT verify",
    ),
    ("envelopes", "Thông điệp gốc", "Raw envelopes"),
    (
        "envelopes_unreadable",
        "Không đọc được thông điệp gốc trong kho thông điệp",
        "The message store cannot give back these envelopes",
    ),
    ("not_found", "Không tìm thấy hồ sơ này.", "No such dossier."),
    ("level", "Mức", "Level"),
    ("left", "Còn lại (giờ hành chính)", "Left (office hours)"),
    ("routed", "Đã định tuyến", "Routed"),
    ("delivered", "Đã giao", "Delivered"),
    ("retried", "Thử lại", "Retried"),
    ("dead", "Lỗi", "Dead-lettered"),
    ("p50", "p50 (ms)", "p50 (ms)"),
    ("p95", "p95 (ms)", "p95 (ms)"),
    ("attempts", "Số lần", "Attempts"),
    ("reason_code", "Mã lý do", "Reason code"),
    ("message", "Thông điệp", "Message"),
    ("state", "Tình trạng", "State"),
    ("waiting", "Chờ xử lý", "Waiting"),
    ("replayed", "Đã gửi lại", "Replayed"),
    ("dead_found", "thông điệp lỗi", "dead letters"),
    (
        "replay_filter",
        "Gửi lại tất cả thông điệp khớp bộ lọc…",
        "Replay everything this filter matches…",
    ),
    (
        "replay_selected",
        "Gửi lại các thông điệp đã chọn…",
        "Replay the selected…",
    ),
    (
        "replay_one",
        "Gửi lại thông điệp này…",
        "Replay this message…",
    ),
    ("replay", "Gửi lại thông điệp lỗi", "Replay dead letters"),
    (
        "replay_count",
        "thông điệp sẽ được gửi lại vào trục (bộ định tuyến kiểm tra lại từng thông điệp; lần gửi lại được ghi vào nhật ký vết kèm tên của bạn).",
        "message(s) will be put back on the bus (the router checks each again; the replay is recorded in the trace with your name).",
    ),
    ("replay_confirm", "Xác nhận gửi lại", "Confirm the replay"),
    (
        "replay_nothing",
        "Không có thông điệp nào đang chờ để gửi lại.",
        "Nothing waiting to replay.",
    ),
    ("cancel", "Hủy", "Cancel"),
    ("back", "← Danh sách thông điệp lỗi", "← Dead letters"),
    ("replayed_n", "Đã gửi lại", "Replayed"),
    (
        "replay_missing",
        "Không tìm thấy trong hàng đợi lỗi (đã được gửi lại, hoặc chưa vào hàng đợi); không có gì thay đổi với các thông điệp này",
        "Not found in the dead-letter queue (replayed already, or not in it yet); nothing was done with these",
    ),
    ("replay_by", "Người gửi lại:", "Replayed by"),
    (
        "replay_asked",
        "thông điệp được yêu cầu",
        "message(s) asked for",
    ),
    ("replay_running", "Đang gửi lại…", "Replaying…"),
    (
        "replay_examined",
        "đã xem trong hàng đợi lỗi",
        "looked at in the dead-letter queue",
    ),
    (
        "replay_busy",
        "Một lần gửi lại khác đang chạy; lần này sẽ bị từ chối cho đến khi lần kia xong:",
        "Another replay is running; this one will be refused until it has finished:",
    ),
    ("replay_of", "trong số", "of"),
    (
        "replay_capped",
        "mỗi lần gửi lại tối đa 10.000 thông điệp (cũ nhất trước); gửi lại lần nữa để lấy phần còn lại.",
        "a replay takes at most 10,000 (oldest first); replay again for the rest.",
    ),
    (
        "replay_forgotten",
        "Không còn thông tin về lần gửi lại này (máy chủ đã khởi động lại, hoặc đã quá cũ); nhật ký vết và danh sách thông điệp lỗi vẫn ghi lại những gì đã gửi lại.",
        "This replay is no longer known here (the server restarted, or it is too old); the trace and the dead-letter list keep what was replayed.",
    ),
    (
        "replay_unrecorded",
        "Đã gửi lại nhưng chưa ghi được vào nhật ký",
        "Replayed, but not recorded in the store",
    ),
    ("replay_failed", "Gửi lại thất bại", "The replay failed"),
    (
        "operators_only",
        "Chỉ tài khoản có vai trò điều hành (operator) mới được gửi lại.",
        "Only an operator account may replay.",
    ),
    (
        "dl_not_found",
        "Không tìm thấy thông điệp lỗi này.",
        "No such dead letter.",
    ),
    ("component", "Thành phần", "Component"),
    ("reach", "Kết nối qua", "Reached by"),
    ("pause", "Tạm dừng", "Pause"),
    ("resume", "Tiếp tục", "Resume"),
    ("live_filter", "Lọc", "Filter"),
    (
        "live_filter_hint",
        "mã hồ sơ, đơn vị, sự kiện…",
        "dossier code, unit, event…",
    ),
    ("live_on", "Đang cập nhật trực tiếp", "Live"),
    (
        "live_paused",
        "Đã tạm dừng; sự kiện mới đang chờ",
        "Paused; new events held",
    ),
    (
        "live_lost",
        "Mất kết nối; đang thử lại…",
        "Connection lost; retrying…",
    ),
    (
        "live_ended",
        "Đã dừng: phiên đăng nhập đã kết thúc hoặc máy chủ đã dừng; tải lại trang để đăng nhập lại.",
        "Stopped: the session ended or the server stopped; reload the page to log in again.",
    ),
    (
        "live_dropped",
        "sự kiện cũ hơn đã bỏ, không hiển thị",
        "older events dropped, not shown",
    ),
    ("ready", "Sẵn sàng giao", "Ready to deliver"),
    (
        "consumers",
        "Số tiến trình đang nhận",
        "Consumers connected",
    ),
    ("last_hour", "1 giờ qua", "Last hour"),
    ("last_day", "24 giờ qua", "Last 24 hours"),
    ("last_success", "Lần giao thành công cuối", "Last success"),
    ("last_error", "Lỗi gần nhất", "Last error"),
    ("connection_check", "Kiểm tra kết nối", "Connection check"),
    ("check_now", "Kiểm tra", "Check now"),
    (
        "operators_only_check",
        "Chỉ tài khoản điều hành (operator) mới được chạy kiểm tra kết nối.",
        "Only an operator account may run a connection check.",
    ),
    (
        "check_amqp_unit",
        "Đơn vị này tự nhận thông điệp qua AMQP: không có kết nối nào để kiểm tra từ trục.",
        "This unit reads its queue itself over AMQP: the bus has no connection of its own to check.",
    ),
    (
        "check_busy",
        "Đang có kiểm tra kết nối khác chạy (tối đa 2 cùng lúc, mỗi đơn vị một); thử lại sau ít phút.",
        "Other connection checks are running (two at a time, one per unit); try again in a minute.",
    ),
    ("health", "Tình trạng", "Health"),
    ("pass", "đạt", "pass"),
    ("fail", "không đạt", "fail"),
    (
        "check_failed",
        "Kiểm tra kết nối không đạt",
        "The connection check failed",
    ),
    (
        "error_since_success",
        "Lỗi sau lần giao thành công cuối",
        "Errors since the last success",
    ),
    (
        "waiting_no_consumer",
        "thông điệp đang chờ mà không có bên nhận",
        "messages waiting with no consumer",
    ),
    (
        "units_hint",
        "Hàng đợi: số thông điệp đang chờ và số bên nhận, theo RabbitMQ lúc tải trang. Số liệu 1 giờ / 24 giờ, độ trễ (từ khi vào trục đến khi giao) và lỗi lấy từ nhật ký vết. Đơn vị màu đỏ đang có sự cố.",
        "Queue: messages ready and consumers, as RabbitMQ says when the page loads. Hour and day counts, latency (from entering the bus to delivery) and errors come from the trace. A unit in red is failing.",
    ),
    ("queue", "Hàng đợi", "Queue"),
    ("failed_attempts", "Các lần thử thất bại", "Failed attempts"),
    (
        "attempt_history",
        "Lịch sử của thông điệp",
        "The message's history",
    ),
    (
        "dead_lettered_times",
        "Các lần bị chuyển vào hàng đợi lỗi",
        "Each time it was dead-lettered",
    ),
    ("body", "Nội dung", "Body"),
    (
        "body_clipped",
        "Nội dung dài, chỉ hiển thị 1 MiB đầu tiên; thông điệp đầy đủ vẫn ở hàng đợi lỗi.",
        "A long body: the first 1 MiB is shown; the whole message stays in the dead-letter queue.",
    ),
];

/// The word `key` in `lang` (the key itself when it has none).
pub fn t(lang: Lang, key: &'static str) -> &'static str {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, vi, en)| match lang {
            Lang::Vi => *vi,
            Lang::En => *en,
        })
        .unwrap_or(key)
}
