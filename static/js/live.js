/* The Socket.IO connection live pages share: the live/reconnecting indicator and row filling. */
(function () {
  "use strict";
  var indicator = document.getElementById("live-status");

  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  /* One Socket.IO connection per page, whatever number of scripts use it. Each calls
     carwebLive(subscribe); subscribe(socket, ready) runs on every (re)connection (and at
     once when the socket is already connected), and the page is "live" once every
     subscriber has called ready() for the current connection. */
  var socket = null;
  var subscribers = [];
  var connection = 0;
  var waiting = 0;

  function run(subscribe) {
    var current = connection;
    var called = false;
    waiting += 1;
    setState("connecting", "subscribing…");
    subscribe(socket, function () {
      if (called || current !== connection) return;
      called = true;
      waiting -= 1;
      if (waiting === 0) setState("live", "live");
    });
  }

  function connect() {
    socket = io();
    socket.on("connect", function () {
      connection += 1;
      waiting = 0;
      subscribers.forEach(run);
    });
    socket.on("disconnect", function () { setState("reconnecting", "reconnecting…"); });
    socket.on("connect_error", function (err) {
      if (err && err.message === "login required") {
        setState("offline", "logged out: reload the page");
        socket.disconnect();
      } else {
        setState("reconnecting", "reconnecting…");
      }
    });
  }

  window.carwebLive = function (subscribe) {
    subscribers.push(subscribe);
    if (socket === null) connect();
    else if (socket.connected) run(subscribe);
    return socket;
  };

  /* ISO time in UTC shown as the server renders it: "YYYY-MM-DD HH:MM:SS.mmm". */
  window.carwebFormatTime = function (iso) {
    return iso ? iso.replace("T", " ").replace(/(\+00:00|Z)$/, "") : "—";
  };

  /* Put text into every [data-field] of a cloned row; never HTML. */
  window.carwebSetField = function (node, field, text) {
    var el = node.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = text;
    return el;
  };
})();
