// The search page: plain JS against the JSON API (no build step, no CDN).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { qid: "", file: null, info: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function option(value, label) { return el("option", { value }, label ?? value); }

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, init) {
  const res = await fetch(path, init);
  const body = await res.json();
  if (!res.ok) throw new Error(body.detail || res.statusText);
  return body;
}

function setThumb(src) {
  $("query-thumb").hidden = !src;
  $("drop-label").hidden = !!src;
  if (src) $("query-thumb").src = src; else $("query-thumb").removeAttribute("src");
}

function setFile(file) {
  state.file = file;
  state.qid = "";
  setThumb(file ? URL.createObjectURL(file) : "");
}

async function init() {
  const info = state.info = await api("/info");
  $("served").textContent = `variants: ${info.variants.join(" vs ")} · enhancement: ${info.enhancement_backend}`;
  for (const t of info.tasks) {
    $("task").append(option(t.name, `${t.name} (${t.query_modality} → ${t.candidate_modality})`));
  }
  for (const p of info.pools) $("pool").append(option(p));
  for (const d of info.datasets) $("dataset").append(option(d));
  $("k").max = info.max_k;
}

async function randomQuery() {
  showError("");
  try {
    const q = await api(`/queries/random?dataset=${encodeURIComponent($("dataset").value)}`);
    state.qid = q.qid;
    state.file = null;
    $("text").value = q.text;
    $("task").value = q.task;
    setThumb(q.image_url || "");
    await search();
  } catch (e) { showError(e.message); }
}

async function search() {
  showError("");
  const form = new FormData();
  form.append("k", $("k").value);
  form.append("pool", $("pool").value);
  if (state.qid) {
    form.append("qid", state.qid);
  } else {
    form.append("text", $("text").value);
    form.append("task", $("task").value);
    if (state.file) form.append("image", state.file);
  }
  try {
    render(await api("/search", { method: "POST", body: form }));
  } catch (e) { showError(e.message); }
}

function render(out) {
  const q = out.query, e = out.enhancement;
  $("query").hidden = false;
  $("q-id").textContent = q.qid ? `${q.qid} (benchmark, ${q.positives.length} positive(s))` : "(free query)";
  $("q-task").textContent = `${q.task}: ${q.query_modality} → ${q.candidate_modality}, ${out.pool} pool`;
  $("q-instruction").textContent = out.instruction;
  $("q-original").textContent = q.text || "(no text)";
  $("q-enhanced").textContent = e.status === "ok" ? e.text : "(original kept)";
  $("q-note").textContent = `[${e.status}, op ${e.op}, ${e.backend}] ${e.note}`;
  const results = $("results");
  results.replaceChildren();
  for (const col of out.results) {
    const found = col.hits.filter((h) => h.positive).length;
    const grid = el("div", { class: "grid" });
    for (const h of col.hits) grid.append(card(h));
    results.append(el("section", { class: "column", "data-variant": col.variant },
      el("h2", {}, `${col.variant}: top ${col.hits.length}` + (q.qid ? `, ${found} positive(s) found` : "")),
      el("div", { class: "embedded" }, `embedded: “${col.query_text}” · embed ${col.embed_ms.toFixed(1)} ms,` +
        ` search ${col.search_ms.toFixed(1)} ms`),
      grid));
  }
}

function card(h) {
  const node = el("div", { class: "hit" + (h.positive ? " positive" : ""), "data-did": h.did });
  if (h.image_url) node.append(el("img", { src: h.image_url, alt: h.did }));
  node.append(el("div", { class: "meta" }, el("span", {}, `#${h.rank} ${h.did}`),
    h.positive ? el("span", { class: "badge" }, "positive") : el("span", {}, h.score.toFixed(3))));
  if (h.text) node.append(el("div", { class: "text" }, h.text));
  if (h.enhanced_text) node.append(el("div", { class: "enh" }, `enhanced: ${h.enhanced_text}`));
  return node;
}

function wireDrop() {
  const drop = $("drop"), input = $("image");
  drop.addEventListener("click", () => input.click());
  input.addEventListener("change", () => setFile(input.files[0] || null));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]); });
}

$("query-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("random").addEventListener("click", randomQuery);
$("clear").addEventListener("click", () => { $("text").value = ""; setFile(null); $("image").value = ""; });
$("text").addEventListener("input", () => { state.qid = ""; });
$("task").addEventListener("change", () => { state.qid = ""; });
wireDrop();
init().catch((e) => showError(e.message));
