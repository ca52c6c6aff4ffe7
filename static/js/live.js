/* Socket.IO connection shared by live pages: the live/reconnecting indicator and row filling. */
(function () {
  "use strict";
  var indicator = document.getElementById("live-status");

  function setState(state, text) {
    if (!indicator) return;
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  /* Connect and call subscribe(socket, ready) on every (re)connection; the page calls
     ready() once the server confirmed its subscription, and only then is it "live". */
  window.carwebLive = function (subscribe) {
    var socket = io();
    socket.on("connect", function () {
      setState("connecting", "subscribing…");
      subscribe(socket, function () { setState("live", "live"); });
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
