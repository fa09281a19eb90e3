"""Expected requests and tokens of a Self-Lengthen run, stage by stage and iteration by
iteration, as pure arithmetic over the config (`Shape`) and stated assumptions about what
the model does (`Assumptions`: pass rates, lengths, tokens per word). Mirrors the chains
of stages/augment.py, generate.py and extend.py (algorithm.md 1.1-1.4):

- augment: per wanted instruction, candidates until one passes the word bounds and dedup
  and the judge says yes, up to `tries`; a judge request per candidate that passes.
- generate: `samples` per instruction, each tried until it passes the quality check, up to
  `retries`; then length-biased resampling keeps DROP_SHORT_KEEP of them on average.
- extend: `attempts` per kept response, each tried until accepted, up to `retries`; a try
  runs all `rounds`, each a Stage 1 (expand the first half, keep 2/3) and a Stage 2
  (continue with the whole response in the prompt); then resampling again.
- train: one generator row and one extender row per kept extension, `epochs` times,
  each cut at train.max_length.

Every generated length is capped by max_tokens and by the context left after the prompt,
as the engines do. The next iteration's generator writes `carryover` x this iteration's
extended length (it was trained on it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Length-biased resampling keeps an item of rank r (1 = longest) when u > 2 r^3, u uniform:
# the kept share is the integral of max(0, 1 - 2 r^3) over r in [0, 1] = (3/4) 2^(-1/3).
DROP_SHORT_KEEP = 0.75 * 2 ** (-1 / 3)
JUDGE_ANSWER_TOKENS = 2  # "yes" or "no" and the end-of-turn token


@dataclass(frozen=True)
class Assumptions:
    """What the model does (the `estimate.*` keys); the output states every one."""

    initial_words: float = 1000.0        # mean words of iteration 1's generator responses
    growth_per_round: float = 1.26       # one two-stage round multiplies the length by this
    carryover: float = 1.0               # next generator's length / this iteration's extended length
    instruction_words: float = 40.0
    tokens_per_word: dict = field(default_factory=lambda: {"en": 1.35, "zh": 0.75})
    chat_overhead_tokens: float = 30.0   # the chat template around each prompt
    augment_pass_rate: float = 0.9       # a candidate passes the word bounds and dedup
    judge_yes_rate: float = 0.8
    generate_pass_rate: float = 0.8      # a generator try passes the quality check
    extend_accept_rate: float = 0.6      # an extension try is accepted


@dataclass(frozen=True)
class Shape:
    """The config's sizes (loop.*, model.*, train.*, iterations)."""

    languages: tuple[str, ...]
    new_per_language: int
    augment_tries: int
    augment_max_tokens: int
    judge_max_tokens: int
    samples: int
    generate_retries: int
    generate_drop_short: bool
    attempts: int
    extend_retries: int
    rounds: int
    extend_drop_short: bool
    max_tokens: int
    max_model_len: int
    line_keep_prob: float
    epochs: float
    train_max_length: int
    iterations: int
    # words of our prompt templates per language: augment, judge, extend, list_item
    template_words: dict = field(default_factory=dict)


@dataclass
class Stage:
    requests: float = 0.0
    prompt_tokens: float = 0.0
    generated_tokens: float = 0.0
    longest: float = 0.0  # tokens of the longest request (prompt + generated)

    def add(self, requests: float, prompt: float, generated: float) -> None:
        """`requests` requests of `prompt` prompt tokens and `generated` generated tokens each."""
        self.requests += requests
        self.prompt_tokens += requests * prompt
        self.generated_tokens += requests * generated
        self.longest = max(self.longest, prompt + generated)

    def times(self, n: float) -> "Stage":
        return Stage(self.requests * n, self.prompt_tokens * n, self.generated_tokens * n, self.longest)

    def plus(self, other: "Stage") -> "Stage":
        return Stage(self.requests + other.requests, self.prompt_tokens + other.prompt_tokens,
                     self.generated_tokens + other.generated_tokens, max(self.longest, other.longest))


def expected_tries(p: float, n: int) -> float:
    """Mean tries of a chain that stops at its first success (probability p each), at most n."""
    return float(n) if p <= 0 else (1 - (1 - p) ** n) / p


def success(p: float, n: int) -> float:
    """Probability that one of n tries succeeds."""
    return 1 - (1 - p) ** n


def capped(wanted_tokens: float, prompt_tokens: float, s: Shape) -> float:
    """Generated tokens after max_tokens and the context left after the prompt."""
    return max(0.0, min(wanted_tokens, s.max_tokens, s.max_model_len - prompt_tokens))


def augment(s: Shape, a: Assumptions, lang: str) -> tuple[Stage, float]:
    """(the stage, accepted instructions) for one language."""
    tpw, words = a.tokens_per_word[lang], s.template_words[lang]
    accept = a.augment_pass_rate * a.judge_yes_rate
    candidates = s.new_per_language * expected_tries(accept, s.augment_tries)
    stage = Stage()
    prompt = a.chat_overhead_tokens + tpw * (words["augment"] + 3 * words["list_item"] + 2 * a.instruction_words)
    stage.add(candidates, prompt, min(tpw * a.instruction_words, s.augment_max_tokens))
    judge_prompt = a.chat_overhead_tokens + tpw * (words["judge"] + a.instruction_words)
    stage.add(candidates * a.augment_pass_rate, judge_prompt, min(JUDGE_ANSWER_TOKENS, s.judge_max_tokens))
    return stage, s.new_per_language * success(accept, s.augment_tries)


def generate(s: Shape, a: Assumptions, lang: str, instructions: float, words: float) -> tuple[Stage, float, float]:
    """(the stage, kept responses, their words): `words` is the generator's intended length."""
    tpw = a.tokens_per_word[lang]
    samples = instructions * s.samples
    prompt = a.chat_overhead_tokens + tpw * a.instruction_words
    out = capped(tpw * words, prompt, s)
    stage = Stage()
    stage.add(samples * expected_tries(a.generate_pass_rate, s.generate_retries), prompt, out)
    kept = samples * success(a.generate_pass_rate, s.generate_retries)
    return stage, kept * (DROP_SHORT_KEEP if s.generate_drop_short else 1.0), out / tpw


def extension_try(s: Shape, a: Assumptions, lang: str, words: float) -> tuple[Stage, float]:
    """One try of one attempt: (its 2 x rounds requests, the extended words)."""
    tpw, tpl = a.tokens_per_word[lang], s.template_words[lang]["extend"]
    stage, current = Stage(), words
    for _ in range(s.rounds):
        p1 = a.chat_overhead_tokens + tpw * (tpl + a.instruction_words + current / 2)
        out1 = capped(tpw * a.growth_per_round * current / 2, p1, s)
        kept = (2 / 3) * out1 / tpw
        p2 = a.chat_overhead_tokens + tpw * (tpl + a.instruction_words + current + kept)
        out2 = capped(tpw * (a.growth_per_round * current - kept), p2, s)
        stage.add(1, p1, out1)
        stage.add(1, p2, out2)
        current = max(current, kept + out2 / tpw)  # a shorter result does not replace the best
    return stage, current


def extend(s: Shape, a: Assumptions, lang: str, initial: float, words: float) -> tuple[Stage, float, float]:
    """(the stage, kept extensions, their words) from `initial` kept responses of `words`."""
    attempts = initial * s.attempts
    one, extended = extension_try(s, a, lang, words)
    tries = attempts * expected_tries(a.extend_accept_rate, s.extend_retries)
    stage = one.times(tries)
    kept = attempts * success(a.extend_accept_rate, s.extend_retries)
    return stage, kept * (DROP_SHORT_KEEP if s.extend_drop_short else 1.0), extended


def training_rows(s: Shape, a: Assumptions, lang: str, rows: float, initial_words: float,
                  extended_words: float) -> dict[str, dict]:
    """Per role: rows and tokens per row (cut at train.max_length); both roles train on
    every kept extension, the extender reading the degraded initial response."""
    tpw, tpl = a.tokens_per_word[lang], s.template_words[lang]["extend"]
    generator = a.chat_overhead_tokens + tpw * (a.instruction_words + extended_words)
    extender = a.chat_overhead_tokens + tpw * (tpl + a.instruction_words + s.line_keep_prob * initial_words
                                               + extended_words)
    return {role: {"rows": rows, "tokens_per_row": min(tokens, s.train_max_length)}
            for role, tokens in (("generator", generator), ("extender", extender))}


@dataclass
class Iteration:
    k: int
    stages: dict[str, Stage]
    counts: dict[str, float]                 # instructions, initial (kept), extended (kept)
    words: dict[str, dict[str, float]]       # per language: initial, extended
    training: dict[str, dict[str, dict]]     # per language, per role: rows, tokens_per_row

    def training_tokens(self, epochs: float) -> float:
        return epochs * sum(r["rows"] * r["tokens_per_row"] for roles in self.training.values()
                            for r in roles.values())

    def as_dict(self, epochs: float) -> dict:
        return {"iteration": self.k, "stages": {n: asdict(st) for n, st in self.stages.items()},
                "counts": self.counts, "words": self.words, "training": self.training,
                "training_tokens": self.training_tokens(epochs)}


def iterations(s: Shape, a: Assumptions, engine_stages: list[str]) -> list[Iteration]:
    """Every iteration of the run; iteration k+1's generator starts from k's extended length.
    One entry per engine stage of the loop (`engine_stages`, in its order): augment, generate
    and extend are estimated here; a stage without a model here is listed with nothing."""
    out = []
    intended = {lang: a.initial_words for lang in s.languages}
    for k in range(1, s.iterations + 1):
        stages = {name: Stage() for name in engine_stages}
        counts = {"instructions": 0.0, "initial": 0.0, "extended": 0.0}
        words, training = {}, {}
        for lang in s.languages:
            st, instructions = augment(s, a, lang)
            stages["augment"] = stages["augment"].plus(st)
            st, initial, w0 = generate(s, a, lang, instructions, intended[lang])
            stages["generate"] = stages["generate"].plus(st)
            st, extended, w1 = extend(s, a, lang, initial, w0)
            stages["extend"] = stages["extend"].plus(st)
            counts["instructions"] += instructions
            counts["initial"] += initial
            counts["extended"] += extended
            words[lang] = {"initial": w0, "extended": w1}
            training[lang] = training_rows(s, a, lang, extended, w0, w1)
            intended[lang] = a.carryover * w1
        out.append(Iteration(k, stages, counts, words, training))
    return out
