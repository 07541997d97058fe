// The daemon's live page: server-sent events `page` and `figures` (see livereduce/web/server.py) update the DOM.
// URLs are relative, so the page works behind a reverse proxy that serves it under a path.
"use strict";

const $ = (id) => document.getElementById(id);
const count = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
const mib = (n) => (n >= 1073741824 ? `${(n / 1073741824).toFixed(1)} GiB` : `${(n / 1048576).toFixed(0)} MiB`);
const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "");

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

let currentRun = 0; // the run of the last status; figures of other runs are not shown
let lastFigures = { figures: [] };

function renderPage(state) {
  setText("instrument", state.instrument);
  if ((state.run || 0) !== currentRun) {
    currentRun = state.run || 0;
    renderFigures(lastFigures);
  }
  const health = $("health");
  health.textContent = state.health;
  health.title = state.health;
  health.className = `badge ${state.healthy ? "ok" : "bad"}`;
  setText("run", state.run ? String(state.run) : "none");
  const first = state.first_pulse ? new Date(state.first_pulse) : null;
  const today = first && first.toDateString() === new Date().toDateString();
  const since = first ? `since ${today ? first.toLocaleTimeString() : first.toLocaleString()} · ` : "";
  setText("state", `${since}${state.state || ""}`);
  setText("chunks", count(state.chunks));
  setText("events", count(state.events));
  setText("lag", state.lag === null || state.lag === undefined ? "unknown" : `${state.lag.toFixed(1)} s`);
  setText("lagging", state.lagging ? `falling behind: ${state.lagging}` : "");
  setText("source-health", state.source_healthy === false ? "not delivering" : "delivering");
  $("source-health").className = `big ${state.source_healthy === false ? "warn" : ""}`;
  setText("source", state.source || "");
  if (state.rss_bytes !== undefined && state.rss_bytes !== null) {
    const limit = state.memory_limit_bytes;
    setText("memory", limit ? `${mib(state.rss_bytes)} of ${mib(limit)}` : `${mib(state.rss_bytes)} (no limit)`);
    $("memory-meter").value = limit ? Math.min(1, state.rss_bytes / limit) : 0;
  }
  const error = $("error");
  error.hidden = !state.last_error;
  setText("error-text", state.last_error || "");
  setText("error-time", state.last_error_time ? `at ${clock(state.last_error_time)}` : "");
  const rows = $("rows");
  rows.replaceChildren(...(state.rows || []).map(([key, value]) => {
    const row = document.createElement("tr");
    for (const text of [key, value]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
  renderRate(state.rate || []);
}

function renderRate(points) {
  if (!window.Plotly || points.length < 2) return;
  const trace = { x: points.map((p) => new Date(p[0] * 1000)), y: points.map((p) => p[1]), mode: "lines",
    line: { width: 1.5 }, hovertemplate: "%{y:.3s} events/s<extra></extra>" };
  const stops = [
    { dtickrange: [null, 1000], value: "%H:%M:%S.%L" },
    { dtickrange: [1000, 60000], value: "%H:%M:%S" },
    { dtickrange: [60000, null], value: "%H:%M" },
  ];
  const layout = { margin: { l: 45, r: 5, t: 5, b: 25 }, yaxis: { rangemode: "tozero", tickformat: "~s" },
    xaxis: { type: "date", tickformatstops: stops }, showlegend: false, uirevision: "rate" };
  Plotly.react($("rate"), [trace], layout, { displayModeBar: false, responsive: true });
}

const cards = new Map(); // slot -> {card, id}

function figureCard(summary) {
  const card = document.createElement("article");
  card.className = "figure";
  card.dataset.slot = summary.slot;
  const title = document.createElement("h3");
  const meta = document.createElement("div");
  meta.className = "meta";
  const body = document.createElement("div");
  card.append(title, meta, body);
  return card;
}

async function fillFigure(card, summary) {
  const [title, meta, body] = card.children;
  title.textContent = summary.title;
  const run = summary.run_number ? `run ${summary.run_number}` : "run unknown";
  const chunks = summary.chunks ? `, ${summary.chunks} chunks` : "";
  meta.textContent = `${run}${chunks} · ${summary.origin} · ${clock(summary.time)}`;
  card.dataset.figure = summary.id;
  if (summary.kind === "image") {
    let img = body.querySelector("img");
    if (!img) {
      img = document.createElement("img");
      img.alt = summary.title;
      body.replaceChildren(img);
    }
    img.src = `figures/${summary.id}`;
  } else if (summary.kind === "plotly") {
    const answer = await fetch(`figures/${summary.id}`);
    if (!answer.ok) return;
    const figure = await answer.json();
    let plot = body.querySelector(".plot");
    if (!plot) {
      plot = document.createElement("div");
      plot.className = "plot";
      body.replaceChildren(plot);
    }
    const layout = Object.assign({}, figure.layout || {}, { uirevision: summary.slot, autosize: true });
    if (!window.Plotly) return;
    await Plotly.react(plot, figure.data || [], layout, { responsive: true });
    if (!plot.dataset.observed) { // a card's width changes when others arrive, not only with the window's
      plot.dataset.observed = "1";
      new ResizeObserver(() => Plotly.Plots.resize(plot)).observe(plot);
    }
  } else {
    let frame = body.querySelector("iframe");
    if (!frame) {
      frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.title = summary.title;
      body.replaceChildren(frame);
    }
    frame.src = `figures/${summary.id}`;
  }
}

function renderFigures(all) {
  lastFigures = all;
  const container = $("figures");
  // uploads show whatever their run: SNS autoreduction publishes a run's plots after it ended
  const shown = (f) => f.origin === "upload" || !f.run_number || !currentRun || f.run_number === currentRun;
  const list = { figures: all.figures.filter(shown) };
  const slots = new Set(list.figures.map((f) => f.slot));
  for (const [slot, entry] of cards) {
    if (!slots.has(slot)) {
      if (window.Plotly) entry.card.querySelectorAll(".plot").forEach((p) => Plotly.purge(p));
      entry.card.remove();
      cards.delete(slot);
    }
  }
  list.figures.forEach((summary, index) => {
    let entry = cards.get(summary.slot);
    if (!entry) {
      entry = { card: figureCard(summary), id: null };
      cards.set(summary.slot, entry);
    }
    if (container.children[index] !== entry.card) container.insertBefore(entry.card, container.children[index] || null);
    if (entry.id !== summary.id) {
      entry.id = summary.id;
      fillFigure(entry.card, summary);
    }
  });
  const earlier = all.figures.length - list.figures.length;
  const count = list.figures.length ? `(${list.figures.length})` : "(none yet)";
  setText("figure-count", earlier ? `${count}, ${earlier} of other runs not shown` : count);
}

function connect() {
  const connection = $("connection");
  const source = new EventSource("events");
  source.addEventListener("open", () => {
    document.body.classList.remove("stale");
    connection.dataset.state = "live";
    connection.textContent = "live";
  });
  source.addEventListener("error", () => {
    document.body.classList.add("stale");
    connection.dataset.state = "lost";
    connection.textContent = "connection lost, reconnecting…";
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000); // the browser gave up: start again
  });
  source.addEventListener("page", (event) => renderPage(JSON.parse(event.data)));
  source.addEventListener("figures", (event) => renderFigures(JSON.parse(event.data)));
}

document.addEventListener("DOMContentLoaded", connect);
