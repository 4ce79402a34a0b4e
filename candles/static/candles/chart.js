// The live candlestick chart of /chart/: candles and volume of one subscribed symbol and bar, live from the
// API, older history loaded while scrolling left, gaps between stored candles marked.
//
// Subscriptions and timeframes fill the selectors and /data pages draw the chart (REST, /api/v1). Once the
// newest page is drawn, the chart follows the live stream (WebSocket, /api/v1/stream on the page's own host):
// it subscribes to the shown symbol and bar from the newest candle it drew, and every candle of every data
// frame updates the chart. A dropped connection is opened again with backoff and resumes from the newest
// candle held, so nothing is missed; the stream is closed while the tab is hidden and resumed when it is
// shown. Prices and volumes arrive as exact decimal strings; they are parsed to numbers only to draw, and
// the legend shows the strings.

import {
  CandlestickSeries,
  ColorType,
  CrosshairMode,
  HistogramSeries,
  LineSeries,
  createChart,
  createSeriesMarkers,
} from "lightweight-charts";

import { ApiClient, ApiError } from "./api.js";
import { barStepper, decimalPlaces, findGaps } from "./bars.js";

const PAGE_SIZE = 1000;
// Older candles are fetched when fewer than this many loaded bars remain left of the visible range.
const HISTORY_MARGIN_BARS = 50;
// Marked gaps are asked for again now and then: backfill that ran while the stream was away (before the
// candle it resumed from) is not pushed again.
const GAP_RECHECK_MS = 30_000;
const GAP_RECHECK_MAX = 3;
const CATALOGUE_REFRESH_MS = 60_000;
// Backoff of REST retries and stream reconnects: 1 s, doubling, at most 30 s (reconnects with jitter).
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;
// A quiet stream is asked `ping` now and then; one that has said nothing for STREAM_DEAD_MS is given up.
const STREAM_CHECK_MS = 10_000;
const STREAM_PING_AFTER_MS = 20_000;
const STREAM_DEAD_MS = 45_000;
// A connection that was accepted and lived this long (or brought candles) resets the reconnect backoff.
const STREAM_HEALTHY_MS = 10_000;
// A resubscription starts at the oldest of this many newest candles that is still open, if any is.
const RESUME_LOOKBACK = 10;
// Close codes of the stream (candles/stream/protocol.py) that waiting does not cure: not allowed to read,
// no stream at that address. The page tries again when told (Retry now, the tab shown again).
const STREAM_REFUSED_CLOSE_CODES = new Set([4401, 4404]);
// Errors about the series itself, as the REST API reports them: the chart cannot show it at all.
const SERIES_ERROR_CODES = new Set(["SYMBOL_NOT_FOUND", "INVALID_TIMEFRAMES"]);
// Sleeps that only a wake-up ends (the tab shown again, Retry now).
const UNTIL_WOKEN_MS = 24 * 3_600_000;

const COLORS = {
  background: "#131722",
  text: "#b2b5be",
  grid: "rgba(42, 46, 57, 0.6)",
  up: "#26a69a",
  down: "#ef5350",
  upVolume: "rgba(38, 166, 154, 0.45)",
  downVolume: "rgba(239, 83, 80, 0.45)",
  gap: "#f5a524",
  gapBand: "rgba(245, 165, 36, 0.28)",
  mark: "#ce93d8",
  index: "#4fc3f7",
};

// Overlays of a derivative's chart: close-price lines of its mark price and of its index (docs/chart.md).
const OVERLAY_KINDS = ["mark", "index"];
const OVERLAY_LABELS = { mark: "mark", index: "index" };

// ---- candles held by the page ------------------------------------------------------------------------

/** The loaded candles of one symbol and bar, keyed by open time (epoch ms), kept sorted. */
class CandleStore {
  constructor() {
    this.rows = new Map();
    this.times = [];
  }

  get size() {
    return this.times.length;
  }

  get first() {
    return this.times[0];
  }

  get last() {
    return this.times[this.times.length - 1];
  }

  get lastRow() {
    return this.rows.get(this.last) ?? null;
  }

  /**
   * Takes rows from the API and says how the chart must follow: "none" (nothing changed), "update" (only
   * the last candle changed or candles were added after it: `rows` to pass to series.update in order) or
   * "reset" (something changed before the last candle: set all data again). `added` tells whether new
   * open times arrived, which is when gaps can change.
   */
  merge(rows) {
    const last = this.last;
    const changed = [];
    let before = false;
    let added = false;
    for (const row of rows) {
      const ms = row.open_time_ms;
      const known = this.rows.get(ms);
      if (known && sameCandle(known, row)) continue;
      if (!known) added = true;
      if (last !== undefined && ms < last) before = true;
      this.rows.set(ms, row);
      changed.push(row);
    }
    if (changed.length === 0) return { mode: "none", rows: [], added: false };
    if (added) {
      if (!before && changed.every((row, i) => i === 0 || row.open_time_ms > changed[i - 1].open_time_ms)) {
        for (const row of changed) if (row.open_time_ms !== last) this.times.push(row.open_time_ms);
      } else {
        this.times = [...this.rows.keys()].sort((a, b) => a - b);
      }
    }
    // A first load or a long catch-up is drawn in one go; series.update is for a few candles at the end.
    const reset = before || last === undefined || changed.length > 50;
    return { mode: reset ? "reset" : "update", rows: changed, added };
  }

  all() {
    return this.times.map((ms) => this.rows.get(ms));
  }
}

function sameCandle(a, b) {
  return a.open === b.open && a.high === b.high && a.low === b.low && a.close === b.close
    && a.volume === b.volume && a.confirm === b.confirm;
}

// lightweight-charts takes UTC timestamps in seconds.
const chartTime = (ms) => ms / 1000;

function candleBar(row) {
  return {
    time: chartTime(row.open_time_ms),
    open: parseFloat(row.open),
    high: parseFloat(row.high),
    low: parseFloat(row.low),
    close: parseFloat(row.close),
  };
}

function linePoint(row) {
  return { time: chartTime(row.open_time_ms), value: parseFloat(row.close) };
}

/** Why a bar cannot carry mark or index candles (null when it can): OKX's start at 1m. */
function overlayBarProblem(timeframe) {
  const seconds = Number(timeframe?.seconds ?? 0);
  if (seconds > 0 && seconds < 60) {
    return `OKX has no ${timeframe.code} mark-price or index candles: they start at 1m.`;
  }
  return null;
}

/** The index a derivative follows (BTC-USDT for BTC-USDT-SWAP): the twin of candles/chart.py's index_id_of. */
function indexIdOf(instrument) {
  if (instrument.base_ccy && instrument.quote_ccy) return `${instrument.base_ccy}-${instrument.quote_ccy}`;
  if (instrument.inst_family) return instrument.inst_family;
  return instrument.symbol.split("-").slice(0, 2).join("-");
}

function volumeBar(row) {
  const rising = parseFloat(row.close) >= parseFloat(row.open);
  return {
    time: chartTime(row.open_time_ms),
    value: parseFloat(row.volume),
    color: rising ? COLORS.upVolume : COLORS.downVolume,
  };
}

// ---- the chart ------------------------------------------------------------------------------------------

/** The chart widget: candle, volume and gap series, markers, legend. Knows nothing of the API. */
class CandleChart {
  constructor(container, legend) {
    this.legend = legend;
    this.chart = createChart(container, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: COLORS.background },
        textColor: COLORS.text,
        fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      },
      grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
      crosshair: { mode: CrosshairMode.Normal },
      rightPriceScale: { borderColor: "#2a2e39", scaleMargins: { top: 0.08, bottom: 0.25 } },
      timeScale: { borderColor: "#2a2e39", timeVisible: true, secondsVisible: false, rightOffset: 6 },
    });
    // Gaps are drawn first, as full-height bands behind the candles, on a hidden scale of their own.
    this.gapSeries = this.chart.addSeries(HistogramSeries, {
      priceScaleId: "gaps",
      color: COLORS.gapBand,
      base: 0,
      lastValueVisible: false,
      priceLineVisible: false,
      autoscaleInfoProvider: () => ({ priceRange: { minValue: 0, maxValue: 1 } }),
    });
    this.chart.priceScale("gaps").applyOptions({ visible: false, scaleMargins: { top: 0, bottom: 0 } });
    this.volumeSeries = this.chart.addSeries(HistogramSeries, {
      priceScaleId: "volume",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.chart.priceScale("volume").applyOptions({ visible: false, scaleMargins: { top: 0.8, bottom: 0 } });
    this.candleSeries = this.chart.addSeries(CandlestickSeries, {
      upColor: COLORS.up,
      downColor: COLORS.down,
      borderVisible: false,
      wickUpColor: COLORS.up,
      wickDownColor: COLORS.down,
    });
    this.markers = createSeriesMarkers(this.candleSeries, []);
    // Mark and index closes as lines over the candles, on the candles' price scale; hidden until turned on.
    this.overlays = {};
    for (const kind of OVERLAY_KINDS) {
      const series = this.chart.addSeries(LineSeries, {
        color: COLORS[kind],
        lineWidth: 2,
        priceLineVisible: false,
        lastValueVisible: true,
        crosshairMarkerVisible: false,
        visible: false,
      });
      this.overlays[kind] = { series, store: new CandleStore(), on: false, symbol: null };
    }
    this.gaps = [];
    this.store = new CandleStore();
    this.title = "";
    this.chart.subscribeCrosshairMove((param) => this.showLegend(param.time));
  }

  /** Empties the chart for another symbol or bar. */
  reset(title, timeframe) {
    this.store = new CandleStore();
    this.title = title;
    this.stepper = barStepper(timeframe);
    this.gaps = [];
    this.candleSeries.setData([]);
    this.volumeSeries.setData([]);
    this.gapSeries.setData([]);
    this.markers.setMarkers([]);
    for (const kind of OVERLAY_KINDS) this.clearOverlay(kind);
    const seconds = Number(timeframe?.seconds ?? 0);
    this.chart.applyOptions({
      timeScale: { timeVisible: seconds === 0 || seconds < 86_400 * 7, secondsVisible: seconds > 0 && seconds < 60 },
    });
    this.precisionSet = false;
    this.showLegend(null);
  }

  merge(rows) {
    if (rows.length === 0) return;
    const { mode, rows: changed, added } = this.store.merge(rows);
    if (mode === "none") return;
    if (!this.precisionSet) this.setPrecision(changed);
    if (mode === "reset") {
      const all = this.store.all();
      this.candleSeries.setData(all.map(candleBar));
      this.volumeSeries.setData(all.map(volumeBar));
    } else {
      for (const row of changed) {
        this.candleSeries.update(candleBar(row));
        this.volumeSeries.update(volumeBar(row));
      }
    }
    if (added) this.markGaps();
    this.showLegend(null);
  }

  // The price axis shows as many decimals as the exchange's strings carry (tick sizes differ by 10^8).
  setPrecision(rows) {
    let precision = 0;
    for (const row of rows.slice(-500)) {
      for (const field of ["open", "high", "low", "close"]) precision = Math.max(precision, decimalPlaces(row[field]));
    }
    precision = Math.min(precision, 12);
    const priceFormat = { type: "price", precision, minMove: Number((10 ** -precision).toFixed(precision)) };
    this.candleSeries.applyOptions({ priceFormat });
    for (const kind of OVERLAY_KINDS) this.overlays[kind].series.applyOptions({ priceFormat });
    this.precisionSet = true;
  }

  /** Shows the `kind` line (mark or index) of `symbol`, empty until candles are merged into it. */
  showOverlay(kind, symbol) {
    const overlay = this.overlays[kind];
    overlay.on = true;
    overlay.symbol = symbol;
    overlay.series.applyOptions({ visible: true });
    this.showLegend(null);
  }

  clearOverlay(kind) {
    const overlay = this.overlays[kind];
    overlay.store = new CandleStore();
    overlay.on = false;
    overlay.symbol = null;
    overlay.series.setData([]);
    overlay.series.applyOptions({ visible: false });
    this.showLegend(null);
  }

  /** Candles of the `kind` series (mark or index): their closes update its line. Ignored while it is off. */
  mergeOverlay(kind, rows) {
    const overlay = this.overlays[kind];
    if (!overlay.on || rows.length === 0) return;
    const { mode, rows: changed } = overlay.store.merge(rows);
    if (mode === "none") return;
    if (mode === "reset") {
      overlay.series.setData(overlay.store.all().map(linePoint));
    } else {
      for (const row of changed) overlay.series.update(linePoint(row));
    }
    this.showLegend(null);
  }

  // A gap is a run of open times with no stored candle. The time axis of lightweight-charts has one slot
  // per data point and no notion of missing bars, so without a mark a gap is invisible. Each gap gets one
  // empty slot at its first missing open time, shaded from top to bottom by the gap series, and a marker
  // above the candle that ends it, saying how many bars are missing.
  markGaps() {
    this.gaps = findGaps(this.store.times, this.stepper);
    this.gapSeries.setData(this.gaps.map((gap) => ({ time: chartTime(gap.first), value: 1 })));
    this.markers.setMarkers(this.gaps.map((gap) => ({
      time: chartTime(gap.before),
      position: "aboveBar",
      shape: "arrowDown",
      color: COLORS.gap,
      text: `gap: ${gap.missing} missing`,
    })));
  }

  /** How many loaded bars lie left of the visible range (null when nothing is drawn). */
  barsBeforeView() {
    const range = this.chart.timeScale().getVisibleLogicalRange();
    if (!range) return null;
    const info = this.candleSeries.barsInLogicalRange(range);
    return info ? info.barsBefore : null;
  }

  showLegend(time) {
    const hovered = time === undefined || time === null ? null : time * 1000;
    const gap = hovered === null ? null : this.gaps.find((item) => item.first === hovered);
    const row = (hovered !== null && this.store.rows.get(hovered)) || this.store.lastRow;
    const parts = [`<strong>${escapeHtml(this.title)}</strong>`, "<span class=\"muted\">UTC</span>"];
    if (gap) {
      parts.push(`<span class="gap">no candles from ${escapeHtml(formatTime(gap.first))} to ${escapeHtml(formatTime(gap.last))}
        (${gap.missing} missing)</span>`);
    } else if (row) {
      const direction = parseFloat(row.close) >= parseFloat(row.open) ? "up" : "down";
      parts.push(`<span class="muted">${escapeHtml(formatTime(row.open_time_ms))}</span>`);
      for (const [label, field] of [["O", "open"], ["H", "high"], ["L", "low"], ["C", "close"], ["V", "volume"]]) {
        parts.push(`<span>${label}&nbsp;<b class="${direction}">${escapeHtml(row[field])}</b></span>`);
      }
      if (!row.confirm) parts.push("<span class=\"open-candle\">open</span>");
    }
    // With an overlay on, the legend names the three colours, with the close of each line under the cursor
    // (its latest otherwise).
    const shown = OVERLAY_KINDS.filter((kind) => this.overlays[kind].on);
    if (shown.length) {
      parts.push(`<span class="series-trade"><i class="swatch" style="background:${COLORS.up}"></i>trade</span>`);
      for (const kind of shown) {
        const overlay = this.overlays[kind];
        const line = (hovered !== null && overlay.store.rows.get(hovered)) || overlay.store.lastRow;
        const close = line ? escapeHtml(line.close) : "…";
        parts.push(`<span class="series-${kind}" data-close="${line ? escapeHtml(line.close) : ""}">`
          + `<i class="swatch" style="background:${COLORS[kind]}"></i>${OVERLAY_LABELS[kind]} `
          + `${escapeHtml(overlay.symbol ?? "")}&nbsp;<b>${close}</b></span>`);
      }
    }
    this.legend.innerHTML = parts.join(" ");
  }
}

function formatTime(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace(/(:00)?\.000Z$/, "");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- page state: selectors, URL, banner, notices ----------------------------------------------------

const sleepers = new Set();

/** Waits `ms`, or less when woken (tab shown again, retry pressed) or aborted. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      sleepers.delete(done);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    sleepers.add(done);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function wakeSleepers() {
  for (const wake of [...sleepers]) wake();
}

class Page {
  constructor(root) {
    this.api = new ApiClient(root.dataset.apiRoot);
    this.streamUrl = streamUrl(this.api.root);
    this.adminUrl = root.dataset.adminUrl;
    this.symbolSelect = root.querySelector("#symbol");
    this.timeframeSelect = root.querySelector("#timeframe");
    this.status = root.querySelector("#status");
    this.banner = root.querySelector("#banner");
    this.notice = root.querySelector("#notice");
    this.chart = new CandleChart(root.querySelector("#chart"), root.querySelector("#legend"));
    this.pairs = new Map(); // symbol → [{code, paused}] in the bars' display order
    this.timeframes = new Map(); // code → row of /timeframes
    this.session = null;
    this.state = "loading";
    // The overlay toggles (labels holding a checkbox), what the URL asks for, and what each symbol has:
    // symbol → {mark: bool, index: index id or null}, seeded by the view for the symbol of the query string.
    this.overlayToggles = Object.fromEntries(OVERLAY_KINDS.map((kind) => [kind, root.querySelector(`#overlay-${kind}`)]));
    this.overlayWanted = { mark: false, index: false };
    this.overlayInfo = new Map();
    const seeded = document.getElementById("chart-overlays");
    if (seeded) {
      const info = JSON.parse(seeded.textContent);
      this.overlayInfo.set(info.symbol, { mark: Boolean(info.mark), index: info.index ?? null });
    }
  }

  /** What overlays `symbol` has: from the view, else from GET /instruments (its `prices`, and its index's). */
  async overlaysOf(symbol, signal) {
    if (this.overlayInfo.has(symbol)) return this.overlayInfo.get(symbol);
    const found = await this.api.getAll("instruments", { search: symbol, limit: 100 }, { signal });
    const instrument = found.find((item) => item.symbol === symbol && item.type !== "INDEX");
    const info = { mark: false, index: null };
    if (instrument && ["SWAP", "FUTURES", "OPTION"].includes(instrument.type)) {
      info.mark = (instrument.prices ?? []).includes("mark");
      const indexId = indexIdOf(instrument);
      const indices = await this.api.getAll("instruments", { type: "INDEX", search: indexId, limit: 100 }, { signal });
      if (indices.some((item) => item.symbol === indexId && (item.prices ?? []).includes("index"))) info.index = indexId;
    }
    this.overlayInfo.set(symbol, info);
    return info;
  }

  /** Shows the toggles `info` allows, disabled with the reason when the bar cannot have them. */
  showOverlayToggles(info, timeframe) {
    const problem = overlayBarProblem(this.timeframes.get(timeframe) ?? { code: timeframe });
    for (const kind of OVERLAY_KINDS) {
      const toggle = this.overlayToggles[kind];
      if (!toggle) continue;
      const input = toggle.querySelector("input");
      const available = Boolean(info?.[kind]);
      toggle.hidden = !available;
      input.disabled = !available || problem !== null;
      input.checked = available && problem === null && this.overlayWanted[kind];
      toggle.classList.toggle("disabled", problem !== null);
      toggle.title = problem ?? (kind === "mark" ? "Mark-price closes of this symbol, as a line"
        : `Closes of the index ${info?.index ?? ""}, as a line`);
    }
  }

  async start() {
    this.symbolSelect.addEventListener("change", () => this.choose(this.symbolSelect.value, null));
    this.timeframeSelect.addEventListener("change", () => {
      this.choose(this.symbolSelect.value, this.timeframeSelect.value);
    });
    window.addEventListener("popstate", () => this.openFromUrl());
    for (const kind of OVERLAY_KINDS) {
      this.overlayToggles[kind]?.querySelector("input").addEventListener("change", (event) => {
        this.overlayWanted[kind] = event.target.checked;
        // Remembered in the address like the symbol and bar (without a history entry of its own).
        const url = new URL(window.location.href);
        if (event.target.checked) url.searchParams.set(kind, "1");
        else url.searchParams.delete(kind);
        window.history.replaceState(null, "", url);
        this.session?.setOverlay(kind, event.target.checked);
      });
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) this.session?.pause();
      else wakeSleepers();
      this.showState();
    });
    // Back online: whatever waits to retry tries now.
    window.addEventListener("online", () => wakeSleepers());
    this.banner.addEventListener("click", (event) => {
      if (event.target.matches("button")) wakeSleepers();
    });
    this.chart.chart.timeScale().subscribeVisibleLogicalRangeChange(() => this.session?.viewMoved());

    try {
      await retrying(this, new AbortController().signal, async () => {
        const [subscriptions, timeframes] = await Promise.all([this.api.subscriptions(), this.api.timeframes()]);
        this.setCatalogue(subscriptions, timeframes);
      });
    } catch (error) {
      this.fail(error, {});
      return;
    }
    this.openFromUrl();
    setInterval(() => this.refreshCatalogue(), CATALOGUE_REFRESH_MS);
  }

  // Subscriptions added or paused elsewhere show up in the lists without a reload. Failures are left to
  // the session, which reports outages of the API and of the stream.
  async refreshCatalogue() {
    if (document.hidden) return;
    try {
      const [subscriptions, timeframes] = await Promise.all([this.api.subscriptions(), this.api.timeframes()]);
      this.setCatalogue(subscriptions, timeframes);
    } catch {
      return;
    }
    if (this.session) {
      this.fillSelectors(this.session.symbol, this.session.timeframe);
    } else if (this.pairs.size) {
      this.openFromUrl();
    }
  }

  /** Says why nothing can be shown, for errors that waiting does not fix. */
  fail(error, { symbol, timeframe }) {
    this.setState("error");
    if (error instanceof ApiError && error.isAuth) {
      const here = window.location.pathname + window.location.search;
      const login = `${this.adminUrl}login/?next=${encodeURIComponent(here)}`;
      this.showNotice("The API needs you to sign in.",
        `Reading candles requires an account with staff access here: <a href="${escapeHtml(login)}">sign in</a>.`);
    } else if (error instanceof ApiError && error.code === "SYMBOL_NOT_FOUND") {
      this.showNotice(`Symbol ${symbol} not found.`,
        "It is not an instrument this service knows. Pick a subscribed symbol above.");
    } else if (error instanceof ApiError && error.code === "INVALID_TIMEFRAMES") {
      this.showNotice(`Timeframe ${timeframe} does not exist.`,
        "Bars are case-sensitive: <code>1m</code> is a minute, <code>1M</code> a month.");
    } else {
      this.showNotice("The chart cannot be shown.", escapeHtml(error.message));
      console.warn("chart: giving up", symbol, timeframe, error);
    }
  }

  setCatalogue(subscriptions, timeframes) {
    this.timeframes.clear();
    timeframes.forEach((row, order) => this.timeframes.set(row.code, { ...row, order }));
    this.pairs.clear();
    for (const { symbol, timeframe, is_active: active } of subscriptions) {
      if (!this.pairs.has(symbol)) this.pairs.set(symbol, []);
      this.pairs.get(symbol).push({ code: timeframe, paused: !active });
    }
    const order = (code) => this.timeframes.get(code)?.order ?? Number.MAX_SAFE_INTEGER;
    for (const list of this.pairs.values()) list.sort((a, b) => order(a.code) - order(b.code));
  }

  openFromUrl() {
    const params = new URLSearchParams(window.location.search);
    for (const kind of OVERLAY_KINDS) this.overlayWanted[kind] = ["1", "true", "on"].includes(params.get(kind) ?? "");
    this.choose(params.get("symbol"), params.get("timeframe"), { push: false });
  }

  /** Shows `symbol` in `timeframe`, filling in what is missing from the subscriptions. */
  choose(symbol, timeframe, { push = true } = {}) {
    if (!symbol) symbol = this.pairs.keys().next().value ?? null;
    if (!symbol) {
      this.fillSelectors(null, null);
      this.open(null, null);
      this.showNotice("No subscriptions yet.", `Subscribe to a symbol and its bars in the <a href="${this.adminUrl}">admin</a>
        or with <code>POST /api/v1/subscribe</code>; the chart shows them here as candles arrive.`);
      this.setState("empty");
      return;
    }
    const subscribed = this.pairs.get(symbol) ?? [];
    if (!timeframe) timeframe = subscribed[0]?.code ?? this.timeframes.keys().next().value ?? "1m";
    this.fillSelectors(symbol, timeframe);
    const url = new URL(window.location.href);
    url.searchParams.set("symbol", symbol);
    url.searchParams.set("timeframe", timeframe);
    if (url.href !== window.location.href) {
      window.history[push ? "pushState" : "replaceState"](null, "", url);
    }
    this.open(symbol, timeframe);
  }

  // A shared link may name a pair that is not subscribed (any more): it stays selectable and its stored
  // candles are shown, labelled as such.
  fillSelectors(symbol, timeframe) {
    const symbols = [...this.pairs.keys()];
    if (symbol && !this.pairs.has(symbol)) symbols.push(symbol);
    this.symbolSelect.replaceChildren(...symbols.map((name) => {
      return new Option(this.pairs.has(name) ? name : `${name} (not subscribed)`, name, false, name === symbol);
    }));
    const options = [...(this.pairs.get(symbol) ?? [])];
    if (timeframe && !options.some((item) => item.code === timeframe)) options.push({ code: timeframe, missing: true });
    this.timeframeSelect.replaceChildren(...options.map((item) => {
      const label = item.missing ? `${item.code} (not subscribed)` : item.paused ? `${item.code} (paused)` : item.code;
      return new Option(label, item.code, false, item.code === timeframe);
    }));
    this.symbolSelect.disabled = symbols.length === 0;
    this.timeframeSelect.disabled = options.length === 0;
  }

  open(symbol, timeframe) {
    this.session?.close();
    this.session = null;
    this.hideNotice();
    this.hideBanner();
    this.showOverlayToggles(symbol ? this.overlayInfo.get(symbol) ?? null : null, timeframe);
    if (!symbol) {
      this.chart.reset("", null);
      return;
    }
    document.title = `${symbol} ${timeframe} · okx-candles`;
    this.chart.reset(`${symbol} · ${timeframe}`, this.timeframes.get(timeframe));
    this.session = new Session(this, symbol, timeframe);
    this.session.run();
  }

  /** `detail` (why it is reconnecting or in error, e.g. the server's message) becomes the pill's tooltip. */
  setState(state, detail = "") {
    this.state = state;
    this.stateDetail = detail;
    this.showState();
  }

  showState() {
    const state = document.hidden && this.state === "live" ? "paused" : this.state;
    const labels = {
      loading: "loading", live: "live", paused: "paused (tab hidden)", retrying: "reconnecting",
      empty: "no data", error: "error",
    };
    this.status.dataset.state = state;
    this.status.textContent = labels[state] ?? state;
    this.status.title = state === this.state ? this.stateDetail ?? "" : "";
  }

  /** A red banner with a Retry now button; `retryInMs` null: no automatic retry is due. */
  showBanner(message, retryInMs) {
    const seconds = Math.max(1, Math.round((retryInMs ?? 0) / 1000));
    const when = retryInMs === null ? "" : ` Retrying in ${seconds} s.`;
    // Messages of the server do not always end a sentence.
    const text = /[.!?]$/.test(message.trim()) ? message.trim() : `${message.trim()}.`;
    this.banner.innerHTML = `${escapeHtml(text)}${when}
      <button type="button">Retry now</button>`;
    this.banner.hidden = false;
  }

  hideBanner() {
    this.banner.hidden = true;
  }

  showNotice(title, html) {
    this.notice.innerHTML = `<h2>${escapeHtml(title)}</h2><p>${html}</p>`;
    this.notice.hidden = false;
  }

  hideNotice() {
    this.notice.hidden = true;
  }
}

/**
 * Runs `work` until it succeeds; while the API is unreachable (or busy) a banner says so and it is tried
 * again with exponential backoff. Errors that waiting cannot fix are thrown.
 */
async function retrying(page, signal, work) {
  let delay = RETRY_FIRST_MS;
  for (;;) {
    try {
      const result = await work();
      page.hideBanner();
      return result;
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") throw new DOMException("aborted", "AbortError");
      if (!(error instanceof ApiError) || !error.retryable) throw error;
      const wait = Math.max(error.retryAfterMs, delay);
      page.setState("retrying");
      page.showBanner(error.message, wait);
      await sleep(wait, signal);
      if (signal.aborted) throw new DOMException("aborted", "AbortError");
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }
}

// ---- the live stream -------------------------------------------------------------------------------------

/** The stream's address on the API's host: ws://host/api/v1/stream for http://host/api/v1/ (wss: under https:). */
function streamUrl(apiRoot) {
  const url = new URL("stream", apiRoot);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** The wait before reconnecting after `failures` failed attempts in a row: 1 s doubling to 30 s, jittered. */
function reconnectDelay(failures) {
  const ceiling = Math.min(RETRY_FIRST_MS * 2 ** failures, RETRY_MAX_MS);
  // Half of it fixed, half random: pages that lost the same server do not all come back at the same moment.
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Why a connection ended, in words, from its close event. */
function closeReason(event, opened) {
  if (event.code === 1006) {
    return opened ? "The connection to the live stream was lost." : "The live stream cannot be reached.";
  }
  return `The live stream closed the connection (${event.code}${event.reason ? `: ${event.reason}` : ""}).`;
}

// ---- one symbol and bar on screen ---------------------------------------------------------------------

/**
 * Loads and follows one symbol and bar until closed; a new selection starts a new session, with a stream
 * connection of its own, so nothing of the previous selection can reach the chart.
 */
class Session {
  constructor(page, symbol, timeframe) {
    this.page = page;
    this.api = page.api;
    this.chart = page.chart;
    this.symbol = symbol;
    this.timeframe = timeframe;
    this.abort = new AbortController();
    this.historyDone = false;
    this.loadingOlder = false;
    this.gapsCheckedAt = performance.now();
    // The stream: "off" (not yet), "connecting", "live" (subscribed), "reconnecting", "refused", "paused".
    this.live = "off";
    this.connection = null;
    // What overlays the symbol has ({mark, index}), once known; which are on, and their last problem.
    this.overlayInfo = null;
    this.overlayOn = { mark: false, index: false };
    this.overlayError = { mark: null, index: null };
  }

  /** The series of an overlay: {symbol, timeframe, price}; the index line reads the index's own id. */
  overlaySeries(kind) {
    return { symbol: kind === "mark" ? this.symbol : this.overlayInfo?.index, timeframe: this.timeframe, price: kind };
  }

  /** The overlay a stream arg names, or null (the chart's own series, or one not shown). */
  overlayOf(arg) {
    for (const kind of OVERLAY_KINDS) {
      if (!this.overlayOn[kind] || arg.price !== kind) continue;
      const series = this.overlaySeries(kind);
      if (arg.symbol === series.symbol && arg.timeframe === series.timeframe) return kind;
    }
    return null;
  }

  /** Learns what overlays the symbol has, shows their toggles, and turns on those the URL asks for. */
  async setUpOverlays() {
    try {
      this.overlayInfo = await this.page.overlaysOf(this.symbol, this.signal);
    } catch (error) {
      if (error.name === "AbortError" || this.signal.aborted) throw error;
      console.warn("chart: the overlays of", this.symbol, "are unknown", error);
      this.overlayInfo = { mark: false, index: null };
    }
    if (this.signal.aborted) return;
    this.page.showOverlayToggles(this.overlayInfo, this.timeframe);
    for (const kind of OVERLAY_KINDS) {
      if (this.page.overlayWanted[kind]) await this.setOverlay(kind, true);
    }
  }

  /**
   * Turns an overlay on (its history over the range of candles loaded, then its live updates on the chart's
   * own stream connection) or off (its line cleared, unsubscribed).
   */
  async setOverlay(kind, on) {
    if (!this.overlayInfo) return;
    const available = kind === "mark" ? this.overlayInfo.mark : Boolean(this.overlayInfo.index);
    const problem = overlayBarProblem(this.page.timeframes.get(this.timeframe) ?? { code: this.timeframe });
    const socket = this.connection?.opened ? this.connection.socket : null;
    if (!on || !available || problem) {
      if (!this.overlayOn[kind]) return;
      this.overlayOn[kind] = false;
      this.chart.clearOverlay(kind);
      if (socket?.readyState === WebSocket.OPEN) {
        const { symbol, timeframe, price } = this.overlaySeries(kind);
        socket.send(JSON.stringify({ op: "unsubscribe", args: [{ symbol, timeframe, price }] }));
      }
      return;
    }
    if (this.overlayOn[kind]) return;
    this.overlayOn[kind] = true;
    this.overlayError[kind] = null;
    this.chart.showOverlay(kind, this.overlaySeries(kind).symbol);
    try {
      await this.guard(() => this.loadOverlay(kind, this.chart.store.first, null));
    } catch (error) {
      if (error.name === "AbortError" || this.signal.aborted) throw error;
      this.overlayError[kind] = error.message;
      console.warn("chart: the", kind, "overlay could not be loaded", error);
      return;
    }
    // A connection already open takes the overlay too, from the newest candle loaded (subscribing again when
    // its first subscribe carried it already only starts it over).
    const live = this.connection?.opened ? this.connection.socket : null;
    if (this.overlayOn[kind] && live?.readyState === WebSocket.OPEN) {
      live.send(JSON.stringify({ op: "subscribe", args: [this.overlayArg(kind, this.resumeFrom())] }));
    }
  }

  /** The subscribe arg of an overlay: from its newest candle held (else `fallback`, the chart's own `since`). */
  overlayArg(kind, fallback) {
    const held = resumeFromStore(this.chart.overlays[kind].store);
    return { ...this.overlaySeries(kind), since: held || fallback };
  }

  /**
   * Overlay candles from `startMs` to `endMs` (inclusive; null: up to the newest), in pages of PAGE_SIZE
   * following `next` links, as the chart loaded its own; with no candle loaded, the newest page.
   */
  async loadOverlay(kind, startMs, endMs) {
    const { symbol, timeframe, price } = this.overlaySeries(kind);
    const options = { signal: this.signal };
    if (startMs === undefined) {
      const newest = await this.api.candles(symbol, timeframe, { price, sort: "desc", limit: PAGE_SIZE }, options);
      if (!this.signal.aborted && this.overlayOn[kind]) this.chart.mergeOverlay(kind, newest.data.slice().reverse());
      return;
    }
    let page = await this.api.candles(symbol, timeframe,
      { price, start_time: startMs, end_time: endMs ?? undefined, sort: "asc", limit: PAGE_SIZE }, options);
    for (let pages = 1; ; pages += 1) {
      if (this.signal.aborted || !this.overlayOn[kind]) return;
      this.chart.mergeOverlay(kind, page.data);
      if (!page.pagination?.next || page.data.length < PAGE_SIZE || pages >= 100) return;
      page = await this.api.page(page.pagination.next, options);
    }
  }

  get signal() {
    return this.abort.signal;
  }

  /** Ends the session: requests are aborted and the stream's connection is closed. */
  close() {
    this.abort.abort();
  }

  async run() {
    try {
      await this.guard(() => this.loadNewest());
      await this.setUpOverlays();
      this.recheckGapsNowAndThen();
      await this.follow();
    } catch (error) {
      if (error.name === "AbortError" || this.signal.aborted) return;
      this.page.fail(error, this);
    }
  }

  async guard(work) {
    await retrying(this.page, this.signal, work);
    if (this.signal.aborted) throw new DOMException("aborted", "AbortError");
    // A REST retry may have said "reconnecting": while the stream is subscribed, the chart is live.
    if (this.connection?.accepted) this.page.setState(this.chart.store.size ? "live" : "empty");
  }

  /** The newest page of candles: what the chart opens on, and what the stream continues from. */
  async loadNewest() {
    const page = await this.api.candles(this.symbol, this.timeframe, { sort: "desc", limit: PAGE_SIZE }, { signal: this.signal });
    if (this.signal.aborted) return;
    const rows = page.data.slice().reverse();
    this.chart.merge(rows);
    this.historyDone = page.data.length < PAGE_SIZE || !page.pagination.next;
    if (rows.length === 0) {
      this.page.showNotice(`No candles stored yet for ${this.symbol} ${this.timeframe}.`,
        "They appear here as soon as the collectors store them.");
      this.page.setState("empty");
    } else {
      this.page.hideNotice();
    }
  }

  /**
   * Follows the live stream until the session closes: connect, subscribe, apply what comes; when the
   * connection ends, connect again after a backoff and resume from the newest candle held. No connection
   * while the tab is hidden.
   */
  async follow() {
    let failures = 0;
    for (;;) {
      if (document.hidden) {
        // Showing the tab again wakes this sleep at once.
        this.live = "paused";
        await sleep(UNTIL_WOKEN_MS, this.signal);
        if (this.signal.aborted) return;
        continue;
      }
      this.live = "connecting";
      const outcome = await this.connect();
      if (this.signal.aborted) return;
      if (outcome.fatal) throw outcome.fatal;
      if (outcome.paused) continue;
      if (outcome.refused) {
        // Not allowed (or no stream there): trying again only when asked, or when the tab is shown again.
        this.live = "refused";
        this.page.setState("error", outcome.message);
        this.page.showBanner(`Live updates are refused: ${outcome.message}`, null);
        await sleep(UNTIL_WOKEN_MS, this.signal);
        if (this.signal.aborted) return;
        continue;
      }
      failures = outcome.healthy ? 0 : failures + 1;
      const wait = reconnectDelay(failures);
      this.live = "reconnecting";
      this.page.setState(outcome.serverError ? "error" : "retrying", outcome.message);
      // A connection that worked and dropped is opened again without alarm; the banner says so once a
      // reconnect has failed too, or when the server said what went wrong.
      if (outcome.serverError) {
        this.page.showBanner(`Live updates stopped: ${outcome.message}`, wait);
      } else if (failures > 0) {
        this.page.showBanner(outcome.message, wait);
      }
      await sleep(wait, this.signal);
      if (this.signal.aborted) return;
    }
  }

  /**
   * One connection to the stream: subscribe from `resumeFrom()` and apply every data frame of this series
   * until the socket closes, the session closes or the tab is hidden. Resolves with what ended it: {message,
   * healthy, serverError}, or {paused}, {refused, message}, {fatal: ApiError}.
   */
  connect() {
    return new Promise((resolve) => {
      if (this.signal.aborted) {
        resolve({});
        return;
      }
      let socket;
      try {
        socket = new WebSocket(this.page.streamUrl);
      } catch (error) {
        resolve({ message: `The live stream cannot be opened: ${error.message}`, healthy: false });
        return;
      }
      const since = this.resumeFrom();
      const now = performance.now();
      const connection = {
        accepted: false, candles: false, opened: false, serverError: null, startedAt: now, heardAt: now,
      };
      connection.socket = socket;
      this.connection = connection;
      let done = false;
      const finish = (outcome) => {
        if (done) return;
        done = true;
        clearInterval(watch);
        this.signal.removeEventListener("abort", onAbort);
        if (this.connection === connection) this.connection = null;
        // Nothing of this socket reaches the chart any more, whatever is still in flight.
        socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
        if (socket.readyState === WebSocket.OPEN) {
          socket.close(1000);
        } else if (socket.readyState === WebSocket.CONNECTING) {
          // Closing a socket that is still connecting makes the browser log an error: close it once open.
          socket.onopen = () => socket.close(1000);
        }
        const lived = performance.now() - connection.startedAt;
        const worked = connection.accepted && connection.serverError === null;
        resolve({
          ...outcome,
          serverError: connection.serverError !== null,
          healthy: worked && (connection.candles || lived >= STREAM_HEALTHY_MS),
        });
      };
      const onAbort = () => finish({});
      this.signal.addEventListener("abort", onAbort, { once: true });
      connection.pause = () => finish({ paused: true });
      // A connection can die without a close event (a laptop asleep, a proxy gone): silence for too long ends it.
      const watch = setInterval(() => {
        const quiet = performance.now() - connection.heardAt;
        if (quiet >= STREAM_DEAD_MS) {
          finish({ message: "The live stream stopped answering." });
        } else if (quiet >= STREAM_PING_AFTER_MS && socket.readyState === WebSocket.OPEN) {
          socket.send("ping");
        }
      }, STREAM_CHECK_MS);

      socket.onopen = () => {
        connection.opened = true;
        connection.heardAt = performance.now();
        // The overlays that are on ride on the same connection, each from its own newest candle.
        const overlays = OVERLAY_KINDS.filter((kind) => this.overlayOn[kind]).map((kind) => this.overlayArg(kind, since));
        socket.send(JSON.stringify({
          op: "subscribe", args: [{ symbol: this.symbol, timeframe: this.timeframe, since }, ...overlays],
        }));
      };
      socket.onmessage = (event) => {
        connection.heardAt = performance.now();
        const outcome = this.receive(connection, event.data);
        if (outcome) finish(outcome);
      };
      socket.onclose = (event) => {
        const message = connection.serverError ?? closeReason(event, connection.opened);
        finish(STREAM_REFUSED_CLOSE_CODES.has(event.code) ? { refused: true, message } : { message });
      };
    });
  }

  /** Handles one frame of the stream; returns how the connection ends when it must, or null. */
  receive(connection, text) {
    if (text === "pong") return null;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.warn("chart: a stream frame that is not JSON", String(text).slice(0, 200));
      return null;
    }
    // Every frame about a series names it (symbol, bar and, unless trade, price): one of another series is never
    // drawn, and a mark or index frame only ever moves its own line.
    const arg = frame.arg;
    if (arg && (arg.price ?? "trade") !== "trade") {
      const kind = this.overlayOf(arg);
      if (kind) this.receiveOverlay(kind, frame);
      return null;
    }
    if (arg && (arg.symbol !== this.symbol || arg.timeframe !== this.timeframe)) return null;
    if (frame.event === "error") {
      const message = String(frame.message || frame.error_code || "an error");
      connection.serverError = message;
      if (SERIES_ERROR_CODES.has(frame.error_code)) {
        return { fatal: new ApiError(message, { status: 404, code: frame.error_code }) };
      }
      if (frame.error_code === "AUTHENTICATION_REQUIRED") return { refused: true, message };
      // The subscription did not start, or stopped: connect again after a wait and subscribe afresh.
      return { message };
    }
    if (!arg) return null;
    if (frame.event === "subscribe") {
      connection.accepted = true;
      this.live = "live";
      this.page.hideBanner();
      this.page.setState(this.chart.store.size ? "live" : "empty");
    } else if (Array.isArray(frame.data)) {
      connection.candles = true;
      this.apply(frame.data);
    }
    return null;
  }

  /** A frame of an overlay's series: candles move its line; an error turns it off and says why on its toggle. */
  receiveOverlay(kind, frame) {
    if (frame.event === "error") {
      const message = String(frame.message || frame.error_code || "an error");
      this.overlayError[kind] = message;
      console.warn("chart: the stream refused the", kind, "overlay:", message);
      this.overlayOn[kind] = false;
      this.chart.clearOverlay(kind);
      const toggle = this.page.overlayToggles[kind];
      if (toggle) {
        toggle.querySelector("input").checked = false;
        toggle.title = message;
      }
    } else if (Array.isArray(frame.data)) {
      // As for the chart's own candles: older than the oldest loaded is left for scrolling to load.
      const first = this.chart.store.first;
      this.chart.mergeOverlay(kind, first === undefined ? frame.data : frame.data.filter((row) => row.open_time_ms >= first));
    }
  }

  /**
   * Candles of a data frame: a newer open time is appended, a known one replaced. Candles older than the
   * oldest one loaded (backfill of history not on screen) are left for scrolling to load.
   */
  apply(rows) {
    const first = this.chart.store.first;
    const shown = first === undefined ? rows : rows.filter((row) => row.open_time_ms >= first);
    if (shown.length < rows.length) this.historyDone = false;
    const wasEmpty = this.chart.store.size === 0;
    this.chart.merge(shown);
    if (wasEmpty && this.chart.store.size) {
      this.page.hideNotice();
      this.page.setState("live");
    }
  }

  /**
   * Where a (re)subscription starts: the newest candle held, or an older one of the last few that is still
   * open (its final version may have been written meanwhile); 0 when nothing is held.
   */
  resumeFrom() {
    return resumeFromStore(this.chart.store);
  }

  /** Closes the stream while the tab is hidden; `follow` connects again when it is shown. */
  pause() {
    this.connection?.pause();
  }

  async recheckGapsNowAndThen() {
    for (;;) {
      await sleep(GAP_RECHECK_MS, this.signal);
      if (this.signal.aborted) return;
      if (document.hidden || this.chart.gaps.length === 0) continue;
      if (performance.now() - this.gapsCheckedAt < GAP_RECHECK_MS) continue;
      try {
        await this.guard(() => this.recheckGaps());
      } catch (error) {
        if (error.name === "AbortError" || this.signal.aborted) return;
        console.warn("chart: gaps could not be checked again", error);
      }
    }
  }

  async recheckGaps() {
    this.gapsCheckedAt = performance.now();
    for (const gap of this.chart.gaps.slice(-GAP_RECHECK_MAX)) {
      const page = await this.api.candles(this.symbol, this.timeframe,
        { start_time: gap.first, end_time: gap.last, sort: "asc", limit: PAGE_SIZE }, { signal: this.signal });
      if (this.signal.aborted) return;
      this.chart.merge(page.data);
    }
  }

  viewMoved() {
    if (this.historyDone || this.loadingOlder || this.chart.store.size === 0) return;
    const before = this.chart.barsBeforeView();
    if (before !== null && before < HISTORY_MARGIN_BARS) this.loadOlder();
  }

  async loadOlder() {
    this.loadingOlder = true;
    try {
      await this.guard(async () => {
        const page = await this.api.candles(this.symbol, this.timeframe,
          { end_time: this.chart.store.first - 1, sort: "desc", limit: PAGE_SIZE }, { signal: this.signal });
        if (this.signal.aborted) return;
        const before = this.chart.store.first;
        this.chart.merge(page.data.slice().reverse());
        this.historyDone = page.data.length < PAGE_SIZE || !page.pagination.next;
        // The overlays that are on follow over the same stretch of time.
        const first = this.chart.store.first;
        if (first === undefined || first === before) return;
        for (const kind of OVERLAY_KINDS) {
          if (this.overlayOn[kind]) await this.loadOverlay(kind, first, before === undefined ? null : before - 1);
        }
      });
    } catch (error) {
      if (error.name === "AbortError" || this.signal.aborted) return;
      console.warn("chart: older candles could not be loaded", error);
    } finally {
      this.loadingOlder = false;
    }
    // The view may still be at the edge (a wide screen, a short page): keep filling it.
    if (!this.signal.aborted) this.viewMoved();
  }
}

/** The newest open time of `store`, or an older one of the last few that is still open; 0 when it is empty. */
function resumeFromStore(store) {
  const { times, rows } = store;
  if (times.length === 0) return 0;
  let since = times[times.length - 1];
  for (let i = times.length - 2; i >= Math.max(0, times.length - RESUME_LOOKBACK); i -= 1) {
    if (!rows.get(times[i]).confirm) since = times[i];
  }
  return since;
}

// ---- start ----------------------------------------------------------------------------------------------

const root = document.querySelector("#okx-chart");
const page = new Page(root);

// A read-only handle for tests and for poking around from the console.
window.okxChart = {
  ready: page.start().then(() => true, (error) => {
    console.error("chart: could not start", error);
    return false;
  }),
  candleCount: () => page.chart.store.size,
  gapCount: () => page.chart.gaps.length,
  gapMarkerCount: () => page.chart.markers.markers().length,
  gaps: () => page.chart.gaps.map((gap) => ({ ...gap })),
  lastCandle: () => page.chart.store.lastRow,
  candles: () => page.chart.store.all(),
  candle: (openTimeMs) => page.chart.store.rows.get(openTimeMs) ?? null,
  firstOpenTime: () => page.chart.store.first ?? null,
  selection: () => ({ symbol: page.session?.symbol ?? null, timeframe: page.session?.timeframe ?? null }),
  state: () => page.state,
  // The stream of the chart on screen: "connecting", "live", "reconnecting", "refused", "paused" (or "off").
  stream: () => page.session?.live ?? null,
  streamUrl: page.streamUrl,
  historyDone: () => page.session?.historyDone ?? null,
  recheckGaps: () => page.session?.recheckGaps(),
  refreshCatalogue: () => page.refreshCatalogue(),
  screenshot: () => page.chart.chart.takeScreenshot(),
  // The mark and index lines: {on, symbol, count, last (close of the newest), error} each.
  overlays: () => Object.fromEntries(OVERLAY_KINDS.map((kind) => {
    const overlay = page.chart.overlays[kind];
    return [kind, {
      on: overlay.on, symbol: overlay.symbol, count: overlay.store.size, last: overlay.store.lastRow?.close ?? null,
      error: page.session?.overlayError[kind] ?? null,
    }];
  })),
  overlayCandles: (kind) => page.chart.overlays[kind].store.all(),
  chart: page.chart.chart,
};
