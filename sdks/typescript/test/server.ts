/** A real `agentnexus serve` for the tests (SQLite in a temporary directory, a free port), its
 * keys, and an owner who approves from the dashboard. */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const OWNER = "owner@example.com";
const PASSWORD = "correct horse battery staple";


/** The policy both SDKs' suites test against. */
export const POLICY = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "testdata", "payments.yaml"),
  "utf8",
);

export interface Server {
  url: string;
  adminKey: string;
  agentKey: string;
  approve(evaluationId: string, decision?: "approve" | "reject"): Promise<void>;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address ? address.port : 0;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function start(binary: string, dir: string): Promise<{ child: ChildProcess; port: number; out: () => string }> {
  const port = await freePort();
  const child = spawn(binary, ["serve"], {
    cwd: dir,
    env: {
      ...process.env,
      AGENTNEXUS_DATABASE_URL: `sqlite://${dir}/sdk.db`,
      AGENTNEXUS_LISTEN: `127.0.0.1:${port}`,
      AGENTNEXUS_BOOTSTRAP_EMAIL: OWNER,
      AGENTNEXUS_BOOTSTRAP_PASSWORD: PASSWORD,
      AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let log = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const until = Date.now() + 30_000;
  while (Date.now() < until && child.exitCode === null) {
    if (log.includes("AgentNexus is serving") && /admin key:\s+anx_/.test(out)) return { child, port, out: () => out };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill();
  throw new Error(`agentnexus serve did not start:\n${log}`);
}

export async function startServer(): Promise<Server> {
  const binary = process.env.AGENTNEXUS_BIN;
  if (!binary || !existsSync(binary)) {
    throw new Error("AGENTNEXUS_BIN must name a built agentnexus binary (cargo build -p agentnexus)");
  }
  let started: Awaited<ReturnType<typeof start>> | undefined;
  for (let i = 0; i < 5 && !started; i++) {
    try {
      started = await start(binary, mkdtempSync(join(tmpdir(), "anx-ts-")));
    } catch (e) {
      if (i === 4) throw e;
    }
  }
  const { child, port, out } = started!;
  const url = `http://127.0.0.1:${port}`;
  const adminKey = /admin key:\s+(anx_[A-Za-z0-9]+)/.exec(out())![1]!;
  const admin = { Authorization: `Bearer ${adminKey}` };
  let r = await fetch(`${url}/api/v1/policies/payments`, {
    method: "PUT",
    headers: { ...admin, "Content-Type": "application/yaml" },
    body: POLICY,
  });
  if (r.status !== 200) throw new Error(await r.text());
  r = await fetch(`${url}/api/v1/keys`, {
    method: "POST",
    headers: { ...admin, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "sdk", scope: "agent" }),
  });
  const agentKey = ((await r.json()) as { key: string }).key;
  return {
    url,
    adminKey,
    agentKey,
    async approve(evaluationId, decision = "approve") {
      const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
      const post = (path: string, body: string, cookie?: string) =>
        fetch(`${url}${path}`, {
          method: "POST",
          redirect: "manual",
          headers: { "Content-Type": "application/x-www-form-urlencoded", ...(cookie ? { Cookie: cookie } : {}) },
          body,
        });
      const signedIn = await post("/sign-in", form({ email: OWNER, password: PASSWORD }));
      const cookie = (signedIn.headers.get("set-cookie") ?? "").split(";")[0]!;
      const inbox = await (await fetch(`${url}/inbox`, { headers: { Cookie: cookie } })).text();
      const csrf = /name="csrf" value="([^"]+)"/.exec(inbox)![1]!;
      const opened = await post(`/inbox/${evaluationId}`, form({ csrf }), cookie);
      const link = opened.headers.get("location")!;
      const decided = await post(link, form({ decision, comment: "checked" }));
      if (decided.status !== 200) throw new Error(`deciding answered ${decided.status}`);
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    },
  };
}

export function readmeBlocks(path: string): string[] {
  return [...readFileSync(path, "utf8").matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}
