/* Firmware image page: every job that sends this image follows its device live. */
(function () {
  "use strict";
  var table = document.getElementById("firmware-jobs");
  var firmwareId = table.dataset.firmwareId;

  var olderPage = table.hasAttribute("data-older-page");  /* new jobs belong on the first page */

  function showJob(job) {
    if (job.firmware !== firmwareId) return;
    if (olderPage && !table.querySelector('tr[data-job-id="' + job.id + '"]')) return;
    carwebUpsertJob(table, job, true);
    document.getElementById("no-jobs").hidden = true;
  }

  var socket = carwebLive(function (s, ready) {
    s.emit("watch_firmware", { firmware_id: firmwareId }, function (reply) {
      if (!reply || !reply.ok) return;
      reply.jobs.slice().reverse().forEach(showJob);  /* newest first: the newest ends on top */
      ready();
    });
  });
  socket.on("job", showJob);
})();
