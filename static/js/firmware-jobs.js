/* Update job rows shared by the rollout and device pages: filled with textContent only. */
(function () {
  "use strict";
  window.carwebJobStates = {
    terminal: ["UPDATED", "FAILED", "REJECTED", "TIMED_OUT", "CANCELED"],
    failures: ["FAILED", "REJECTED", "TIMED_OUT"]
  };

  function setLink(node, field, text, placeholder, value) {
    var link = carwebSetField(node, field, text);
    if (link && value) link.href = link.getAttribute("href").replace(placeholder, encodeURIComponent(value));
  }

  /* Show a job summary (carweb/live.py job_summary) in its row. */
  window.carwebFillJob = function (row, job) {
    row.dataset.jobId = job.id;
    row.dataset.state = job.state;
    row.dataset.wave = String(job.wave);
    var state = carwebSetField(row, "state", job.state);
    if (state) state.dataset.state = job.state;
    carwebSetField(row, "wave", String(job.wave + 1));
    carwebSetField(row, "attempts", String(job.attempts));
    carwebSetField(row, "progress", job.progress === null || job.progress === undefined ? "" : job.progress + " %");
    carwebSetField(row, "error", job.error || "");
    var time = carwebSetField(row, "updated_at", carwebFormatTime(job.updated_at));
    if (time) time.setAttribute("datetime", job.updated_at || "");
    return row;
  };

  /* A new row for a job, cloned from the page's <template id="job-template">. */
  window.carwebNewJobRow = function (job) {
    var template = document.getElementById("job-template");
    var row = template.content.firstElementChild.cloneNode(true);
    setLink(row, "device_id", job.device_id, "__DEVICE__", job.device_id);
    setLink(row, "firmware", job.title + " " + job.version, "__FIRMWARE__", job.firmware);
    setLink(row, "rollout", "rollout", "__ROLLOUT__", job.rollout);
    return carwebFillJob(row, job);
  };

  /* Update a job's row in `table`, or add one (at the top when `atTop`); returns the row. */
  window.carwebUpsertJob = function (table, job, atTop) {
    var body = table.tBodies[0];
    var row = body.querySelector('tr[data-job-id="' + job.id + '"]');
    if (row) return carwebFillJob(row, job);
    row = carwebNewJobRow(job);
    body.insertBefore(row, atTop ? body.firstChild : null);
    return row;
  };
})();
