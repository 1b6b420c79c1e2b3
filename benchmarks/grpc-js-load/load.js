#!/usr/bin/env node
// An independent load client of catur.v1.Placement: @grpc/grpc-js, built from the .proto
// alone (no Catur code), so what it measures is what any gRPC client would see.
//
//   npm install --prefix benchmarks/grpc-js-load         # once
//   node benchmarks/grpc-js-load/load.js closed --target 127.0.0.1:50051 --concurrency 16 --seconds 8
//   node benchmarks/grpc-js-load/load.js open --target 127.0.0.1:50051 --rate 1000 --seconds 20 --deadline-ms 2000
//   ... --channels 4        # four connections instead of one, calls spread over them in turn
//
// closed: `concurrency` calls kept in flight back to back for `seconds`: the saturation rate
//         (OK answers per second).
// open:   calls sent at a fixed `rate` (a 1 ms tick sends every call that is due, so a slow
//         answer never delays the next send: no coordinated omission), each with a deadline of
//         `deadline-ms`, for `seconds`. Then it waits for the last answers (at most the
//         deadline + 5 s) and reports.
// retry:  like closed, on a channel with the shipped service config (retries of UNAVAILABLE,
//         catur.service.client.RETRY_POLICY), and a call that still ends UNAVAILABLE is simply
//         followed by the next one at the same address: the clients of a single replica that is
//         stopped under them (benchmarks/bench_stop_grpcjs.py). Stops after `seconds`.
//
// Bounded: at most rate x seconds calls (open) or 1,000,000 (closed), and the run ends at
// seconds + deadline + 5 s whatever happens. Prints one JSON object: calls by status code,
// OK per second over the sending window, OK answers that arrived after their deadline (by
// this client's clock), latency percentiles of the OK answers.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const args = { mode: argv[0], target: '127.0.0.1:50051', concurrency: 16, seconds: 10, rate: 500, deadlineMs: 2000, channels: 1 };
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in args)) throw new Error(`unknown option ${argv[i]}`);
    args[key] = key === 'target' ? argv[i + 1] : Number(argv[i + 1]);
    if (key !== 'target' && !Number.isFinite(args[key])) throw new Error(`${argv[i]} needs a number, got ${argv[i + 1]}`);
  }
  if (!['closed', 'open', 'retry'].includes(args.mode)) throw new Error('mode must be closed, open or retry');
  if (!(Number.isInteger(args.channels) && args.channels >= 1)) throw new Error(`--channels needs a whole number >= 1, got ${args.channels}`);
  return args;
}

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, value]) => [value, name]));

// The service comes from the .proto; requests are encoded once (64 variants) and answers are
// not decoded (only their status matters here), so the client spends its CPU on the calls
// themselves: on a small shared machine a client that decodes everything competes with the
// server it measures.
const SERVICE_CONFIG = JSON.stringify({
  methodConfig: [{
    name: [{ service: 'catur.v1.Placement' }],
    retryPolicy: {
      maxAttempts: 5, initialBackoff: '0.05s', maxBackoff: '1s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

// `channels` connections (each channel with its own subchannel pool, so they do not share
// one), calls spread over them in turn: many clients, as a server behind many hypervisors sees
// them (one connection lands on one process of a server that runs several on one port).
function loadStub(target, retry, channels) {
  const protoPath = path.resolve(__dirname, '../../proto/catur/v1/placement.proto');
  const definition = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: false });
  const place = definition['catur.v1.Placement'].Place;
  const raw = { Place: { ...place, requestSerialize: (b) => b, responseDeserialize: (b) => b } };
  const Client = grpc.makeGenericClientConstructor(raw, 'Placement');
  const encoded = Array.from({ length: 64 }, (_, i) => place.requestSerialize(request(i)));
  const options = retry ? { 'grpc.service_config': SERVICE_CONFIG, 'grpc.enable_retries': 1 } : {};
  if (channels > 1) options['grpc.use_local_subchannel_pool'] = 1;
  const clients = Array.from({ length: channels }, () => new Client(target, grpc.credentials.createInsecure(), options));
  let turn = 0;
  const client = {
    Place: (body, callOptions, callback) => clients[turn++ % clients.length].Place(body, callOptions, callback),
    close: () => clients.forEach((c) => c.close()),
  };
  return { client, encoded };
}

function request(i) {
  return {
    topology: { preset: 'intel-2s' },
    usage: { used_vcpus: [i % 20, (i * 7) % 20], used_mem_mib: [4096, 8192] },
    vm: { vcpus: 1 + (i % 4), mem_mib: 2048 * (1 + (i % 4)) },
    host_id: `h${i % 64}`,
  };
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * sorted.length))];
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const { client: stub, encoded } = loadStub(args.target, args.mode === 'retry', args.channels);
  const codes = {};
  const latencies = [];
  const sendLags = [];
  const examples = [];  // the first few unexpected errors, with their details  // how late this client sent each call (it shares the machine)
  let sent = 0, answered = 0, okLate = 0, okInWindow = 0;
  const t0 = performance.now();
  const windowEnd = t0 + args.seconds * 1000;
  const maxCalls = args.mode === 'open' ? Math.ceil(args.rate * args.seconds) : 1000000;
  const hardEnd = windowEnd + args.deadlineMs + 5000;
  let finished = false;
  let readySaid = false;

  function call(i, scheduled, onDone) {
    sent++;
    const sentAt = performance.now();
    sendLags.push(sentAt - scheduled);
    const deadline = new Date(Date.now() + args.deadlineMs);
    stub.Place(encoded[i % encoded.length], { deadline }, (err) => {
      const now = performance.now();
      const code = err ? CODE_NAMES[err.code] || String(err.code) : 'OK';
      codes[code] = (codes[code] || 0) + 1;
      if (err && code !== 'UNAVAILABLE' && code !== 'RESOURCE_EXHAUSTED' && code !== 'DEADLINE_EXCEEDED' && examples.length < 5) {
        examples.push(`${code}: ${err.details}`);
      }
      answered++;
      if (!err && !readySaid && args.mode === 'retry') {
        readySaid = true;
        process.stderr.write('ready\n');  // the first answer: the stop may begin
      }
      if (!err) {
        const latency = now - scheduled;
        latencies.push(latency);
        if (now - sentAt > args.deadlineMs) okLate++;  // the deadline runs from the send
        if (now <= windowEnd) okInWindow++;
      }
      if (onDone) onDone();
    });
  }

  function report() {
    if (finished) return;
    finished = true;
    clearInterval(ticker);
    latencies.sort((a, b) => a - b);
    sendLags.sort((a, b) => a - b);
    const ok = codes.OK || 0;
    const out = {
      mode: args.mode, target: args.target, seconds: args.seconds, channels: args.channels,
      rate: args.mode === 'open' ? args.rate : null,
      concurrency: args.mode === 'closed' ? args.concurrency : null,
      deadline_ms: args.deadlineMs, sent, answered, unanswered: sent - answered, codes, examples,
      ok_per_s: okInWindow / args.seconds,
      ok_total_per_s: ok / args.seconds,
      ok_after_deadline: okLate,
      cancelled_fraction: sent ? (codes.CANCELLED || 0) / sent : 0,
      send_lag_ms: { p50: percentile(sendLags, 50), p99: percentile(sendLags, 99) },
      latency_ms: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: latencies.length ? latencies[latencies.length - 1] : null },
    };
    console.log(JSON.stringify(out));
    stub.close();
    process.exit(0);
  }

  let ticker = null;
  if (args.mode === 'closed' || args.mode === 'retry') {
    const loop = (k) => {
      if (performance.now() >= windowEnd || sent >= maxCalls) {
        if (answered === sent) report();
        return;
      }
      call(sent, performance.now(), () => loop(k));
    };
    for (let k = 0; k < args.concurrency; k++) loop(k);
    ticker = setInterval(() => { if (performance.now() > hardEnd) report(); }, 100);
  } else {
    const interval = 1000 / args.rate;
    ticker = setInterval(() => {
      const now = performance.now();
      // Every call whose scheduled time has come is sent now, timed from its schedule.
      while (sent < maxCalls && t0 + sent * interval <= Math.min(now, windowEnd)) call(sent, t0 + sent * interval);
      if ((now >= windowEnd || sent >= maxCalls) && answered === sent) report();
      if (now > hardEnd) report();
    }, 1);
  }
}

main();
