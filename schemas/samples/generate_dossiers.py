#!/usr/bin/env python3
"""Generate schemas/samples/dossiers.jsonl: 240 SYNTHETIC liên thông dossiers.

Each line is the first message a one-stop centre sends for one dossier
(kind "dossier.forward"), shaped by ../envelope.schema.json. Every person,
identification number, phone number, address detail, parcel and document in the
output is invented; only unit codes (the project's illustrative codes) and
public place names are fixed.

Standard library only and deterministic: the same SEED gives byte-identical
output.  Usage:  python3 generate_dossiers.py [output-path]
"""

import base64
import datetime as dt
import hashlib
import json
import os
import random
import sys
import unicodedata

SEED = 20261101
N_DOSSIERS = 240
FLOW_COUNTS = {"birth": 108, "death": 72, "land": 60}  # 45 % / 30 % / 25 %
NFD_COUNT = 36  # 15 % of 240
MAX_LINE_BYTES = 7900

TZ = dt.timezone(dt.timedelta(hours=7))  # Asia/Ho_Chi_Minh, no DST
SPEC = "lienthong.envelope/1"
KIND = "dossier.forward"
MA_TTHC = {"birth": "1.001193", "death": "1.011537", "land": "1.010059"}
LOAI_LIEN_THONG = {
    "birth": "khai_sinh_thuong_tru_bhyt",
    "death": "khai_tu_xoa_thuong_tru_mai_tang",
    "land": "dang_ky_bien_dong_dat_dai",
}
FILE_BASE = "https://motcua.quangngai.gov.vn/files"

# ---------------------------------------------------------------- units
PAC = "000.20.01.H48"  # Trung tâm Phục vụ hành chính công tỉnh
CENTRE = {"qn": "000.20.51.H48", "sh": "000.20.59.H48", "dp": "000.20.61.H48"}
CIVIL = {"qn": "000.10.51.H48", "sh": "000.10.59.H48", "dp": "000.10.61.H48"}
LAND_OFFICE = "000.10.12.H48"  # Văn phòng Đăng ký đất đai tỉnh

# dossiers per sender and flow (shuffled); "pac" = provincial PAC
SENDER_QUOTA = {
    "birth": {"qn": 39, "sh": 29, "dp": 29, "pac": 11},
    "death": {"qn": 28, "sh": 22, "dp": 22},
    "land": {"qn": 17, "sh": 10, "dp": 15, "pac": 18},
}

# ---------------------------------------------------------------- places
# (kind, name, list of thôn / tổ dân phố).  Ward/commune names are real; the
# hamlet and residential-group names are illustrative.
DISTRICTS = {
    "qn": {
        "label": "thành phố Quảng Ngãi",
        "units": [
            ("phường", "Trần Hưng Đạo", ["tổ dân phố 1", "tổ dân phố 3", "tổ dân phố 5", "tổ dân phố 7"]),
            ("phường", "Nghĩa Chánh", ["tổ dân phố 2", "tổ dân phố 4", "tổ dân phố 6", "tổ dân phố 9"]),
            ("phường", "Chánh Lộ", ["tổ dân phố 1", "tổ dân phố 2", "tổ dân phố 8", "tổ dân phố 10"]),
            ("phường", "Lê Hồng Phong", ["tổ dân phố 3", "tổ dân phố 4", "tổ dân phố 11"]),
            ("phường", "Trần Phú", ["tổ dân phố 2", "tổ dân phố 5", "tổ dân phố 12"]),
            ("phường", "Nghĩa Lộ", ["tổ dân phố 1", "tổ dân phố 6", "tổ dân phố 14"]),
            ("phường", "Quảng Phú", ["tổ dân phố 3", "tổ dân phố 7", "tổ dân phố 9"]),
            ("xã", "Tịnh Long", ["thôn Long Bàn", "thôn Phước Lộc", "thôn Khánh Mỹ"]),
            ("xã", "Tịnh Ấn Tây", ["thôn Phú Vinh", "thôn Hòa Bình", "thôn Xuân Mỹ"]),
            ("xã", "Tịnh Khê", ["thôn Cổ Lũy", "thôn Tịnh Hòa", "thôn An Kỳ"]),
            ("xã", "Nghĩa Dũng", ["thôn 1", "thôn 2", "thôn 4"]),
            ("xã", "Nghĩa Hà", ["thôn Kim Thạch", "thôn Hàm Long", "thôn Phú Sơn"]),
        ],
        "streets": ["Hùng Vương", "Quang Trung", "Lê Lợi", "Phan Đình Phùng", "Nguyễn Nghiêm",
                    "Trần Hưng Đạo", "Lê Trung Đình", "Bà Triệu", "Nguyễn Công Phương",
                    "Trường Chinh", "Phạm Văn Đồng", "Nguyễn Tự Tân", "Lê Thánh Tôn"],
        "hospitals": ["Bệnh viện Sản - Nhi tỉnh Quảng Ngãi", "Bệnh viện Đa khoa tỉnh Quảng Ngãi"],
        "health_centre": "Trung tâm Y tế thành phố Quảng Ngãi",
    },
    "sh": {
        "label": "huyện Sơn Hà",
        "units": [
            ("thị trấn", "Di Lăng", ["tổ dân phố Cà Tu", "tổ dân phố Gò Dép", "tổ dân phố Làng Bung", "tổ dân phố Trường Xuân"]),
            ("xã", "Sơn Hạ", ["thôn Nước Bao", "thôn Làng Trăng", "thôn Gò Da", "thôn Xà Ây"]),
            ("xã", "Sơn Thành", ["thôn Gò Dép", "thôn Làng Rê", "thôn Bồ Nung"]),
            ("xã", "Sơn Giang", ["thôn Tà Mát", "thôn Gò Gạo", "thôn Nước Rinh"]),
            ("xã", "Sơn Linh", ["thôn Gò Ghềnh", "thôn Mò O", "thôn Làng Ranh"]),
            ("xã", "Sơn Nham", ["thôn Tà Dô", "thôn Gò Ra", "thôn Làng Vố"]),
            ("xã", "Sơn Cao", ["thôn Gò Rít", "thôn Làng Môn", "thôn Đồng Viên"]),
            ("xã", "Sơn Trung", ["thôn Tà Bần", "thôn Làng Nguyên", "thôn Mò Ó"]),
            ("xã", "Sơn Thượng", ["thôn Làng Rẫy", "thôn Xà Râu", "thôn Nước Xoài"]),
        ],
        "streets": ["Trường Chinh", "Phạm Văn Đồng", "Lê Lợi"],
        "hospitals": ["Trung tâm Y tế huyện Sơn Hà"],
        "health_centre": "Trung tâm Y tế huyện Sơn Hà",
    },
    "dp": {
        "label": "thị xã Đức Phổ",
        "units": [
            ("phường", "Nguyễn Nghiêm", ["tổ dân phố 1", "tổ dân phố 4", "tổ dân phố Đông Quang", "tổ dân phố Thanh Lâm"]),
            ("phường", "Phổ Ninh", ["tổ dân phố Vĩnh Bình", "tổ dân phố Đông Thuận", "tổ dân phố Phước Hòa"]),
            ("phường", "Phổ Thạnh", ["tổ dân phố Thạch By", "tổ dân phố Mỹ Thạnh", "tổ dân phố Sa Huỳnh"]),
            ("phường", "Phổ Hòa", ["tổ dân phố Hội An", "tổ dân phố Lâm Bình"]),
            ("phường", "Phổ Văn", ["tổ dân phố Phước Lợi", "tổ dân phố Vĩnh An"]),
            ("phường", "Phổ Quang", ["tổ dân phố Trung Hòa", "tổ dân phố Hải Tân"]),
            ("xã", "Phổ Khánh", ["thôn Long Thạnh", "thôn Tân Diêm", "thôn Hưng Long"]),
            ("xã", "Phổ Châu", ["thôn Tấn Lộc", "thôn Vĩnh Tuy", "thôn Xuân Thành"]),
            ("xã", "Phổ Nhơn", ["thôn Phước Thịnh", "thôn An Hòa", "thôn Thạnh Đức"]),
            ("xã", "Phổ Phong", ["thôn Hiệp An", "thôn Vạn Lý", "thôn Tình Phú"]),
        ],
        "streets": ["Quang Trung", "Hùng Vương", "Nguyễn Nghiêm", "Lê Thánh Tôn"],
        "hospitals": ["Trung tâm Y tế thị xã Đức Phổ", "Bệnh viện Đa khoa khu vực Đặng Thùy Trâm"],
        "health_centre": "Trung tâm Y tế thị xã Đức Phổ",
    },
}
PROVINCE = "tỉnh Quảng Ngãi"

# ---------------------------------------------------------------- names
KINH_FAMILY = [("Nguyễn", 30), ("Trần", 10), ("Lê", 9), ("Phạm", 7), ("Huỳnh", 7), ("Phan", 5),
               ("Võ", 8), ("Đặng", 4), ("Bùi", 4), ("Đỗ", 3), ("Hồ", 4), ("Ngô", 3),
               ("Dương", 2), ("Đinh", 3)]
KINH_MIDDLE_M = ["Văn", "Minh", "Quốc", "Thanh", "Đức", "Hữu", "Công", "Ngọc", "Xuân", "Tấn",
                 "Anh", "Hoàng", "Quang", "Trung"]
KINH_MIDDLE_F = ["Thị", "Thị", "Thị", "Ngọc", "Thu", "Thanh", "Mỹ", "Kim", "Hồng", "Bảo",
                 "Thùy", "Phương"]
KINH_GIVEN_M = ["Hùng", "Dũng", "Tuấn", "Hải", "Nam", "Sơn", "Long", "Phúc", "Khang", "Huy",
                "Tài", "Lộc", "Thành", "Trí", "Vinh", "Cường", "Hiếu", "Nhân", "Phong", "Quân",
                "Tín", "Tâm", "Đạt", "Khoa", "Thịnh", "Lợi", "Tùng", "Bảo", "Hậu", "Nghĩa"]
KINH_GIVEN_F = ["Lan", "Hoa", "Hương", "Mai", "Trang", "Linh", "Nhung", "Thảo", "Vy", "Ngân",
                "Yến", "Hạnh", "Nga", "Hằng", "Diễm", "Trinh", "Oanh", "Thủy", "Phượng", "Nhi",
                "Hiền", "Loan", "Tuyết", "Xuân", "Quyên", "Nguyệt"]
OLD_GIVEN_M = ["Tám", "Ba", "Bảy", "Chín", "Mười", "Lộ", "Thơ", "Cẩn", "Đường", "Bốn", "Xê", "Tri"]
OLD_GIVEN_F = ["Lựu", "Bông", "Sáu", "Mận", "Cúc", "Đào", "Tư", "Lài", "Gái", "Hường", "Thiệt", "Nhỏ"]
CHILD_GIVEN_M = ["Gia Bảo", "Minh Khang", "Đăng Khoa", "Hải Đăng", "Minh Quân", "Gia Huy",
                 "Phúc An", "Bảo An", "Anh Khoa", "Quốc Bảo", "Tuấn Kiệt", "Nhật Minh",
                 "Thiên Phúc", "Đức Anh", "Trung Kiên"]
CHILD_GIVEN_F = ["Bảo Ngọc", "Khánh An", "Tuệ An", "Gia Hân", "Minh Anh", "Ngọc Hân", "Thảo Vy",
                 "An Nhiên", "Bảo Châu", "Khánh Linh", "Tường Vi", "Diệp Anh", "Thanh Trúc",
                 "Ngọc Diệp", "Hoài An"]
HRE_FAMILY = [("Đinh", 6), ("Phạm", 3)]
HRE_GIVEN_M = ["Pố", "Ní", "Rô", "Lang", "Pói", "Vên", "Ka", "Triêm", "Nhanh", "Rin", "Bút",
               "Xoong", "Hoang", "Nhiên", "Dũng"]
HRE_GIVEN_F = ["Mây", "Nhiêm", "Bôn", "Lơ", "Xiêm", "Thuyên", "Bói", "Mia", "Dương", "Hiền",
               "Nhung", "Lành"]
HRE_CHILD_M = ["Văn Pố", "Văn Ní", "Văn Rin", "Gia Bảo", "Văn Kha", "Minh Nhật", "Văn Triêm"]
HRE_CHILD_F = ["Thị Mây", "Thị Bôn", "Thị Ngọc Ánh", "Thị Thảo", "Bảo Ngọc", "Thị Lành"]

# ---------------------------------------------------------------- attachments
ATTACHMENTS = {
    "birth": {
        "main": "to_khai_dang_ky_khai_sinh.pdf",
        "extra": ["giay_chung_sinh.pdf", "to_khai_thay_doi_thong_tin_cu_tru.pdf",
                  "to_khai_tham_gia_bhyt.pdf", "giay_chung_nhan_ket_hon.jpg"],
    },
    "death": {
        "main": "to_khai_dang_ky_khai_tu.pdf",
        "extra": ["giay_bao_tu.pdf", "to_khai_thay_doi_thong_tin_cu_tru.pdf",
                  "to_khai_de_nghi_tro_cap_mai_tang.pdf", "so_bhxh.jpg"],
    },
    "land": {
        "main": "don_dang_ky_bien_dong_dat_dai.pdf",
        "extra": ["giay_chung_nhan_qsdd.jpg", "to_khai_thue_tncn.pdf",
                  "to_khai_le_phi_truoc_ba.pdf"],
    },
}
LAND_CONTRACT = {
    "chuyen_nhuong": "hop_dong_chuyen_nhuong.pdf",
    "tang_cho": "hop_dong_tang_cho.pdf",
    "thua_ke": "van_ban_thoa_thuan_phan_chia_di_san.pdf",
}

# ================================================================ helpers
rng = random.Random(SEED)
used_ids = set()  # so_dinh_danh handed out so far


def nfc(s):
    return unicodedata.normalize("NFC", s)


def wchoice(pairs):
    items = [p[0] for p in pairs]
    weights = [p[1] for p in pairs]
    return rng.choices(items, weights=weights, k=1)[0]


def uuid7(ms):
    """UUIDv7 (RFC 9562): 48-bit Unix ms, version 7, 12 random bits, variant 10, 62 random bits."""
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    h = "%032x" % value
    return "%s-%s-%s-%s-%s" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


def so_dinh_danh(birth, sex):
    """12 digits: 051 (Quảng Ngãi) + century/sex digit + 2-digit birth year + 6 random digits."""
    century = 0 if birth.year < 2000 else 2
    digit = century + (1 if sex == "nu" else 0)
    while True:
        n = "051%d%02d%06d" % (digit, birth.year % 100, rng.randrange(1000000))
        if n not in used_ids:
            used_ids.add(n)
            return n


def phone():
    return "09%d%07d" % (rng.choice([0, 1, 3, 4, 6, 7, 8]), rng.randrange(10000000))


def rand_date(start, end):
    """Uniform date in [start, end]."""
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def birth_for_age(ref, lo, hi):
    """Date of birth for someone aged lo..hi (inclusive) on date ref."""
    start = dt.date(ref.year - hi - 1, ref.month, ref.day) + dt.timedelta(days=1)
    end = dt.date(ref.year - lo, ref.month, ref.day)
    return rand_date(start, end)


def pick_place(dk):
    kind, name, hamlets = rng.choice(DISTRICTS[dk]["units"])
    return {"district": dk, "kind": kind, "name": name, "hamlet": rng.choice(hamlets)}


def address(place, with_house=None):
    d = DISTRICTS[place["district"]]
    parts = []
    if with_house is None:
        with_house = place["kind"] != "xã" and rng.random() < 0.5
    if with_house:
        parts.append("số %d đường %s" % (rng.randint(2, 480), rng.choice(d["streets"])))
    parts.append(place["hamlet"])
    parts.append("%s %s" % (place["kind"], place["name"]))
    parts.append(d["label"])
    parts.append(PROVINCE)
    return ", ".join(parts)


def commune_station(place):
    return "Trạm Y tế %s %s" % (place["kind"], place["name"])


def person_name(sex, hre=False, old=False, family=None):
    if hre:
        fam = family or wchoice(HRE_FAMILY)
        if sex == "nam":
            return "%s Văn %s" % (fam, rng.choice(HRE_GIVEN_M))
        return "%s Thị %s" % (fam, rng.choice(HRE_GIVEN_F))
    fam = family or wchoice(KINH_FAMILY)
    if old:
        given = rng.choice(OLD_GIVEN_M if sex == "nam" else OLD_GIVEN_F)
        middle = "Văn" if sex == "nam" else "Thị"
    elif sex == "nam":
        given, middle = rng.choice(KINH_GIVEN_M), rng.choice(KINH_MIDDLE_M)
    else:
        given, middle = rng.choice(KINH_GIVEN_F), rng.choice(KINH_MIDDLE_F)
    return "%s %s %s" % (fam, middle, given)


def child_name(sex, family, hre):
    if hre:
        given = rng.choice(HRE_CHILD_M if sex == "nam" else HRE_CHILD_F)
    else:
        given = rng.choice(CHILD_GIVEN_M if sex == "nam" else CHILD_GIVEN_F)
    return "%s %s" % (family, given)


def family_of(name):
    return name.split(" ", 1)[0]


def name_for(nfd, make):
    """Call make() until the name has a character that NFD decomposes (only when nfd)."""
    while True:
        name = make()
        if not nfd or unicodedata.normalize("NFD", name) != name:
            return name


def nfd_if(flag, s):
    return unicodedata.normalize("NFD", s) if flag else s


# ---------------------------------------------------------------- attachment bytes
def fake_pdf(label, size):
    head = ("%%PDF-1.4\n%%\xe2\xe3\xcf\xd3\n"
            "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
            "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>\nendobj\n"
            "%% SYNTHETIC SAMPLE - not a real document\n%% %s\n" % label).encode("latin-1")
    tail = b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    size = max(size, len(head) + len(tail))
    body = bytearray(head)
    while len(body) + len(tail) < size:
        body += ("%% %016x\n" % rng.getrandbits(64)).encode("ascii")
    return bytes(body[: size - len(tail)]) + tail


def fake_jpeg(label, size):
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x48\x00\x48\x00\x00"
    comment = ("SYNTHETIC SAMPLE - not a real document; " + label).encode("ascii")
    head += b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    tail = b"\xff\xd9"
    n = max(0, size - len(head) - len(tail))
    return head + bytes(rng.getrandbits(8) for _ in range(n)) + tail


def media_type(name):
    return "image/jpeg" if name.endswith(".jpg") else "application/pdf"


def make_attachment(ma_ho_so, name, inline, inline_size):
    mt = media_type(name)
    if inline:
        label = "%s/%s" % (ma_ho_so, name)
        content = fake_pdf(label, inline_size) if mt == "application/pdf" else fake_jpeg(label, inline_size)
        return {
            "name": name,
            "media_type": mt,
            "size_bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "content_base64": base64.b64encode(content).decode("ascii"),
        }
    size = rng.randint(80_000, 1_500_000) if mt == "application/pdf" else rng.randint(150_000, 3_000_000)
    digest = hashlib.sha256(("imaginary:%s/%s:%d" % (ma_ho_so, name, size)).encode()).hexdigest()
    return {
        "name": name,
        "media_type": mt,
        "size_bytes": size,
        "sha256": digest,
        "reference": "%s/%s/%s" % (FILE_BASE, ma_ho_so, name),
    }


def choose_attachments(flow, ma_ho_so, extra_names):
    """1-3 documents; the main form first. Returns a list of (name, inline?, size)."""
    n = rng.choices([1, 2, 3], weights=[2, 4, 4], k=1)[0]
    pool = list(extra_names)
    names = [ATTACHMENTS[flow]["main"]] + rng.sample(pool, min(n - 1, len(pool)))
    plan = []
    for name in names:
        plan.append([name, rng.random() < 0.5, rng.randint(200, 2000)])
    return plan


# ================================================================ flows
def birth_payload(d):
    dk = d["district"]
    send_date = d["sent_at"].date()
    hre = dk == "sh" and rng.random() < 0.7
    home = pick_place(dk)
    home_addr = address(home)
    child_sex = rng.choice(["nam", "nu"])
    child_dob = rand_date(max(dt.date(2026, 10, 1), send_date - dt.timedelta(days=55)),
                          send_date - dt.timedelta(days=1))
    mother_dob = birth_for_age(child_dob, 19, 39)
    m_age = dec_age(mother_dob, child_dob)
    f_age = min(50, max(20, m_age + rng.randint(-2, 9)))
    father_dob = birth_for_age(child_dob, f_age, f_age)
    father_name = name_for(d["nfd"], lambda: person_name("nam", hre=hre))
    mother_name = name_for(d["nfd"], lambda: person_name("nu", hre=hre))
    cha = {"ho_ten": father_name, "ngay_sinh": father_dob.isoformat(),
           "so_dinh_danh": so_dinh_danh(father_dob, "nam")}
    me = {"ho_ten": mother_name, "ngay_sinh": mother_dob.isoformat(),
          "so_dinh_danh": so_dinh_danh(mother_dob, "nu")}
    quan_he = "me" if rng.random() < 0.55 else "cha"
    parent = me if quan_he == "me" else cha
    applicant = {
        "ho_ten": nfd_if(d["nfd"], parent["ho_ten"]),
        "ngay_sinh": parent["ngay_sinh"],
        "gioi_tinh": "nu" if quan_he == "me" else "nam",
        "so_dinh_danh": parent["so_dinh_danh"],
        "so_dien_thoai": phone(),
        "dia_chi": home_addr,
        "quan_he": quan_he,
    }
    hospitals = DISTRICTS[dk]["hospitals"]
    noi_sinh = rng.choice(hospitals) if rng.random() < 0.75 else commune_station(home)
    kcb = commune_station(home) if rng.random() < 0.6 else DISTRICTS[dk]["health_centre"]
    tre = {
        "ho_ten": nfd_if(d["nfd"], name_for(d["nfd"], lambda: child_name(child_sex, family_of(father_name), hre))),
        "ngay_sinh": child_dob.isoformat(),
        "gioi_tinh": child_sex,
        "noi_sinh": noi_sinh,
        "dan_toc": "Hrê" if hre else "Kinh",
        "quoc_tich": "Việt Nam",
    }
    data = {
        "loai_lien_thong": LOAI_LIEN_THONG["birth"],
        "tre": tre,
        "cha": cha,
        "me": me,
        "noi_dang_ky_thuong_tru": home_addr,
        "noi_dang_ky_kcb_ban_dau": kcb,
    }
    return {"applicant": applicant, "data": data}, list(ATTACHMENTS["birth"]["extra"])


def death_payload(d):
    dk = d["district"]
    send_date = d["sent_at"].date()
    hre = dk == "sh" and rng.random() < 0.7
    home = pick_place(dk)
    home_addr = address(home)
    ngay_mat = rand_date(max(dt.date(2026, 11, 1), send_date - dt.timedelta(days=12)), send_date)
    quan_he = rng.choices(["con", "vo", "chong"], weights=[60, 25, 15], k=1)[0]
    if quan_he == "vo":
        dec_sex = "nam"
    elif quan_he == "chong":
        dec_sex = "nu"
    else:
        dec_sex = rng.choice(["nam", "nu"])
    young = rng.random() < 0.1
    dec_dob = birth_for_age(ngay_mat, 42, 59) if young else birth_for_age(ngay_mat, 60, 97)
    old = not hre and dec_dob.year < 1950 and rng.random() < 0.6
    dec_name = name_for(d["nfd"], lambda: person_name(dec_sex, hre=hre, old=old))
    if quan_he == "con":
        app_sex = rng.choice(["nam", "nu"])
        dage = dec_age(dec_dob, ngay_mat)
        app_age = dage - rng.randint(20, min(38, dage - 18))
        app_dob = birth_for_age(ngay_mat, app_age, app_age)
        fam = family_of(dec_name) if dec_sex == "nam" else None
        app_name = name_for(d["nfd"], lambda: person_name(app_sex, hre=hre, family=fam))
    else:
        app_sex = "nu" if quan_he == "vo" else "nam"
        age = dec_age(dec_dob, ngay_mat) + rng.randint(-6, 4 if quan_he == "vo" else 8)
        app_dob = birth_for_age(ngay_mat, max(30, min(age, 96)), max(30, min(age, 96)))
        old = not hre and app_dob.year < 1950 and rng.random() < 0.5
        app_name = name_for(d["nfd"], lambda: person_name(app_sex, hre=hre, old=old))
    same_household = rng.random() < (0.6 if quan_he == "con" else 0.95)
    app_addr = home_addr if same_household else address(pick_place(dk))
    applicant = {
        "ho_ten": nfd_if(d["nfd"], app_name),
        "ngay_sinh": app_dob.isoformat(),
        "gioi_tinh": app_sex,
        "so_dinh_danh": so_dinh_danh(app_dob, app_sex),
        "so_dien_thoai": phone(),
        "dia_chi": app_addr,
        "quan_he": quan_he,
    }
    r = rng.random()
    if r < 0.55:
        noi_mat = "tại nhà, " + home_addr
    else:
        places = [h for h in DISTRICTS[dk]["hospitals"] if "Sản - Nhi" not in h]
        if "Bệnh viện Đa khoa tỉnh Quảng Ngãi" not in places:
            places.append("Bệnh viện Đa khoa tỉnh Quảng Ngãi")
        noi_mat = rng.choice(places)
    nguoi_mat = {
        "ho_ten": nfd_if(d["nfd"], dec_name),
        "ngay_sinh": dec_dob.isoformat(),
        "gioi_tinh": dec_sex,
        "so_dinh_danh": so_dinh_danh(dec_dob, dec_sex),
        "ngay_mat": ngay_mat.isoformat(),
        "noi_mat": noi_mat,
        "noi_thuong_tru": home_addr,
    }
    n_extra = rng.choices([1, 2, 3], weights=[45, 40, 15], k=1)[0]
    others = ["xoa_thuong_tru", "tro_cap_mai_tang", "bhxh_tu_tuat"]
    weights = {"xoa_thuong_tru": 8, "tro_cap_mai_tang": 3, "bhxh_tu_tuat": 3}
    chosen = []
    while len(chosen) < n_extra:  # weighted sampling without replacement
        rest = [t for t in others if t not in chosen]
        chosen.append(rng.choices(rest, weights=[weights[t] for t in rest], k=1)[0])
    thu_tuc = ["khai_tu"] + [t for t in others if t in chosen]
    if "bhxh_tu_tuat" in thu_tuc:
        nguoi_mat["ma_so_bhxh"] = "51%08d" % rng.randrange(100000000)
    data = {
        "loai_lien_thong": LOAI_LIEN_THONG["death"],
        "nguoi_mat": nguoi_mat,
        "thu_tuc_lua_chon": thu_tuc,
    }
    extra = ["giay_bao_tu.pdf"]
    if "xoa_thuong_tru" in thu_tuc:
        extra.append("to_khai_thay_doi_thong_tin_cu_tru.pdf")
    if "tro_cap_mai_tang" in thu_tuc:
        extra.append("to_khai_de_nghi_tro_cap_mai_tang.pdf")
    if "bhxh_tu_tuat" in thu_tuc:
        extra.append("so_bhxh.jpg")
    return {"applicant": applicant, "data": data}, extra


def dec_age(dob, on):
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


LAND_USE = {
    # code: (area range m2, {district: price-table range VND per m2}); invented figures
    "ODT": ((55, 220), {"qn": (7_000_000, 26_000_000), "dp": (3_500_000, 12_000_000), "sh": (1_500_000, 5_000_000)}),
    "ONT": ((120, 600), {"qn": (1_500_000, 5_000_000), "dp": (900_000, 3_500_000), "sh": (250_000, 1_200_000)}),
    "CLN": ((400, 6000), {"qn": (60_000, 160_000), "dp": (45_000, 120_000), "sh": (25_000, 70_000)}),
    "LUC": ((300, 2500), {"qn": (60_000, 120_000), "dp": (50_000, 100_000), "sh": (35_000, 70_000)}),
    "RSX": ((4000, 30000), {"qn": (20_000, 50_000), "dp": (18_000, 45_000), "sh": (12_000, 35_000)}),
}


def land_use_for(place):
    dk = place["district"]
    if place["kind"] in ("phường", "thị trấn"):
        opts = [("ODT", 7), ("CLN", 1)]
    elif dk == "sh":
        opts = [("ONT", 4), ("CLN", 4), ("RSX", 3)]
    else:
        opts = [("ONT", 6), ("CLN", 2), ("LUC", 2)]
    return wchoice(opts)


def land_payload(d):
    dk = d["district"]
    send_date = d["sent_at"].date()
    parcel_place = pick_place(dk)
    hre = dk == "sh" and rng.random() < 0.5
    loai = rng.choices(["chuyen_nhuong", "tang_cho", "thua_ke"], weights=[60, 25, 15], k=1)[0]
    use = land_use_for(parcel_place)
    (amin, amax), prices = LAND_USE[use]
    pmin, pmax = prices[dk]
    area = round(rng.uniform(amin, amax), 1)
    if area >= 1000:
        area = float(round(area))
    table_price = rng.randint(pmin, pmax)
    app_sex = rng.choice(["nam", "nu"])
    lo, hi = {"chuyen_nhuong": (28, 75), "tang_cho": (50, 82), "thua_ke": (30, 62)}[loai]
    app_dob = birth_for_age(send_date, lo, hi)
    app_age = dec_age(app_dob, send_date)
    app_name = name_for(d["nfd"], lambda: person_name(app_sex, hre=hre))
    app_place = parcel_place if rng.random() < 0.7 else pick_place(dk)
    applicant = {
        "ho_ten": nfd_if(d["nfd"], app_name),
        "ngay_sinh": app_dob.isoformat(),
        "gioi_tinh": app_sex,
        "so_dinh_danh": so_dinh_danh(app_dob, app_sex),
        "so_dien_thoai": phone(),
        "dia_chi": address(app_place),
    }
    ben_sex = rng.choice(["nam", "nu"])
    if loai == "chuyen_nhuong":
        ben_dob = birth_for_age(send_date, 25, 65)
        ben_name = person_name(ben_sex, hre=hre and rng.random() < 0.5)
        ben_addr = address(pick_place(rng.choice(["qn", "sh", "dp"]) if rng.random() < 0.4 else dk))
        value = int(round(area * table_price * rng.uniform(1.2, 2.0), -6))
        ben_quan_he = None
    elif loai == "tang_cho":
        ben_dob = birth_for_age(send_date, 20, app_age - 20)
        ben_name = person_name(ben_sex, hre=hre, family=family_of(app_name) if app_sex == "nam" else None)
        ben_addr = address(pick_place(dk))
        value = int(round(area * table_price, -5))
        ben_quan_he = "con"
    else:  # thua_ke: applicant registers for the heirs; ben_nhan = heir receiving the parcel
        ben_dob = birth_for_age(send_date, max(22, app_age - 10), app_age + 10)
        ben_name = person_name(ben_sex, hre=hre, family=family_of(app_name))
        ben_addr = applicant["dia_chi"] if rng.random() < 0.5 else address(pick_place(dk))
        value = int(round(area * table_price, -5))
        ben_quan_he = "con"
        applicant["quan_he"] = "con"
    ben_nhan = {
        "ho_ten": ben_name,
        "ngay_sinh": ben_dob.isoformat(),
        "gioi_tinh": ben_sex,
        "so_dinh_danh": so_dinh_danh(ben_dob, ben_sex),
        "dia_chi": ben_addr,
    }
    if ben_quan_he:
        ben_nhan["quan_he"] = ben_quan_he
    thua_dat = {
        "so_thua": str(rng.randint(1, 1450)),
        "so_to_ban_do": str(rng.randint(1, 68)),
        "dien_tich_m2": area,
        "dia_chi": "%s, %s %s, %s, %s" % (parcel_place["hamlet"], parcel_place["kind"],
                                          parcel_place["name"], DISTRICTS[dk]["label"], PROVINCE),
        "muc_dich_su_dung": use,
        "so_phat_hanh_gcn": "%s %06d" % (rng.choice(["CS", "CT", "DA", "DB", "BA"]), rng.randrange(1000000)),
    }
    data = {
        "loai_lien_thong": LOAI_LIEN_THONG["land"],
        "loai_bien_dong": loai,
        "thua_dat": thua_dat,
        "ben_nhan": ben_nhan,
        "gia_tri_hop_dong_vnd": value,
    }
    if loai == "thua_ke":
        dead_sex = rng.choice(["nam", "nu"])
        dead_dob = birth_for_age(send_date, app_age + 30, app_age + 48)
        data["nguoi_de_lai_di_san"] = {
            "ho_ten": person_name(dead_sex, hre=hre, family=family_of(app_name) if dead_sex == "nam" else None,
                                  old=(not hre and dead_dob.year < 1950)),
            "ngay_sinh": dead_dob.isoformat(),
            "gioi_tinh": dead_sex,
            "ngay_mat": rand_date(dt.date(2019, 1, 1), dt.date(2026, 6, 30)).isoformat(),
        }
    extra = [LAND_CONTRACT[loai]] + list(ATTACHMENTS["land"]["extra"])
    if loai != "chuyen_nhuong":
        extra.remove("to_khai_thue_tncn.pdf")  # usually exempt between close relatives
        if rng.random() < 0.3:
            extra.append("to_khai_thue_tncn.pdf")
    return {"applicant": applicant, "data": data}, extra


# ================================================================ schedule
def working_days():
    days = []
    day = dt.date(2026, 11, 1)
    while day.month == 11:
        if day.weekday() < 5:  # no public holiday in November
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def office_time(day):
    """A second inside 07:30-11:30 or 13:30-17:00 (+07:00)."""
    if rng.random() < 0.55:
        start, end = 7 * 3600 + 30 * 60, 11 * 3600 + 30 * 60
    else:
        start, end = 13 * 3600 + 30 * 60, 17 * 3600
    s = rng.randrange(start, end)
    return dt.datetime(day.year, day.month, day.day, s // 3600, s // 60 % 60, s % 60, tzinfo=TZ)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "dossiers.jsonl")
    days = working_days()
    flows = [f for f, n in FLOW_COUNTS.items() for _ in range(n)]
    rng.shuffle(flows)
    senders = {}
    for flow, quota in SENDER_QUOTA.items():
        senders[flow] = [k for k, n in quota.items() for _ in range(n)]
        assert len(senders[flow]) == FLOW_COUNTS[flow]
        rng.shuffle(senders[flow])
    nfd_idx = set(rng.sample(range(N_DOSSIERS), NFD_COUNT))
    plan = []
    for i, flow in enumerate(flows):
        s = senders[flow].pop()
        if s == "pac":
            sender = PAC
            district = "qn" if flow == "birth" else rng.choice(["qn", "qn", "sh", "dp"])
        else:
            sender, district = CENTRE[s], s
        receiver = LAND_OFFICE if flow == "land" else CIVIL[district]
        sent_at = office_time(rng.choice(days))
        plan.append({"i": i, "flow": flow, "sender": sender, "receiver": receiver,
                     "district": district, "sent_at": sent_at, "nfd": i in nfd_idx})
    plan.sort(key=lambda d: (d["sent_at"], d["i"]))

    seq = {}
    lines = []
    for d in plan:
        key = (d["sender"], d["sent_at"].date())
        seq[key] = seq.get(key, 0) + 1
        ma_ho_so = "%s-%s-%04d" % (d["sender"], d["sent_at"].strftime("%y%m%d"), seq[key])
        base_ms = int(d["sent_at"].timestamp() * 1000)
        corr_ms = base_ms + rng.randrange(0, 400)
        msg_ms = corr_ms + rng.randrange(1, 600)
        correlation_id = uuid7(corr_ms)
        message_id = uuid7(msg_ms)
        builder = {"birth": birth_payload, "death": death_payload, "land": land_payload}[d["flow"]]
        payload, extra = builder(d)
        att_plan = choose_attachments(d["flow"], ma_ho_so, extra)
        env = None
        while True:
            attachments = [make_attachment(ma_ho_so, n, inl, sz) for n, inl, sz in att_plan]
            env = {
                "spec": SPEC,
                "message_id": message_id,
                "kind": KIND,
                "ma_ho_so": ma_ho_so,
                "ma_tthc": MA_TTHC[d["flow"]],
                "sender": d["sender"],
                "receiver": d["receiver"],
                "sent_at": d["sent_at"].isoformat(),
                "correlation_id": correlation_id,
                "payload": payload,
                "attachments": attachments,
            }
            line = json.dumps(env, ensure_ascii=False, separators=(",", ":"))
            if len(line.encode("utf-8")) <= MAX_LINE_BYTES:
                break
            # too big: shrink the largest inline attachment (never below 200 bytes)
            inl = [a for a in att_plan if a[1] and a[2] > 200]
            biggest = max(inl, key=lambda a: a[2])
            biggest[2] = max(200, biggest[2] - 300)
        lines.append(line)

    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    print("wrote %d dossiers to %s" % (len(lines), out))


if __name__ == "__main__":
    main()
