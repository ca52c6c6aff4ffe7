/* Device page: the device's update history and current firmware follow its jobs live. */
(function () {
  "use strict";
  var section = document.getElementById("firmware-updates");
  var table = document.getElementById("update-history");
  var firmware = document.getElementById("device-firmware");
  var deviceId = section.dataset.deviceId;

  function showJob(job) {
    if (job.device_id !== deviceId) return;
    carwebUpsertJob(table, job, true);
    document.getElementById("no-updates").hidden = true;
    if (job.state === "UPDATED") firmware.textContent = job.reported_version || job.version;
  }

  // The device page's own script subscribes to its messages on the same connection.
  var socket = carwebLive(function (s, ready) {
    s.emit("watch_device_firmware", { device_id: deviceId }, function (reply) {
      if (!reply || !reply.ok) return;
      reply.jobs.slice().reverse().forEach(showJob);
      if (reply.fw_version) firmware.textContent = reply.fw_version;
      ready();
    });
  });
  socket.on("job", showJob);
})();
