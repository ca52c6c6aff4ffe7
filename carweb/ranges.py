"""Read a numbered collection newest first in ranges of numbers, never more than a set number of documents.

Both keysets carweb pages through are numbers that no two documents share (a device's
message numbers, the devices' places in the list), so a range of numbers holds at most
as many documents as it is wide. Reading ranges no wider than the reads left keeps each
request bounded on any server, even one that reads a whole range before it sorts it.
"""

import math

MAX_QUERIES = 12


def walk_down(read_range, top, wanted, read_limit, keep=None, stop=None):
    """Read ranges down from number `top` until `wanted` documents are kept or a limit is met.

    `read_range(low, high)` returns the documents numbered in (low, high], newest first;
    `keep(doc)` says which count (all by default), `stop(doc)` that nothing older can.
    Returns the kept documents, the number below which nothing was read (0 when the
    walk reached the start) and how many documents were read. Without `keep` the first
    range is as wide as the documents wanted; with it, as wide as the reads allowed (a
    filter's matches are unknown, and one query costs less than two).
    """
    kept, high, reads, queries = [], top, 0, 0
    rate = 1.0 if keep is None else wanted / read_limit
    while len(kept) < wanted and high > 0 and reads < read_limit and queries < MAX_QUERIES:
        width = min(math.ceil((wanted - len(kept)) / rate), read_limit - reads)
        low = max(high - max(width, 1), 0)
        part = read_range(low, high)
        queries, reads = queries + 1, reads + len(part)
        matched = part if keep is None else [doc for doc in part if keep(doc)]
        kept += matched
        # Matches per number so far in this walk, floored so a range never exceeds the reads left.
        rate = max(len(matched) / (high - low), 1 / read_limit)
        high = low
        if part and stop is not None and stop(part[-1]):
            return kept, 0, reads
    return kept, high, reads
