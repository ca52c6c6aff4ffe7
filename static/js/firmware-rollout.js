/* Rollout page: job states, counts per state, wave progress and controls follow the rollout live. */
(function () {
  "use strict";
  var root = document.getElementById("rollout");
  var table = document.getElementById("job-table");
  var rolloutId = root.dataset.rolloutId;
  var states = window.carwebJobStates;

  function showJob(job) {
    if (job.rollout !== rolloutId) return;
    carwebUpsertJob(table, job, false);
  }

  /* Counts and wave bars are recounted from the rows, so they always agree with the table. */
  function recount() {
    var counts = {};
    var waves = {};
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var state = row.dataset.state;
      var wave = waves[row.dataset.wave] = waves[row.dataset.wave] || { done: 0, failed: 0 };
      counts[state] = (counts[state] || 0) + 1;
      if (states.terminal.indexOf(state) >= 0) wave.done += 1;
      if (states.failures.indexOf(state) >= 0) wave.failed += 1;
    });
    document.querySelectorAll("#state-counts [data-count-state]").forEach(function (item) {
      carwebSetField(item, "count", String(counts[item.dataset.countState] || 0));
    });
    document.querySelectorAll("#waves .wave").forEach(function (item) {
      var wave = waves[item.dataset.wave] || { done: 0, failed: 0 };
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

  var socket = carwebLive(function (s, ready) {
    s.emit("watch_rollout", { rollout_id: rolloutId }, function (reply) {
      if (!reply || !reply.ok) return;
      reply.jobs.forEach(showJob);
      recount();
      showRollout(reply.rollout);
      ready();
    });
  });
  socket.on("job", function (job) { showJob(job); recount(); });
  socket.on("rollout", showRollout);
})();
