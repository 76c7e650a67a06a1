"""A sample birth dossier (procedure 1.001193: birth registration + permanent residence +
health-insurance card), filed by a centre WITHOUT a receiver: the bus runs its route
(civil-status office, then Police and Social Insurance) and sends one result back.

Your one-stop software fills these fields from the dossier the officer received; every value
here is invented. What each field is for: schemas/procedures/1.001193.schema.json.
"""

import os
import random
import uuid
from datetime import datetime, timedelta, timezone

# The bus writes times in Asia/Ho_Chi_Minh (+07:00); any RFC 3339 time with an offset is accepted.
VN = timezone(timedelta(hours=7))


def now_rfc3339():
    return datetime.now(VN).isoformat(timespec="seconds")


def new_ma_ho_so(unit):
    """<centre code>-<yyMMdd>-<number>: a centre opens dossiers only under its own code.
    LIENTHONG_MA_HO_SO overrides it; your software uses its own register's number."""
    given = os.environ.get("LIENTHONG_MA_HO_SO")
    if given:
        return given
    return f"{unit}-{datetime.now(VN):%y%m%d}-{random.randint(1, 999999):06d}"


def birth_filing(unit, ma_ho_so):
    """The envelope of the filing (schemas/envelope.schema.json), without `message_id`: over HTTP
    the bus gives one; over AMQP the caller sets it."""
    return {
        "spec": "lienthong.envelope/1",
        "kind": "dossier.forward",
        "ma_ho_so": ma_ho_so,
        "ma_tthc": "1.001193",
        "sender": unit,
        # No "receiver": the bus runs the procedure's route (docs/centres.md, "Filing without a
        # receiver").
        "sent_at": now_rfc3339(),
        # Shared by every message of this dossier; answers copy it.
        "correlation_id": str(uuid.uuid4()),
        "payload": {
            "applicant": {
                "ho_ten": "Đinh Văn Lực",
                "ngay_sinh": "1994-08-12",
                "gioi_tinh": "nam",
                "so_dinh_danh": "051094000123",
                "so_dien_thoai": "0905123456",
                "dia_chi": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi",
                "quan_he": "cha",
            },
            "data": {
                "loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
                "tre": {
                    "ho_ten": "Đinh Thị Bảo Ngọc",
                    "ngay_sinh": "2026-11-20",
                    "gioi_tinh": "nu",
                    "noi_sinh": "Trung tâm Y tế huyện Sơn Hà",
                },
                "noi_dang_ky_thuong_tru": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi",
                "noi_dang_ky_kcb_ban_dau": "Trung tâm Y tế huyện Sơn Hà",
            },
        },
    }
