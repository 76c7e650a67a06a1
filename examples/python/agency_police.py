#!/usr/bin/env python3
"""An agency's system behind the bus: a small HTTP server speaking the Police residence reference
interface (schemas/agencies/police-residence/; the bus's `police-rest` adapter calls it):

  POST /v1/ho-so               a submission: answered 202 with the receipt (MaTiepNhan); the same
                               Idempotency-Key always gets the same receipt
  GET  /v1/ho-so/{MaHoSo}      the status lookup: 200 with the status, 404 {MaLoi, MoTaLoi}
  POST /v1/ho-so/{MaHoSo}/huy  a cancel (the citizen withdrew, or the dossier was stopped)

and, AGENCY_DECIDE_AFTER_S seconds after a submission, the result (TrangThaiHoSo 9, registered)
POSTed by callback to the UrlPhanHoi the bus gave, with the unit's callback key
(docs/agencies.md, "Callbacks and edXML endpoints").

Environment:
  LIENTHONG_CALLBACK_KEY  the Police unit's callback key (the registry's callback_key)
  LIENTHONG_URL           optional: the bus's URL; a UrlPhanHoi elsewhere is refused, so the
                          key is never sent anywhere else
  AGENCY_LISTEN           optional: host:port to listen on (default 127.0.0.1:8491)
  AGENCY_DECIDE_AFTER_S   optional: seconds before the result is sent (default 2)
  LIENTHONG_CA_FILE       optional: PEM file of the CA that signed the bus's certificate

The dossiers are kept in memory: a real system stores the receipt before answering 202.
Prints one JSON line per event: {"event": "listening", "url"}, {"event": "received", "ma_ho_so",
"ma_tiep_nhan"}, {"event": "callback", "ma_ho_so", "status", "message_id"}, …
"""

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import requests

VN = timezone(timedelta(hours=7))
REQUIRED = ["MaHoSo", "MaTTHC", "MaThamChieu", "MaDonViGui", "NgayGui", "UrlPhanHoi",
            "LoaiYeuCau", "ChuHoSo", "CongDan", "NoiCuTru"]

lock = threading.Lock()
dossiers = {}  # MaHoSo -> {"MaTiepNhan", "TrangThaiHoSo", "ThoiDiemCapNhat", "timer"}
receipts = {}  # Idempotency-Key -> the receipt answered
sequence = 0


def now14():
    return datetime.now(VN).strftime("%Y%m%d%H%M%S")


def emit(**fields):
    with lock:
        print(json.dumps(fields), flush=True)


def error(code, text):
    return {"MaLoi": code, "MoTaLoi": text}


def send_result(submit, ma_tiep_nhan):
    """The decision, by callback to the bus; tried again on 429, 5xx and lost connections."""
    with lock:
        d = dossiers.get(submit["MaHoSo"])
        if d is None or d["TrangThaiHoSo"] != 2:
            return  # cancelled meanwhile
        d["TrangThaiHoSo"], d["ThoiDiemCapNhat"] = 9, now14()
    removal = submit["LoaiYeuCau"] == "XOA_DANG_KY_THUONG_TRU"
    body = {
        "MaHoSo": submit["MaHoSo"],
        "MaThamChieu": submit["MaThamChieu"],  # the submission this result answers
        "MaTiepNhan": ma_tiep_nhan,
        "TrangThaiHoSo": 9,
        "ThoiDiemXuLy": now14(),
        "NguoiXuLy": "Thượng úy Lê Văn Phúc",
        "NoiDungXuLy": ("Đã xóa đăng ký thường trú của công dân " if removal
                        else "Đã đăng ký thường trú cho công dân ") + submit["CongDan"]["HoVaTen"],
        "KetQua": {
            "NoiThuongTru": submit["NoiCuTru"],
            "NgayDangKy": now14()[:8],
            "SoHoSoCuTru": f"051.{ma_tiep_nhan}",
        },
    }
    headers = {"Authorization": f"Bearer {os.environ['LIENTHONG_CALLBACK_KEY']}"}
    verify = os.environ.get("LIENTHONG_CA_FILE") or True
    for attempt in range(1, 11):
        try:
            r = requests.post(submit["UrlPhanHoi"], json=body, headers=headers, timeout=30,
                              verify=verify)
        except (requests.ConnectionError, requests.Timeout) as e:
            emit(event="callback-retry", ma_ho_so=submit["MaHoSo"], reason=str(e))
            time.sleep(min(2 ** attempt, 60))
            continue
        if r.status_code == 429 or r.status_code >= 500:
            emit(event="callback-retry", ma_ho_so=submit["MaHoSo"], status=r.status_code)
            time.sleep(float(r.headers.get("Retry-After", min(2 ** attempt, 60))))
            continue
        # 200 {"message_id", "status": "accepted"}: a repeated callback gets the same message id.
        # Any other 4xx is problem+json saying why (401 key, 404 unknown MaThamChieu, 400 body).
        answer = r.json() if r.headers.get("Content-Type", "").endswith("json") else r.text
        emit(event="callback", ma_ho_so=submit["MaHoSo"], status=r.status_code,
             message_id=answer.get("message_id") if isinstance(answer, dict) else None,
             answer=None if r.ok else answer)
        return
    emit(event="callback-failed", ma_ho_so=submit["MaHoSo"])


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def do_POST(self):
        path = unquote(self.path)
        if path == "/v1/ho-so":
            return self.submit()
        if path.startswith("/v1/ho-so/") and path.endswith("/huy"):
            return self.cancel(path[len("/v1/ho-so/"):-len("/huy")])
        self.answer(404, error("E_KHONG_TIM_THAY", "Không có đường dẫn này."))

    def do_GET(self):
        path = unquote(self.path)
        if not path.startswith("/v1/ho-so/"):
            return self.answer(404, error("E_KHONG_TIM_THAY", "Không có đường dẫn này."))
        ma_ho_so = path[len("/v1/ho-so/"):]
        with lock:
            d = dossiers.get(ma_ho_so)
            status = None if d is None else {k: d[k] for k in
                                            ("MaTiepNhan", "TrangThaiHoSo", "ThoiDiemCapNhat")}
        if status is None:
            # Not found must be this readable 404: the bus resolves an unknown outcome with it.
            return self.answer(404, error("E_KHONG_TIM_THAY", f"Không tìm thấy hồ sơ {ma_ho_so}."))
        self.answer(200, {"MaHoSo": ma_ho_so, **status})

    def submit(self):
        global sequence
        body = self.read_json()
        if body is None:
            return self.answer(400, error("E_DU_LIEU_KHONG_HOP_LE", "Thân yêu cầu không phải JSON."))
        missing = [k for k in REQUIRED if not body.get(k)]
        if missing:
            return self.answer(400, error("E_DU_LIEU_KHONG_HOP_LE", f"Thiếu trường {', '.join(missing)}."))
        key = self.headers.get("Idempotency-Key")
        if key != body["MaThamChieu"]:
            return self.answer(400, error("E_DU_LIEU_KHONG_HOP_LE", "Idempotency-Key phải bằng MaThamChieu."))
        bus = os.environ.get("LIENTHONG_URL", "").rstrip("/")
        if bus and not body["UrlPhanHoi"].startswith(bus + "/"):
            return self.answer(400, error("E_URL_PHAN_HOI", "UrlPhanHoi không thuộc trục liên thông."))
        with lock:
            if key in receipts:  # the bus tried again: the same receipt, nothing registered twice
                return self.answer(202, receipts[key])
            sequence += 1
            ma_tiep_nhan = f"CA.H48.{now14()[2:8]}.{sequence:06d}"
            receipt = {"MaHoSo": body["MaHoSo"], "MaTiepNhan": ma_tiep_nhan, "TrangThaiHoSo": 2,
                       "ThoiDiemTiepNhan": now14()}
            receipts[key] = receipt
            timer = threading.Timer(float(os.environ.get("AGENCY_DECIDE_AFTER_S") or 2),
                                    send_result, (body, ma_tiep_nhan))
            timer.daemon = True  # a real system keeps pending results in its database
            dossiers[body["MaHoSo"]] = {"MaTiepNhan": ma_tiep_nhan, "TrangThaiHoSo": 2,
                                        "ThoiDiemCapNhat": receipt["ThoiDiemTiepNhan"],
                                        "timer": timer}
        emit(event="received", ma_ho_so=body["MaHoSo"], ma_tiep_nhan=ma_tiep_nhan,
             ma_tham_chieu=key, loai_yeu_cau=body["LoaiYeuCau"])
        timer.start()
        self.answer(202, receipt)

    def cancel(self, ma_ho_so):
        body = self.read_json()
        if body is None or body.get("MaHoSo") != ma_ho_so:
            return self.answer(400, error("E_DU_LIEU_KHONG_HOP_LE", "MaHoSo không khớp đường dẫn."))
        with lock:
            d = dossiers.get(ma_ho_so)
            if d is None:
                return self.answer(404, error("E_KHONG_TIM_THAY", f"Không tìm thấy hồ sơ {ma_ho_so}."))
            if d["TrangThaiHoSo"] in (3, 9):
                return self.answer(422, error("E_DA_XU_LY", "Hồ sơ đã được xử lý xong, không hủy được."))
            d["timer"].cancel()
            d["TrangThaiHoSo"], d["ThoiDiemCapNhat"] = 8, now14()
            status = {"MaHoSo": ma_ho_so, "MaTiepNhan": d["MaTiepNhan"], "TrangThaiHoSo": 8,
                      "ThoiDiemCapNhat": d["ThoiDiemCapNhat"]}
        emit(event="cancelled", ma_ho_so=ma_ho_so, reason=body.get("LyDo"))
        self.answer(200, status)

    def log_message(self, format, *args):
        print(f"{self.address_string()} {format % args}", file=sys.stderr)


def main():
    if not os.environ.get("LIENTHONG_CALLBACK_KEY"):
        sys.exit(f"{os.path.basename(sys.argv[0])}: set LIENTHONG_CALLBACK_KEY")
    host, port = os.environ.get("AGENCY_LISTEN", "127.0.0.1:8491").rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    emit(event="listening", url=f"http://{host}:{server.server_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    emit(event="stopped")


if __name__ == "__main__":
    main()
