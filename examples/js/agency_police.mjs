#!/usr/bin/env node
// An agency's system behind the bus: a small HTTP server speaking the Police residence reference
// interface (schemas/agencies/police-residence/; the bus's `police-rest` adapter calls it):
//
//   POST /v1/ho-so               a submission: answered 202 with the receipt (MaTiepNhan); the
//                                same Idempotency-Key always gets the same receipt
//   GET  /v1/ho-so/{MaHoSo}      the status lookup: 200 with the status, 404 {MaLoi, MoTaLoi}
//   POST /v1/ho-so/{MaHoSo}/huy  a cancel (the citizen withdrew, or the dossier was stopped)
//
// and, AGENCY_DECIDE_AFTER_S seconds after a submission, the result (TrangThaiHoSo 9, registered)
// POSTed by callback to the UrlPhanHoi the bus gave, with the unit's callback key
// (docs/agencies.md, "Callbacks and edXML endpoints").
//
// Environment:
//   LIENTHONG_CALLBACK_KEY  the Police unit's callback key (the registry's callback_key)
//   LIENTHONG_URL           optional: the bus's URL; a UrlPhanHoi elsewhere is refused, so the key
//                           is never sent anywhere else
//   AGENCY_LISTEN           optional: host:port to listen on (default 127.0.0.1:8491)
//   AGENCY_DECIDE_AFTER_S   optional: seconds before the result is sent (default 2)
//   NODE_EXTRA_CA_CERTS     optional: PEM file of the CA that signed the bus's certificate
//
// The dossiers are kept in memory: a real system stores the receipt before answering 202.
// Prints one JSON line per event: {"event": "listening", "url"}, {"event": "received",
// "ma_ho_so", "ma_tiep_nhan"}, {"event": "callback", "ma_ho_so", "status", "message_id"}, …

import http from 'node:http';

const REQUIRED = ['MaHoSo', 'MaTTHC', 'MaThamChieu', 'MaDonViGui', 'NgayGui', 'UrlPhanHoi',
  'LoaiYeuCau', 'ChuHoSo', 'CongDan', 'NoiCuTru'];
const dossiers = new Map(); // MaHoSo -> {MaTiepNhan, TrangThaiHoSo, ThoiDiemCapNhat, timer}
const receipts = new Map(); // Idempotency-Key -> the receipt answered
let sequence = 0;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (fields) => console.log(JSON.stringify(fields));
const error = (MaLoi, MoTaLoi) => ({ MaLoi, MoTaLoi });
/** Now as yyyyMMddHHmmss in Asia/Ho_Chi_Minh. */
const now14 = () => new Date(Date.now() + 7 * 3600 * 1000).toISOString().slice(0, 19).replace(/\D/g, '');

/** The decision, by callback to the bus; tried again on 429, 5xx and lost connections. */
async function sendResult(submit, maTiepNhan) {
  const d = dossiers.get(submit.MaHoSo);
  if (!d || d.TrangThaiHoSo !== 2) return; // cancelled meanwhile
  d.TrangThaiHoSo = 9;
  d.ThoiDiemCapNhat = now14();
  const removal = submit.LoaiYeuCau === 'XOA_DANG_KY_THUONG_TRU';
  const body = {
    MaHoSo: submit.MaHoSo,
    MaThamChieu: submit.MaThamChieu, // the submission this result answers
    MaTiepNhan: maTiepNhan,
    TrangThaiHoSo: 9,
    ThoiDiemXuLy: now14(),
    NguoiXuLy: 'Thượng úy Lê Văn Phúc',
    NoiDungXuLy: (removal ? 'Đã xóa đăng ký thường trú của công dân ' : 'Đã đăng ký thường trú cho công dân ') +
      submit.CongDan.HoVaTen,
    KetQua: { NoiThuongTru: submit.NoiCuTru, NgayDangKy: now14().slice(0, 8), SoHoSoCuTru: `051.${maTiepNhan}` },
  };
  for (let attempt = 1; attempt <= 10; attempt++) {
    let r;
    try {
      r = await fetch(submit.UrlPhanHoi, {
        method: 'POST',
        headers: {
          Authorization: `Bearer ${process.env.LIENTHONG_CALLBACK_KEY}`,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (e) {
      emit({ event: 'callback-retry', ma_ho_so: submit.MaHoSo, reason: e.cause?.message ?? e.message });
      await sleep(Math.min(2 ** attempt, 60) * 1000);
      continue;
    }
    if (r.status === 429 || r.status >= 500) {
      emit({ event: 'callback-retry', ma_ho_so: submit.MaHoSo, status: r.status });
      await sleep(1000 * Number(r.headers.get('Retry-After') ?? Math.min(2 ** attempt, 60)));
      continue;
    }
    // 200 {"message_id", "status": "accepted"}: a repeated callback gets the same message id.
    // Any other 4xx is problem+json saying why (401 key, 404 unknown MaThamChieu, 400 body).
    const answer = await r.json().catch(() => null);
    emit({ event: 'callback', ma_ho_so: submit.MaHoSo, status: r.status, message_id: answer?.message_id ?? null,
      answer: r.ok ? null : answer });
    return;
  }
  emit({ event: 'callback-failed', ma_ho_so: submit.MaHoSo });
}

function submit(req, body) {
  const missing = REQUIRED.filter((k) => !body[k]);
  if (missing.length) return [400, error('E_DU_LIEU_KHONG_HOP_LE', `Thiếu trường ${missing.join(', ')}.`)];
  const key = req.headers['idempotency-key'];
  if (key !== body.MaThamChieu) {
    return [400, error('E_DU_LIEU_KHONG_HOP_LE', 'Idempotency-Key phải bằng MaThamChieu.')];
  }
  const bus = (process.env.LIENTHONG_URL ?? '').replace(/\/+$/, '');
  if (bus && !body.UrlPhanHoi.startsWith(`${bus}/`)) {
    return [400, error('E_URL_PHAN_HOI', 'UrlPhanHoi không thuộc trục liên thông.')];
  }
  // The bus tried again: the same receipt, nothing registered twice.
  if (receipts.has(key)) return [202, receipts.get(key)];
  sequence++;
  const maTiepNhan = `CA.H48.${now14().slice(2, 8)}.${String(sequence).padStart(6, '0')}`;
  const receipt = { MaHoSo: body.MaHoSo, MaTiepNhan: maTiepNhan, TrangThaiHoSo: 2, ThoiDiemTiepNhan: now14() };
  receipts.set(key, receipt);
  const timer = setTimeout(() => sendResult(body, maTiepNhan),
    1000 * Number(process.env.AGENCY_DECIDE_AFTER_S || 2));
  dossiers.set(body.MaHoSo, { MaTiepNhan: maTiepNhan, TrangThaiHoSo: 2, ThoiDiemCapNhat: receipt.ThoiDiemTiepNhan, timer });
  emit({ event: 'received', ma_ho_so: body.MaHoSo, ma_tiep_nhan: maTiepNhan, ma_tham_chieu: key,
    loai_yeu_cau: body.LoaiYeuCau });
  return [202, receipt];
}

function status(maHoSo) {
  const d = dossiers.get(maHoSo);
  // Not found must be this readable 404: the bus resolves an unknown outcome with it.
  if (!d) return [404, error('E_KHONG_TIM_THAY', `Không tìm thấy hồ sơ ${maHoSo}.`)];
  return [200, { MaHoSo: maHoSo, MaTiepNhan: d.MaTiepNhan, TrangThaiHoSo: d.TrangThaiHoSo, ThoiDiemCapNhat: d.ThoiDiemCapNhat }];
}

function cancel(maHoSo, body) {
  if (body.MaHoSo !== maHoSo) return [400, error('E_DU_LIEU_KHONG_HOP_LE', 'MaHoSo không khớp đường dẫn.')];
  const d = dossiers.get(maHoSo);
  if (!d) return [404, error('E_KHONG_TIM_THAY', `Không tìm thấy hồ sơ ${maHoSo}.`)];
  if (d.TrangThaiHoSo === 3 || d.TrangThaiHoSo === 9) {
    return [422, error('E_DA_XU_LY', 'Hồ sơ đã được xử lý xong, không hủy được.')];
  }
  clearTimeout(d.timer);
  d.TrangThaiHoSo = 8;
  d.ThoiDiemCapNhat = now14();
  emit({ event: 'cancelled', ma_ho_so: maHoSo, reason: body.LyDo ?? null });
  return status(maHoSo);
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  let body = null;
  try {
    body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : null;
  } catch {}
  const path = decodeURIComponent(new URL(req.url, 'http://agency').pathname);
  let answer;
  if (req.method === 'GET' && path.startsWith('/v1/ho-so/')) {
    answer = status(path.slice('/v1/ho-so/'.length));
  } else if (req.method === 'POST' && (path === '/v1/ho-so' || path.endsWith('/huy'))) {
    if (typeof body !== 'object' || body === null) {
      answer = [400, error('E_DU_LIEU_KHONG_HOP_LE', 'Thân yêu cầu không phải JSON.')];
    } else if (path === '/v1/ho-so') {
      answer = submit(req, body);
    } else {
      answer = cancel(path.slice('/v1/ho-so/'.length, -'/huy'.length), body);
    }
  } else {
    answer = [404, error('E_KHONG_TIM_THAY', 'Không có đường dẫn này.')];
  }
  const data = Buffer.from(JSON.stringify(answer[1]));
  res.writeHead(answer[0], { 'Content-Type': 'application/json', 'Content-Length': data.length });
  res.end(data);
});

if (!process.env.LIENTHONG_CALLBACK_KEY) {
  console.error('agency_police.mjs: set LIENTHONG_CALLBACK_KEY');
  process.exit(1);
}
const listen = process.env.AGENCY_LISTEN || '127.0.0.1:8491';
const at = listen.lastIndexOf(':');
const [host, port] = [listen.slice(0, at), Number(listen.slice(at + 1))];
server.listen(port, host, () => emit({ event: 'listening', url: `http://${host}:${server.address().port}` }));
const stop = () => {
  server.close();
  emit({ event: 'stopped' });
  process.exit(0); // results not sent yet are lost: a real system keeps them in its database
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
