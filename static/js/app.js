// Glue for htmx: send the CSRF token with every request, and show failed requests.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (meta) {
      event.detail.headers["X-CSRFToken"] = meta.getAttribute("content");
    }
  });
  document.body.addEventListener("htmx:responseError", function (event) {
    var target = event.detail.target;
    if (target && event.detail.xhr && event.detail.xhr.responseText) {
      target.insertAdjacentHTML("beforeend", event.detail.xhr.responseText);
    }
  });
})();
