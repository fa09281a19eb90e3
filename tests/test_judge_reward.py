"""The judge as the RL quality reward (evaluation/judge_reward.py): the evaluation's rubric
prompt goes to an OpenAI-compatible server on 127.0.0.1, its scores come back on 0..1, an
answer whose judgement never parses scores None (left out of TRL's sum), the object survives
pickling (Ray hands it to the trainer), and the trainer's reward list carries it as `quality`.
The server here is a stand-in for a served judge: it answers by the rubric's format, with
scores that depend on the text it was asked about, so a wrong prompt or parse shows."""
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selflengthen import preflight
from selflengthen.commands import rl
from selflengthen.evaluation import rubrics
from selflengthen.evaluation.judge_reward import JudgeReward, message_text, unit_quality
from selflengthen.training import grpo
from tests.conftest import REPO, run_cli

DIMENSIONS = rubrics.get_rubric("longbench").dimensions


class Judge(BaseHTTPRequestHandler):
    asked: list[str] = []

    def log_message(self, *args):
        pass

    def reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # /v1/models
        self.reply({"object": "list", "data": [{"id": "judge-7b", "object": "model"}]})

    def do_POST(self):  # /v1/chat/completions
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][-1]["content"]
        Judge.asked.append(prompt)
        if "GARBLED" in prompt:
            text = "I cannot rate this."
        else:
            score = 5 if "EXCELLENT" in prompt else 1
            text = "```json\n" + json.dumps({d: score for d in DIMENSIONS}) + "\n```"
        self.reply({"id": "x", "object": "chat.completion", "model": "judge-7b",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})


@pytest.fixture()
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    Judge.asked = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def judge_settings(url: str) -> dict:
    return {"kind": "openai", "base_url": url, "model": "judge-7b", "retries": 2, "max_retries": 0,
            "ready_timeout": 5, "timeout": 10, "segments": 0}


def test_the_judge_rates_each_answer_on_the_rubric_and_maps_it_to_0_1(judge_url):
    reward = pickle.loads(pickle.dumps(JudgeReward(judge_settings(judge_url), "longbench", seed=3)))
    prompts = [[{"role": "user", "content": "Write about tides in about 100 words."}]] * 3
    completions = [[{"role": "assistant", "content": "An EXCELLENT text about tides."}],
                   [{"role": "assistant", "content": "A weak text."}],
                   [{"role": "assistant", "content": "GARBLED"}]]
    logged = {}
    assert reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 3,
                  log_metric=logged.__setitem__) == [1.0, 0.0, None]
    assert logged == {"quality/judged": pytest.approx(2 / 3)}
    # the rubric's own prompt carried the instruction and the answer; the garbled one was re-asked once
    assert len(Judge.asked) == 4 and all("Write about tides" in p for p in Judge.asked)
    assert sum("GARBLED" in p for p in Judge.asked) == 2
    assert reward.__name__ == "quality"  # TRL logs rewards/quality/mean


def test_a_judge_that_never_answers_in_the_rubrics_format_is_said_once(judge_url, caplog):
    reward = JudgeReward(judge_settings(judge_url), "longbench")
    prompts = [[{"role": "user", "content": "Write about tides in about 100 words."}]] * 2
    garbled = [[{"role": "assistant", "content": "GARBLED"}]] * 2
    logged = {}
    with caplog.at_level("WARNING", logger="selflengthen"):
        for _ in range(2):
            assert reward(prompts=prompts, completions=garbled, completion_ids=[[1]] * 2,
                          log_metric=logged.__setitem__) == [None, None]
    warnings = [r.getMessage() for r in caplog.records if "rubric's format" in r.getMessage()]
    assert logged == {"quality/judged": 0.0} and len(warnings) == 1 and "judge-7b" in warnings[0]


def test_the_trainer_takes_the_judge_as_its_quality_reward(judge_url):
    reward = JudgeReward(judge_settings(judge_url), "longbench")
    funcs = grpo.reward_functions(["length", "quality"], {"ceiling_factor": 2.0, "loop_floor": 0.3,
                                                          "quality_model": None, "quality_judge": reward}, {2})
    assert funcs[1] is reward


def test_unit_quality_spans_each_rubrics_scale():
    assert unit_quality("longbench", {d: 3 for d in DIMENSIONS}) == 0.5
    longen = rubrics.get_rubric("longen").dimensions
    assert unit_quality("longen", {d: 10 for d in longen}) == 1.0
    assert unit_quality("longen", {d: 1 for d in longen}) == 0.0
    assert message_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "u"


def test_a_judge_reward_needs_a_served_judge(tmp_path):
    quality = ["rl.rewards.use=[length,quality]", "rl.rewards.quality=judge"]
    proc = run_cli("rl", *quality, "judge=vllm", "judge.model=/models/judge", f"out_dir={tmp_path / 'rl'}", cwd=REPO)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("selflengthen: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "judge=openai" in lines[0], proc.stderr[-2000:]
    ok = preflight.composed("rl", [*quality, "judge=openai", "judge.model=judge-7b"])
    assert ok.rl.rewards.quality == "judge" and ok.judge.kind == "openai"


def test_the_summary_says_how_many_ratings_parsed_when_a_judge_was_used():
    step = {"step": 3, "words/mean": 80.0, "quality/judged": 0.25, "rewards/quality/mean": 0.5}
    manifest = {"train": {"steps": 3, "rewards": ["length", "quality"]}, "prompt_rows": 4,
                "generation": {"path": "transformers", "generated_tokens": 100}, "adapter": "a",
                "first_step": rl.summary_of({**step, "quality/judged": 1.0}), "last_step": rl.summary_of(step)}
    assert "  judged: 1.00 -> 0.25" in rl.report(manifest).splitlines()
    without = {**manifest, "first_step": rl.summary_of({"step": 1}), "last_step": rl.summary_of({"step": 3})}
    assert not [ln for ln in rl.report(without).splitlines() if "judged" in ln]
