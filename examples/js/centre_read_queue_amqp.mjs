#!/usr/bin/env node
// A centre reads its own queue <prefix>.unit.<code> over AMQP: manual acks, at least once,
// deduplicated by message_id (docs/centres.md, "Sending and receiving").
//
// Environment:
//   LIENTHONG_AMQP_URL     the broker as the centre's broker user (amqps://user:password@host:5671/%2f)
//   LIENTHONG_UNIT         the centre's unit code, e.g. 000.20.59.H48
//   LIENTHONG_PREFIX       optional: the installation's [bus] prefix (default lienthong)
//   LIENTHONG_SEEN_FILE    optional: a file keeping the handled message ids across runs
//   LIENTHONG_IDLE_EXIT_S  optional: stop after this many seconds without a message (default: run
//                          until interrupted)
//   LIENTHONG_CA_FILE      optional: PEM file of the CA that signed the broker's certificate (amqps)
//
// Prints one JSON line per message: {"event": "message", "message_id", "kind", "ma_ho_so",
// "status", ...} when handled, {"event": "duplicate", "message_id"} when it was handled before;
// then {"event": "done", "handled": n, "duplicates": m}.

import fs from 'node:fs';
import amqp from 'amqplib';
import { Seen } from './seen.mjs';

function need(name) {
  if (!process.env[name]) {
    console.error(`centre_read_queue_amqp.mjs: set ${name}`);
    process.exit(1);
  }
  return process.env[name];
}

/** Store the message in your software. Here: print what came. */
function handle(envelope, redelivered) {
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
  console.log(JSON.stringify(line));
}

const amqpUrl = need('LIENTHONG_AMQP_URL');
const queue = `${process.env.LIENTHONG_PREFIX || 'lienthong'}.unit.${need('LIENTHONG_UNIT')}`;
const idleExitMs = 1000 * Number(process.env.LIENTHONG_IDLE_EXIT_S || 0);
const seen = new Seen(process.env.LIENTHONG_SEEN_FILE);

const ca = process.env.LIENTHONG_CA_FILE;
const connection = await amqp.connect(amqpUrl, ca ? { ca: [fs.readFileSync(ca)] } : {}).catch((e) => {
  console.error(`cannot connect to the broker (user, password, host, TLS?): ${e.message}`);
  process.exit(1);
});
const channel = await connection.createChannel();
await channel.prefetch(20); // at most 20 unacknowledged messages at a time
let handled = 0;
let duplicates = 0;
let last = Date.now();

const { consumerTag } = await channel.consume(
  queue,
  (msg) => {
    if (msg === null) return; // the queue was deleted: the broker cancelled us
    last = Date.now();
    let envelope;
    try {
      envelope = JSON.parse(msg.content.toString('utf8'));
    } catch {}
    const messageId = envelope?.message_id ?? msg.properties.messageId;
    if (seen.has(messageId)) {
      // Delivered again (a lost ack, a reconnect, a resend): handled already.
      duplicates++;
      console.log(JSON.stringify({ event: 'duplicate', message_id: messageId }));
      channel.ack(msg);
      return;
    }
    if (typeof envelope !== 'object' || envelope === null) {
      // The bus sends only envelopes; reject without requeue: the broker dead-letters it, and
      // the operator sees it.
      console.error(`not JSON, rejected: ${msg.content.toString('utf8').slice(0, 200)}`);
      channel.nack(msg, false, false);
      return;
    }
    handle(envelope, msg.fields.redelivered);
    seen.add(messageId);
    // Acknowledge only once handled: until then the broker keeps the message.
    channel.ack(msg);
    handled++;
  },
  { noAck: false },
);

let stopping = false;
let idleTimer;
async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(idleTimer);
  await channel.cancel(consumerTag);
  await connection.close(); // what was prefetched and not acked goes back to the queue
  console.log(JSON.stringify({ event: 'done', handled, duplicates }));
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
if (idleExitMs > 0) {
  idleTimer = setInterval(() => {
    if (Date.now() - last >= idleExitMs) stop();
  }, 200);
}
