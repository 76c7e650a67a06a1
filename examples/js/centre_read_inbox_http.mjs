#!/usr/bin/env node
// A centre whose software does not speak AMQP reads its own queue over HTTP: GET /v1/inbox (a long
// poll; each message leased), then POST /v1/inbox/ack once handled; deduplicated by message_id
// (docs/centres.md, "Reading your queue over HTTP").
//
// Environment:
//   LIENTHONG_URL          the bus's HTTP API, e.g. https://lienthong.example:8480
//   LIENTHONG_KEY          the centre's API key
//   LIENTHONG_SEEN_FILE    optional: a file keeping the handled message ids across runs
//   LIENTHONG_IDLE_EXIT_S  optional: stop after this many seconds without a message (default: run
//                          until interrupted)
//   NODE_EXTRA_CA_CERTS    optional: PEM file of the CA that signed the bus's certificate
//
// Prints one JSON line per message: {"event": "message", "message_id", "kind", "ma_ho_so",
// "status", ...} when handled, {"event": "duplicate", "message_id"} when it was handled before;
// then {"event": "done", "handled": n, "duplicates": m}.

import { pathToFileURL } from 'node:url';
import { Seen } from './seen.mjs';

function need(name) {
  if (!process.env[name]) {
    console.error(`${process.argv[1].split('/').pop()}: set ${name}`);
    process.exit(1);
  }
  return process.env[name];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An answer 4xx from the bus (problem+json). */
export class Refused extends Error {}

/** The bus's HTTP API with the unit's key; waits and tries again on 429, 503 and lost
 * connections (every request here is safe to repeat: acks, and messages with an
 * Idempotency-Key). */
export class Bus {
  constructor() {
    this.url = need('LIENTHONG_URL').replace(/\/+$/, '');
    this.key = need('LIENTHONG_KEY');
  }

  async call(method, path, body, headers = {}) {
    for (let attempt = 1; attempt <= 10; attempt++) {
      let r;
      try {
        r = await fetch(this.url + path, {
          method,
          headers: {
            Authorization: `Bearer ${this.key}`,
            ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
            ...headers,
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(60_000),
        });
      } catch (e) {
        console.error(`${method} ${path}: ${e.cause?.message ?? e.message}; trying again`);
        await sleep(Math.min(2000 * attempt, 30_000));
        continue;
      }
      if (r.status === 429 || r.status === 503) {
        await sleep(1000 * Number(r.headers.get('Retry-After') ?? 2));
        continue;
      }
      const text = await r.text();
      if (r.status >= 400) {
        // problem+json: 401 wrong key, 409 this unit is reached by an adapter or webhook,
        // 422 a message refused (its `type` and `detail` say why).
        throw new Refused(`${method} ${path}: HTTP ${r.status}: ${text}`);
      }
      return { status: r.status, body: JSON.parse(text) };
    }
    throw new Refused(`${method} ${path}: the bus did not answer`);
  }
}

/** What came, as one JSON object. */
export function describe(envelope, redelivered) {
  const payload = envelope.payload ?? {};
  const line = {
    event: 'message',
    message_id: envelope.message_id,
    kind: envelope.kind,
    ma_ho_so: envelope.ma_ho_so,
    sender: envelope.sender,
    status: envelope.status ?? null,
    redelivered,
  };
  if (envelope.kind === 'bus.dead_letter') {
    // A message of ours the bus refused or could not deliver: causation_id names it.
    line.refused = envelope.causation_id;
  }
  if (payload.reason) line.reason = payload.reason;
  return line;
}

/** Store the message in your software. Here: print what came. */
export function printIt(envelope, redelivered) {
  console.log(JSON.stringify(describe(envelope, redelivered)));
}

/** Read the queue until `stopped()` (or idle for `idleExitS` seconds), calling
 * `await handle(envelope, redelivered)` once per message_id. Returns {handled, duplicates}. */
export async function readInbox(bus, handle, seen, idleExitS = 0, stopped = () => false) {
  let handled = 0;
  let duplicates = 0;
  let last = Date.now();
  const wait = idleExitS ? Math.max(1, Math.min(30, Math.floor(idleExitS))) : 30;
  while (!stopped()) {
    // Up to 20 messages, waiting up to `wait` s for the first; each leased for 60 s.
    const batch = (await bus.call('GET', `/v1/inbox?wait=${wait}&max=20&lease=60`)).body;
    if (batch.messages.length === 0) {
      if (idleExitS && Date.now() - last >= idleExitS * 1000) break;
      continue;
    }
    last = Date.now();
    const done = [];
    for (const m of batch.messages) {
      if (seen.has(m.message_id)) {
        duplicates++;
        console.log(JSON.stringify({ event: 'duplicate', message_id: m.message_id }));
        done.push(m.lease_id);
        continue;
      }
      if (typeof m.envelope !== 'object' || m.envelope === null) {
        console.error(`not an envelope, skipped: ${String(m.envelope).slice(0, 200)}`);
        done.push(m.lease_id);
        continue;
      }
      try {
        await handle(m.envelope, m.redelivered);
      } catch (e) {
        // Not acknowledged: it comes again after its lease.
        console.error(`${m.message_id}: not handled: ${e.message}`);
        continue;
      }
      seen.add(m.message_id);
      done.push(m.lease_id);
      handled++;
    }
    if (done.length) {
      // Acknowledge only what is handled: the broker then removes it.
      const answer = (await bus.call('POST', '/v1/inbox/ack', { lease_ids: done })).body;
      const again = answer.expired.length + answer.unknown.length;
      if (again) {
        // The lease ran out first: those messages come again and are skipped above.
        console.error(`${again} lease(s) ran out before the ack`);
      }
    }
  }
  return { handled, duplicates };
}

/** Run `handle` over the inbox as a program: stop on SIGINT/SIGTERM or when idle, print the
 * totals, exit non-zero when the bus refuses. */
export async function main(handle) {
  let stopping = false;
  process.on('SIGINT', () => (stopping = true));
  process.on('SIGTERM', () => (stopping = true));
  const bus = new Bus();
  const seen = new Seen(process.env.LIENTHONG_SEEN_FILE);
  try {
    const totals = await readInbox(bus, (e, r) => handle(bus, e, r), seen,
      Number(process.env.LIENTHONG_IDLE_EXIT_S || 0), () => stopping);
    console.log(JSON.stringify({ event: 'done', ...totals }));
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main((_bus, envelope, redelivered) => printIt(envelope, redelivered));
}
