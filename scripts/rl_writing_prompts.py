"""The `rl` verb's writing prompts for a real chat model (selflengthen/training/rl_prompts_writing.jsonl):
stories, essays, guides, letters, reports and the like, each asking for a length between 100 and
800 words ("in about 300 words", "a 500-word essay", "of roughly 200 words"), from our own
genres and topics. No topic of the held-out writing sets (evaluation/heldout_writing.jsonl and
heldout_writing_large.jsonl) is used, and no prompt equals one of heldout_writing's, so they stay held out.

    .venv/bin/python scripts/rl_writing_prompts.py [--count 400] [--seed 11] [--lengths 100,200,300] [--out FILE]
    .venv/bin/python scripts/rl_writing_prompts.py --rows --count 100 --out FILE   # LongBench-Write rows, for `dpo data=FILE`

`--rows` writes {prompt, type, length} rows (the format `dpo` and `eval` read) instead of {prompt}.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELD_OUT = REPO / "selflengthen" / "evaluation" / "heldout_writing.jsonl"
# (genre, topic): topics none of the held-out prompts touches
TOPICS = {
    "story": ["a beekeeper who hears the hive change its song", "two rivals stuck in a lift during a power cut",
              "a postwoman delivering the last letter on her round", "a boy who trains a crow to bring back keys",
              "an old tailor's final commission", "a chess match played by post over thirty years",
              "a family moving into a house with a locked attic", "a cook on an Antarctic research station"],
    "essay": ["whether homework helps children learn", "the value of learning a second language as an adult",
              "why people keep diaries", "what public parks owe to the people who designed them",
              "the case for and against school uniforms", "how cheap flights changed holidays"],
    "guide": ["repairing a puncture on a bicycle tyre", "baking sourdough bread at home",
              "preparing for a job interview", "choosing a first telescope", "learning to touch-type",
              "caring for houseplants through the winter"],
    "letter": ["a teacher who changed your mind about mathematics", "a council asking for a safer road crossing",
               "a friend who has just moved abroad", "the author of a book you loved as a child"],
    "report": ["the noise levels on a busy shopping street", "how a small café could reduce its food waste",
               "the use of a town's public swimming pool over one year", "recycling habits in an office block"],
    "article": ["the revival of hand-made pottery", "how lighthouses are kept running today",
                "the history of the bicycle bell", "people who restore old radios"],
    "description": ["a railway station at midnight", "an orchard at harvest time", "a crowded ferry crossing",
                    "a workshop where violins are made"],
    "speech": ["a retiring bus driver's farewell party", "the opening of a new public library",
               "a school's annual prize day"],
}
FORMS = ["Write {a} {g} about {t} in about {n} words.", "Write a {n}-word {g} about {t}.",
         "Write {a} {g} of roughly {n} words about {t}.", "In around {n} words, write {a} {g} about {t}.",
         "Write {a} {g} about {t}. Use about {n} words."]
LENGTHS = (100, 150, 200, 300, 400, 500, 600, 800)


def rows(count: int, seed: int, lengths: tuple[int, ...] = LENGTHS) -> list[dict]:
    """{prompt, type, length} rows: the genre as the type, the words asked as the length."""
    held = [json.loads(line)["prompt"] for line in HELD_OUT.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    pairs = [(g, t) for g, ts in TOPICS.items() for t in ts]
    out = []
    for _ in range(count):
        genre, topic = rng.choice(pairs)
        article = "an" if genre[0] in "aeiou" else "a"
        form = rng.choice(FORMS)
        n = rng.choice(lengths)
        out.append({"prompt": form.format(a=article, g=genre, t=topic, n=n), "type": genre.title(), "length": n})
    assert not {r["prompt"] for r in out} & set(held)
    return out


def prompts(count: int, seed: int, lengths: tuple[int, ...] = LENGTHS) -> list[str]:
    return [r["prompt"] for r in rows(count, seed, lengths)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="the word counts asked, e.g. 100,200,300")
    p.add_argument("--rows", action="store_true", help="write {prompt, type, length} rows (for `dpo data=`)")
    p.add_argument("--out", default=str(REPO / "selflengthen" / "training" / "rl_prompts_writing.jsonl"))
    a = p.parse_args()
    lengths = tuple(int(n) for n in a.lengths.split(","))
    made = rows(a.count, a.seed, lengths)
    lines = "".join(json.dumps(r if a.rows else {"prompt": r["prompt"]}) + "\n" for r in made)
    Path(a.out).write_text(lines, encoding="utf-8")


if __name__ == "__main__":
    main()
