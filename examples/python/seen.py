"""The message ids a unit's software has handled: delivery is at least once, so a message can
come again (a lost ack, a reconnect, a lease that ran out, an operator's resend), always with the
same message_id. Skip it then, and acknowledge it."""

import os


class Seen:
    """In memory, and appended to `path` when given (kept across runs). Your software keeps them in
    its database, written in the same transaction as what the message changes (a unique index on
    message_id), and forgets them after a while: the bus keeps messages for
    [store] message_retention_days."""

    def __init__(self, path=None):
        self.path = path
        self.ids = set()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.ids = {line.strip() for line in f if line.strip()}

    def __contains__(self, message_id):
        return message_id in self.ids

    def add(self, message_id):
        self.ids.add(message_id)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message_id + "\n")
                f.flush()
                os.fsync(f.fileno())
