// Line charts drawn as inline SVG: one line per series, a time axis, a value axis.
// lineChart(element, {series: [{name, points: [[unix seconds, value], ...]}], unit, from, to})
// A null value is a gap: the line breaks there.
"use strict";

const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#1098ad", "#c2255c", "#5c940d"];
const SVGNS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceStep(span, ticks) {
  const raw = span / Math.max(1, ticks);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function formatValue(v, unit) {
  if (unit === "s") {
    if (v === 0) return "0";
    if (v < 0.001) return (v * 1e6).toFixed(0) + " µs";
    if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms";
    return v.toFixed(v < 10 ? 1 : 0) + " s";
  }
  if (v >= 1000) return (v / 1000).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 1 : 0);
}

function formatClock(t, span) {
  const d = new Date(t * 1000);
  const hh = String(d.getHours()).padStart(2, "0"), mm = String(d.getMinutes()).padStart(2, "0");
  return span > 2 * 86400 ? `${d.getMonth() + 1}/${d.getDate()} ${hh}:${mm}` : `${hh}:${mm}`;
}

// The runs of points with a value: a point whose value is null (no data: the node
// was down, or nothing finished) breaks the line, so a gap is never drawn across.
function runs(points) {
  const out = [];
  let cur = [];
  for (const p of points) {
    if (p[1] === null || p[1] === undefined) {
      if (cur.length) out.push(cur);
      cur = [];
    } else {
      cur.push(p);
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

function lineChart(container, opts) {
  const W = 560, H = 220, L = 56, R = 12, T = 12, B = 40;
  const series = opts.series || [];
  const from = opts.from, to = opts.to;
  let max = 0;
  for (const s of series) for (const p of s.points) if (p[1] !== null && p[1] > max) max = p[1];
  if (max <= 0) max = opts.unit === "s" ? 0.01 : 1;
  const step = niceStep(max, 4);
  max = Math.ceil(max / step) * step;
  const x = t => L + (W - L - R) * (t - from) / Math.max(1, to - from);
  const y = v => T + (H - T - B) * (1 - v / max);
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, class: "linechart", role: "img",
                            "aria-label": opts.label || "chart"});
  for (let v = 0; v <= max + 1e-12; v += step) {
    svg.appendChild(svgEl("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "gridline"}));
    svg.appendChild(svgEl("text", {x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end"},
                          formatValue(v, opts.unit)));
  }
  const tstep = niceStep(to - from, 5);
  for (let t = Math.ceil(from / tstep) * tstep; t <= to; t += tstep) {
    svg.appendChild(svgEl("line", {x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, class: "tick"}));
    svg.appendChild(svgEl("text", {x: x(t), y: H - B + 16, class: "axis", "text-anchor": "middle"},
                          formatClock(t, to - from)));
  }
  svg.appendChild(svgEl("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "baseline"}));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const segs = runs(s.points.filter(p => p[0] >= from && p[0] <= to));
    const d = segs.filter(g => g.length > 1).map(
      g => g.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("")).join("");
    if (d) {
      svg.appendChild(svgEl("path", {d, stroke: color, fill: "none", "stroke-width": 2,
                                     class: "series", "data-node": s.name}));
    }
    for (const g of segs.filter(g => g.length === 1)) {     // a point alone between gaps
      svg.appendChild(svgEl("circle", {cx: x(g[0][0]), cy: y(g[0][1]), r: 3, fill: color,
                                       "data-node": s.name}));
    }
    const lx = L + 8 + (i % 4) * 125, ly = H - 8 - Math.floor(i / 4) * 14;
    svg.appendChild(svgEl("rect", {x: lx, y: ly - 8, width: 10, height: 10, fill: color}));
    svg.appendChild(svgEl("text", {x: lx + 14, y: ly + 1, class: "legend"}, s.name));
  });
  if (!series.some(s => s.points.some(p => p[1]))) {
    svg.appendChild(svgEl("text", {x: (L + W) / 2, y: H / 2, class: "nodata", "text-anchor": "middle"},
                          opts.empty || "no tasks finished in this window"));
  }
  container.replaceChildren(svg);
}

window.lineChart = lineChart;
window.formatValue = formatValue;
