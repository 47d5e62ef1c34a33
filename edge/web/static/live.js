// The live page: polls /api/status, posts the controls with the page's CSRF token. Text goes in with
// textContent only (labels and file names are data, never markup).
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const set = (id, text) => { const el = $(id); if (el) el.textContent = text; };
  const num = (x, d) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);

  function show(s) {
    set("mode", s.mode);
    set("frames", s.frames);
    set("frame", s.frame);
    set("fps", num(s.fps, 1));
    set("latency", `${num(s.latency_p50_ms, 1)} / ${num(s.latency_p95_ms, 1)} ms`);
    set("dropped", s.dropped);
    set("speed", s.speed_kmh === null ? "–" : `${num(s.speed_kmh, 1)} km/h`);
    set("max_speed", s.max_speed_kmh === null ? "–" : `${num(s.max_speed_kmh, 1)} km/h (${s.max_speed_limited_by})`);
    set("camera", s.camera);
    set("controller", s.controller);
    set("gps", s.gps);
    set("valves", s.valves.map((on, i) => `V${i} ${on ? "OPEN" : "off"}`).join("  "));
    set("switch", s.tuning.switch);
    set("cpu_temp", s.system.cpu_temp_c === null ? "not told by the OS" : `${num(s.system.cpu_temp_c, 1)} °C`);
    set("load", s.system.load === null ? "not told by the OS" : `${s.system.load.join(" / ")} (${s.system.cpus} CPUs)`);
    set("disk", s.system.disk_free_bytes === null ? "–" :
      `${num(s.system.disk_free_bytes / 1e9, 1)} GB free (${s.system.log_dir})`);
    set("rule", s.tuning.rule);
    set("sensitivity", s.tuning.sensitivity === null ? "off" : s.tuning.sensitivity);
    set("paused", s.tuning.paused ? "PAUSED" : "");
    const th = $("threshold");
    if (document.activeElement !== th) th.value = num(s.tuning.threshold, 2);
    document.querySelectorAll("button.preset").forEach((b) => {
      b.classList.toggle("active", b.dataset.preset === s.tuning.sensitivity);
      b.disabled = s.tuning.sensitivity === null;
    });
    const v = $("verdict");
    v.className = "verdict " + (s.tuning.paused ? "paused" : s.healthy ? "ok" : "bad");
    v.textContent = s.verdict;
    const list = $("events");
    const items = s.events.slice().reverse().map((e) => {
      const li = document.createElement("li");
      li.className = e.kind;
      li.textContent = `${new Date(e.wall * 1000).toLocaleTimeString()} ${e.kind}: ${e.text}`;
      return li;
    });
    list.replaceChildren(...items);
  }

  async function poll() {
    try {
      const r = await fetch("/api/status", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { window.location = "/login"; return; }
      show(await r.json());
    } catch (e) {
      set("verdict", "no answer from edge-run");
      $("verdict").className = "verdict bad";
    }
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    const j = await r.json();
    set("message", j.ok ? j.message : `${j.error} — ${j.fix}`);
    poll();
  }

  document.querySelectorAll("button.preset").forEach((b) =>
    b.addEventListener("click", () => post("/api/tuning", { sensitivity: b.dataset.preset })));
  $("apply-threshold").addEventListener("click", () => post("/api/tuning", { threshold: $("threshold").value }));
  $("save").addEventListener("click", () => post("/api/tuning/save"));
  $("pause").addEventListener("click", () => post("/api/pause"));
  $("resume").addEventListener("click", () => post("/api/resume"));
  // a stream that ended (edge-run restarted, a network hiccup) is reopened
  $("stream").addEventListener("error", () => setTimeout(() => { $("stream").src = "/stream.mjpg?" + Date.now(); }, 1000));
  poll();
  setInterval(poll, 1000);
})();
