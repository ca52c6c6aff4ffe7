"""Helpers of tests that count what the database does: the documents a piece of code makes it read."""

from mongoengine.connection import get_db
from pymongo import monitoring


class FindRecorder(monitoring.CommandListener):
    """Keeps the `find` commands sent while it records."""

    def __init__(self):
        self.finds, self.recording = [], False

    def started(self, event):
        if self.recording and event.command_name == "find":
            self.finds.append((event.database_name, dict(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


RECORDER = FindRecorder()
monitoring.register(RECORDER)  # clients made after this (each test's app) report to it


def documents_examined(function):
    """Run `function`; return its result and the documents the server examined for its finds."""
    RECORDER.finds, RECORDER.recording = [], True
    try:
        result = function()
    finally:
        RECORDER.recording = False
    database = get_db()
    examined = 0
    for _, command in RECORDER.finds:
        find = {k: v for k, v in command.items() if k in ("find", "filter", "projection", "sort", "limit")}
        explained = database.command("explain", find, verbosity="executionStats")
        examined += explained["executionStats"]["totalDocsExamined"]
    return result, examined
