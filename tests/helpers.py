"""Test helpers: run frames built in code through the sans-IO pipeline."""

from __future__ import annotations

from appliance import synth
from appliance.core.pipeline import Pipeline, PipelineConfig


def run_frames(frames, linktype: int = 1, close: bool = True, **cfg):
    """Feed (ts, frame) pairs one by one; return (records, pipeline)."""
    p = Pipeline(PipelineConfig(**cfg))
    for ts, frame in frames:
        p.feed(ts, linktype, frame)
    if close:
        p.close()
    return p.take(), p


def conv(**kw) -> synth.Conversation:
    return synth.Conversation(**kw)


def simple_exchange(req: bytes, resp: bytes, **kw) -> list:
    c = synth.Conversation(**kw)
    c.handshake()
    c.exchange(req, resp)
    c.close()
    return c.frames


def by_path(records):
    return {r["path"]: r for r in records}
