/**
 * The Stratum test miner builds headers the way ckpool checks them, and its C grinder finds
 * nonces. With CKPOOL_SRC (a clean ckpool checkout at the pinned commit, built once with the
 * kit and cached) set, it also mines against a real ckpool fed by the bitcoind peer;
 * TBG_REAL_MINING=1 adds a real difficulty-1 share (minutes of hashing) that must become a block.
 */
import assert from "node:assert/strict";
import { Block, Transaction } from "bitcoinjs-lib";
import fc from "fast-check";
import {
  compactToTarget,
  concatBytes,
  fromHex,
  GENESIS_COINBASE_HEX,
  hashToBigInt,
  reversed,
  scriptPushData,
  scriptPushInt,
  sha256d,
  SIGNET_GENESIS_HASH,
  startBitcoindPeer,
  toHex,
  varint,
} from "./support/bitcoind_peer.ts";
import {
  assembleHeader,
  buildGrinder,
  buildHeader,
  connectMiner,
  difficultyTarget,
  grind,
  hashDifficulty,
  headerHash,
  merkleBranch,
  merkleRootFromBranch,
  type StratumJob,
  stratumPrevHash,
} from "./support/stratum_miner.ts";
import { buildPatchedCkpool } from "./support/ckpool_build.ts";
import {
  type CkpoolProcess,
  startCkpool,
  TEST_ADDRESS,
  writeCkpoolConfig,
} from "./support/ckpool_config.ts";
import { waitFor } from "./support/wait.ts";

const display = (hashLE: Uint8Array) => toHex(reversed(hashLE));

Deno.test("header from Stratum fields: mainnet block 125552 hashes to its known hash", () => {
  // https://en.bitcoin.it/wiki/Block_hashing_algorithm
  const header = assembleHeader({
    version: "00000001",
    prevHash: stratumPrevHash("00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81"),
    merkleRoot: reversed(
      fromHex("2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3"),
    ),
    ntime: (1305998791).toString(16),
    nbits: "1a44b9f2",
    nonce: (2504433986).toString(16),
  });
  assert.equal(header.length, 80);
  assert.equal(
    toHex(header.subarray(0, 4)) + toHex(header.subarray(68)),
    "01000000" + "c7f5d74d" + "f2b9441a" + "42a14695",
    "version, time, bits and nonce are little-endian in the header",
  );
  assert.equal(
    display(headerHash(header)),
    "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d",
  );
  // Stratum's prevhash is the display hash with its eight words reversed, and back again
  const prev = "00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81";
  assert.equal(
    stratumPrevHash(prev),
    "ab02cd818b9e567ee21793cddef299feb29ad444a41b85b8000008a300000000",
  );
  assert.equal(stratumPrevHash(stratumPrevHash(prev)), prev);
});

Deno.test("coinbase split into coinb1 + extranonces + coinb2 rebuilds the genesis blocks", () => {
  const coinbase = GENESIS_COINBASE_HEX;
  // split anywhere inside the scriptSig, as a pool would around its extranonce space
  const at = 2 * 50;
  const job = {
    prevHash: stratumPrevHash("00".repeat(32)),
    coinb1: coinbase.slice(0, at),
    coinb2: coinbase.slice(at + 24),
    merkleBranch: [],
    version: "00000001",
  };
  const extranonce1 = coinbase.slice(at, at + 8);
  const extranonce2 = coinbase.slice(at + 8, at + 24);
  const mainnet = buildHeader({
    job: { ...job, nbits: "1d00ffff" },
    extranonce1,
    extranonce2,
    ntime: (1231006505).toString(16),
    nonce: (2083236893).toString(16),
  });
  assert.equal(
    display(headerHash(mainnet)),
    "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
  );
  const signet = buildHeader({
    job: { ...job, nbits: "1e0377ae" },
    extranonce1,
    extranonce2,
    ntime: (1598918400).toString(16),
    nonce: (52613770).toString(16),
  });
  assert.equal(display(headerHash(signet)), SIGNET_GENESIS_HASH);
});

Deno.test("merkle branch (ckpool's algorithm) folds to the root bitcoinjs-lib computes", () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { minLength: 0, maxLength: 20 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      (txHashes, coinbaseHash) => {
        const fakeTx = (hash: Uint8Array) => ({ getHash: () => hash }) as unknown as Transaction;
        const expected = Block.calculateMerkleRoot([coinbaseHash, ...txHashes].map(fakeTx));
        const branch = merkleBranch(txHashes);
        assert.equal(
          branch.length,
          txHashes.length === 0 ? 0 : Math.ceil(Math.log2(txHashes.length + 1)),
        );
        assert.equal(toHex(merkleRootFromBranch(coinbaseHash, branch)), toHex(expected));
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("share difficulty is ckpool's: diff-1 target / hash, in doubles", () => {
  const atTarget = reversed(fromHex("00000000ffff" + "00".repeat(26)));
  assert.equal(hashDifficulty(atTarget), 1);
  const half = reversed(fromHex("00000001fffe" + "00".repeat(26)));
  assert.equal(hashDifficulty(half), 0.5);
  assert.equal(difficultyTarget(1), 0xffffn << 208n);
  assert.equal(difficultyTarget(2), 0xffffn << 207n);
  assert.ok(
    hashDifficulty(reversed(fromHex(difficultyTarget(1000).toString(16).padStart(64, "0")))) >=
      1000 * (1 - 1e-12),
  );
});

Deno.test("a block built the Stratum way from the peer's template is accepted by the peer", async () => {
  const peer = await startBitcoindPeer();
  try {
    // transactions in the template, so the job has a real merkle branch
    for (let i = 0; i < 3; i++) {
      const tx = new Transaction();
      tx.addInput(new Uint8Array(32).fill(i + 1), i);
      tx.addOutput(Uint8Array.of(0x51), 1000n + BigInt(i));
      peer.addMempoolTransaction(tx.toHex(), 100n);
    }
    const tpl = await peer.rpc("getblocktemplate", [{ rules: ["segwit", "signet"] }]) as Record<
      string,
      unknown
    >;
    const txs = tpl.transactions as Array<{ data: string; txid: string }>;
    assert.equal(txs.length, 3);
    // a coinbase laid out as a pool does: height push, then 12 bytes of extranonce space
    const height = tpl.height as number;
    const scriptPrefix = concatBytes(scriptPushInt(height), Uint8Array.of(12));
    const tag = scriptPushData(new TextEncoder().encode("tbg/"));
    const scriptLen = scriptPrefix.length + 12 + tag.length;
    const coinb1 = "01000000" + "01" + "00".repeat(32) + "ffffffff" + toHex(varint(scriptLen)) +
      toHex(scriptPrefix);
    const payout = fromHex("0014751e76e8199196d454941c45d1b3a323f1433bd6");
    const commitment = fromHex(tpl.default_witness_commitment as string);
    const value = new DataView(new ArrayBuffer(8));
    value.setBigUint64(0, BigInt(tpl.coinbasevalue as number), true);
    const coinb2 = toHex(concatBytes(
      tag,
      fromHex("ffffffff"),
      Uint8Array.of(2),
      new Uint8Array(value.buffer),
      Uint8Array.of(payout.length),
      payout,
      new Uint8Array(8),
      Uint8Array.of(commitment.length),
      commitment,
      new Uint8Array(4),
    ));
    const job: StratumJob = {
      jobId: "1",
      prevHash: stratumPrevHash(tpl.previousblockhash as string),
      coinb1,
      coinb2,
      merkleBranch: merkleBranch(txs.map((t) => reversed(fromHex(t.txid)))),
      version: (tpl.version as number).toString(16).padStart(8, "0"),
      nbits: tpl.bits as string,
      ntime: (tpl.curtime as number).toString(16),
      cleanJobs: true,
      receivedAt: new Date(),
    };
    const extranonce1 = "a1b2c3d4";
    const extranonce2 = "0000000000000001";
    const { target } = compactToTarget(parseInt(job.nbits, 16));
    let header: Uint8Array;
    for (let nonce = 0;; nonce++) {
      header = buildHeader({
        job,
        extranonce1,
        extranonce2,
        ntime: job.ntime,
        nonce: nonce.toString(16),
      });
      if (hashToBigInt(sha256d(header)) <= target) break;
    }
    const coinbase = fromHex(job.coinb1 + extranonce1 + extranonce2 + job.coinb2);
    const block = concatBytes(
      header,
      varint(1 + txs.length),
      coinbase,
      ...txs.map((t) => fromHex(t.data)),
    );
    assert.equal(await peer.rpc("submitblock", [toHex(block)]), null);
    assert.equal(peer.tipHash, display(sha256d(header)));
    const sub = peer.submitted[0];
    assert.equal(sub.coinbase?.outputs[0].address, TEST_ADDRESS);
    assert.equal(sub.coinbase?.bip34Height, height);
  } finally {
    await peer.close();
  }
});

Deno.test("grinder: finds the lowest nonce meeting a target, whatever the thread count", async () => {
  const header = crypto.getRandomValues(new Uint8Array(80));
  const target = (1n << 256n) / 20_000n; // ~20k hashes expected
  const one = await grind(header, target, { threads: 1 });
  const two = await grind(header, target, { threads: 2 });
  assert.ok(one.found && two.found);
  assert.equal(one.nonce, two.nonce);
  const solved = Uint8Array.from(header);
  new DataView(solved.buffer).setUint32(76, one.nonce!, true);
  assert.equal(one.hash, display(sha256d(solved)));
  assert.ok(hashToBigInt(sha256d(solved)) <= target);
  for (let nonce = 0; nonce < one.nonce!; nonce++) {
    new DataView(solved.buffer).setUint32(76, nonce, true);
    assert.ok(hashToBigInt(sha256d(solved)) > target, `nonce ${nonce} already met the target`);
  }
  const later = await grind(header, target, { startNonce: one.nonce! + 1 });
  assert.ok(!later.found || later.nonce! > one.nonce!);
});

Deno.test("grinder: an impossible target runs the whole range and reports hashes/s", async () => {
  await buildGrinder();
  const header = crypto.getRandomValues(new Uint8Array(80));
  const count = 1 << 24;
  const result = await grind(header, 0n, { count });
  assert.equal(result.found, false);
  assert.equal(result.hashes, count);
  assert.ok(result.rate > 0);
  const diff1Seconds = 2 ** 32 / result.rate;
  console.log(
    `grinder: ${
      (result.rate / 1e6).toFixed(2)
    } MH/s on ${navigator.hardwareConcurrency} threads; ` +
      `a difficulty-1 share takes ~${Math.round(diff1Seconds)} s on average here`,
  );
});

// ---------------------------------------------------------------------------------------------
// Against a real ckpool
// ---------------------------------------------------------------------------------------------

const CKPOOL_SRC = Deno.env.get("CKPOOL_SRC");
const REAL_MINING = Deno.env.get("TBG_REAL_MINING") === "1";
if (!CKPOOL_SRC) {
  console.log(
    "stratum_miner_test: ckpool integration skipped: set CKPOOL_SRC=/path/to/ckpool-checkout " +
      "(a clean checkout at the commit in patches/UPSTREAM.lock) to run it.",
  );
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function readShareLog(dir: string): Promise<Array<Record<string, unknown>>> {
  const entries: Array<Record<string, unknown>> = [];
  const walk = async (path: string) => {
    for await (const entry of Deno.readDir(path)) {
      const full = `${path}/${entry.name}`;
      if (entry.isDirectory) await walk(full);
      else if (entry.name.endsWith(".sharelog")) {
        for (const line of (await Deno.readTextFile(full)).split("\n")) {
          if (line.trim()) entries.push(JSON.parse(line));
        }
      }
    }
  };
  await walk(dir);
  return entries;
}

Deno.test({
  name: "ckpool integration: subscribe, authorize, shares judged as ckpool judges them",
  ignore: !CKPOOL_SRC,
  // ckpool's own threads and the peer's sockets are torn down in finally
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const work = await Deno.makeTempDir({ prefix: "tbg-ckpool-it-" });
    let ckpool: CkpoolProcess | undefined;
    const peer = await startBitcoindPeer();
    const miners: Array<{ close(): Promise<void> }> = [];
    try {
      const build = await buildPatchedCkpool(CKPOOL_SRC!);
      const binary = build.ckpool;
      console.log(`ckpool ${build.cached ? "from cache" : `built in ${build.seconds} s`}`);
      // two transactions in the first template: jobs carry a real merkle branch
      for (let i = 0; i < 2; i++) {
        const tx = new Transaction();
        tx.addInput(new Uint8Array(32).fill(0x60 + i), 0);
        tx.addOutput(Uint8Array.of(0x51), 5000n);
        peer.addMempoolTransaction(tx.toHex(), 250n);
      }
      const port = freePort();
      await Deno.mkdir(`${work}/sock`);
      const configPath = await writeCkpoolConfig(`${work}/ckpool.conf`, {
        btcdUrl: peer.url,
        btcdUser: peer.user,
        btcdPass: peer.pass,
        stratumPort: port,
        logdir: `${work}/logs`,
        updateInterval: 600,
      });
      ckpool = startCkpool({
        binary,
        configPath,
        sockDir: `${work}/sock`,
        loglevel: 6,
        logShares: true,
      });
      await ckpool.waitForOutput(/Network diff set to/, 60_000);
      const startup = peer.calls.slice();

      await t.step(
        "start-up: ckpool asks the peer for a template, checks its address and coinbase",
        () => {
          console.log(`ckpool start-up RPCs: ${startup.join(", ")}`);
          assert.equal(startup[0], "getblocktemplate");
          for (const method of ["validateaddress", "getbestblockhash", "decoderawtransaction"]) {
            assert.ok(startup.includes(method), `no ${method} at start-up`);
          }
          const gbt = peer.requests.find((r) => r.method === "getblocktemplate")!;
          assert.deepEqual((gbt.params as Array<{ rules: string[] }>)[0].rules.toSorted(), [
            "segwit",
            "signet",
          ]);
          assert.ok(
            peer.requests.some((r) =>
              r.method === "validateaddress" && (r.params as string[])[0] === TEST_ADDRESS
            ),
          );
          assert.ok(
            !peer.requests.some((r) => r.errorCode !== undefined && r.method !== "validateaddress"),
          );
        },
      );

      const worker = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7.rig1";
      const payout = "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262";
      const miner = await waitFor(
        () => connectMiner({ port, user: worker }),
        { timeoutMs: 20_000, what: "ckpool's stratum port" },
      );
      miners.push(miner);

      await t.step(
        "subscribe and authorize as address.worker; difficulty 1 and a job paying the address",
        async () => {
          const { extranonce1, extranonce2Size } = await miner.subscribe();
          assert.match(extranonce1, /^[0-9a-f]{8}$/);
          assert.equal(extranonce2Size, 8);
          assert.equal(await miner.authorize(), true);
          assert.equal(await miner.waitForDifficulty(), 1);
          const job = await miner.waitFor(
            () => miner.jobs.find((j) => j.coinb2.includes(payout)),
            "a job whose coinbase pays the miner's address",
          );
          assert.equal(job.prevHash, stratumPrevHash(peer.tipHash));
          assert.equal(job.nbits, "207fffff");
          assert.equal(job.version, "20000000");
          assert.equal(job.merkleBranch.length, 2, "two mempool transactions: a two-level branch");
        },
      );

      await t.step(
        'a random nonce is rejected "Above target"; ckpool hashed the same header',
        async () => {
          const share = await miner.submitShare();
          assert.equal(share.accepted, false);
          assert.equal(share.rejectReason, "Above target");
          assert.equal(share.error, null);
          const logged = await waitFor(
            async () =>
              (await readShareLog(`${work}/logs`)).find((e) =>
                e.nonce === share.params[4] && e.nonce2 === share.params[2]
              ),
            { what: "the share in ckpool's share log" },
          );
          assert.equal(logged.hash, share.hash, "ckpool computed the same block header hash");
          assert.equal(logged["reject-reason"], "Above target");
          assert.ok(Math.abs((logged.sdiff as number) / share.shareDifficulty - 1) < 1e-9);
        },
      );

      await t.step("bad work is rejected with ckpool's reasons", async () => {
        const badJob = await miner.submitShare({ jobId: "ffffffffffffffff" });
        assert.equal(badJob.rejectReason, "Invalid JobID");
        const job = miner.job!;
        const future = await miner.submitShare({
          ntime: (parseInt(job.ntime, 16) + 8000).toString(16),
        });
        assert.equal(future.rejectReason, "Ntime out of range");
        const stranger = await connectMiner({ port, user: "not-an-address.rig" });
        miners.push(stranger);
        await stranger.subscribe();
        assert.equal(
          await stranger.authorize(),
          false,
          "solo mode refuses a username that is no address",
        );
      });

      await t.step(
        "the network finds a block: a clean job on the new tip; old work is stale",
        async () => {
          const old = miner.job!;
          const seen = miner.jobs.length;
          const hash = await peer.mineBlock();
          const fresh = await miner.waitFor(
            () => miner.jobs.slice(seen).find((j) => j.prevHash === stratumPrevHash(hash)),
            "a job on the new tip",
          );
          assert.equal(fresh.cleanJobs, true);
          assert.equal(fresh.merkleBranch.length, 0, "the mined block took the mempool");
          const stale = await miner.submitShare({ jobId: old.jobId });
          assert.equal(stale.rejectReason, "Stale");
        },
      );

      await t.step({
        name: "a real difficulty-1 share becomes a block paying the miner (TBG_REAL_MINING=1)",
        ignore: !REAL_MINING,
        fn: async () => {
          const before = peer.submitted.length;
          const share = await miner.submitValidShare({ deadlineMs: 45 * 60_000 });
          console.log(
            `diff-1 share after ${share.grind.hashes} hashes in ${
              share.grind.seconds.toFixed(1)
            } s ` +
              `(${(share.grind.rate / 1e6).toFixed(2)} MH/s): ${share.hash}`,
          );
          assert.equal(
            share.accepted,
            true,
            `share refused: ${share.rejectReason ?? JSON.stringify(share.error)}`,
          );
          assert.ok(share.shareDifficulty >= 1);
          const block = await peer.waitForSubmission({ count: before, timeoutMs: 30_000 });
          assert.equal(block.hash, share.hash);
          assert.equal(block.result, null);
          assert.equal(block.accepted, true);
          assert.equal(peer.tipHash, share.hash);
          assert.equal(block.coinbase?.outputs[0].scriptPubKey, payout);
          assert.equal(block.coinbase?.outputs[0].address, worker.split(".")[0]);
        },
      });
    } finally {
      for (const m of miners) await m.close().catch(() => {});
      if (ckpool) await ckpool.stop();
      await peer.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
