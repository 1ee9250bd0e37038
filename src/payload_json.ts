/**
 * An event's payload as JSON text, serialised once however many sinks ask for it.
 *
 * @module
 */

const serialised = new WeakMap<object, string>();

/**
 * `JSON.stringify(value)`, remembered per object: every sink writes the payload, and none
 * changes it, so the second sink reuses the first one's text.
 */
export function payloadJson(value: unknown): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value);
  let text = serialised.get(value);
  if (text === undefined) {
    text = JSON.stringify(value);
    serialised.set(value, text);
  }
  return text;
}
