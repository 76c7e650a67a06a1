#!/usr/bin/env node
// A centre answers a payment notice. In a land dossier (1.010059, filed without a receiver) Tax
// issues a notice of the land financial obligations; the bus passes it to the centre as a
// dossier.status 6 whose payload.data.thong_bao_nop_tien holds it (so_thong_bao,
// tong_so_tien_vnd, han_nop, …). Once the citizen has paid, the centre answers with a
// dossier.forward WITHOUT receiver carrying the receipt in payload.data.chung_tu_nop_tien; the bus
// hands it to Tax, which confirms, and the result comes back (docs/centres.md, "Filing without a
// receiver").
//
// This example reads the centre's queue over HTTP (centre_read_inbox_http.mjs), answers each
// notice over POST /v1/messages at once, as if the citizen had paid in full today, and
// acknowledges the notice only after the bus accepted the answer. Other messages are printed and
// acknowledged.
//
// Environment: as centre_read_inbox_http.mjs (LIENTHONG_URL, LIENTHONG_KEY, LIENTHONG_SEEN_FILE,
// LIENTHONG_IDLE_EXIT_S, NODE_EXTRA_CA_CERTS).
//
// Prints the lines of centre_read_inbox_http.mjs, and for each notice answered {"event":
// "answered", "ma_ho_so", "notice", "message_id", "status": 202}.

import { main, printIt } from './centre_read_inbox_http.mjs';
import { nowRfc3339 } from './sample_dossier.mjs';

/** The receipt of payment. In your software the officer records it from the citizen's receipt
 * (State Treasury, bank, the national portal's payment); here it is made up. */
function paymentReceipt(notice) {
  return {
    so_thong_bao: notice.so_thong_bao,
    so_chung_tu: `NT-${notice.so_thong_bao}`,
    ngay_nop: nowRfc3339().slice(0, 10),
    so_tien_vnd: notice.tong_so_tien_vnd,
  };
}

async function answerNotice(bus, status) {
  const notice = status.payload?.data?.thong_bao_nop_tien;
  if (!notice) throw new Error('a status 6 without thong_bao_nop_tien');
  const answer = {
    spec: 'lienthong.envelope/1',
    kind: 'dossier.forward',
    ma_ho_so: status.ma_ho_so,
    ma_tthc: status.ma_tthc,
    sender: status.receiver, // our own unit code
    // No receiver: the bus runs this dossier's route and gives it back to Tax.
    sent_at: nowRfc3339(),
    correlation_id: status.correlation_id,
    causation_id: status.message_id,
    payload: { data: { chung_tu_nop_tien: paymentReceipt(notice) } },
  };
  // One answer per notice: a resend after a lost 202 (or after this notice comes again) gets the
  // same message id and is filed once.
  const r = await bus.call('POST', '/v1/messages', answer, {
    'Idempotency-Key': `payment-${status.message_id}`,
  });
  console.log(JSON.stringify({
    event: 'answered',
    ma_ho_so: status.ma_ho_so,
    notice: notice.so_thong_bao,
    message_id: r.body.message_id,
    status: r.status,
  }));
}

await main(async (bus, envelope, redelivered) => {
  printIt(envelope, redelivered);
  if (envelope.kind === 'dossier.status' && envelope.status === 6) {
    await answerNotice(bus, envelope); // throws if refused: the notice is not acknowledged
  }
});
