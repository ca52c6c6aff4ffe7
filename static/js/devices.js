/* Device list: counts, last-seen times and online state update live; new devices appear. */
(function () {
  "use strict";
  var table = document.getElementById("device-table");
  var body = table.tBodies[0];
  var template = document.getElementById("device-row-template");
  var insertLive = table.dataset.liveInsert === "yes";

  /* Live updates carry no name (the bridge does not know it): a row keeps the one it shows. */
  function fill(row, d) {
    var name = row.querySelector('[data-field="name"]');
    if ("name" in d || !name.textContent) name.textContent = d.name || d.device_id;
    name.href = table.dataset.showUrl.replace("__ID__", encodeURIComponent(d.device_id));
    carwebSetField(row, "device_id", d.device_id);
    var state = carwebSetField(row, "online", d.online ? "online" : "offline");
    state.className = "state " + (d.online ? "online" : "offline");
    var seen = carwebSetField(row, "last_seen_at", carwebFormatTime(d.last_seen_at));
    seen.setAttribute("datetime", d.last_seen_at || "");
    carwebSetField(row, "message_count", String(d.message_count));
  }

  function rowsById() {
    var rows = {};
    for (var i = 0; i < body.rows.length; i++) rows[body.rows[i].dataset.deviceId] = body.rows[i];
    return rows;
  }

  /* `devices` come most recently seen first; on the first page they go to the top in that order. */
  function update(devices) {
    var rows = rowsById();
    var pageSize = Number(table.dataset.pageSize || 50);
    if (insertLive) devices = devices.slice(0, pageSize).reverse();
    devices.forEach(function (d) {
      var row = rows[d.device_id];
      if (!row && !insertLive) return;
      if (!row) {
        row = template.content.firstElementChild.cloneNode(true);
        row.dataset.deviceId = d.device_id;
      }
      fill(row, d);
      // The list is sorted by last seen: on the first page a device that spoke moves to the top.
      if (insertLive) body.insertBefore(row, body.firstChild);
    });
    while (insertLive && body.rows.length > pageSize) body.deleteRow(body.rows.length - 1);
    var empty = document.getElementById("no-devices");
    if (empty && body.rows.length) empty.remove();
  }

  var socket = carwebLive(function (s, ready) {
    s.emit("watch_devices", function (ok) { if (ok) ready(); });
  });
  socket.on("devices", update);
})();
