// Checks schemas/asyncapi.yaml (run by scripts/check-asyncapi, which installs the packages of
// package-lock.json into a cache directory and passes it as the first argument):
//
// 1. the AsyncAPI parser (@asyncapi/parser) accepts it: no diagnostic of severity error
//    (its references to schemas/*.json resolve, its bindings are valid AMQP 0.3.0 bindings);
// 2. every message payload in JSON Schema 2020-12 compiles (Ajv 2020, as the bus's own
//    `jsonschema` crate reads the same files), and every example validates against its
//    message's payload and headers; an inline attachment's size and SHA-256 match its content,
//    as the bus checks at ingress;
// 3. the names that matter agree with the Rust source: the kinds (`Kind`), the reason codes
//    (`RejectCode`), the statuses (`TrangThaiHoSo`), the exchange and queue names and types and
//    the queue arguments (bus-core/src/topology.rs), the headers the bus sets, the dead-letter
//    notice's fields, a filing message per procedure schema, the version (Cargo.toml).
//
// Exits 1 on any failure, printing each.
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const depsDir = path.resolve(process.argv[2] || here);
const docPath = path.resolve(process.argv[3] || path.join(root, 'schemas', 'asyncapi.yaml'));
const require = createRequire(path.join(depsDir, 'package.json'));
const { Parser, fromFile } = require('@asyncapi/parser');
const Ajv2020 = require('ajv/dist/2020').default;
const Ajv07 = require('ajv').default;
const addFormats = require('ajv-formats').default;
const yaml = require('js-yaml');

const failures = [];
const fail = (what) => failures.push(what);
const rel = (p) => path.relative(root, p);
const read = (p) => fs.readFileSync(path.join(root, p), 'utf8');
const JSON_SCHEMA_2020 = 'application/schema+json;version=2020-12';

// ---- 1. The AsyncAPI parser ------------------------------------------------------------------
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, docPath).parse();
const severity = ['error', 'warning', 'info', 'hint'];
let warnings = 0;
for (const d of diagnostics) {
  if (d.severity > 1) continue;
  const where = (d.path || []).join('/');
  console.log(`  ${severity[d.severity]}: ${d.code}: ${d.message}${where ? ` (at ${where})` : ''}`);
  if (d.severity === 0) fail(`parser: ${d.code}: ${d.message} (at ${where})`);
  else warnings++;
}
if (!document) {
  console.error(`check-asyncapi: ${rel(docPath)} does not parse:`);
  for (const f of failures) console.error(`  FAIL ${f}`);
  process.exit(1);
}
const doc = document.json(); // references resolved
const raw = yaml.load(fs.readFileSync(docPath, 'utf8')); // as written (with its $refs)

// ---- 2. Payload schemas and examples ---------------------------------------------------------
const envelopeSchema = JSON.parse(read('schemas/envelope.schema.json'));
if (envelopeSchema.$schema !== 'https://json-schema.org/draft/2020-12/schema') {
  fail(`schemas/envelope.schema.json declares ${envelopeSchema.$schema}: update the payloads' schemaFormat`);
}
const ajv2020 = () => {
  const a = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
  addFormats(a);
  return a;
};
const ajv07 = () => {
  const a = new Ajv07({ strict: false, allErrors: true });
  addFormats(a);
  return a;
};
const explain = (errors) =>
  (errors || []).slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');

let examples = 0;
let compiled = 0;
for (const [key, msg] of Object.entries(doc.components?.messages || {})) {
  let validatePayload = null;
  const p = msg.payload;
  if (p && p.schemaFormat !== undefined) {
    if (p.schemaFormat !== JSON_SCHEMA_2020) {
      fail(`message ${key}: payload schemaFormat ${p.schemaFormat} (the schemas in schemas/ are ${JSON_SCHEMA_2020})`);
    } else {
      try {
        validatePayload = ajv2020().compile(p.schema);
        compiled++;
      } catch (e) {
        fail(`message ${key}: its payload schema does not compile as JSON Schema 2020-12: ${e.message}`);
      }
    }
  } else if (p && Object.keys(p).some((k) => !['description', 'title'].includes(k))) {
    try {
      validatePayload = ajv07().compile(p);
    } catch (e) {
      fail(`message ${key}: its payload schema does not compile: ${e.message}`);
    }
  }
  let validateHeaders = null;
  if (msg.headers) {
    try {
      validateHeaders = ajv07().compile(msg.headers);
    } catch (e) {
      fail(`message ${key}: its headers schema does not compile: ${e.message}`);
    }
  }
  for (const [i, ex] of (msg.examples || []).entries()) {
    const name = `message ${key}, example ${ex.name || i}`;
    examples++;
    if (ex.payload !== undefined && validatePayload && !validatePayload(ex.payload)) {
      fail(`${name}: payload: ${explain(validatePayload.errors)}`);
    }
    if (ex.headers !== undefined && validateHeaders && !validateHeaders(ex.headers)) {
      fail(`${name}: headers: ${explain(validateHeaders.errors)}`);
    }
    for (const a of ex.payload?.attachments || []) {
      if (a.content_base64 === undefined) continue;
      const bytes = Buffer.from(a.content_base64, 'base64');
      const sha = createHash('sha256').update(bytes).digest('hex');
      if (bytes.length !== a.size_bytes || sha !== a.sha256) {
        fail(`${name}: attachment ${a.name}: content is ${bytes.length} bytes, sha256 ${sha} (the bus would refuse it)`);
      }
    }
  }
}

// ---- 3. The Rust source ------------------------------------------------------------------------
// Each `grab` names what it looks for, so that a change of the source that the check no longer
// understands fails here instead of passing unnoticed.
const grab = (file, re, what) => {
  const m = read(file).match(re);
  if (!m) {
    fail(`${file}: cannot find ${what} (update schemas/asyncapi/check.mjs)`);
    return null;
  }
  return m;
};
const all = (text, re) => [...text.matchAll(re)];
const section = (file, start, end, what) => {
  const text = read(file);
  const i = text.indexOf(start);
  const j = i < 0 ? -1 : text.indexOf(end, i + start.length);
  if (i < 0 || j < 0) {
    fail(`${file}: cannot find ${what} (update schemas/asyncapi/check.mjs)`);
    return '';
  }
  return text.slice(i, j);
};
const sameSet = (what, fromCode, fromDoc) => {
  const a = new Set(fromCode);
  const b = new Set(fromDoc);
  const missing = [...a].filter((x) => !b.has(x));
  const extra = [...b].filter((x) => !a.has(x));
  if (missing.length) fail(`${what}: in the code, not in the document: ${missing.join(', ')}`);
  if (extra.length) fail(`${what}: in the document, not in the code: ${extra.join(', ')}`);
  if (!a.size) fail(`${what}: nothing found in the code`);
};
const need = (what, cond) => {
  if (!cond) fail(what);
};

// The version.
const cargoVersion = grab('Cargo.toml', /\[workspace\.package\][^[]*?\nversion = "([^"]+)"/, '[workspace.package] version');
if (cargoVersion) need(`info.version ${doc.info.version} is not Cargo.toml's ${cargoVersion[1]}`, doc.info.version === cargoVersion[1]);

// Kinds.
const kindBlock = section('bus-core/src/envelope.rs', 'impl Kind {', 'pub const KNOWN', 'the Kind constants');
const kinds = all(kindBlock, /pub const \w+: &'static str = "([^"]+)";/g).map((m) => m[1]);
const namesOn = (channel) => Object.values(doc.channels?.[channel]?.messages || {}).map((m) => m.name);
const deadLetterKind = grab('bus-core/src/envelope.rs', /pub const DEAD_LETTER: &'static str = "([^"]+)";/, 'Kind::DEAD_LETTER')?.[1];
sameSet('the kinds a unit reads on its queue (Kind in bus-core/src/envelope.rs)', kinds, namesOn('unitQueue'));
const unitsMayNotSend = /kind == Kind::DEAD_LETTER[\s\S]{0,120}RejectCode::UnsupportedKind/.test(read('bus-core/src/routing.rs'))
  ? [deadLetterKind]
  : [];
sameSet(
  'the kinds a unit sends to ingress (Kind, less what bus-core/src/routing.rs refuses from units)',
  kinds.filter((k) => !unitsMayNotSend.includes(k)),
  namesOn('ingress'),
);

// Reason codes.
const asStr = section('bus-core/src/envelope.rs', 'pub fn as_str(self) -> &\'static str', 'pub fn title', 'RejectCode::as_str');
const codes = all(asStr, /RejectCode::\w+ => "([a-z-]+)"/g).map((m) => m[1]);
const reasonCode = doc.components?.schemas?.reasonCode || {};
sameSet('the reason codes (RejectCode::as_str)', codes, reasonCode.enum || []);
sameSet('the reason codes described (reasonCode x-descriptions)', codes, Object.keys(reasonCode['x-descriptions'] || {}));

// Statuses.
const nameVi = section('bus-core/src/envelope.rs', 'pub fn name_vi(self)', '_ => return None', 'TrangThaiHoSo::name_vi');
const statuses = all(nameVi, /(\d+) => "([^"]+)"/g).map((m) => [Number(m[1]), m[2]]);
const st = doc.components?.schemas?.trangThaiHoSo || {};
need(
  `trangThaiHoSo: enum ${JSON.stringify(st.enum)} / x-names-vi are not TrangThaiHoSo::name_vi's ${JSON.stringify(statuses)}`,
  statuses.length > 0 &&
    JSON.stringify(st.enum) === JSON.stringify(statuses.map((s) => s[0])) &&
    JSON.stringify(st['x-names-vi']) === JSON.stringify(statuses.map((s) => s[1])),
);

// Exchange and queue names (Names in bus-core/src/topology.rs), with `{}` the prefix.
const topology = read('bus-core/src/topology.rs');
const names = Object.fromEntries(
  all(topology, /pub fn (\w+)\(&self(?:, (\w+): [^)]*)?\) -> String \{\s*format!\("([^"]+)"/g).map((m) => [
    m[1],
    m[3].replace('{}', '{prefix}').replace(/\{(code|delay_ms)\}/, (_, v) => (v === 'code' ? '{unit}' : '{delay_ms}')),
  ]),
);
for (const n of ['ingress_exchange', 'deliver_exchange', 'unit_queue', 'dead_letter_exchange', 'dead_letter_queue', 'parking']) {
  need(`bus-core/src/topology.rs: Names::${n} not found (update schemas/asyncapi/check.mjs)`, names[n]);
}
const kindsOf = Object.fromEntries(all(topology, /name: n\.(\w+)\(\),\s*kind: "(\w+)"/g).map((m) => [m[1], m[2]]));
const ch = doc.channels || {};
const b = (c) => ch[c]?.bindings?.amqp || {};
need(`channel ingress: address ${ch.ingress?.address}, the code's ${names.ingress_exchange}`, ch.ingress?.address === names.ingress_exchange);
need(`channel ingress: exchange ${b('ingress').exchange?.name}`, b('ingress').exchange?.name === names.ingress_exchange);
need(`channel ingress: exchange type ${b('ingress').exchange?.type}, the code's ${kindsOf.ingress_exchange}`, b('ingress').exchange?.type === kindsOf.ingress_exchange);
need(`channel unitQueue: address ${ch.unitQueue?.address}, the code's ${names.unit_queue}`, ch.unitQueue?.address === names.unit_queue);
need(`channel unitQueue: queue ${b('unitQueue').queue?.name}`, b('unitQueue').queue?.name === names.unit_queue);
need(`channel unitQueue: exchange ${b('unitQueue')['x-exchange']?.name}`, b('unitQueue')['x-exchange']?.name === names.deliver_exchange);
need(`channel unitQueue: exchange type ${b('unitQueue')['x-exchange']?.type}, the code's ${kindsOf.deliver_exchange}`, b('unitQueue')['x-exchange']?.type === kindsOf.deliver_exchange);
need(`channel deadLetters: address ${ch.deadLetters?.address}, the code's ${names.dead_letter_queue}`, ch.deadLetters?.address === names.dead_letter_queue);
need(`channel deadLetters: queue ${b('deadLetters').queue?.name}`, b('deadLetters').queue?.name === names.dead_letter_queue);
need(`channel deadLetters: exchange ${b('deadLetters')['x-exchange']?.name}`, b('deadLetters')['x-exchange']?.name === names.dead_letter_exchange);
need(`channel deadLetters: exchange type ${b('deadLetters')['x-exchange']?.type}, the code's ${kindsOf.dead_letter_exchange}`, b('deadLetters')['x-exchange']?.type === kindsOf.dead_letter_exchange);
for (const c of ['ingress', 'unitQueue', 'deadLetters']) {
  const o = b(c).exchange || b(c).queue || {};
  need(`channel ${c}: not durable (every exchange and queue of the bus is)`, o.durable === true);
}

// Queue arguments: the unit queue's are `work_args` plus the two limits; the dead-letter
// queue's are `dead_args`.
const argNames = (text) => all(text, /\("(x-[a-z-]+)", json!\((n\.\w+\(\)|"[^"]*"|[\w.]+)\)\)/g).map((m) => [m[1], m[2]]);
const workArgs = argNames(section('bus-core/src/topology.rs', 'let work_args =', '};', 'work_args'));
const unitPush = argNames(section('bus-core/src/topology.rs', 'for u in units {', 'queues.push(', 'the unit queue limits'));
const deadArgs = argNames(section('bus-core/src/topology.rs', 'let dead_args = vec![', '];', 'dead_args'));
const resolveArg = (v) => {
  const fn = v.match(/^n\.(\w+)\(\)$/);
  if (fn) return names[fn[1]];
  const s = v.match(/^"(.*)"$/);
  return s ? s[1] : undefined; // a number from the settings: checked below
};
const checkArgs = (channel, fromCode) => {
  const args = b(channel)['x-queue-arguments'] || {};
  sameSet(`channel ${channel}: queue arguments (bus-core/src/topology.rs)`, fromCode.map((a) => a[0]), Object.keys(args));
  for (const [k, v] of fromCode) {
    const want = resolveArg(v);
    if (want !== undefined) need(`channel ${channel}: ${k} is ${args[k]}, the code's ${want}`, args[k] === want);
  }
};
checkArgs('unitQueue', [...workArgs, ...unitPush]);
checkArgs('deadLetters', deadArgs);
// The defaults of the numbers (TopologySettings::default in bus-core/src/registry.rs).
const defaults = section('bus-core/src/registry.rs', 'TopologySettings {\n            delivery_limit', '}', 'TopologySettings::default');
const num = (k) => {
  const m = defaults.match(new RegExp(`${k}: ([0-9_ *]+),`));
  return m ? m[1].split('*').map((x) => Number(x.trim().replaceAll('_', ''))).reduce((a, x) => a * x, 1) : undefined;
};
const unitArgs = b('unitQueue')['x-queue-arguments'] || {};
for (const [arg, setting] of [
  ['x-delivery-limit', 'delivery_limit'],
  ['x-max-length', 'unit_max_length'],
  ['x-max-length-bytes', 'unit_max_length_bytes'],
]) {
  need(`channel unitQueue: ${arg} ${unitArgs[arg]}, the default [topology] ${setting} ${num(setting)}`, unitArgs[arg] === num(setting));
}

// Headers.
const props = (schema) => Object.keys(doc.components?.schemas?.[schema]?.properties || {});
const consts = (file, re) => all(read(file), re).map((m) => m[1]);
const covered = (what, fromCode, schema) => {
  if (!fromCode.length) fail(`${what}: nothing found in the code`);
  const missing = fromCode.filter((h) => !props(schema).includes(h));
  if (missing.length) fail(`${what}: not in components.schemas.${schema}: ${missing.join(', ')}`);
};
const dlHeaders = consts('bus-core/src/deadletter.rs', /pub const \w+: &str = "(x-lienthong-[a-z-]+)"/g);
covered('the dead-letter headers (bus-core/src/deadletter.rs)', dlHeaders, 'deadLetterHeaders');
covered('the retry headers (src/delivery/retry_engine.rs)', consts('src/delivery/retry_engine.rs', /pub const \w+: &str = "(x-lienthong-[a-z-]+)"/g), 'deadLetterHeaders');
covered('the first publisher header (bus-core/src/senders.rs)', consts('bus-core/src/senders.rs', /pub const ORIGINAL_USER_HEADER: &str = "([^"]+)"/g), 'deadLetterHeaders');
const envProps = section('bus-core/src/amqp.rs', 'pub fn envelope_properties', '\n}\n', 'envelope_properties');
const busSet = all(envProps, /"(x-[a-z-]+)"\.into\(\)/g).map((m) => m[1]);
covered('the headers of envelope_properties (bus-core/src/amqp.rs)', busSet, 'busHeaders');
covered('the parked header (bus-core/src/overflow.rs)', consts('bus-core/src/overflow.rs', /pub const PARKED_HEADER: &str = "([^"]+)"/g), 'busHeaders');
const queueFull = grab('bus-core/src/overflow.rs', /pub const QUEUE_FULL: &str = "([^"]+)"/, 'QUEUE_FULL');
if (queueFull) {
  const parked = doc.components?.schemas?.busHeaders?.properties?.['x-lienthong-parked']?.const;
  need(`busHeaders x-lienthong-parked is ${parked}, the code's ${queueFull[1]}`, parked === queueFull[1]);
}
covered('the resend header (src/replay.rs)', consts('src/replay.rs', /"(x-lienthong-resent-at)"/g), 'busHeaders');
const tele = consts('bus-core/src/telemetry.rs', /"(traceparent|tracestate)" =>/g);
covered('the trace context headers (bus-core/src/telemetry.rs)', tele, 'busHeaders');
covered('the trace context headers (bus-core/src/telemetry.rs)', tele, 'unitHeaders');
const required = doc.components?.schemas?.busHeaders?.required || [];
const notSet = required.filter((h) => !busSet.includes(h));
need(`busHeaders requires ${notSet.join(', ')}, which envelope_properties does not set`, notSet.length === 0);

// The dead-letter notice.
const notify = section('bus-core/src/deadletter.rs', 'pub async fn notify_sender', 'Ok(true)', 'notify_sender');
const dataKeys = all(notify, /data\.insert\(\s*"(\w+)"/g).map((m) => m[1]);
const noticeSchema = doc.components?.messages?.deadLetterNotice?.payload?.schema?.allOf?.[1] || {};
sameSet(
  'the notice fields payload.data (DeadLetterChannel::notify_sender)',
  dataKeys,
  Object.keys(noticeSchema.properties?.payload?.properties?.data?.properties || {}),
);
const busSender = grab('bus-core/src/deadletter.rs', /pub const BUS_SENDER: &str = "([^"]+)"/, 'BUS_SENDER');
if (busSender) need(`deadLetterNotice sender is ${noticeSchema.properties?.sender?.const}, the code's ${busSender[1]}`, noticeSchema.properties?.sender?.const === busSender[1]);
need(`deadLetterNotice kind is ${noticeSchema.properties?.kind?.const}, the code's ${deadLetterKind}`, noticeSchema.properties?.kind?.const === deadLetterKind);

// A filing message per procedure schema, referring to it.
const procedures = fs.readdirSync(path.join(root, 'schemas', 'procedures')).filter((f) => f.endsWith('.schema.json'));
need('schemas/procedures/ holds no schema', procedures.length > 0);
for (const f of procedures) {
  const code = f.replace(/\.schema\.json$/, '');
  const m = raw.components?.messages?.[`filing-${code}`];
  if (!m) {
    fail(`schemas/procedures/${f}: no message filing-${code}`);
    continue;
  }
  const parts = m.payload?.schema?.allOf || [];
  need(`message filing-${code}: its payload does not $ref ./procedures/${f}`, parts.some((p) => p.$ref === `./procedures/${f}`));
  need(`message filing-${code}: its payload does not $ref ./envelope.schema.json`, parts.some((p) => p.$ref === './envelope.schema.json'));
  need(`message filing-${code}: ma_tthc is not const ${code}`, parts.some((p) => p.properties?.ma_tthc?.const === code));
  need(`message filing-${code}: not on channel ingress`, Object.values(raw.channels?.ingress?.messages || {}).some((r) => r.$ref === `#/components/messages/filing-${code}`));
}

// ---- The verdict ---------------------------------------------------------------------------------
if (failures.length) {
  console.error(`check-asyncapi: ${rel(docPath)}: ${failures.length} problem(s):`);
  for (const f of failures) console.error(`  FAIL ${f}`);
  process.exit(1);
}
const parserVersion = require('@asyncapi/parser/package.json').version;
console.log(
  `check-asyncapi: ${rel(docPath)} ok: AsyncAPI ${doc.asyncapi}, parser ${parserVersion} (0 errors, ${warnings} warnings); ` +
    `${compiled} payload schemas compile as JSON Schema 2020-12, ${examples} examples valid; ` +
    `${kinds.length} kinds, ${codes.length} reason codes, ${statuses.length} statuses, names, queue arguments and headers agree with the Rust source`,
);
