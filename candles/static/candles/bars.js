// Bar arithmetic for the chart, in epoch milliseconds: the browser-side twin of candles/bars.py, limited to
// what gap marking needs (the open time that follows a given one) and the decimal places of OKX strings.

const HOUR_MS = 3_600_000;

function monthIndex(ms) {
  const moment = new Date(ms);
  return moment.getUTCFullYear() * 12 + moment.getUTCMonth();
}

function monthStartMs(index) {
  return Date.UTC(Math.floor(index / 12), index % 12, 1);
}

/**
 * The stepper of one bar, built from a row of GET /api/v1/timeframes: `next(openMs)` is the open time of
 * the bar after the one opening at `openMs`. Fixed bars step by their length. Calendar bars (1M, 3M and
 * their utc variants: `seconds` 0, `months` > 0) step by whole months on the clock of their `alignment`,
 * because months differ in length. Returns null when the row describes neither, so
 * callers draw candles without gap marks rather than wrong ones.
 */
export function barStepper(timeframe) {
  const seconds = Number(timeframe?.seconds ?? 0);
  const months = Number(timeframe?.months ?? 0);
  if (seconds > 0) {
    const length = seconds * 1000;
    return { lengthMs: length, next: (openMs) => openMs + length };
  }
  if (months > 0) {
    const offset = alignmentHours(timeframe) * HOUR_MS;
    return {
      lengthMs: null,
      next: (openMs) => monthStartMs(monthIndex(openMs + offset) + months) - offset,
    };
  }
  return null;
}

// The API names a bar's clock "UTC" or "UTC+8" (Hong Kong); months start at midnight on that clock.
function alignmentHours(timeframe) {
  if (timeframe.utc_offset_hours !== undefined) return Number(timeframe.utc_offset_hours);
  const match = /^UTC(?:([+-]\d{1,2}))?$/.exec(String(timeframe.alignment ?? "UTC").trim());
  return match && match[1] ? Number(match[1]) : 0;
}

// A calendar gap longer than this many bars is reported with this count (decades of monthly bars).
const MAX_COUNTED = 1200;

/**
 * Runs of missing open times between consecutive loaded candles. `times` is sorted ascending. Each gap is
 * {first, last, missing, before}: the first and last missing open times, how many are missing, and the
 * open time of the candle that ends the gap. A candle that lands off the expected grid is not a gap.
 */
export function findGaps(times, stepper) {
  const gaps = [];
  if (!stepper) return gaps;
  for (let i = 1; i < times.length; i += 1) {
    const expected = stepper.next(times[i - 1]);
    if (times[i] <= expected) continue;
    let missing;
    let last;
    if (stepper.lengthMs) {
      missing = Math.floor((times[i] - times[i - 1]) / stepper.lengthMs) - 1;
      last = times[i - 1] + missing * stepper.lengthMs;
    } else {
      missing = 0;
      last = times[i - 1];
      for (let t = expected; t < times[i] && missing < MAX_COUNTED; t = stepper.next(t)) {
        missing += 1;
        last = t;
      }
    }
    if (missing > 0) gaps.push({ first: expected, last, missing, before: times[i] });
  }
  return gaps;
}

/** Digits after the decimal point of an exact decimal string ("43000.10" → 2, "5" → 0, "1e-8" → 8). */
export function decimalPlaces(text) {
  const value = String(text);
  const exponent = value.search(/[eE]/);
  const mantissa = exponent < 0 ? value : value.slice(0, exponent);
  const shift = exponent < 0 ? 0 : Number(value.slice(exponent + 1));
  const dot = mantissa.indexOf(".");
  const fraction = dot < 0 ? 0 : mantissa.length - dot - 1;
  return Math.max(0, fraction - shift);
}
