#!/usr/bin/env node
// A centre files a dossier over AMQP: publish to <prefix>.ingress (docs/centres.md, "Sending and
// receiving"; schemas/asyncapi.yaml).
//
// Environment:
//   LIENTHONG_AMQP_URL  the broker as the centre's broker user, e.g.
//                       amqps://son-ha:PASSWORD@broker.example:5671/%2f
//   LIENTHONG_UNIT      the centre's unit code, e.g. 000.20.59.H48 (the envelope's sender)
//   LIENTHONG_PREFIX    optional: the installation's [bus] prefix (default lienthong)
//   LIENTHONG_MA_HO_SO  optional: the dossier code (default <unit>-<yyMMdd>-<random>)
//   LIENTHONG_CA_FILE   optional: PEM file of the CA that signed the broker's certificate (amqps)
//
// Prints one JSON line, {"ma_ho_so", "message_id", "published": "confirmed"}, once the broker has
// confirmed the message. The bus checks it after that: a refusal comes back on the centre's queue
// as a bus.dead_letter notice (see centre_read_queue_amqp.mjs).

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import amqp from 'amqplib';
import { birthFiling, newMaHoSo } from './sample_dossier.mjs';

function need(name) {
  if (!process.env[name]) {
    console.error(`centre_file_amqp.mjs: set ${name}`);
    process.exit(1);
  }
  return process.env[name];
}

/** A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. */
function uuid7() {
  const b = Buffer.concat([Buffer.alloc(6), randomBytes(10)]);
  b.writeUIntBE(Date.now(), 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70; // version 7
  b[8] = (b[8] & 0x3f) | 0x80; // variant 10
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const amqpUrl = need('LIENTHONG_AMQP_URL');
const unit = need('LIENTHONG_UNIT');
const prefix = process.env.LIENTHONG_PREFIX || 'lienthong';
const maHoSo = newMaHoSo(unit);
const envelope = { ...birthFiling(unit, maHoSo), message_id: uuid7() };

const ca = process.env.LIENTHONG_CA_FILE;
const connection = await amqp.connect(amqpUrl, ca ? { ca: [fs.readFileSync(ca)] } : {}).catch((e) => {
  console.error(`cannot connect to the broker (user, password, host, TLS?): ${e.message}`);
  process.exit(1);
});
let failure;
try {
  const channel = await connection.createConfirmChannel(); // the broker confirms each publish
  let returned = false;
  channel.on('return', () => {
    returned = true;
  });
  channel.publish(`${prefix}.ingress`, '', Buffer.from(JSON.stringify(envelope)), {
    contentType: 'application/json',
    persistent: true,
    messageId: envelope.message_id,
    correlationId: envelope.correlation_id,
    type: envelope.kind,
    // Required: the broker checks it is this connection's user, so the bus knows who sent it.
    userId: decodeURIComponent(new URL(amqpUrl).username),
    mandatory: true, // an unroutable message comes back instead of being dropped
  });
  try {
    await channel.waitForConfirms();
  } catch {
    failure = 'the broker refused the message; send it again later with the same message_id';
  }
  if (returned) {
    failure =
      'the broker could not route the message (the ingress exchange has no binding): tell the ' +
      "bus's operator; send it again later with the same message_id";
  }
} finally {
  await connection.close();
}
if (failure) {
  console.error(failure);
  process.exit(1);
}
console.log(JSON.stringify({ ma_ho_so: maHoSo, message_id: envelope.message_id, published: 'confirmed' }));
