// The chart's client of the REST API (/api/v1). It knows URLs, query parameters and the error envelope
// {"status": "error", "error_code", "message", "details", "request_id", "timestamp"}; it knows nothing of the chart.
// Live updates do not come through here: chart.js follows the WebSocket stream (/api/v1/stream) itself.

/** A failed call. `retryable` says whether waiting and asking again can help (API down, 5xx, 429). */
export class ApiError extends Error {
  constructor(message, { status = 0, code = "", retryable = false, retryAfterMs = 0 } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryable = retryable;
    this.retryAfterMs = retryAfterMs;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

export class ApiClient {
  /** `root` is the API's base path, e.g. "/api/v1/". */
  constructor(root) {
    this.root = new URL(root, window.location.origin);
  }

  url(path, params = {}) {
    const url = new URL(path.replace(/^\//, ""), this.root);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
    }
    return url;
  }

  async getJson(url, { signal } = {}) {
    let response;
    try {
      response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError("The API cannot be reached.", { retryable: true });
    }
    if (response.ok) return response.json();
    throw await errorFrom(response);
  }

  /** Every item of a list endpoint ({"count", "results", "next"?}), following `next` links. */
  async getAll(path, params, options) {
    const items = [];
    let url = this.url(path, params);
    for (let pages = 0; url && pages < 100; pages += 1) {
      const body = await this.getJson(url, options);
      items.push(...body.results);
      url = body.next ? new URL(body.next, this.root) : null;
    }
    return items;
  }

  subscriptions(options) {
    return this.getAll("subscriptions", { limit: 1000 }, options);
  }

  timeframes(options) {
    return this.getAll("timeframes", {}, options);
  }

  /** One page of candles: {symbol, timeframe, count, data, pagination: {next, next_cursor, has_more, limit}}. */
  candles(symbol, timeframe, params, options) {
    return this.getJson(this.url(candlePath(symbol, timeframe), params), options);
  }

  /** A page named by a `pagination.next` link of a previous answer. */
  page(next, options) {
    return this.getJson(new URL(next, this.root), options);
  }
}

function candlePath(symbol, timeframe) {
  return `data/${encodeURIComponent(symbol)}/${encodeURIComponent(timeframe)}`;
}

async function errorFrom(response) {
  let envelope = {};
  try {
    envelope = await response.json();
  } catch {
    // A proxy's HTML error page, or nothing at all: the status says enough.
  }
  const status = response.status;
  const retryable = status === 429 || status >= 500;
  const seconds = Number(response.headers.get("Retry-After"));
  const message = envelope.message || `The API answered ${status} ${response.statusText}.`;
  return new ApiError(message, {
    status,
    code: envelope.error_code || "",
    retryable,
    retryAfterMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0,
  });
}
