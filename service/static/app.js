// Clover Search web page: search, play the matched moment, ask a question. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { selected: null };

function fmtTime(seconds) {
  const s = Math.max(0, seconds || 0);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function renderResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  const template = $("card-template");
  for (const hit of results) {
    const card = template.content.firstElementChild.cloneNode(true);
    const img = card.querySelector("img");
    img.src = hit.thumbnail_url;
    img.alt = hit.title || hit.path;
    card.querySelector(".title").textContent = hit.title || hit.path.split("/").pop();
    card.title = hit.title || hit.path;  // long titles (captions) are cut to one line on the card
    card.querySelector(".moment").textContent = `${fmtTime(hit.start)} – ${fmtTime(hit.end)}`;
    let scores = `score ${hit.score.toFixed(3)}`;
    if (hit.rerank_score !== null && hit.rerank_score !== undefined) {
      scores += ` · rerank ${hit.rerank_score.toFixed(2)}`;
    }
    card.querySelector(".scores").textContent = scores;
    card.addEventListener("click", () => play(hit));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") play(hit); });
    grid.appendChild(card);
  }
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  const params = new URLSearchParams({ q, k: "24", rerank: $("rerank").checked ? "true" : "false" });
  setStatus("Searching…");
  try {
    const result = await api(`/search?${params}`);
    renderResults(result.results);
    const reranked = result.rerank ? `, re-ranked top ${result.rerank_k}` : "";
    setStatus(`${result.results.length} video(s) in ${result.took_ms} ms${reranked}`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function play(hit) {
  state.selected = hit;
  $("player-panel").hidden = false;
  $("player-title").textContent = hit.title || hit.path.split("/").pop();
  $("player-moment").textContent = `matched moment ${fmtTime(hit.start)} – ${fmtTime(hit.end)}`;
  $("answer").replaceChildren();
  const video = $("player");
  // The media fragment starts playback at the moment; currentTime is set too for browsers that ignore it.
  video.src = `${hit.stream_url}#t=${hit.start}`;
  video.addEventListener("loadedmetadata", () => {
    if (Math.abs(video.currentTime - hit.start) > 0.25) video.currentTime = hit.start;
    video.play().catch(() => { /* autoplay refused: the user presses play */ });
  }, { once: true });
}

async function similar() {
  if (!state.selected) return;
  setStatus("Finding similar videos…");
  try {
    const result = await api(`/videos/${encodeURIComponent(state.selected.video_id)}/similar?k=24`);
    renderResults(result.results);
    setStatus(`${result.results.length} video(s) similar to "${$("player-title").textContent}"`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function ask(event) {
  event.preventDefault();
  const hit = state.selected;
  const question = $("question").value.trim();
  if (!hit || !question) return;
  const raw = $("candidates").value.trim();
  const candidates = raw ? raw.split(",").map((c) => c.trim()).filter((c) => c) : null;
  const body = { video_id: hit.video_id, question, candidates, start: null, end: null };
  if ($("qa-moment").checked) { body.start = hit.start; body.end = hit.end; }
  const out = $("answer");
  out.textContent = "Thinking…";
  out.classList.remove("error");
  try {
    const result = await api("/qa", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    out.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = result.answer;
    out.append(strong, ` (p = ${result.score.toFixed(3)}, ${result.took_ms} ms)`);
    if (result.candidates) {
      const list = document.createElement("ul");
      for (const c of result.candidates) {
        const li = document.createElement("li");
        li.textContent = `${c.text}: ${c.score.toFixed(3)}`;
        if (c.text === result.answer) li.className = "best";
        list.appendChild(li);
      }
      out.appendChild(list);
    }
  } catch (err) {
    out.textContent = err.message;
    out.classList.add("error");
  }
}

$("search-form").addEventListener("submit", search);
$("qa-form").addEventListener("submit", ask);
$("similar-button").addEventListener("click", similar);
$("close-button").addEventListener("click", () => {
  const video = $("player");
  video.pause();
  video.removeAttribute("src");
  video.load();
  $("player-panel").hidden = true;
  state.selected = null;
});
