#!/usr/bin/env python3
"""Validate every example of lienthong's modelled agency interfaces.

    pip install jsonschema lxml
    python3 schemas/agencies/check.py

Checks, for police-residence/ (JSON Schema 2020-12) and bhxh/ (XSD 1.0):
  * every schema is itself valid;
  * every file in examples/ is listed below and validates against its schema
    (format "uri" is checked too);
  * rules the schema languages do not express: real dates and times in the
    yyyyMMdd / yyyyMMddHHmmss fields, text in Unicode NFC, inline attachments
    whose KichThuoc and MaBam match the decoded content, the BHXH co-constraints
    (BienNhan by KetQua, KetQuaHoSo by TrangThaiHoSo), a cancel answer with
    TrangThaiHoSo 8, a callback naming the MaThamChieu of its submit;
  * a few broken variants of the examples are rejected (so the constraints bite).

Exits 0 when everything passes, 1 otherwise.
"""

import base64
import binascii
import copy
import datetime
import hashlib
import json
import os
import re
import sys
import unicodedata
from urllib.parse import urlsplit

try:
    import jsonschema
    from jsonschema import Draft202012Validator, FormatChecker
    from lxml import etree
except ImportError as e:  # pragma: no cover
    sys.exit("check.py needs jsonschema and lxml (pip install jsonschema lxml): %s" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
POLICE = os.path.join(HERE, "police-residence")
BHXH = os.path.join(HERE, "bhxh")
NS = "urn:lienthong:agency:bhxh:1"

# example file -> schema file
POLICE_EXAMPLES = {
    "submit.json": "submit.schema.json",
    "submit-removal.json": "submit.schema.json",
    "receipt.json": "receipt.schema.json",
    "error.json": "error.schema.json",
    "callback.json": "callback.schema.json",
    "callback-refused.json": "callback.schema.json",
    "status.json": "status.schema.json",
    "cancel.json": "cancel.schema.json",
    "cancel-answer.json": "status.schema.json",
}

# example file -> expected root element (in namespace NS)
BHXH_EXAMPLES = {
    "submit.xml": "HoSoBHXH",
    "submit-funeral.xml": "HoSoBHXH",
    "receipt.xml": "BienNhan",
    "receipt-error.xml": "BienNhan",
    "callback.xml": "KetQuaHoSo",
    "callback-funeral.xml": "KetQuaHoSo",
    "callback-refused.xml": "KetQuaHoSo",
    "status.xml": "TrangThai",
    "cancel.xml": "YeuCauHuy",
}

DATETIME_FIELDS = {"NgayGui", "ThoiDiemTiepNhan", "ThoiDiemXuLy", "ThoiDiemCapNhat"}
DATE_FIELDS = {"NgaySinh", "NgayMat", "NgayDangKy", "GiaTriTuNgay", "GiaTriDenNgay"}

failures = []


def fail(where, msg):
    failures.append("%s: %s" % (where, msg))
    print("FAIL %s: %s" % (where, msg))


def ok(where, msg="ok"):
    print("ok   %s: %s" % (where, msg))


# ---------------------------------------------------------------- common rules

def date_errors(name, value):
    """Errors for a yyyyMMdd / yyyyMMddHHmmss field that is not a real date/time."""
    fmt = "%Y%m%d%H%M%S" if name in DATETIME_FIELDS else "%Y%m%d" if name in DATE_FIELDS else None
    if fmt is None or not isinstance(value, str):
        return []
    try:
        datetime.datetime.strptime(value, fmt)
    except ValueError:
        return ["%s=%r is not a real %s" % (name, value, "date-time" if len(fmt) > 6 else "date")]
    return []


def attachment_errors(size, digest, content_b64):
    """Errors for an inline attachment whose KichThuoc / MaBam do not match NoiDung."""
    try:
        data = base64.b64decode("".join(content_b64.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        return ["NoiDung is not base64: %s" % e]
    errs = []
    if len(data) != int(size):
        errs.append("KichThuoc %s but NoiDung decodes to %d bytes" % (size, len(data)))
    if hashlib.sha256(data).hexdigest() != digest:
        errs.append("MaBam does not match the SHA-256 of NoiDung")
    return errs


def nfc_errors(text):
    return [] if unicodedata.is_normalized("NFC", text) else ["text is not in Unicode NFC"]


# ---------------------------------------------------------------- JSON (police)

format_checker = FormatChecker()


@format_checker.checks("uri", raises=ValueError)
def _is_uri(value):
    # Absolute URI (RFC 3986): a scheme, no spaces or control characters.
    # Own check so the result does not depend on optional jsonschema extras.
    if not isinstance(value, str):
        return True
    if re.search(r"[\s\x00-\x1f\x7f<>\"{}|\\^`]", value):
        raise ValueError("character not allowed in a URI")
    parts = urlsplit(value)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme or ""):
        raise ValueError("not an absolute URI")
    if parts.scheme.lower() in ("http", "https") and not parts.netloc:
        raise ValueError("http(s) URI without host")
    return True


def load_json(path):
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise ValueError("duplicate key %r" % k)
            seen[k] = v
        return seen

    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, json.loads(text, object_pairs_hook=no_duplicates)


def police_validators():
    validators = {}
    for name in sorted(set(POLICE_EXAMPLES.values())):
        where = "police-residence/" + name
        try:
            _, schema = load_json(os.path.join(POLICE, name))
            Draft202012Validator.check_schema(schema)
        except (OSError, ValueError, jsonschema.SchemaError) as e:
            fail(where, "schema unusable: %s" % e)
            continue
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            fail(where, "$schema is not JSON Schema 2020-12")
        validators[name] = Draft202012Validator(schema, format_checker=format_checker)
        ok(where, "schema valid")
    return validators


def police_rule_errors(example, doc):
    """Rules beyond the JSON Schemas."""
    errs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                errs.extend(date_errors(k, v))
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    if isinstance(doc, dict):
        for tep in doc.get("TepDinhKem", []) or []:
            if isinstance(tep, dict) and "NoiDung" in tep:
                errs.extend(attachment_errors(tep.get("KichThuoc", -1), tep.get("MaBam"), tep["NoiDung"]))
        if example == "cancel-answer.json" and doc.get("TrangThaiHoSo") != 8:
            errs.append("the answer to a cancel has TrangThaiHoSo 8")
    return errs


def police_errors(validators, example, doc):
    v = validators.get(POLICE_EXAMPLES[example])
    if v is None:
        return ["no usable schema"]
    errs = ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message)
            for e in sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))]
    return errs + police_rule_errors(example, doc)


def check_police():
    validators = police_validators()
    exdir = os.path.join(POLICE, "examples")
    check_listing("police-residence/examples", exdir, POLICE_EXAMPLES)
    docs = {}
    for example in sorted(POLICE_EXAMPLES):
        where = "police-residence/examples/" + example
        try:
            text, doc = load_json(os.path.join(exdir, example))
        except (OSError, ValueError) as e:
            fail(where, "unreadable: %s" % e)
            continue
        docs[example] = doc
        errs = nfc_errors(text) + police_errors(validators, example, doc)
        for e in errs:
            fail(where, e)
        if not errs:
            ok(where, "valid against " + POLICE_EXAMPLES[example])

    # A callback names the MaThamChieu of the submit of the same dossier.
    submits = {d["MaHoSo"]: d["MaThamChieu"] for n, d in docs.items() if n.startswith("submit")}
    for n, d in docs.items():
        if n.startswith("callback") and d.get("MaHoSo") in submits and d.get("MaThamChieu") != submits[d["MaHoSo"]]:
            fail("police-residence/examples/" + n, "MaThamChieu differs from the submit of " + d["MaHoSo"])

    # Broken variants that must be rejected.
    def mutate(example, change):
        doc = copy.deepcopy(docs[example])
        change(doc)
        return doc

    def drop(key):
        return lambda d: d.pop(key)

    def setk(key, value):
        return lambda d: d.__setitem__(key, value)

    def both_refs(d):
        d["TepDinhKem"][0]["DuongDan"] = "https://bus.lienthong.example/v1/tep/x"

    def no_content(d):
        d["TepDinhKem"][0].pop("NoiDung")

    def congdan_without_birth(d):
        d["CongDan"].pop("NgaySinh")

    def chuhoso_extra(d):
        d["ChuHoSo"]["Email"] = "a@example.org"

    def wrong_hash(d):
        d["TepDinhKem"][0]["MaBam"] = "0" * 64

    negatives = [
        ("submit.json", "unknown top-level property", setk("GhiChu", "x")),
        ("submit.json", "missing NoiCuTru", drop("NoiCuTru")),
        ("submit.json", "unknown LoaiYeuCau", setk("LoaiYeuCau", "DANG_KY_TAM_TRU")),
        ("submit.json", "MaThamChieu upper-case", setk("MaThamChieu", "01A22515-90A0-705F-AB01-41296CC6BE18")),
        ("submit.json", "NgayGui not 14 digits", setk("NgayGui", "2026-11-29T09:15:00")),
        ("submit.json", "NgayGui not a real time", setk("NgayGui", "20261129251500")),
        ("submit.json", "UrlPhanHoi not a URI", setk("UrlPhanHoi", "bus lienthong/phan-hoi")),
        ("submit.json", "CongDan without NgaySinh", congdan_without_birth),
        ("submit.json", "ChuHoSo with unknown property", chuhoso_extra),
        ("submit.json", "attachment with NoiDung and DuongDan", both_refs),
        ("submit.json", "attachment with neither NoiDung nor DuongDan", no_content),
        ("submit.json", "attachment MaBam does not match NoiDung", wrong_hash),
        ("receipt.json", "receipt TrangThaiHoSo 4", setk("TrangThaiHoSo", 4)),
        ("error.json", "error without MoTaLoi", drop("MoTaLoi")),
        ("callback.json", "callback 9 without KetQua", drop("KetQua")),
        ("callback.json", "callback TrangThaiHoSo 4", setk("TrangThaiHoSo", 4)),
        ("callback-refused.json", "callback 3 without LyDo", drop("LyDo")),
        ("status.json", "status TrangThaiHoSo 11", setk("TrangThaiHoSo", 11)),
        ("status.json", "status TrangThaiHoSo as a string", setk("TrangThaiHoSo", "4")),
        ("cancel.json", "cancel with empty LyDo", setk("LyDo", "")),
        ("cancel-answer.json", "cancel answer TrangThaiHoSo 4", setk("TrangThaiHoSo", 4)),
    ]
    for example, what, change in negatives:
        if example not in docs:
            continue
        where = "police-residence/examples/%s [broken: %s]" % (example, what)
        if police_errors(validators, example, mutate(example, change)):
            ok(where, "rejected")
        else:
            fail(where, "was accepted")

    # Variants that must still be accepted (optional fields really optional).
    positives = [
        ("submit.json", "ChuHoSo without SoDinhDanh", lambda d: d["ChuHoSo"].pop("SoDinhDanh")),
        ("submit.json", "without TepDinhKem and DuLieuHoSo",
         lambda d: (d.pop("TepDinhKem"), d.pop("DuLieuHoSo"))),
    ]
    for example, what, change in positives:
        if example not in docs:
            continue
        where = "police-residence/examples/%s [variant: %s]" % (example, what)
        errs = police_errors(validators, example, mutate(example, change))
        if errs:
            fail(where, "rejected: %s" % "; ".join(errs))
        else:
            ok(where, "accepted")


# ---------------------------------------------------------------- XML (BHXH)

def q(name):
    return "{%s}%s" % (NS, name)


def bhxh_rule_errors(root, expected_root):
    """Rules beyond the XSD (XSD 1.0 has no co-constraints)."""
    errs = []
    if root.tag != q(expected_root):
        return ["root element is %s, expected {%s}%s" % (root.tag, NS, expected_root)]
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        local = etree.QName(el).localname
        errs.extend(date_errors(local, el.text))

    def has(name):
        return root.find(q(name)) is not None

    def text(name):
        el = root.find(q(name))
        return None if el is None else el.text

    if expected_root == "HoSoBHXH":
        for tep in root.findall(q("TepDinhKem")):
            nd = tep.find(q("NoiDung"))
            if nd is not None:
                errs.extend(attachment_errors(tep.findtext(q("KichThuoc")), tep.findtext(q("MaBam")), nd.text or ""))
        loai = text("LoaiYeuCau")
        if loai == "TRO_CAP_MAI_TANG" and root.find(q("DoiTuong") + "/" + q("NgayMat")) is None:
            errs.append("TRO_CAP_MAI_TANG needs DoiTuong/NgayMat")
    elif expected_root == "BienNhan":
        kq = text("KetQua")
        if kq == "THANH_CONG":
            for n in ("MaTiepNhan", "ThoiDiemTiepNhan"):
                if not has(n):
                    errs.append("KetQua THANH_CONG needs %s" % n)
            for n in ("MaLoi", "MoTaLoi"):
                if has(n):
                    errs.append("KetQua THANH_CONG must not carry %s" % n)
        elif kq == "LOI":
            for n in ("MaLoi", "MoTaLoi"):
                if not has(n):
                    errs.append("KetQua LOI needs %s" % n)
    elif expected_root == "KetQuaHoSo":
        tt = (text("TrangThaiHoSo") or "").strip()
        if tt == "3" and not has("LyDo"):
            errs.append("TrangThaiHoSo 3 needs LyDo")
        if tt == "9":
            card = ("MaSoBHXH", "SoTheBHYT", "GiaTriTuNgay", "GiaTriDenNgay", "NoiDangKyKCB")
            if has("SoTheBHYT"):
                errs.extend("a card result needs %s" % n for n in card if not has(n))
                if has("GiaTriTuNgay") and has("GiaTriDenNgay") and text("GiaTriDenNgay") < text("GiaTriTuNgay"):
                    errs.append("GiaTriDenNgay before GiaTriTuNgay")
            elif not has("SoTienTroCap"):
                errs.append("TrangThaiHoSo 9 needs the card (SoTheBHYT, ...) or SoTienTroCap")
    return errs


def check_bhxh():
    where = "bhxh/bhxh.xsd"
    try:
        schema = etree.XMLSchema(etree.parse(os.path.join(BHXH, "bhxh.xsd")))
    except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as e:
        fail(where, "schema unusable: %s" % e)
        return
    ok(where, "schema valid")

    def errors(doc, expected_root):
        errs = []
        if not schema.validate(doc):
            errs.extend("line %d: %s" % (e.line, e.message) for e in schema.error_log)
        return errs + bhxh_rule_errors(doc.getroot(), expected_root)

    exdir = os.path.join(BHXH, "examples")
    check_listing("bhxh/examples", exdir, BHXH_EXAMPLES)
    docs = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for example in sorted(BHXH_EXAMPLES):
        where = "bhxh/examples/" + example
        path = os.path.join(exdir, example)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            text = raw.decode("utf-8")
            doc = etree.fromstring(raw, parser).getroottree()
        except (OSError, UnicodeDecodeError, etree.XMLSyntaxError) as e:
            fail(where, "unreadable: %s" % e)
            continue
        docs[example] = doc
        errs = nfc_errors(text) + errors(doc, BHXH_EXAMPLES[example])
        for e in errs:
            fail(where, e)
        if not errs:
            ok(where, "valid against bhxh.xsd as " + BHXH_EXAMPLES[example])

    # A callback names the MaThamChieu of the submit of the same dossier.
    submits = {}
    for n, d in docs.items():
        if n.startswith("submit"):
            submits[d.getroot().findtext(q("MaHoSo"))] = d.getroot().findtext(q("MaThamChieu"))
    for n, d in docs.items():
        r = d.getroot()
        if n.startswith("callback") and r.findtext(q("MaHoSo")) in submits \
                and r.findtext(q("MaThamChieu")) != submits[r.findtext(q("MaHoSo"))]:
            fail("bhxh/examples/" + n, "MaThamChieu differs from the submit of " + r.findtext(q("MaHoSo")))

    # Broken variants that must be rejected.
    def remove(name):
        def f(root):
            el = root.find(".//" + q(name))
            el.getparent().remove(el)
        return f

    def settext(name, value):
        def f(root):
            root.find(".//" + q(name)).text = value
        return f

    def both_refs(root):
        tep = root.find(q("TepDinhKem"))
        el = etree.SubElement(tep, q("DuongDan"))
        el.text = "https://bus.lienthong.example/v1/tep/x"

    def no_content(root):
        tep = root.find(q("TepDinhKem"))
        tep.remove(tep.find(q("NoiDung")))

    def duplicate_field(root):
        ttbs = root.find(q("ThongTinBoSung"))
        el = etree.SubElement(ttbs, q("TruongDuLieu"), Ten="SoDangKyKhaiSinh")
        el.text = "153/2026"

    def field_without_name(root):
        del root.find(".//" + q("TruongDuLieu")).attrib["Ten"]

    def out_of_order(root):
        el = root.find(q("MaTTHC"))
        root.remove(el)
        root.append(el)

    def unknown_element(root):
        etree.SubElement(root, q("GhiChu")).text = "x"

    def wrong_namespace(root):
        root.tag = "{urn:lienthong:agency:bhxh:2}HoSoBHXH"

    negatives = [
        ("submit.xml", "unknown LoaiYeuCau", settext("LoaiYeuCau", "CAP_THE_BHYT")),
        ("submit.xml", "missing NguoiKhai", remove("NguoiKhai")),
        ("submit.xml", "elements out of order", out_of_order),
        ("submit.xml", "unknown element", unknown_element),
        ("submit.xml", "wrong namespace", wrong_namespace),
        ("submit.xml", "GioiTinh 3", settext("GioiTinh", "3")),
        ("submit.xml", "NgaySinh not a real date", settext("NgaySinh", "20261131")),
        ("submit.xml", "MaBam upper-case hex", settext("MaBam", "069D592BA9C1C55E1B3DF48260496173F2994DB344CACA2162209502A087F62E")),
        ("submit.xml", "attachment with NoiDung and DuongDan", both_refs),
        ("submit.xml", "attachment with neither NoiDung nor DuongDan", no_content),
        ("submit.xml", "attachment KichThuoc does not match NoiDung", settext("KichThuoc", "204")),
        ("submit.xml", "duplicate TruongDuLieu Ten", duplicate_field),
        ("submit.xml", "TruongDuLieu without Ten", field_without_name),
        ("submit-funeral.xml", "funeral without NgayMat", remove("NgayMat")),
        ("submit-funeral.xml", "MaSoBHXH with 9 digits", settext("MaSoBHXH", "510700418")),
        ("receipt.xml", "KetQua OK", settext("KetQua", "OK")),
        ("receipt.xml", "THANH_CONG without MaTiepNhan", remove("MaTiepNhan")),
        ("receipt-error.xml", "LOI without MaLoi", remove("MaLoi")),
        ("callback.xml", "TrangThaiHoSo 4", settext("TrangThaiHoSo", "4")),
        ("callback.xml", "SoTheBHYT lower-case", settext("SoTheBHYT", "te1515127012345")),
        ("callback.xml", "card result without GiaTriDenNgay", remove("GiaTriDenNgay")),
        ("callback-funeral.xml", "9 without card or SoTienTroCap", remove("SoTienTroCap")),
        ("callback-funeral.xml", "negative SoTienTroCap", settext("SoTienTroCap", "-1")),
        ("callback-refused.xml", "3 without LyDo", remove("LyDo")),
        ("status.xml", "TrangThaiHoSo 11", settext("TrangThaiHoSo", "11")),
        ("status.xml", "ThoiDiemCapNhat with 12 digits", settext("ThoiDiemCapNhat", "202611291435")),
        ("cancel.xml", "MaThamChieu not a UUID", settext("MaThamChieu", "01a22688")),
    ]
    for example, what, change in negatives:
        if example not in docs:
            continue
        where = "bhxh/examples/%s [broken: %s]" % (example, what)
        doc = copy.deepcopy(docs[example])
        change(doc.getroot())
        if errors(doc, BHXH_EXAMPLES[example]):
            ok(where, "rejected")
        else:
            fail(where, "was accepted")


# ---------------------------------------------------------------- main

def check_listing(where, exdir, table):
    try:
        present = set(os.listdir(exdir))
    except OSError as e:
        fail(where, "cannot list: %s" % e)
        return
    for name in sorted(present - set(table)):
        fail(where, "%s is not listed in check.py (add it with its schema)" % name)
    for name in sorted(set(table) - present):
        fail(where, "%s is missing" % name)


def main():
    check_police()
    check_bhxh()
    if failures:
        print("\n%d failure(s)" % len(failures))
        return 1
    print("\nall agency examples valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
