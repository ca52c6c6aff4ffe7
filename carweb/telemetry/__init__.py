"""Telemetry: the numbers in devices' JSON payloads as series, their rollups and their charts.

`series.py` names the numbers of a payload and adds them up (pure); the bridge keeps
per-minute rollups of them as it stores messages (`carweb.bridge.rollups`) and folds
closed hours and days into coarser ones; `charts.py` answers a chart's request from the
coarsest rollups that give it enough points, so its cost follows the range's length,
not the number of messages in it.
"""
