// Reads flags from the control plane through stock Node SDKs and prints what they saw.
// Usage: node check.mjs <unleash|unleash-delta|unleash-streaming|ofrep> <control-plane url> <key> <flags json>
// Prints one JSON line with the first answers, then, after a line on stdin, one more
// line once the change it names is seen (or after a 15 s timeout).
import { createInterface } from "node:readline";
import { OpenFeature } from "@openfeature/server-sdk";
import { OFREPProvider } from "@openfeature/ofrep-provider";
import { initialize } from "unleash-client";

const [kind, url, key, flagsJson] = process.argv.slice(2);
const flags = JSON.parse(flagsJson);
const users = Array.from({ length: 200 }, (_, i) => `user-${i}`);

async function unleashReader(mode) {
  const streaming = mode === "unleash-streaming";
  const client = initialize({
    experimentalMode: streaming
      ? { type: "streaming" }
      : { type: "polling", format: mode === "unleash-delta" ? "delta" : "full" },
    url: `${url}/api`,
    appName: "reach-node",
    customHeaders: { Authorization: key },
    refreshInterval: streaming ? 60000 : 1000,  // streaming: changes only come by the stream
    metricsInterval: 1000,
    disableMetrics: false,
    storageProvider: { set: async () => {}, get: async () => undefined },
  });
  await new Promise((resolve, reject) => {
    client.once("synchronized", resolve);
    client.once("error", reject);
  });
  return {
    isOn: async (name, user) => client.isEnabled(name, user ? { userId: user } : {}),
    variant: async (name, user) => {
      const v = client.getVariant(name, { userId: user });
      return { name: v.name, payload: v.payload ?? null };
    },
    close: () => client.destroy(),
  };
}

async function ofrepReader() {
  const provider = new OFREPProvider({ baseUrl: url, headers: [["Authorization", key]] });
  await OpenFeature.setProviderAndWait(provider);
  const client = OpenFeature.getClient();
  return {
    isOn: async (name, user) =>
      client.getBooleanValue(name, false, user ? { targetingKey: user } : {}),
    variant: async (name, user) => {
      const d = await client.getStringDetails(name, "none", { targetingKey: user });
      return { name: d.variant, payload: d.value, error: d.errorCode ?? null };
    },
    close: () => OpenFeature.close(),
  };
}

// One user after another: OFREP evaluates each call on the server, and a burst of
// hundreds at once on a loaded machine measures the machine, not the protocol.
async function eachUser(evaluate) {
  const answers = [];
  for (const u of users) answers.push(await evaluate(u));
  return answers;
}

const reader = kind === "ofrep" ? await ofrepReader() : await unleashReader(kind);
const first = {
  on: await reader.isOn(flags.on),
  off: await reader.isOn(flags.off),
  rollout: await eachUser((u) => reader.isOn(flags.rollout, u)),
  variants: await eachUser((u) => reader.variant(flags.variants, u)),
};
console.log(JSON.stringify(first));

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { flag, expect } = JSON.parse(line);
  const deadline = Date.now() + 15000;
  let seen = await reader.isOn(flag);
  while (seen !== expect && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    seen = await reader.isOn(flag);
  }
  console.log(JSON.stringify({ flag, seen }));
  break;
}
reader.close();
process.exit(0);
