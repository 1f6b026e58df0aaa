// safeship rollout page: polls the rollout API every 2 s with the session cookie and
// redraws the state, the control-vs-candidate table, the SVG charts and the timeline.
// Admin buttons post to the API with the session's CSRF token in X-CSRF-Token.
(function () {
  "use strict";
  var root = document.getElementById("rollout");
  if (!root) { return; }
  var name = root.dataset.name;
  var csrf = root.dataset.csrf;
  var url = "/api/v1/rollouts/" + encodeURIComponent(name);
  var SVG = "http://www.w3.org/2000/svg";
  var W = 480, H = 160, PAD = 28;

  function fmt(key, v) {
    if (v === null || v === undefined) { return "–"; }
    if (key === "requests") { return String(v); }
    if (key === "error_rate") { return (v * 100).toFixed(2) + "%"; }
    return Number((v * 1000).toPrecision(3)) + " ms";
  }

  function pct(v) { return String(Math.round(v * 1000) / 1000); }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function flagText(r) {
    if (r.flag_enabled === null) { return "deleted"; }
    if (!r.flag_enabled) { return "off"; }
    return r.flag_percent === null ? "on" : "on, " + pct(r.flag_percent) + "%";
  }

  function renderState(r) {
    var status = document.getElementById("status");
    status.textContent = r.status;
    status.className = "status rollout-" + r.status;
    setText("mode", r.mode);
    setText("step", (r.step + 1) + " / " + r.plan.steps.length);
    setText("percent", pct(r.percent));
    setText("flag", flagText(r));
    // Each form says which statuses and modes it fits (the server's table, as data).
    var shown = 0;
    document.querySelectorAll("#actions form").forEach(function (form) {
      var fits = (form.dataset.statuses || "").split(" ").indexOf(r.status) >= 0 &&
        (form.dataset.modes || "").split(" ").indexOf(r.mode) >= 0;
      form.hidden = !fits;
      form.querySelector("button").disabled = !fits;
      if (fits) { shown += 1; }
    });
    var none = document.getElementById("no-actions");
    if (none) { none.hidden = shown > 0; }
  }

  function when(iso) {
    if (window.safeshipTime) { return window.safeshipTime(iso); }
    return document.createTextNode(iso.slice(0, 19).replace("T", " ") + " UTC");
  }

  var explained = null;
  function refreshExplanation(r) {
    var key = r.status + "|" + r.mode + "|" + r.verdict.combined + "|" + r.verdict.promotable;
    if (key === explained) { return; }
    explained = key;
    fetch("/rollouts/" + encodeURIComponent(name) + "/explanation",
      {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        var list = document.getElementById("explain-list");
        while (list.firstChild) { list.removeChild(list.firstChild); }
        body.sentences.forEach(function (line) {
          var li = document.createElement("li");
          li.textContent = line;
          list.appendChild(li);
        });
      })
      .catch(function () { explained = null; });
  }

  function renderArms(r) {
    document.querySelectorAll("#arms tr[data-metric]").forEach(function (row) {
      var key = row.dataset.metric;
      row.querySelectorAll("td[data-arm]").forEach(function (cell) {
        var text = fmt(key, r.arms[cell.dataset.arm][key]);
        if (cell.textContent !== text) { cell.textContent = text; }
      });
    });
    var v = r.verdict;
    var tail = v.breach ? " — breach" : (v.promotable ? " — promotable" : "");
    setText("verdict", "Guard: e-value " + Number(v.combined).toPrecision(3) + tail +
      "; candidate requests in this step: " + r.candidate_requests_in_step);
  }

  function el(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function drawChart(svg, series, pick, scale) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var values = [];
    series.forEach(function (p) {
      ["control", "candidate"].forEach(function (arm) {
        var v = pick(p[arm]);
        if (v !== null) { values.push(v * scale); }
      });
    });
    var top = Math.max.apply(null, values.concat([scale === 100 ? 1 : 0.001]));
    svg.appendChild(el("line", {x1: PAD, y1: H - PAD, x2: W - 4, y2: H - PAD, class: "axis"}));
    svg.appendChild(el("line", {x1: PAD, y1: 16, x2: PAD, y2: H - PAD, class: "axis"}));
    svg.appendChild(el("text", {x: 2, y: 12, class: "tick"}, top.toPrecision(3)));
    svg.appendChild(el("text", {x: 2, y: H - PAD, class: "tick"}, "0"));
    var n = series.length;
    // Time ticks: the first, middle and last window, shown in the viewer's zone.
    [0, Math.floor((n - 1) / 2), n - 1].forEach(function (i, k, all) {
      if (n === 0 || (k > 0 && i === all[k - 1])) { return; }
      var x = n > 1 ? PAD + (i * (W - PAD - 8)) / (n - 1) : W / 2;
      var anchor = k === 0 ? "start" : (k === 2 ? "end" : "middle");
      svg.appendChild(el("text", {x: x, y: H - 8, class: "tick", "text-anchor": anchor,
        "data-time": series[i].at}, series[i].at.slice(11, 16) + " UTC"));
    });
    if (window.safeshipLocalise) { window.safeshipLocalise(svg); }
    ["control", "candidate"].forEach(function (arm) {
      var pts = [];
      series.forEach(function (p, i) {
        var v = pick(p[arm]);
        if (v === null) { return; }
        var x = n > 1 ? PAD + (i * (W - PAD - 8)) / (n - 1) : W / 2;
        var y = H - PAD - ((v * scale) / top) * (H - PAD - 16);
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      svg.appendChild(el("polyline", {points: pts.join(" "), class: "line " + arm,
        "data-arm": arm, "data-count": pts.length}));
      pts.forEach(function (xy) {
        var c = xy.split(",");
        svg.appendChild(el("circle", {cx: c[0], cy: c[1], r: 2.5, class: "dot " + arm}));
      });
    });
    svg.dataset.points = String(n);
  }

  function renderCharts(r) {
    drawChart(document.getElementById("chart-errors"), r.series,
      function (a) { return a.error_rate; }, 100);
    drawChart(document.getElementById("chart-p95"), r.series,
      function (a) { return a.p95; }, 1000);
  }

  function renderTimeline(r) {
    var list = document.getElementById("decision-list");
    var first = list.firstElementChild;
    var newest = r.decisions.length ? String(r.decisions[0].id) : "";
    if (first && first.dataset.id === newest && list.children.length === r.decisions.length) {
      return;
    }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    r.decisions.forEach(function (d) {
      var li = document.createElement("li");
      li.className = "decision decision-" + d.kind;
      li.dataset.id = String(d.id);
      var badge = document.createElement("span");
      badge.className = "status rollout-" + d.kind;
      badge.textContent = d.kind.replace("_", " ");
      li.appendChild(badge);
      li.appendChild(document.createTextNode(" step " + (d.step + 1) + " at " + pct(d.percent) +
        "% by " + d.actor + " "));
      var muted = document.createElement("span");
      muted.className = "muted";
      muted.appendChild(when(d.at));
      if (d.reason) { muted.appendChild(document.createTextNode(" · " + d.reason)); }
      li.appendChild(muted);
      if (d.evidence) {
        var details = document.createElement("details");
        var summary = document.createElement("summary");
        summary.textContent = "evidence";
        var pre = document.createElement("pre");
        pre.textContent = JSON.stringify(d.evidence, null, 2);
        details.appendChild(summary);
        details.appendChild(pre);
        li.appendChild(details);
      }
      list.appendChild(li);
    });
  }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function codeCell(text) {
    var td = document.createElement("td");
    var code = document.createElement("code");
    code.textContent = text === null || text === undefined ? "" : text;
    td.appendChild(code);
    return td;
  }

  function renderShadow(r) {
    var sh = r.shadow;
    setText("shadow-rate", sh.mismatch_rate === null ? "–" :
      (sh.mismatch_rate * 100).toFixed(2) + "%");
    setText("shadow-comparisons", String(sh.comparisons));
    setText("shadow-mismatches", String(sh.mismatches));
    setText("shadow-ignored", String(sh.ignored));
    setText("shadow-errors", String(sh.candidate_errors));
    setText("shadow-timeouts", String(sh.timeouts));
    setText("shadow-dropped", String(sh.dropped));
    document.getElementById("shadow-empty").hidden = sh.samples.length > 0;
    document.getElementById("shadow-samples").hidden = sh.samples.length === 0;
    var body = document.getElementById("shadow-sample-rows");
    var newest = sh.samples.length ? String(sh.samples[0].id) : "";
    var first = body.firstElementChild;
    if ((first ? first.dataset.id : "") === newest && body.children.length === sh.samples.length) {
      return;
    }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    sh.samples.forEach(function (s) {
      var tr = document.createElement("tr");
      tr.dataset.id = String(s.id);
      var at = document.createElement("td");
      at.appendChild(when(s.at));
      tr.appendChild(at);
      tr.appendChild(cell(s.kind));
      tr.appendChild(codeCell(s.kind === "mismatch" ? s.diff : s.candidate_error));
      tr.appendChild(codeCell(s.context));
      tr.appendChild(cell(s.candidate_ms === null ? "" :
        Number(s.candidate_ms.toPrecision(3)) + " ms"));
      body.appendChild(tr);
    });
  }

  function render(r) {
    renderState(r);
    renderArms(r);
    renderCharts(r);
    renderShadow(r);
    renderTimeline(r);
    if (initialised) { refreshExplanation(r); }
    root.dataset.version = String(r.version);
    root.dataset.windows = String(r.arms.control.requests + r.arms.candidate.requests);
  }

  function refresh() {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (resp) {
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        return resp.json();
      })
      .then(function (r) {
        render(r);
        setText("live-state", "Live: updated " + new Date().toLocaleTimeString() + ".");
      })
      .catch(function (err) { setText("live-state", "Live update failed: " + err.message); });
  }

  function act(action) {
    return fetch(url + "/" + action, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      // Forward moves carry the version shown, so two clicks on one state give one step.
      body: JSON.stringify(
        action === "advance" || action === "promote"
          ? {reason: "dashboard", version: Number(root.dataset.version)}
          : {reason: "dashboard"}
      )
    }).then(function (resp) {
      if (!resp.ok) {
        return resp.json().then(function (body) { throw new Error(body.detail || resp.status); });
      }
      return refresh();
    }).catch(function (err) { setText("live-state", action + " failed: " + err.message); });
  }

  document.querySelectorAll("#actions form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      act(form.dataset.action);
    });
  });

  var initialised = false;
  var initial = document.getElementById("rollout-data");
  if (initial) {
    var first = JSON.parse(initial.textContent);
    render(first);
    // The server rendered the words for this state: fetch them again only once it moves.
    explained = first.status + "|" + first.mode + "|" + first.verdict.combined + "|" +
      first.verdict.promotable;
  }
  initialised = true;
  setInterval(refresh, 2000);
})();
