// Drives Troupe's AG-UI door with the official @ag-ui/client (HttpAgent), as a CopilotKit
// frontend would. Env: TROUPE_URL (the /api/v1/agui URL), TROUPE_TOKEN, THREAD, PROMPT.
// Runs the prompt as run `run-1`, then replays run `run-1` with a fresh agent (a client that
// lost its stream), and prints one JSON object: each run's event types and resulting messages.
const { HttpAgent } = require("@ag-ui/client");

async function run(messages) {
  const agent = new HttpAgent({
    url: process.env.TROUPE_URL,
    threadId: process.env.THREAD,
    headers: { Authorization: `Bearer ${process.env.TROUPE_TOKEN}` },
    initialMessages: messages,
  });
  const types = [];
  await agent.runAgent({ runId: "run-1" }, {
    onEvent: ({ event }) => {
      types.push(event.type);
    },
  });
  return { types, messages: agent.messages };
}

(async () => {
  const first = await run([{ id: "u1", role: "user", content: process.env.PROMPT }]);
  const replay = await run([]);
  process.stdout.write(JSON.stringify({ first, replay }) + "\n");
})().catch((error) => {
  process.stderr.write(`agui client failed: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
