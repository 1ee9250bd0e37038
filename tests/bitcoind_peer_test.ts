/**
 * The bitcoind test peer answers over real HTTP as bitcoind v27 on signet does. Blocks here are
 * built with bitcoinjs-lib (not the peer's own helpers) so the peer's checks are tested against
 * an independent encoder.
 */
import assert from "node:assert/strict";
import { address as btcAddress, Block, networks, payments, Transaction } from "bitcoinjs-lib";
import fc from "fast-check";
import {
  type BitcoindPeer,
  compactToTarget,
  descriptorWithChecksum,
  SIGNET_GENESIS_HASH,
  startBitcoindPeer,
} from "./support/bitcoind_peer.ts";

const ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
const ADDRESS_SCRIPT = "0014751e76e8199196d454941c45d1b3a323f1433bd6";
const GBT_RULES = [{ rules: ["segwit", "signet"] }];
const EMPTY_COMMITMENT =
  "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9";

const unhex = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
const hexOf = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

type Json = Record<string, unknown>;

/** One JSON-RPC call over HTTP: status, parsed body and raw text. */
async function post(peer: BitcoindPeer, body: unknown, auth = `${peer.user}:${peer.pass}`) {
  const response = await fetch(peer.rpcUrl, {
    method: "POST",
    headers: { Authorization: `Basic ${btoa(auth)}`, "Content-Type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return {
    status: response.status,
    text,
    json: text ? JSON.parse(text) : undefined,
    headers: response.headers,
  };
}

async function rpcError(peer: BitcoindPeer, method: string, params: unknown[]) {
  const reply = await post(peer, { method, params, id: "t" });
  assert.equal(reply.json.result, null, `${method} should fail`);
  return { status: reply.status, ...reply.json.error as { code: number; message: string } };
}

async function withPeer(
  fn: (peer: BitcoindPeer) => Promise<void>,
  options: Parameters<typeof startBitcoindPeer>[0] = {},
) {
  const peer = await startBitcoindPeer(options);
  try {
    await fn(peer);
  } finally {
    await peer.close();
  }
}

function scriptNumPush(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  while (v > 0) {
    bytes.push(v & 0xff);
    v = Math.floor(v / 256);
  }
  if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
  return Uint8Array.of(bytes.length, ...bytes);
}

interface BlockOptions {
  payoutScript?: Uint8Array;
  coinbaseValue?: bigint;
  height?: number;
  prevHash?: string;
  time?: number;
  bits?: number;
  version?: number;
  commitment?: string | null;
  txs?: Transaction[];
  merkleRoot?: Uint8Array;
  /** "valid": hash meets the target; "invalid": it does not. */
  solve?: "valid" | "invalid";
}

/** Builds and solves a block from a template with bitcoinjs-lib. */
function buildBlock(template: Json, options: BlockOptions = {}) {
  const height = options.height ?? (template.height as number);
  const coinbase = new Transaction();
  coinbase.version = 1;
  coinbase.addInput(
    new Uint8Array(32),
    0xffffffff,
    0xffffffff,
    Uint8Array.from([...scriptNumPush(height), 4, 0x74, 0x65, 0x73, 0x74]),
  );
  coinbase.addOutput(
    options.payoutScript ?? unhex(ADDRESS_SCRIPT),
    options.coinbaseValue ?? BigInt(template.coinbasevalue as number),
  );
  const commitment = options.commitment === undefined
    ? template.default_witness_commitment as string
    : options.commitment;
  if (commitment) coinbase.addOutput(unhex(commitment), 0n);
  const txs = [coinbase, ...(options.txs ?? [])];
  const block = new Block();
  block.version = options.version ?? (template.version as number);
  block.prevHash = unhex(options.prevHash ?? (template.previousblockhash as string)).reverse();
  block.merkleRoot = options.merkleRoot ?? Block.calculateMerkleRoot(txs);
  block.timestamp = options.time ?? (template.curtime as number);
  block.bits = options.bits ?? parseInt(template.bits as string, 16);
  block.transactions = txs;
  const { target } = compactToTarget(block.bits);
  const want = options.solve ?? "valid";
  for (block.nonce = 0;; block.nonce++) {
    const hash = BigInt("0x" + block.getId());
    if ((hash <= target) === (want === "valid")) break;
  }
  return { hex: block.toHex(), hash: block.getId(), block };
}

async function template(peer: BitcoindPeer): Promise<Json> {
  return await peer.rpc("getblocktemplate", GBT_RULES) as Json;
}

Deno.test("HTTP: 401 without valid basic auth, 405 for GET, 200 with auth", async () => {
  await withPeer(async (peer) => {
    const none = await fetch(peer.rpcUrl, { method: "POST", body: '{"method":"getblockcount"}' });
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Basic realm="jsonrpc"');
    assert.equal(await none.text(), "");

    const wrong = await post(peer, { method: "getblockcount" }, `${peer.user}:nope`);
    assert.equal(wrong.status, 401);
    assert.equal(wrong.text, "");

    const get = await fetch(peer.rpcUrl, {
      headers: { Authorization: `Basic ${btoa(`${peer.user}:${peer.pass}`)}` },
    });
    assert.equal(get.status, 405);
    assert.equal(await get.text(), "JSONRPC server handles only POST requests");

    const ok = await post(peer, { method: "getblockcount", params: [], id: 7 });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("content-type"), "application/json");
    assert.deepEqual(ok.json, { result: 110, error: null, id: 7 });
    assert.ok(ok.text.endsWith("}\n"), "bitcoind ends replies with a newline");
    assert.deepEqual(peer.calls, ["getblockcount"], "unauthorised requests never reach a method");
  });
});

Deno.test("JSON-RPC errors use bitcoind's codes, messages and HTTP statuses", async () => {
  await withPeer(async (peer) => {
    const unknown = await post(peer, { method: "getnothing", params: [], id: 1 });
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.json, {
      result: null,
      error: { code: -32601, message: "Method not found" },
      id: 1,
    });

    const parse = await post(peer, "{not json");
    assert.equal(parse.status, 500);
    assert.deepEqual(parse.json.error, { code: -32700, message: "Parse error" });

    const noMethod = await post(peer, { params: [], id: 2 });
    assert.equal(noMethod.status, 400);
    assert.deepEqual(noMethod.json.error, { code: -32600, message: "Missing method" });

    const range = await post(peer, { method: "getblockhash", params: [100000], id: 3 });
    assert.equal(range.status, 500);
    assert.deepEqual(range.json, {
      result: null,
      error: { code: -8, message: "Block height out of range" },
      id: 3,
    });

    const type = await rpcError(peer, "getblockhash", ["1"]);
    assert.deepEqual([type.code, type.message], [
      -3,
      "JSON value of type string is not of expected type number",
    ]);

    const arity = await rpcError(peer, "getblockhash", []);
    assert.equal(arity.code, -1);
    assert.match(arity.message, /^getblockhash height/);

    const batch = await post(peer, [{ method: "getblockcount", id: 1 }, { method: "nope", id: 2 }]);
    assert.equal(batch.status, 200);
    assert.deepEqual(batch.json, [
      { result: 110, error: null, id: 1 },
      { result: null, error: { code: -32601, message: "Method not found" }, id: 2 },
    ]);

    const named = await post(peer, { method: "getblockhash", params: { height: 0 }, id: 4 });
    assert.equal(named.json.result, SIGNET_GENESIS_HASH);
  });
});

Deno.test("HTTP as ckpool speaks it: bare LF lines, no id, one connection per call", async () => {
  await withPeer(async (peer) => {
    const body = '{"method": "getbestblockhash"}\n';
    const request = `POST / HTTP/1.1\nAuthorization: Basic ${btoa(`${peer.user}:${peer.pass}`)}\n` +
      `Host: 127.0.0.1:${peer.port}\nContent-type: application/json\nContent-Length: ${body.length}\n\n${body}`;
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: peer.port });
    try {
      await conn.write(new TextEncoder().encode(request));
      let text = "";
      const buf = new Uint8Array(4096);
      while (!text.includes("}\n")) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      const lines = text.split("\n");
      assert.equal(
        lines[0],
        "HTTP/1.1 200 OK\r",
        "ckpool compares the status line's first 15 characters",
      );
      const jsonLine = lines.find((l) => l.startsWith("{"));
      assert.deepEqual(JSON.parse(jsonLine!), { result: peer.tipHash, error: null, id: null });
    } finally {
      conn.close();
    }
  });
});

Deno.test("getblocktemplate refuses requests without the signet rule, then without segwit", async () => {
  await withPeer(async (peer) => {
    const noSignet = await rpcError(peer, "getblocktemplate", [{ rules: ["segwit"] }]);
    assert.equal(noSignet.status, 500);
    assert.equal(noSignet.code, -8);
    assert.equal(
      noSignet.message,
      'getblocktemplate must be called with the signet rule set (call with {"rules": ["segwit", "signet"]})',
    );
    // ckpool's exact request at the pinned commit
    const ckpool = await rpcError(peer, "getblocktemplate", [
      { capabilities: ["coinbasetxn", "workid", "coinbase/append"], rules: ["segwit"] },
    ]);
    assert.equal(ckpool.message, noSignet.message);
    const none = await rpcError(peer, "getblocktemplate", []);
    assert.equal(none.message, noSignet.message);
    const noSegwit = await rpcError(peer, "getblocktemplate", [{ rules: ["signet"] }]);
    assert.equal(noSegwit.code, -8);
    assert.equal(
      noSegwit.message,
      'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})',
    );
  });
});

Deno.test("getblocktemplate returns the fields bitcoind's template has", async () => {
  await withPeer(async (peer) => {
    const tpl = await template(peer);
    for (
      const key of [
        "capabilities",
        "version",
        "rules",
        "vbavailable",
        "vbrequired",
        "previousblockhash",
        "transactions",
        "coinbaseaux",
        "coinbasevalue",
        "longpollid",
        "target",
        "mintime",
        "mutable",
        "noncerange",
        "sigoplimit",
        "sizelimit",
        "weightlimit",
        "curtime",
        "bits",
        "height",
        "signet_challenge",
        "default_witness_commitment",
      ]
    ) assert.ok(key in tpl, `template lacks ${key}`);
    assert.deepEqual(tpl.capabilities, ["proposal"]);
    assert.equal(tpl.version, 0x20000000);
    assert.deepEqual(tpl.rules, ["csv", "!segwit", "!signet"]);
    assert.equal(tpl.previousblockhash, await peer.rpc("getbestblockhash"));
    assert.equal(tpl.height, (await peer.rpc("getblockcount") as number) + 1);
    assert.deepEqual(tpl.transactions, []);
    assert.equal(tpl.coinbasevalue, 50 * 1e8);
    assert.equal(tpl.bits, "207fffff");
    assert.equal(tpl.target, "7fffff" + "0".repeat(58));
    assert.ok((tpl.curtime as number) >= (tpl.mintime as number));
    assert.match(tpl.longpollid as string, new RegExp(`^${tpl.previousblockhash}\\d+$`));
    assert.equal(tpl.signet_challenge, "51");
    // The commitment of a coinbase-only block: sha256d(zero witness root || zero nonce)
    assert.equal(tpl.default_witness_commitment, EMPTY_COMMITMENT);
    assert.deepEqual(tpl.coinbaseaux, {});
  }, { bits: 0x207fffff });

  await withPeer(async (peer) => {
    const tpl = await template(peer);
    assert.equal(tpl.bits, "1d00ffff");
    assert.equal(tpl.target, "00000000ffff" + "0".repeat(52));
    assert.equal(tpl.height, 21);
  }, { bits: 0x1d00ffff, height: 20 });
});

Deno.test("a block built from the template and solved is accepted and becomes the tip", async () => {
  await withPeer(async (peer) => {
    const tpl = await template(peer);
    const before = peer.height;
    const { hex, hash } = buildBlock(tpl);
    assert.equal(await peer.rpc("submitblock", [hex]), null);
    assert.equal(await peer.rpc("getbestblockhash"), hash);
    assert.equal(await peer.rpc("getblockcount"), before + 1);
    assert.equal(await peer.rpc("getblockhash", [before + 1]), hash);
    assert.equal(peer.submitted.length, 1);
    const sub = peer.submitted[0];
    assert.equal(sub.accepted, true);
    assert.equal(sub.result, null);
    assert.equal(sub.hash, hash);
    assert.equal(sub.height, before + 1);
    assert.equal(sub.coinbase?.bip34Height, before + 1);
    assert.equal(sub.coinbase?.outputs[0].address, ADDRESS);
    assert.equal(sub.coinbase?.outputs[0].valueSats, 5_000_000_000n);
    assert.equal(sub.coinbase?.outputs[1].type, "nulldata");
    // submitting it again
    assert.equal(await peer.rpc("submitblock", [hex]), "duplicate");
    assert.equal(peer.submitted[1].accepted, false);
    // a template on the new tip
    const next = await template(peer);
    assert.equal(next.previousblockhash, hash);
    assert.equal(next.height, before + 2);
  });
});

Deno.test("submitblock rejects bad blocks with bitcoind's BIP22 strings", async () => {
  await withPeer(async (peer) => {
    const tpl = await template(peer);
    const bits = parseInt(tpl.bits as string, 16);
    const cases: Array<[string, BlockOptions]> = [
      ["high-hash", { solve: "invalid" }],
      ["bad-txnmrklroot", { merkleRoot: new Uint8Array(32).fill(7) }],
      ["prev-blk-not-found", { prevHash: "11".repeat(32) }],
      ["bad-diffbits", { bits: bits - 1 }],
      ["time-too-old", { time: (tpl.mintime as number) - 1 }],
      ["time-too-new", { time: (tpl.curtime as number) + 3 * 3600 }],
      ["bad-version(0x00000001)", { version: 1 }],
      ["bad-cb-height", { height: (tpl.height as number) + 1 }],
      ["bad-signet-blksig", { commitment: null }],
      ["bad-witness-merkle-match", { commitment: "6a24aa21a9ed" + "00".repeat(32) }],
      ["bad-cb-amount", { coinbaseValue: BigInt(tpl.coinbasevalue as number) + 1n }],
    ];
    for (const [expected, options] of cases) {
      const { hex } = buildBlock(tpl, options);
      assert.equal(await peer.rpc("submitblock", [hex]), expected, expected);
    }
    assert.equal(peer.height, 110, "no rejected block moved the tip");
    assert.ok(peer.submitted.every((s) => !s.accepted));
    assert.deepEqual(peer.submitted.map((s) => s.result), cases.map(([reason]) => reason));

    // A block that failed after it was stored is known as invalid.
    const overpaid = buildBlock(tpl, { coinbaseValue: BigInt(tpl.coinbasevalue as number) + 1n });
    assert.equal(await peer.rpc("submitblock", [overpaid.hex]), "duplicate-invalid");

    const decode = await rpcError(peer, "submitblock", ["00ff"]);
    assert.deepEqual([decode.code, decode.message], [-22, "Block decode failed"]);

    // a valid block on the tip's parent once the tip has moved: stored, not best
    const stale = buildBlock(tpl);
    await peer.mineBlock();
    assert.equal(await peer.rpc("submitblock", [stale.hex]), "inconclusive");
    assert.notEqual(await peer.rpc("getbestblockhash"), stale.hash);
    assert.equal(await peer.rpc("submitblock", [stale.hex]), "duplicate");
  });
});

Deno.test("mineBlock: the network finds a block; best hash and height change", async () => {
  await withPeer(async (peer) => {
    const before = await peer.rpc("getbestblockhash");
    const height = await peer.rpc("getblockcount") as number;
    const hash = await peer.mineBlock({ payoutAddress: ADDRESS });
    assert.notEqual(hash, before);
    assert.equal(await peer.rpc("getbestblockhash"), hash);
    assert.equal(await peer.rpc("getblockcount"), height + 1);
    assert.equal(peer.tipHash, hash);
    assert.equal(peer.height, height + 1);
    const info = await peer.rpc("getblockchaininfo") as Json;
    assert.equal(info.chain, "signet");
    assert.equal(info.blocks, height + 1);
    assert.equal(info.bestblockhash, hash);
    assert.equal(info.initialblockdownload, false);
    const block = peer.block(hash)!;
    assert.equal(block.prevHash, before);
    assert.equal(block.powValid, true, "easy bits: the peer's own blocks meet their target");
    const tpl = await template(peer);
    assert.equal(tpl.previousblockhash, hash);
    assert.equal(peer.blockAt(0)?.hash, SIGNET_GENESIS_HASH);
  });
});

Deno.test("validateaddress: signet addresses as bitcoind reports them", async () => {
  await withPeer(async (peer) => {
    assert.deepEqual(await peer.rpc("validateaddress", [ADDRESS]), {
      isvalid: true,
      address: ADDRESS,
      scriptPubKey: ADDRESS_SCRIPT,
      isscript: false,
      iswitness: true,
      witness_version: 0,
      witness_program: "751e76e8199196d454941c45d1b3a323f1433bd6",
    });
    const p2wsh = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7";
    const wsh = await peer.rpc("validateaddress", [p2wsh]) as Json;
    assert.equal(wsh.isscript, true);
    assert.equal(
      wsh.scriptPubKey,
      "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    );
    const taproot = "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c";
    const tr = await peer.rpc("validateaddress", [taproot]) as Json;
    assert.equal(tr.witness_version, 1);
    assert.equal(
      tr.scriptPubKey,
      "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    );

    const p2pkh = payments.p2pkh({ hash: new Uint8Array(20).fill(1), network: networks.testnet })
      .address!;
    const pkh = await peer.rpc("validateaddress", [p2pkh]) as Json;
    assert.deepEqual([pkh.isvalid, pkh.isscript, pkh.iswitness], [true, false, false]);
    assert.equal(pkh.scriptPubKey, "76a914" + "01".repeat(20) + "88ac");
    const p2sh = payments.p2sh({ hash: new Uint8Array(20).fill(2), network: networks.testnet })
      .address!;
    assert.equal((await peer.rpc("validateaddress", [p2sh]) as Json).isscript, true);

    const invalid: Array<[string, string]> = [
      ["tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsy", "Invalid Bech32 checksum"],
      [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        "Invalid or unsupported Segwit (Bech32) or Base58 encoding.",
      ],
      // BIP350's invalid vectors: the wrong checksum constant for the witness version
      [
        "tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf",
        "Version 1+ witness address must use Bech32m checksum",
      ],
      [
        "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",
        "Version 0 witness address must use Bech32 checksum",
      ],
      [
        payments.p2pkh({ hash: new Uint8Array(20).fill(1) }).address!,
        "Invalid or unsupported Base58-encoded address.",
      ],
      ["not an address", "Invalid or unsupported Segwit (Bech32) or Base58 encoding."],
    ];
    for (const [addr, error] of invalid) {
      const result = await peer.rpc("validateaddress", [addr]) as Json;
      assert.equal(result.isvalid, false, addr);
      assert.equal(result.error, error, addr);
      assert.ok(Array.isArray(result.error_locations));
      assert.equal(result.scriptPubKey, undefined);
    }
    const oneTypo = await peer.rpc("validateaddress", [
      "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsy",
    ]) as Json;
    assert.deepEqual(oneTypo.error_locations, [41]);

    const type = await rpcError(peer, "validateaddress", [null]);
    assert.deepEqual([type.code, type.message], [
      -3,
      "JSON value of type null is not of expected type string",
    ]);
  });
});

Deno.test("validateaddress agrees with bitcoinjs-lib on random segwit programs", async () => {
  await withPeer(async (peer) => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({
            version: fc.constant(0),
            program: fc.uint8Array({ minLength: 20, maxLength: 20 }),
          }),
          fc.record({
            version: fc.constant(0),
            program: fc.uint8Array({ minLength: 32, maxLength: 32 }),
          }),
          fc.record({
            version: fc.integer({ min: 1, max: 16 }),
            program: fc.uint8Array({ minLength: 2, maxLength: 40 }),
          }),
        ),
        async ({ version, program }) => {
          const addr = btcAddress.toBech32(program, version, "tb");
          const expected = hexOf(
            Uint8Array.of(version === 0 ? 0 : 0x50 + version, program.length, ...program),
          );
          const result = await peer.rpc("validateaddress", [addr]) as Json;
          assert.equal(result.isvalid, true);
          assert.equal(result.scriptPubKey, expected);
          assert.equal(result.witness_version, version);
        },
      ),
      { numRuns: 40 },
    );
  });
});

Deno.test("decoderawtransaction decodes real transactions as bitcoind does", async () => {
  await withPeer(async (peer) => {
    // The genesis coinbase (the same on every network): txid is the famous 4a5e1e4b...
    const genesisCoinbase = peer.blockAt(0)!.txs[0].toHex();
    const reply = await post(peer, {
      method: "decoderawtransaction",
      params: [genesisCoinbase],
      id: 1,
    });
    assert.match(reply.text, /"value":50\.00000000,/, "amounts are written with 8 decimals");
    const tx = reply.json.result;
    assert.equal(tx.txid, "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
    assert.equal(tx.hash, tx.txid);
    assert.deepEqual([tx.version, tx.size, tx.vsize, tx.weight, tx.locktime], [
      1,
      204,
      204,
      816,
      0,
    ]);
    assert.equal(tx.vin[0].coinbase.slice(0, 16), "04ffff001d010445");
    assert.equal(tx.vin[0].sequence, 4294967295);
    const out = tx.vout[0];
    assert.equal(out.n, 0);
    assert.equal(out.scriptPubKey.type, "pubkey");
    assert.match(out.scriptPubKey.asm, /^04678afdb0fe.* OP_CHECKSIG$/);
    assert.match(out.scriptPubKey.desc, /^pk\(04678afdb0fe[0-9a-f]+\)#[a-z0-9]{8}$/);
    assert.equal(out.scriptPubKey.address, undefined, "bitcoind gives P2PK outputs no address");

    // A segwit spend made with bitcoinjs-lib
    const spend = new Transaction();
    spend.version = 2;
    spend.addInput(new Uint8Array(32).fill(0xab), 1, 0xfffffffd);
    spend.setWitness(0, [new Uint8Array(71).fill(1), new Uint8Array(33).fill(2)]);
    spend.addOutput(btcAddress.toOutputScript(ADDRESS, networks.testnet), 12345n);
    spend.addOutput(Uint8Array.from([0x6a, 0x04, 1, 2, 3, 4]), 0n);
    const decoded = await peer.rpc("decoderawtransaction", [spend.toHex()]) as Json & {
      vin: Json[];
      vout: Array<Json & { scriptPubKey: Json }>;
    };
    assert.equal(decoded.txid, spend.getId());
    assert.notEqual(decoded.hash, decoded.txid);
    assert.equal(decoded.weight, spend.weight());
    assert.equal(decoded.vsize, spend.virtualSize());
    assert.equal(decoded.vin[0].txid, "ab".repeat(32));
    assert.equal(decoded.vin[0].vout, 1);
    assert.deepEqual(decoded.vin[0].scriptSig, { asm: "", hex: "" });
    assert.equal((decoded.vin[0].txinwitness as string[]).length, 2);
    assert.equal(decoded.vout[0].value, 0.00012345);
    assert.deepEqual(decoded.vout[0].scriptPubKey, {
      asm: "0 751e76e8199196d454941c45d1b3a323f1433bd6",
      desc: descriptorWithChecksum(`addr(${ADDRESS})`),
      hex: ADDRESS_SCRIPT,
      address: ADDRESS,
      type: "witness_v0_keyhash",
    });
    assert.deepEqual(decoded.vout[1].scriptPubKey, {
      asm: "OP_RETURN 67305985",
      desc: descriptorWithChecksum("raw(6a0401020304)"),
      hex: "6a0401020304",
      type: "nulldata",
    });

    const bad = await rpcError(peer, "decoderawtransaction", ["deadbeef"]);
    assert.deepEqual([bad.code, bad.message], [-22, "TX decode failed"]);
  });
});

Deno.test("descriptor checksums match Bitcoin Core's documented examples", () => {
  assert.equal(descriptorWithChecksum("raw(deadbeef)"), "raw(deadbeef)#89f8spxm");
  assert.equal(
    descriptorWithChecksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)"),
    "addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)#02wpgw69",
  );
});

Deno.test("mempool transactions reach the template, and a block carrying them is accepted", async () => {
  await withPeer(async (peer) => {
    const spend = new Transaction();
    spend.version = 2;
    spend.addInput(new Uint8Array(32).fill(0x42), 0);
    spend.addOutput(btcAddress.toOutputScript(ADDRESS, networks.testnet), 1000n);
    spend.setWitness(0, [new Uint8Array(64).fill(3)]);
    const txid = await peer.rpc("sendrawtransaction", [spend.toHex()]);
    assert.equal(txid, spend.getId());
    assert.equal(await peer.rpc("getrawtransaction", [txid]), spend.toHex());
    const verbose = await peer.rpc("getrawtransaction", [txid, true]) as Json;
    assert.equal(verbose.hex, spend.toHex());

    const tpl = await template(peer);
    const txs = tpl.transactions as Json[];
    assert.equal(txs.length, 1);
    assert.equal(txs[0].txid, spend.getId());
    assert.equal(txs[0].hash, hexOf(spend.getHash(true).reverse()));
    assert.equal(txs[0].data, spend.toHex());
    assert.deepEqual(txs[0].depends, []);
    assert.notEqual(tpl.default_witness_commitment, EMPTY_COMMITMENT);

    // without the transaction's witness commitment the block is refused
    const wrong = buildBlock(tpl, { txs: [spend], commitment: EMPTY_COMMITMENT });
    assert.equal(await peer.rpc("submitblock", [wrong.hex]), "bad-witness-merkle-match");
    const good = buildBlock(tpl, { txs: [spend] });
    assert.equal(await peer.rpc("submitblock", [good.hex]), null);
    assert.equal(peer.tipHash, good.hash);
    const gone = await rpcError(peer, "getrawtransaction", [txid]);
    assert.equal(gone.code, -5);
    assert.match(gone.message, /^No such mempool transaction/);
    const inBlock = await peer.rpc("getrawtransaction", [txid, true, good.hash]) as Json;
    assert.equal(inBlock.blockhash, good.hash);
    assert.equal(inBlock.confirmations, 1);
    assert.equal(((await template(peer)).transactions as unknown[]).length, 0);

    // a transaction the peer never saw cannot be in a block
    const unknown = new Transaction();
    unknown.addInput(new Uint8Array(32).fill(0x43), 0);
    unknown.addOutput(Uint8Array.of(0x51), 1n);
    const next = await template(peer);
    const withUnknown = buildBlock(next, { txs: [unknown], commitment: null });
    // no witness anywhere: the signet check wants a commitment all the same
    assert.equal(await peer.rpc("submitblock", [withUnknown.hex]), "bad-signet-blksig");
    // with a correct commitment (witness root over [0, txid]; nonce 32 zero bytes)
    const commitmentCoinbase = new Transaction();
    commitmentCoinbase.addInput(new Uint8Array(32), 0xffffffff);
    commitmentCoinbase.ins[0].witness = [new Uint8Array(32)];
    commitmentCoinbase.addOutput(unhex("6a24aa21a9ed" + "00".repeat(32)), 0n);
    const committed = buildBlock(next, {
      txs: [unknown],
      commitment: "6a24aa21a9ed" +
        hexOf(Block.calculateMerkleRoot([commitmentCoinbase, unknown], true)),
    });
    assert.equal(await peer.rpc("submitblock", [committed.hex]), "bad-txns-inputs-missingorspent");
  });
});

Deno.test("preciousblock and getblocktemplate proposals", async () => {
  await withPeer(async (peer) => {
    const notFound = await rpcError(peer, "preciousblock", ["00".repeat(32)]);
    assert.deepEqual([notFound.code, notFound.message], [-5, "Block not found"]);
    assert.equal(await peer.rpc("preciousblock", [peer.tipHash]), null);

    const tpl = await template(peer);
    const { hex } = buildBlock(tpl, { solve: "invalid" });
    // proposals skip proof of work; the missing witness nonce is only filled in by submitblock
    assert.equal(
      await peer.rpc("getblocktemplate", [{ mode: "proposal", data: hex }]),
      "bad-witness-nonce-size",
    );
    const stale = buildBlock({ ...tpl, previousblockhash: peer.blockAt(5)!.hash });
    assert.equal(
      await peer.rpc("getblocktemplate", [{ mode: "proposal", data: stale.hex }]),
      "inconclusive-not-best-prevblk",
    );
  });
});
