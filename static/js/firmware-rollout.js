/* Rollout page: the listed jobs, counts per state, wave progress and controls follow the rollout live. */
(function () {
  "use strict";
  var root = document.getElementById("rollout");
  var table = document.getElementById("job-table");
  var rolloutId = root.dataset.rolloutId;
  var socket = null;
  var pending = null;

  function jobIds() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (row) { return row.dataset.jobId; });
  }

  /* Only the jobs this page lists change here; the others are on their own pages. */
  function showJob(job) {
    if (job.rollout !== rolloutId) return;
    var row = table.tBodies[0].querySelector('tr[data-job-id="' + job.id + '"]');
    if (row) carwebFillJob(row, job);
  }

  /* Counts and wave bars come from the server, which counts every job of the rollout. */
  function showProgress(progress) {
    document.querySelectorAll("#state-counts [data-count-state]").forEach(function (item) {
      carwebSetField(item, "count", String(progress.counts[item.dataset.countState] || 0));
    });
    progress.waves.forEach(function (wave) {
      var item = document.querySelector('#waves .wave[data-wave="' + wave.index + '"]');
      if (!item) return;
      item.querySelector("progress").value = wave.done;
      carwebSetField(item, "done", String(wave.done));
      carwebSetField(item, "failed", String(wave.failed));
    });
  }

  function showRollout(rollout) {
    if (!rollout || rollout.id !== rolloutId) return;
    root.dataset.state = rollout.state;
    var badge = document.getElementById("rollout-state");
    badge.textContent = rollout.state;
    badge.dataset.state = rollout.state;
    document.getElementById("rollout-wave").textContent = String(rollout.current_wave + 1);
    document.getElementById("halted-note").hidden = rollout.state !== "HALTED";
    var resume = document.getElementById("resume-form");
    var cancel = document.getElementById("cancel-form");
    if (resume) resume.hidden = rollout.state !== "HALTED";
    if (cancel) cancel.hidden = rollout.state !== "RUNNING" && rollout.state !== "HALTED";
  }

  function refresh(s, ready) {
    s.emit("watch_rollout", { rollout_id: rolloutId, job_ids: jobIds() }, function (reply) {
      if (!reply || !reply.ok) return;
      reply.jobs.forEach(showJob);
      showProgress(reply.progress);
      showRollout(reply.rollout);
      if (ready) ready();
    });
  }

  /* However many jobs change, the page asks for new counts at most once a second. */
  function recountSoon() {
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(socket); }, 1000);
  }

  socket = carwebLive(refresh);
  socket.on("job", function (job) { showJob(job); recountSoon(); });
  socket.on("rollout", showRollout);
})();
