"""Template rendering speed on one core: the Russian welcome starter compiled once (MJML, Jinja), then rendered
for `--renders` recipients with a link rewriter the way the email channel calls it (HTML, text, subject,
preheader, 3 tracked links each). Prints {"bench": "render", "renders_per_s": …, "compile_ms": …}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _harness import ROOT  # noqa: F401  (puts the project on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    from channels.starters import starter
    from channels.templates import compile_email, sample_context

    template = starter("welcome", "ru")
    started = time.perf_counter()
    compiled = compile_email(template)
    compile_ms = (time.perf_counter() - started) * 1000
    contexts = []
    for number in range(100):
        context = sample_context("ru")
        context["lead"] = {**context["lead"], "first_name": f"Анна {number}", "email": f"anna{number}@example.ru"}
        context["score"] = number
        contexts.append(context)

    def rewrite(url: str, tag: str | None) -> str:
        return f"https://t.example.ru/c/{tag}?u={url}"

    started = time.perf_counter()
    for number in range(args.renders):
        compiled.render(contexts[number % len(contexts)], rewrite)
    seconds = time.perf_counter() - started
    print(json.dumps({"bench": "render", "renders_per_s": round(args.renders / seconds),
                      "us_per_render": round(seconds / args.renders * 1e6, 1), "compile_ms": round(compile_ms, 1),
                      "renders": args.renders, "cpus": 1}), flush=True)


if __name__ == "__main__":
    main()
