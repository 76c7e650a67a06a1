// The message ids a unit's software has handled: delivery is at least once, so a message can
// come again (a lost ack, a reconnect, a lease that ran out, an operator's resend), always with
// the same message_id. Skip it then, and acknowledge it.

import fs from 'node:fs';

/** In memory, and appended to `path` when given (kept across runs). Your software keeps them in
 * its database, written in the same transaction as what the message changes (a unique index on
 * message_id), and forgets them after a while: the bus keeps messages for
 * [store] message_retention_days. */
export class Seen {
  constructor(path) {
    this.path = path;
    this.ids = new Set();
    if (path && fs.existsSync(path)) {
      for (const line of fs.readFileSync(path, 'utf8').split('\n')) {
        if (line.trim()) this.ids.add(line.trim());
      }
    }
  }

  has(messageId) {
    return this.ids.has(messageId);
  }

  add(messageId) {
    this.ids.add(messageId);
    if (this.path) {
      const fd = fs.openSync(this.path, 'a');
      try {
        fs.writeSync(fd, `${messageId}\n`);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
}
