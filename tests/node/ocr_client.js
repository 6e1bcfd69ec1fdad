#!/usr/bin/env node
// Calls the OCR server from Node.js the way a user in another language would: the
// project's .proto loaded unchanged at run time with @grpc/proto-loader, the calls made
// with @grpc/grpc-js. Prints one JSON object on stdout; tests/test_node_client.py runs it.
//
//   node ocr_client.js --address HOST:PORT --proto-root DIR --include DIR IMAGE...
//
// --proto-root: the folder holding ocr/v1/ocr.proto (the repository's proto/).
// --include:    a folder holding google/rpc/status.proto, which ocr.proto imports; Python's
//               googleapis-common-protos ships it in site-packages (protobufjs brings
//               google/protobuf/*.proto itself).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

function unary(client, method, request, deadlineS) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineS * 1000);
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      address: { type: "string", default: "localhost:50051" },
      "proto-root": { type: "string" },
      include: { type: "string", multiple: true, default: [] },
      timeout: { type: "string", default: "30" },
    },
    allowPositionals: true,
  });
  const protoRoot = values["proto-root"];
  if (!protoRoot) fail("--proto-root is required");
  const protoFile = path.join(protoRoot, "ocr", "v1", "ocr.proto");
  if (!fs.existsSync(protoFile)) fail(`no ${protoFile}`);

  const definition = protoLoader.loadSync("ocr/v1/ocr.proto", {
    includeDirs: [protoRoot, ...values.include],
    keepCase: true, // field names as in the .proto (snake_case), like the JSON of other clients
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const ocr = grpc.loadPackageDefinition(definition).ocr.v1;
  const client = new ocr.OcrService(values.address, grpc.credentials.createInsecure());
  const timeoutS = Number(values.timeout);

  try {
    const models = await unary(client, "ListModels", {}, timeoutS);
    const images = positionals.map((file) => ({ data: fs.readFileSync(file) }));
    const lines = await unary(client, "RecognizeLines", { images }, timeoutS);
    const out = {
      models: models.models.map((m) => ({
        name: m.name,
        is_default: m.is_default,
        charset_size: m.charset_size,
        input_height: m.input_height,
      })),
      limits: { max_lines_per_request: models.limits ? models.limits.max_lines_per_request : null },
      model: lines.model,
      results: lines.results.map((r) => ({
        text: r.text,
        confidence: r.confidence,
        words: r.words.map((w) => ({ text: w.text, x_start: w.x_start, x_end: w.x_end })),
      })),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  } catch (err) {
    // A gRPC error: its status name and message, as the other clients report them.
    const code = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || err.code;
    fail(`${err.details || err.message} (${code})`);
  } finally {
    client.close();
  }
}

main();
