/* Firmware upload with a progress bar: the form is sent by XHR, errors are shown in place. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var box = document.getElementById("upload-progress");
  var bar = box.querySelector("progress");
  var errors = document.getElementById("upload-errors");
  var button = form.querySelector("[type=submit]");

  function showErrors(list) {
    errors.textContent = "";
    list.forEach(function (text) {
      var item = document.createElement("li");
      item.className = "error";
      item.textContent = text;
      errors.appendChild(item);
    });
  }

  function finish(xhr) {
    var reply = null;
    try { reply = JSON.parse(xhr.responseText); } catch (e) { reply = null; }
    if (xhr.status === 200 && reply && reply.location) {
      window.location.assign(reply.location);
      return;
    }
    button.disabled = false;
    box.hidden = true;
    if (reply && reply.errors) showErrors(reply.errors);
    else if (xhr.status === 413) showErrors(["Firmware images may be at most " + form.dataset.maxMb + " MiB."]);
    else showErrors(["The upload failed (HTTP " + xhr.status + "). Try again."]);
  }

  form.addEventListener("submit", function (event) {
    var file = form.querySelector("input[type=file]").files[0];
    event.preventDefault();
    if (file && file.size > Number(form.dataset.maxBytes)) {
      showErrors(["Firmware images may be at most " + form.dataset.maxMb + " MiB."]);
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var percent = Math.floor((e.loaded / e.total) * 100);
      bar.value = percent;
      showPercent(percent + " %");
    });
    xhr.addEventListener("load", function () { finish(xhr); });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      box.hidden = true;
      showErrors(["The upload failed: the connection was lost. Try again."]);
    });
    showErrors([]);
    bar.value = 0;
    box.hidden = false;
    button.disabled = true;
    xhr.send(new FormData(form));
  });

  function showPercent(text) {
    box.querySelector('[data-field="percent"]').textContent = text;
  }
})();
