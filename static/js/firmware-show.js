/* Firmware image page: every job that sends this image follows its device live. */
(function () {
  "use strict";
  var table = document.getElementById("firmware-jobs");
  var firmwareId = table.dataset.firmwareId;

  function showJob(job) {
    if (job.firmware !== firmwareId) return;
    carwebUpsertJob(table, job, true);
    document.getElementById("no-jobs").hidden = true;
  }

  var socket = carwebLive(function (s, ready) {
    s.emit("watch_firmware", { firmware_id: firmwareId }, function (reply) {
      if (!reply || !reply.ok) return;
      reply.jobs.forEach(showJob);
      ready();
    });
  });
  socket.on("job", showJob);
})();
