/* Device page: new messages of this device appear at the top without a reload. */
(function () {
  "use strict";
  var list = document.getElementById("message-list");
  var template = document.getElementById("message-template");
  var pendingNote = document.getElementById("pending-note");
  var countEl = document.getElementById("message-count");
  var lastSeenEl = document.getElementById("last-seen");
  var stateEl = document.getElementById("device-state");
  var MAX_ROWS = 500; // beyond this, stop growing the page and offer a reload instead
  var pending = 0;
  var deviceId = list.dataset.deviceId;
  var insertLive = list.dataset.liveInsert === "yes";
  var newestCursor = list.firstElementChild ? list.firstElementChild.dataset.cursor : list.dataset.after;

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
    node.dataset.cursor = m.cursor;
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
    var reason = carwebSetField(node, "raw_reason", m.raw_reason || "");
    reason.hidden = !m.raw_reason;
    carwebSetField(node, "body", m.body);
    var hidden = node.querySelector('[data-field="hidden"]');
    hidden.hidden = !m.hidden;
    if (m.hidden) hidden.textContent = "… " + m.hidden + " more characters not shown; download the raw payload for all of it.";
    return node;
  }

  /* The facts above the history: the device's state as the server last stored it. */
  function updateFacts(d) {
    if (!d) return;
    countEl.textContent = String(d.message_count);
    lastSeenEl.textContent = carwebFormatTime(d.last_seen_at);
    stateEl.textContent = d.online ? "online" : "offline";
    stateEl.className = "state " + (d.online ? "online" : "offline");
  }

  function addMessages(messages) {
    messages.forEach(function (m) {
      if (list.querySelector('[data-id="' + m.id + '"]')) return;
      newestCursor = m.cursor;
      if (!insertLive || list.children.length >= MAX_ROWS) {
        pending += 1;
        showPending(pending + " new message" + (pending === 1 ? "" : "s") + ": show the newest");
        return;
      }
      list.insertBefore(messageRow(m), list.firstChild);
    });
    var empty = document.getElementById("no-messages");
    if (empty && list.children.length) empty.remove();
  }

  var socket = carwebLive(function (s, ready) {
    // Subscribe, then fetch what was stored since the newest message this page has seen
    // (since the page was rendered, or while the connection was down).
    s.emit("watch_device", { device_id: deviceId, after: insertLive ? newestCursor : null }, function (reply) {
      if (!reply || !reply.ok) return;
      addMessages(reply.messages);
      updateFacts(reply.device);
      if (reply.more) showPending("More messages arrived while this page was away: show the newest");
      ready();
    });
  });
  socket.on("messages", addMessages);
  socket.on("device", updateFacts);
})();
