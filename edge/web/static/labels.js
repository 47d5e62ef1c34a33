// The labelling page: select a tile, click a label (or add a new class); every POST carries the CSRF token.
// Text is set with textContent only: labels come from files and users.
"use strict";
(function () {
  const frame = document.getElementById("frame");
  if (!frame) return;
  const post = frame.dataset.post; // ".../tile/" : the tile index is appended
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const status = document.getElementById("status");
  let selected = null;

  function say(text, error) {
    status.textContent = text;
    status.classList.toggle("error", !!error);
  }

  function select(button) {
    document.querySelectorAll("button.tile").forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    button.setAttribute("aria-pressed", "true");
    selected = button;
  }

  async function label(name, role) {
    if (!selected) { say("Select a tile first.", true); return; }
    const tile = selected;
    const body = { label: name };
    if (role) body.role = role;
    let reply;
    try {
      reply = await fetch(post + tile.dataset.tile, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        credentials: "same-origin",
        body: JSON.stringify(body),
      });
    } catch (e) {
      say("Not saved: " + e, true);
      return;
    }
    let doc = {};
    try { doc = await reply.json(); } catch (e) { doc = { error: reply.status + " " + reply.statusText }; }
    if (!reply.ok) { say("Not saved: " + (doc.error || reply.status), true); return; }
    tile.querySelector(".tile-label").textContent = doc.label;
    tile.classList.add("labelled");
    say("Tile " + doc.tile + " is " + doc.label + " (" + doc.role + "): " + doc.path, false);
    if (doc.new_class) addChoice(doc.label, doc.role);
    const next = tile.closest("td") && nextTile(tile);
    if (next) select(next);
  }

  function nextTile(tile) {
    const all = Array.from(document.querySelectorAll("button.tile"));
    const i = all.indexOf(tile);
    return i >= 0 && i + 1 < all.length ? all[i + 1] : null;
  }

  function addChoice(name, role) {
    if (document.querySelector('button.label[data-label="' + CSS.escape(name) + '"]')) return;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "label role-" + role;
    b.dataset.label = name;
    b.dataset.role = role;
    b.textContent = name;
    document.getElementById("labels").appendChild(b);
  }

  document.addEventListener("click", function (ev) {
    const t = ev.target.closest("button");
    if (!t) return;
    if (t.classList.contains("tile")) select(t);
    else if (t.classList.contains("label")) label(t.dataset.label, null);
    else if (t.id === "add-label") {
      const name = document.getElementById("new-label").value.trim();
      if (!name) { say("Type the new class's name first.", true); return; }
      label(name, document.getElementById("new-role").value);
    }
  });
  const first = document.querySelector("button.tile");
  if (first) select(first);
})();
