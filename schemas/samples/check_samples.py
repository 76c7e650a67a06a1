#!/usr/bin/env python3
"""Validate schemas/samples/dossiers.jsonl against ../envelope.schema.json, each line against its
procedure's data schema (../procedures/<ma_tthc>.schema.json), plus the
sample-set rules that JSON Schema cannot express. Exits 1 on any failure.

Needs the `jsonschema` package (pip install jsonschema; `rfc3987` optional, enables
the "uri" format check).   Usage:  python3 check_samples.py [dossiers.jsonl]
"""

import base64
import binascii
import collections
import datetime as dt
import hashlib
import json
import os
import re
import sys
import unicodedata

try:
    from jsonschema import Draft202012Validator, FormatChecker
except ImportError:
    sys.exit("check_samples.py: needs the jsonschema package (pip install jsonschema)")

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "envelope.schema.json")
# What each procedure's route needs from the filing (the catalogue's data_schema).
PROCEDURE_SCHEMAS = os.path.join(HERE, "..", "procedures")
MAX_LINE_BYTES = 8192

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CENTRES = {"000.20.51.H48": "51", "000.20.59.H48": "59", "000.20.61.H48": "61", "000.20.01.H48": "01"}
CIVIL = {"000.10.51.H48", "000.10.59.H48", "000.10.61.H48"}
LAND_OFFICE = "000.10.12.H48"
FLOW_BY_TTHC = {"1.001193": "birth", "1.011537": "death", "1.010059": "land"}
LOAI = {"birth": "khai_sinh_thuong_tru_bhyt", "death": "khai_tu_xoa_thuong_tru_mai_tang",
        "land": "dang_ky_bien_dong_dat_dai"}
DEATH_PROCS = ["khai_tu", "xoa_thuong_tru", "tro_cap_mai_tang", "bhxh_tu_tuat"]
MEDIA = {".pdf": "application/pdf", ".jpg": "image/jpeg"}


def uuid7_ms(u):
    return int(u.replace("-", "")[:12], 16)


def strings(obj, path=""):
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(v, path + "/" + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from strings(v, "%s/%d" % (path, i))


def check_line(env, errors, state):
    err = errors.append
    if env.get("kind") != "dossier.forward":
        err("kind is not dossier.forward")
    if "causation_id" in env:
        err("first forward must not carry causation_id")
    for key in ("message_id", "correlation_id"):
        v = env.get(key, "")
        if not UUID7.match(v):
            err("%s is not a lower-case UUIDv7" % key)
        elif v in state["ids"]:
            err("%s %s is not unique" % (key, v))
        state["ids"].add(v)

    # sent_at: +07:00, November 2026, Monday-Friday, office hours
    try:
        sent = dt.datetime.fromisoformat(env["sent_at"])
    except (KeyError, ValueError):
        err("sent_at does not parse")
        return
    if sent.utcoffset() != dt.timedelta(hours=7):
        err("sent_at offset is not +07:00")
    if (sent.year, sent.month) != (2026, 11) or sent.weekday() > 4:
        err("sent_at is not a working day of November 2026")
    hm = sent.hour * 60 + sent.minute
    if not (7 * 60 + 30 <= hm < 11 * 60 + 30 or 13 * 60 + 30 <= hm < 17 * 60):
        err("sent_at is outside office hours")
    sent_ms = int(sent.timestamp() * 1000)
    for key in ("message_id", "correlation_id"):
        if UUID7.match(env.get(key, "")) and not 0 <= uuid7_ms(env[key]) - sent_ms < 1000:
            err("%s timestamp is not within the sent_at second" % key)

    # ma_ho_so = <sender>-YYMMDD-NNNN, per-centre daily sequence
    sender, mhs = env.get("sender"), env.get("ma_ho_so", "")
    m = re.match(r"^(.+)-(\d{6})-(\d{4})$", mhs)
    if sender not in CENTRES:
        err("sender %s is not a one-stop centre" % sender)
    if not m or m.group(1) != sender or m.group(2) != sent.strftime("%y%m%d"):
        err("ma_ho_so %s does not match <sender>-<sent date YYMMDD>-NNNN" % mhs)
    else:
        if mhs in state["ma_ho_so"]:
            err("ma_ho_so %s is not unique" % mhs)
        state["ma_ho_so"].add(mhs)
        state["seq"][(sender, m.group(2))].append(int(m.group(3)))

    # flow-specific routing and content
    flow = FLOW_BY_TTHC.get(env.get("ma_tthc"))
    p = env.get("payload", {})
    data, app = p.get("data", {}), p.get("applicant", {})
    receiver = env.get("receiver")
    if flow is None:
        err("unknown ma_tthc %s" % env.get("ma_tthc"))
        return
    if data.get("loai_lien_thong") != LOAI[flow]:
        err("loai_lien_thong does not match ma_tthc")
    for key in ("ho_ten", "ngay_sinh", "gioi_tinh", "so_dinh_danh", "so_dien_thoai", "dia_chi"):
        if key not in app:
            err("applicant.%s missing" % key)
    if not re.match(r"^051\d{9}$", app.get("so_dinh_danh", "")):
        err("applicant.so_dinh_danh does not start with 051")
    if not re.match(r"^09\d{8}$", app.get("so_dien_thoai", "")):
        err("applicant.so_dien_thoai is not 09xxxxxxxx")
    subject = None
    if flow in ("birth", "death"):
        if sender == "000.20.01.H48":
            want = "000.10.51.H48" if flow == "birth" else None
        else:
            want = "000.10.%s.H48" % CENTRES.get(sender, "??")
        if receiver != want:
            err("%s dossier from %s must go to %s, not %s" % (flow, sender, want, receiver))
    else:
        if receiver != LAND_OFFICE:
            err("land dossier must go to %s" % LAND_OFFICE)
    if flow == "birth":
        tre = data.get("tre", {})
        subject = tre.get("ho_ten")
        if app.get("quan_he") not in ("cha", "me"):
            err("birth applicant.quan_he must be cha/me")
        parent = data.get("cha" if app.get("quan_he") == "cha" else "me", {})
        if parent.get("so_dinh_danh") != app.get("so_dinh_danh") or \
                unicodedata.normalize("NFC", app.get("ho_ten", "")) != parent.get("ho_ten"):
            err("birth applicant is not the parent named in data")
        dob = tre.get("ngay_sinh", "")
        if not ("2026-10-01" <= dob < sent.date().isoformat()):
            err("tre.ngay_sinh %s not in Oct-Nov 2026 before sent_at" % dob)
        for key in ("ho_ten", "ngay_sinh", "gioi_tinh", "noi_sinh", "dan_toc", "quoc_tich"):
            if key not in tre:
                err("tre.%s missing" % key)
        for key in ("cha", "me", "noi_dang_ky_thuong_tru", "noi_dang_ky_kcb_ban_dau"):
            if key not in data:
                err("data.%s missing" % key)
    elif flow == "death":
        nm = data.get("nguoi_mat", {})
        subject = nm.get("ho_ten")
        if app.get("quan_he") not in ("con", "vo", "chong"):
            err("death applicant.quan_he must be con/vo/chong")
        procs = data.get("thu_tuc_lua_chon", [])
        if procs[:1] != ["khai_tu"] or not 2 <= len(procs) <= 4 or len(set(procs)) != len(procs) \
                or any(x not in DEATH_PROCS for x in procs):
            err("thu_tuc_lua_chon %r invalid" % procs)
        if ("bhxh_tu_tuat" in procs) != ("ma_so_bhxh" in nm):
            err("ma_so_bhxh present iff bhxh_tu_tuat chosen")
        if "ma_so_bhxh" in nm and not re.match(r"^\d{10}$", nm["ma_so_bhxh"]):
            err("ma_so_bhxh is not 10 digits")
        dm = nm.get("ngay_mat", "")
        if not ("2026-11-01" <= dm <= sent.date().isoformat()):
            err("ngay_mat %s not in Nov 2026 up to sent_at" % dm)
        for key in ("ho_ten", "ngay_sinh", "gioi_tinh", "so_dinh_danh", "noi_mat", "noi_thuong_tru"):
            if key not in nm:
                err("nguoi_mat.%s missing" % key)
    else:
        if data.get("loai_bien_dong") not in ("chuyen_nhuong", "tang_cho", "thua_ke"):
            err("loai_bien_dong invalid")
        td = data.get("thua_dat", {})
        for key in ("so_thua", "so_to_ban_do", "dien_tich_m2", "dia_chi", "muc_dich_su_dung"):
            if key not in td:
                err("thua_dat.%s missing" % key)
        if not isinstance(td.get("dien_tich_m2"), (int, float)) or isinstance(td.get("dien_tich_m2"), bool):
            err("dien_tich_m2 is not a number")
        v = data.get("gia_tri_hop_dong_vnd")
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            err("gia_tri_hop_dong_vnd is not a positive integer")
        if "ho_ten" not in data.get("ben_nhan", {}):
            err("ben_nhan.ho_ten missing")

    # Unicode: names either all NFC or (applicant + subject) NFD; everything else NFC
    nfd_paths = {"/payload/applicant/ho_ten", "/payload/data/tre/ho_ten", "/payload/data/nguoi_mat/ho_ten"}
    app_name = app.get("ho_ten", "")
    is_nfd = app_name != unicodedata.normalize("NFC", app_name)
    for path, s in strings(env):
        if path in nfd_paths and is_nfd:
            if s != unicodedata.normalize("NFD", s) or s == unicodedata.normalize("NFC", s):
                err("%s should be NFD in an NFD dossier" % path)
        elif s != unicodedata.normalize("NFC", s):
            err("%s is not NFC" % path)
    if is_nfd:
        state["nfd"] += 1
    elif subject is not None and subject != unicodedata.normalize("NFC", subject):
        err("subject name NFD but applicant name NFC")

    # attachments
    atts = env.get("attachments", [])
    if not 1 <= len(atts) <= 3:
        err("expected 1-3 attachments, got %d" % len(atts))
    names = [a.get("name") for a in atts if isinstance(a, dict)]
    if len(set(names)) != len(names):
        err("duplicate attachment names")
    for a in atts:
        if not isinstance(a, dict):
            continue
        name = a.get("name", "")
        if MEDIA.get(os.path.splitext(name)[1]) != a.get("media_type"):
            err("%s: media_type %s does not match extension" % (name, a.get("media_type")))
        if "content_base64" in a:
            state["inline"] += 1
            try:
                raw = base64.b64decode(a["content_base64"], validate=True)
            except (binascii.Error, ValueError):
                err("%s: content_base64 does not decode" % name)
                continue
            if len(raw) != a.get("size_bytes"):
                err("%s: size_bytes %r != decoded %d" % (name, a.get("size_bytes"), len(raw)))
            if hashlib.sha256(raw).hexdigest() != a.get("sha256"):
                err("%s: sha256 does not match content" % name)
            if not 200 <= len(raw) <= 2000:
                err("%s: inline content %d bytes outside 200-2000" % (name, len(raw)))
            magic = b"%PDF-1.4" if a.get("media_type") == "application/pdf" else b"\xff\xd8\xff"
            if not raw.startswith(magic):
                err("%s: content does not start with %r" % (name, magic))
        else:
            state["reference"] += 1
            want = "https://motcua.quangngai.gov.vn/files/%s/%s" % (mhs, name)
            if a.get("reference") != want:
                err("%s: reference %s != %s" % (name, a.get("reference"), want))
    return flow


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "dossiers.jsonl")
    with open(SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    procedure_validators = {}
    for name in sorted(os.listdir(PROCEDURE_SCHEMAS)):
        if name.endswith(".schema.json"):
            with open(os.path.join(PROCEDURE_SCHEMAS, name), encoding="utf-8") as f:
                ps = json.load(f)
            Draft202012Validator.check_schema(ps)
            procedure_validators[name[: -len(".schema.json")]] = Draft202012Validator(
                ps, format_checker=FormatChecker())
    state = {"ids": set(), "ma_ho_so": set(), "seq": collections.defaultdict(list),
             "nfd": 0, "inline": 0, "reference": 0}
    per_flow, per_sender, per_pair = collections.Counter(), collections.Counter(), collections.Counter()
    failures = 0
    n = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            n += 1
            errors = []
            if len(raw) > MAX_LINE_BYTES:
                errors.append("line is %d bytes (> %d)" % (len(raw), MAX_LINE_BYTES))
            try:
                env = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                errors.append("not JSON: %s" % e)
                env = None
            if env is not None:
                for e in sorted(validator.iter_errors(env), key=lambda e: list(e.absolute_path)):
                    errors.append("schema: %s at /%s" % (e.message, "/".join(map(str, e.absolute_path))))
                if isinstance(env, dict):
                    pv = procedure_validators.get(env.get("ma_tthc"))
                    if pv is None:
                        errors.append("no procedure schema for %s in schemas/procedures/" % env.get("ma_tthc"))
                    else:
                        for e in sorted(pv.iter_errors(env), key=lambda e: list(e.absolute_path)):
                            errors.append("procedure schema: %s at /%s" % (e.message, "/".join(map(str, e.absolute_path))))
                    flow = check_line(env, errors, state)
                    per_flow[flow] += 1
                    per_sender[env.get("sender")] += 1
                    per_pair[(env.get("sender"), flow)] += 1
            if errors:
                failures += 1
                for e in errors:
                    print("%s:%d: %s" % (path, lineno, e))
    for (sender, day), seqs in sorted(state["seq"].items()):
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            failures += 1
            print("%s: daily sequence of %s on %s is %s, not 1..%d" % (path, sender, day, sorted(seqs), len(seqs)))

    print("lines: %d, failed: %d" % (n, failures))
    print("per flow: " + ", ".join("%s %d" % kv for kv in sorted(per_flow.items(), key=str)))
    print("per sender: " + ", ".join("%s %d" % kv for kv in sorted(per_sender.items(), key=str)))
    print("per sender x flow: " + ", ".join("%s/%s %d" % (s, fl, c) for (s, fl), c in sorted(per_pair.items(), key=str)))
    print("NFD dossiers: %d; attachments inline %d, by reference %d" % (state["nfd"], state["inline"], state["reference"]))
    if n == 0 or failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
