/* Device page: new messages of this device appear at the top without a reload. */
(function () {
  "use strict";
  var list = document.getElementById("message-list");
  var template = document.getElementById("message-template");
  var pendingNote = document.getElementById("pending-note");
  var countEl = document.getElementById("message-count");
  var MAX_ROWS = 500; // beyond this, stop growing the page and offer a reload instead
  var pending = 0;
  var deviceId = list.dataset.deviceId;
  var insertLive = list.dataset.liveInsert === "yes";

  function showPending(text) {
    pendingNote.hidden = false;
    pendingNote.textContent = "";
    var link = document.createElement("a");
    link.href = window.location.pathname;
    link.textContent = text;
    pendingNote.appendChild(link);
  }

  function messageRow(m) {
    var node = template.content.firstElementChild.cloneNode(true);
    node.dataset.id = m.id;
    node.className = "message " + m.direction;
    var time = carwebSetField(node, "received_at", carwebFormatTime(m.received_at));
    time.setAttribute("datetime", m.received_at);
    carwebSetField(node, "topic", m.topic);
    carwebSetField(node, "direction", m.direction === "out" ? "outbound" : "inbound");
    carwebSetField(node, "kind", m.kind);
    carwebSetField(node, "flags", "QoS " + m.qos + (m.retain ? " · retained" : ""));
    carwebSetField(node, "size", m.size + " B" + (m.truncated ? " · stored truncated" : ""));
    var raw = node.querySelector('[data-field="raw"]');
    raw.href = raw.getAttribute("href").replace("__ID__", encodeURIComponent(m.id));
    carwebSetField(node, "body", m.body);
    var hidden = node.querySelector('[data-field="hidden"]');
    hidden.hidden = !m.hidden;
    if (m.hidden) hidden.textContent = "… " + m.hidden + " more characters not shown; download the raw payload for all of it.";
    return node;
  }

  function addMessages(messages) {
    var inbound = 0;
    messages.forEach(function (m) {
      if (m.direction === "in") inbound += 1;
      if (list.querySelector('[data-id="' + m.id + '"]')) return;
      if (!insertLive || list.children.length >= MAX_ROWS) {
        pending += 1;
        showPending(pending + " new message" + (pending === 1 ? "" : "s") + ": show the newest");
        return;
      }
      list.insertBefore(messageRow(m), list.firstChild);
    });
    var empty = document.getElementById("no-messages");
    if (empty && list.children.length) empty.remove();
    if (countEl && inbound) countEl.textContent = String(Number(countEl.textContent) + inbound);
  }

  var socket = carwebLive(
    function (s) { s.emit("watch_device", deviceId); },
    function () { showPending("The connection was interrupted: reload to see every message"); }
  );
  socket.on("messages", addMessages);
})();
