#!/usr/bin/env node
// A centre files a dossier over HTTP: POST /v1/messages (docs/centres.md, "Sending and receiving").
//
// Environment:
//   LIENTHONG_URL       the bus's HTTP API, e.g. https://lienthong.example:8480
//   LIENTHONG_KEY       the centre's API key (Authorization: Bearer …)
//   LIENTHONG_UNIT      the centre's unit code, e.g. 000.20.59.H48 (the envelope's sender)
//   LIENTHONG_MA_HO_SO  optional: the dossier code (default <unit>-<yyMMdd>-<random>)
//   NODE_EXTRA_CA_CERTS optional: PEM file of the CA that signed the bus's certificate
//
// Prints one JSON line, {"ma_ho_so", "message_id", "status": 202}, and exits 0 once the bus has
// accepted the dossier; on a refusal prints the status and the problem+json body and exits 1.

import { birthFiling, newMaHoSo } from './sample_dossier.mjs';

function need(name) {
  if (!process.env[name]) {
    console.error(`centre_file_http.mjs: set ${name}`);
    process.exit(1);
  }
  return process.env[name];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const url = need('LIENTHONG_URL').replace(/\/+$/, '');
const key = need('LIENTHONG_KEY');
const unit = need('LIENTHONG_UNIT');
const maHoSo = newMaHoSo(unit);
const body = JSON.stringify(birthFiling(unit, maHoSo));

let r;
for (let attempt = 1; attempt <= 5; attempt++) {
  try {
    r = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${key}`,
        'Content-Type': 'application/json',
        // No message_id in the envelope: the bus gives one. The Idempotency-Key (your own record
        // id) makes a resend safe: the same key and body get the same message id, filed once.
        'Idempotency-Key': `filing-${maHoSo}`,
      },
      body,
      signal: AbortSignal.timeout(30_000),
    });
  } catch (e) {
    // We do not know whether the bus got it: sending the same request again is safe.
    console.error(`attempt ${attempt}: ${e.cause?.message ?? e.message}; sending again`);
    r = undefined;
    await sleep(2000 * attempt);
    continue;
  }
  if ((r.status === 429 || r.status === 503) && attempt < 5) {
    // Nothing was accepted (429), or it may have been (503 timeout): the same again.
    await sleep(1000 * Number(r.headers.get('Retry-After') ?? 2));
    continue;
  }
  break;
}
if (!r) {
  console.error('the bus did not answer; try again later (same Idempotency-Key)');
  process.exit(1);
}
const text = await r.text();
if (r.status !== 202) {
  // application/problem+json: type urn:lienthong:problem:<code>, title, detail, errors[].
  let problem = text;
  try {
    problem = JSON.parse(text);
  } catch {}
  console.log(JSON.stringify({ ma_ho_so: maHoSo, status: r.status, problem }));
  process.exit(1);
}
console.log(JSON.stringify({ ma_ho_so: maHoSo, message_id: JSON.parse(text).message_id, status: 202 }));
