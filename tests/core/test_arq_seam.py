"""worker.main.Worker.main is a copy of arq's Worker.main (arq has no public way to wake a worker
early): these tests fail, saying what to re-check, when an arq release changes the code that was
copied or the members the copy uses."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap

import arq
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker as ArqWorker
from arq.worker import func

from worker.dispatch import DISPATCH_JOB, dispatch_job
from worker.main import Worker

COPIED_FROM = "0.28.0"
# sha256 of arq 0.28.0's Worker.main source, dedented: the code worker.main.Worker.main copies.
ARQ_MAIN_SHA256 = "0ecb21ce3368eccdebb649da7c1a22c5757dba67853bfcf006b4f2a73e3f5eaf"
RECHECK = (
    f"worker.main.Worker.main is a copy of arq {COPIED_FROM}'s Worker.main and arq {arq.VERSION} is installed: "
    "diff arq/worker.py's Worker.main against the copy, carry over what changed (how the pool is made, what "
    "on_startup finds in ctx, what one poll iteration does), check that SIGTERM still lets the running jobs "
    "finish (tests/worker/test_worker.py, tests/core/test_embedded_redis.py), then update COPIED_FROM, ARQ_MAIN_SHA256 "
    "here and the arq pin in pyproject.toml. Or drop the copy if arq now lets a worker be woken early."
)


def _main_tree() -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(Worker.main)))


def _workers() -> tuple[Worker, ArqWorker]:
    functions = [func(dispatch_job, name=DISPATCH_JOB)]  # type: ignore[arg-type]
    ours = Worker(functions=functions, redis_settings=RedisSettings(), handle_signals=False)
    theirs = ArqWorker(functions=functions, redis_settings=RedisSettings(), handle_signals=False)
    return ours, theirs


def test_arq_worker_main_is_the_code_the_copy_was_made_from() -> None:
    source = textwrap.dedent(inspect.getsource(ArqWorker.main))
    assert hashlib.sha256(source.encode()).hexdigest() == ARQ_MAIN_SHA256, RECHECK


async def test_every_member_the_copy_uses_is_still_arqs() -> None:
    ours, theirs = _workers()
    used = {
        node.attr for node in ast.walk(_main_tree())
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }
    own = (set(vars(Worker)) | set(vars(ours))) - set(vars(theirs)) - set(vars(ArqWorker))
    missing = sorted(name for name in used - own if not hasattr(theirs, name))
    assert not missing, f"arq's Worker no longer has {', '.join(missing)}. {RECHECK}"


def test_the_calls_the_copy_makes_still_fit_arqs_signatures() -> None:
    poll = ArqWorker._poll_iteration
    assert inspect.iscoroutinefunction(poll) and list(inspect.signature(poll).parameters) == ["self"], RECHECK
    pool_keywords = {
        keyword.arg for node in ast.walk(_main_tree())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "create_pool"
        for keyword in node.keywords if keyword.arg is not None
    }
    unknown = sorted(pool_keywords - set(inspect.signature(create_pool).parameters))
    assert pool_keywords and not unknown, f"arq's create_pool no longer takes {', '.join(unknown)}. {RECHECK}"
    for handler in (ArqWorker.handle_sig, ArqWorker.handle_sig_wait_for_completion):
        assert list(inspect.signature(handler).parameters) == ["self", "signum"], (
            f"arq's Worker.{handler.__name__}, which worker.main.Worker overrides, changed. {RECHECK}"
        )
