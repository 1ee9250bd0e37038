/**
 * One contract: `contract/events.json` against everything else that states it. The schemas are
 * built from it (so they are held in `events_test.ts`); here the README's table, the C
 * emitter's code, and the payload fields the sinks read are held to it.
 */
import assert from "node:assert/strict";
import contract from "../contract/events.json" with { type: "json" };
import {
  EVENT_FIELDS,
  EVENT_SOURCES,
  type FieldKind,
  KNOWN_EVENT_TYPES,
  parseEvent,
} from "../src/events.ts";
import { contractRows } from "../scripts/contract_table.ts";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

/** What the emitter's setter says of a field, and the kinds of the contract it can send. */
const SETTER_KINDS: Record<string, readonly FieldKind[]> = {
  tbg_set_str: ["text", "blockHash"],
  tbg_set_num: ["nonNegative"],
  tbg_set_int: ["count", "positiveCount"],
  json_boolean: ["flag"],
};

/** Each `tbg_emit_*` of the C emitter: the event it sends and the data fields it sets. */
function emitterEvents(source: string): Map<string, Map<string, string>> {
  const events = new Map<string, Map<string, string>>();
  const functions = source.split(/\nint tbg_emit_/).slice(1);
  assert.ok(functions.length > 0, "no tbg_emit_* function found in tbg_events.c");
  for (const body of functions.map((f) => f.slice(0, f.indexOf("\n}\n")))) {
    const sent = /tbg_send\("([a-z_]+)", data\)/.exec(body);
    assert.ok(sent, `a tbg_emit_ function that sends no event:\n${body.slice(0, 200)}`);
    const fields = new Map<string, string>();
    if (/tbg_user_data\(user, workername\)/.test(body)) {
      fields.set("user", "tbg_set_str");
      fields.set("worker", "tbg_set_str");
    }
    for (const [, setter, name] of body.matchAll(/(tbg_set_\w+)\(data, "(\w+)"/g)) {
      fields.set(name, setter);
    }
    for (const [, name] of body.matchAll(/json_object_set_new\(data, "(\w+)", json_boolean/g)) {
      fields.set(name, "json_boolean");
    }
    events.set(sent[1], fields);
  }
  return events;
}

Deno.test("the README's field table is the contract's", () => {
  const readme = read("README.md");
  const begin = readme.indexOf("<!-- contract-table:begin -->");
  const end = readme.indexOf("<!-- contract-table:end -->");
  assert.ok(begin >= 0 && end > begin, "README.md has no contract-table markers");
  const rows = readme.slice(begin, end).split("\n")
    .filter((line) => line.startsWith("|") && !/^\|[\s|-]+\|$/.test(line))
    .map((line) => line.slice(1, -1).split(/(?<!\\)\|/).map((cell) => cell.trim()));
  assert.deepEqual(
    rows,
    contractRows(),
    "README.md differs from contract/events.json: run `deno run scripts/contract_table.ts`",
  );
});

Deno.test("every kind the contract names is one the collector checks, with its default", () => {
  for (const [type, { fields }] of Object.entries(contract.events)) {
    for (const [name, field] of Object.entries(fields)) {
      assert.ok(Object.hasOwn(contract.types, field.type), `${type}.${name}: ${field.type}`);
      assert.ok(field.meaning.length > 0, `${type}.${name} says nothing of what it means`);
    }
  }
  const expected: Record<string, string> = {
    text: "string",
    nonNegative: "number",
    count: "number",
    flag: "boolean",
  };
  for (const [kind, spec] of Object.entries(contract.types)) {
    const { default: value, required } = spec as { default?: unknown; required?: boolean };
    if (required) assert.equal(value, undefined, `${kind} is required and has a default`);
    else assert.equal(typeof value, expected[kind], `default of ${kind}`);
  }
});

Deno.test("the envelope's rules are the contract's", () => {
  assert.deepEqual([...EVENT_SOURCES], contract.envelope.source.values);
  const at = (ts: number, event = "x", emitter = "ab") =>
    parseEvent({ event, ts, source: "hosted", emitter, seq: 1 }).ok;
  assert.equal(at(contract.envelope.ts.maximum), true);
  assert.equal(at(contract.envelope.ts.maximum + 1), false);
  assert.equal(at(1, "a".repeat(64)), true);
  assert.equal(at(1, "a".repeat(65)), false);
  assert.equal(at(1, "x", "f".repeat(32)), true);
  assert.equal(at(1, "x", "f".repeat(33)), false);
  // The C emitter's source, for the events the hosted pool sends.
  assert.match(read("patches/tbg_events.h"), /#define TBG_EVENT_SOURCE "hosted"/);
});

Deno.test("the C emitter sends exactly the types and fields of the contract", () => {
  const emitted = emitterEvents(read("patches/tbg_events.c"));
  assert.deepEqual([...emitted.keys()].sort(), [...KNOWN_EVENT_TYPES].sort());
  for (const [type, fields] of emitted) {
    const declared = EVENT_FIELDS[type as keyof typeof EVENT_FIELDS];
    const undeclared = [...fields.keys()].filter((name) => !Object.hasOwn(declared, name));
    assert.deepEqual(undeclared, [], `${type}: the emitter sends fields the contract lacks`);
    const unsent = Object.keys(declared).filter((name) => !fields.has(name));
    assert.deepEqual(unsent, [], `${type}: the contract declares fields the emitter never sends`);
    for (const [name, setter] of fields) {
      assert.ok(
        SETTER_KINDS[setter]?.includes(declared[name]),
        `${type}.${name}: sent with ${setter}, declared ${declared[name]}`,
      );
    }
  }
});

Deno.test("the sinks read no payload field that the contract does not declare", () => {
  const declared = new Set(Object.values(EVENT_FIELDS).flatMap((fields) => Object.keys(fields)));
  const reads = new Map<string, string>();
  const walk = (dir: URL) => {
    for (const entry of Deno.readDirSync(dir)) {
      const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
      if (entry.isDirectory) walk(url);
      else if (entry.name.endsWith(".ts")) {
        const text = Deno.readTextFileSync(url);
        for (const [, name] of text.matchAll(/\bdata(?:\.|\?\.)([a-z_][a-z0-9_]*)\b/g)) {
          reads.set(name, url.pathname);
        }
        for (const [, name] of text.matchAll(/\bdata\[["']([^"']+)["']\]/g)) {
          reads.set(name, url.pathname);
        }
      }
    }
  };
  walk(new URL("src/sinks/", root));
  // The scan finds the fields the PostgreSQL sink is known to read.
  for (const name of ["user", "worker", "accepted", "new_diff", "hashrate_1m", "height"]) {
    assert.ok(reads.has(name), `the scan missed data.${name}`);
  }
  const unknown = [...reads].filter(([name]) => !declared.has(name));
  assert.deepEqual(unknown, [], "fields read that no event type declares");
});
