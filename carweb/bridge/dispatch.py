"""Topic dispatch: domain modules (ota) register handlers for stored messages on their topics.

The bridge knows nothing of firmware; the factory wires `ota`'s handlers here, and the
writer calls them with each batch's stored inbound messages before acking the batch.
"""

import logging
import re

from pymongo.errors import PyMongoError

from carweb.bridge.topics import topic_filter_regex

log = logging.getLogger(__name__)
HANDLERS_KEY = "carweb.topic_handlers"


def register_topic_handler(app, topic_filter, handler):
    """Have `handler(docs)` called with stored inbound messages whose topic matches the MQTT filter."""
    pattern = re.compile(topic_filter_regex(topic_filter))
    app.extensions.setdefault(HANDLERS_KEY, []).append((topic_filter, pattern, handler))


def dispatch(app, docs):
    """Run every handler on its matching documents.

    Database errors propagate so the writer retries (handlers must be idempotent); any
    other error is a bug in a handler: logged, and the batch goes on.
    """
    for topic_filter, pattern, handler in app.extensions.get(HANDLERS_KEY, ()):
        matching = [d for d in docs if d["direction"] == "in" and pattern.match(d["topic"])]
        if not matching:
            continue
        try:
            handler(matching)
        except PyMongoError:
            raise
        except Exception:  # noqa: BLE001 - one broken handler must not stop the ingest
            log.exception("handler for %s failed on %d messages", topic_filter, len(matching))
