// lienthong console, live page: show trace events as the server sends them (Server-Sent
// Events), newest first; pause holds new ones back (and counts them, the newest 500 kept) until
// resumed; the filter keeps the rows that contain its text. Text only (textContent), never HTML
// from an event.
(function () {
  "use strict";
  var body = document.querySelector("#live tbody");
  var pause = document.getElementById("pause");
  var filter = document.getElementById("filter");
  var state = document.getElementById("live-state");
  var paused = false;
  var held = [];
  var dropped = 0;
  var MAX_ROWS = 500;

  function matches(tr) {
    var f = filter.value.trim().toLowerCase();
    return f === "" || tr.textContent.toLowerCase().indexOf(f) >= 0;
  }
  function row(ev) {
    var tr = document.createElement("tr");
    if (ev.event === "dead_lettered" || ev.event === "failed") { tr.className = "late"; }
    if (ev.event === "delivered") { tr.className = "early"; }
    [ev.at, ev.event, ev.ma_ho_so, (ev.kind || "") + " " + (ev.message_id || ""), ev.from, ev.to,
     ev.attempt, ev.reason].forEach(function (v) {
      var td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "" : String(v);
      tr.appendChild(td);
    });
    tr.hidden = !matches(tr);
    return tr;
  }
  function show(ev) {
    body.insertBefore(row(ev), body.firstChild);
    while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
  }
  function say() {
    if (paused) {
      state.textContent = state.dataset.paused + " (" + held.length + ")" +
        (dropped > 0 ? "; " + dropped + " " + state.dataset.dropped : "");
    } else {
      state.textContent = state.dataset.live;
    }
  }
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.textContent = paused ? pause.dataset.resume : pause.dataset.pause;
    if (!paused) { held.forEach(show); held = []; dropped = 0; }
    say();
  });
  filter.addEventListener("input", function () {
    Array.prototype.forEach.call(body.rows, function (tr) { tr.hidden = !matches(tr); });
  });
  var source = new EventSource("/console/live/events");
  source.onmessage = function (m) {
    var ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (paused) {
      // Only the newest MAX_ROWS could be shown on resume: keep no more than that.
      held.push(ev);
      if (held.length > MAX_ROWS) { held.shift(); dropped += 1; }
    } else { show(ev); }
    say();
  };
  source.onopen = say;
  source.onerror = function () {
    // The browser retries a dropped stream by itself; it gives up (CLOSED) when the answer is
    // not a stream any more: the session ended (the login page) or the server is gone.
    state.textContent = source.readyState === EventSource.CLOSED ? state.dataset.ended : state.dataset.lost;
  };
  say();
})();
