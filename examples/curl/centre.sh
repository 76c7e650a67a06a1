#!/usr/bin/env bash
# A centre's software on the bus's HTTP API with curl alone (docs/centres.md): file a dossier,
# read the inbox, acknowledge, read a dossier's state and trace. Each command is one curl call;
# copy the one you need.
#
# Environment:
#   LIENTHONG_URL      the bus's HTTP API, e.g. https://lienthong.example:8480
#   LIENTHONG_KEY      the centre's API key
#   LIENTHONG_UNIT     the centre's unit code (for `file`), e.g. 000.20.59.H48
#   LIENTHONG_CA_FILE  optional: PEM file of the CA that signed the bus's certificate
#
# Usage:
#   centre.sh file [MA_HO_SO]   file a birth dossier without receiver; prints {"message_id", "status"}
#   centre.sh inbox             up to 20 messages of the centre's queue, waiting up to
#                               LIENTHONG_WAIT_S (default 30) s for the first, each leased for 60 s
#   centre.sh ack LEASE_ID…     acknowledge handled messages; prints {"acked", "expired", "unknown"}
#   centre.sh dossier MA_HO_SO  the dossier's state
#   centre.sh trace MA_HO_SO    the dossier's hand-over timeline
#
# Each prints the bus's JSON answer; a refusal (4xx/5xx) prints its problem+json and exits 22.
set -euo pipefail
case "${1:-}" in
file | inbox | ack | dossier | trace) ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
BUS=${LIENTHONG_URL:?set LIENTHONG_URL}
BUS=${BUS%/}
: "${LIENTHONG_KEY:?set LIENTHONG_KEY}"
opts=(-sS --fail-with-body -w '\n' -H "Authorization: Bearer $LIENTHONG_KEY")
[ -n "${LIENTHONG_CA_FILE:-}" ] && opts+=(--cacert "$LIENTHONG_CA_FILE")

case "${1:-}" in
file)
  UNIT=${LIENTHONG_UNIT:?set LIENTHONG_UNIT}
  # <centre code>-<yyMMdd>-<number>; your software uses its own register's number.
  MA=${2:-$UNIT-$(date +%y%m%d)-$(date +%H%M%S)}
  CORRELATION=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || uuidgen)
  # No message_id (the bus gives one) and no receiver (the bus runs the route); the
  # Idempotency-Key makes sending the same command again safe: the same message id, filed once.
  curl "${opts[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: filing-$MA" \
    --data-binary @- "$BUS/v1/messages" <<JSON
{"spec": "lienthong.envelope/1", "kind": "dossier.forward", "ma_ho_so": "$MA", "ma_tthc": "1.001193",
 "sender": "$UNIT", "sent_at": "$(date -Iseconds)", "correlation_id": "$CORRELATION",
 "payload": {
   "applicant": {"ho_ten": "Đinh Văn Lực", "so_dinh_danh": "051094000123", "quan_he": "cha",
                 "dia_chi": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi"},
   "data": {"loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
            "tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu"},
            "noi_dang_ky_thuong_tru": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi"}}}
JSON
  ;;
inbox)
  curl "${opts[@]}" "$BUS/v1/inbox?wait=${LIENTHONG_WAIT_S:-30}&max=20&lease=60"
  ;;
ack)
  shift
  [ "$#" -gt 0 ] || { echo "usage: centre.sh ack LEASE_ID…" >&2; exit 2; }
  ids=$(printf '"%s",' "$@")
  curl "${opts[@]}" -H 'Content-Type: application/json' -d "{\"lease_ids\": [${ids%,}]}" "$BUS/v1/inbox/ack"
  ;;
dossier)
  curl "${opts[@]}" "$BUS/v1/dossiers/${2:?usage: centre.sh dossier MA_HO_SO}"
  ;;
trace)
  curl "${opts[@]}" "$BUS/v1/dossiers/${2:?usage: centre.sh trace MA_HO_SO}/trace"
  ;;
esac
