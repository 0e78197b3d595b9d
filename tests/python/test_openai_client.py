"""The official `openai` Python package against a running Troupe with the echo provider.

Run by `cargo test --test api openai_python` (which starts the server); by hand:
    TROUPE_BASE_URL=http://127.0.0.1:7878 TROUPE_TOKEN=... python tests/python/test_openai_client.py
"""

import json
import os
import unittest
import urllib.request
import uuid

import openai
from openai import OpenAI

BASE = os.environ.get("TROUPE_BASE_URL", "http://127.0.0.1:7878")
TOKEN = os.environ.get("TROUPE_TOKEN", "unused")


def client() -> OpenAI:
    return OpenAI(base_url=BASE + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


def slow(text: str, delay_ms: int) -> str:
    """A prompt the echo provider answers one word every `delay_ms`."""
    return json.dumps({"script": {"chunk_delay_ms": delay_ms, "chunk_words": 1}, "text": text})


class ChatCompletions(unittest.TestCase):
    def test_create_without_stream(self):
        reply = client().chat.completions.create(
            model="echo",
            messages=[
                {"role": "system", "content": "you are an echo"},
                {"role": "user", "content": "hello from python"},
            ],
        )
        self.assertEqual(reply.object, "chat.completion")
        self.assertTrue(reply.id.startswith("chatcmpl-"))
        self.assertEqual(reply.choices[0].message.role, "assistant")
        self.assertEqual(reply.choices[0].message.content, "hello from python")
        self.assertEqual(reply.choices[0].finish_reason, "stop")
        self.assertEqual(reply.usage.total_tokens, 6)

    def test_create_with_stream_and_usage(self):
        stream = client().chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "streamed words come in pieces"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual(len({c.id for c in chunks}), 1)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, "streamed words come in pieces")
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        self.assertEqual(finishes[-1], "stop")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 5)

    def test_session_key_keeps_one_session_over_two_calls(self):
        key = "py-" + uuid.uuid4().hex
        c = client()
        sessions, ids = [], []
        for prompt in ["my name is Ada", "what is my name"]:
            raw = c.chat.completions.with_raw_response.create(
                model="echo",
                messages=[{"role": "user", "content": prompt}],
                extra_headers={"X-Session-Key": key},
            )
            reply = raw.parse()
            self.assertEqual(reply.choices[0].message.content, prompt)
            sessions.append(raw.headers["x-session-id"])
            ids.append(reply.id.removeprefix("chatcmpl-"))
        self.assertEqual(sessions[0], sessions[1])
        # Both turns are in that one session's log: each is readable as a response of it.
        session = uuid.UUID(sessions[0]).hex
        for turn, prompt in zip(ids, ["my name is Ada", "what is my name"]):
            response = c.responses.retrieve(f"resp_{session}{turn}")
            self.assertEqual(response.status, "completed")
            self.assertEqual(response.output_text, prompt)
        # With the REST routes merged, the session's turn list says the same.
        request = urllib.request.Request(
            f"{BASE}/api/v1/sessions/{sessions[0]}/turns",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request) as answer:
                turns = json.load(answer)["turns"]
            self.assertEqual([t["content"] for t in turns], ["my name is Ada", "what is my name"])
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise

    def test_unknown_model_raises_not_found(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            client().chat.completions.create(
                model="no-such-provider", messages=[{"role": "user", "content": "hi"}]
            )
        self.assertEqual(caught.exception.code, "model_not_found")

    def test_wrong_token_raises_authentication_error(self):
        wrong = OpenAI(base_url=BASE + "/v1", api_key="wrong-" + TOKEN, max_retries=0)
        if TOKEN == "unused":
            self.skipTest("the server runs without tokens")
        with self.assertRaises(openai.AuthenticationError):
            wrong.models.list()


class Responses(unittest.TestCase):
    def test_create_with_stream(self):
        stream = client().responses.create(
            model="echo", input="a streamed response", instructions="echo it", stream=True
        )
        events = list(stream)
        types = [e.type for e in events]
        self.assertEqual(types[0], "response.created")
        self.assertEqual(types[1], "response.in_progress")
        self.assertEqual(types[-1], "response.completed")
        self.assertIn("response.output_text.delta", types)
        numbers = [e.sequence_number for e in events]
        self.assertEqual(numbers, sorted(set(numbers)))
        delta = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        self.assertEqual(delta, "a streamed response")
        final = events[-1].response
        self.assertEqual(final.output_text, "a streamed response")
        self.assertEqual(final.instructions, "echo it")

    def test_background_response_resumed_with_starting_after(self):
        c = client()
        text = "b1 b2 b3 b4 b5 b6 b7 b8"
        stream = c.responses.create(
            model="echo", input=slow(text, 80), background=True, stream=True
        )
        seen = []
        for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                break
        stream.close()  # the client drops the first stream mid-answer
        response_id = seen[0].response.id
        last = seen[-1].sequence_number
        resumed = list(c.responses.retrieve(response_id, stream=True, starting_after=last))
        self.assertTrue(all(e.sequence_number > last for e in resumed))
        self.assertEqual(resumed[-1].type, "response.completed")
        deltas = [e.delta for e in seen + resumed if e.type == "response.output_text.delta"]
        self.assertEqual("".join(deltas), text)
        final = c.responses.retrieve(response_id)
        self.assertEqual(final.status, "completed")
        self.assertEqual(final.output_text, text)

    def test_previous_response_id_continues_the_session(self):
        c = client()
        first = c.responses.with_raw_response.create(model="echo", input="first")
        second = c.responses.with_raw_response.create(
            model="echo", input="second", previous_response_id=first.parse().id
        )
        self.assertEqual(first.headers["x-session-id"], second.headers["x-session-id"])
        self.assertEqual(second.parse().previous_response_id, first.parse().id)


class Models(unittest.TestCase):
    def test_list(self):
        models = client().models.list()
        ids = [m.id for m in models]
        self.assertIn("echo", ids)
        self.assertTrue(all(m.owned_by == "troupe" for m in models))
        self.assertEqual(client().models.retrieve("echo").id, "echo")


if __name__ == "__main__":
    print(f"openai package {openai.__version__} against {BASE}", flush=True)
    unittest.main(verbosity=2)
