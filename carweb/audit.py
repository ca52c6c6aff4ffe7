"""Recording actions in the audit log, and reading it by keyset pages."""

import logging

from bson import ObjectId
from flask import has_request_context, request
from flask_login import current_user
from pymongo.errors import PyMongoError

from carweb.api.v1 import is_api_request
from carweb.models.audit import AuditEntry

log = logging.getLogger(__name__)
PAGE = 50


def record(action, target=None, who=None, via=None, **details):
    """Write one entry for the current user (or `who`) and request; a database error is logged, not raised.

    `via` is "web" or "api" as the request came, unless given ("cli"); an API request
    names its token. The action itself has happened by now; failing the request because
    its record could not be written would tell the user it had not.
    """
    user = current_user if has_request_context() and current_user.is_authenticated else None
    if via is None:
        via = "api" if has_request_context() and is_api_request() else "web"
    if user is not None and user.api_token is not None:
        details["token"] = user.api_token.name
    entry = AuditEntry(
        who=who or (user.email if user else None),
        role=user.role if user else None,
        action=action,
        target=None if target is None else str(target)[:300],
        details={key: str(value)[:300] for key, value in details.items()},
        address=request.remote_addr if has_request_context() else None,
        via=via,
    )
    try:
        entry.save()
    except PyMongoError:
        log.exception("audit entry not written: %s %s by %s", action, target, entry.who)


def page(action=None, who=None, before=None, limit=PAGE):
    """Up to `limit` entries, newest first, older than the entry id `before`; and whether more exist."""
    query = {}
    if action:
        query["action"] = action
    if who:
        query["who"] = who.strip().lower()
    if before is not None:
        query["_id"] = {"$lt": before}
    entries = list(AuditEntry.objects(__raw__=query).order_by("-id").limit(limit + 1))
    return entries[:limit], len(entries) > limit


def parse_cursor(text):
    """An entry id from a page link, or None when there is none or it is not one."""
    return ObjectId(text) if text and ObjectId.is_valid(text) else None
