"""Test helpers: run frames built in code through the sans-IO pipeline."""

from __future__ import annotations

from appliance import synth
from appliance.core.pipeline import Pipeline, PipelineConfig
from appliance.format.record import Formatter

FORMAT_KEYS = ("source", "account_id", "pair_filter")


def run_frames(frames, linktype: int = 1, close: bool = True, **cfg):
    """Feed (ts, frame) pairs one by one; return (Akto records, pipeline)."""
    fmt = {k: cfg.pop(k) for k in FORMAT_KEYS if k in cfg}
    p = Pipeline(PipelineConfig(**cfg))
    for ts, frame in frames:
        p.feed(ts, linktype, frame)
    if close:
        p.close()
    formatter = Formatter(max_body=p.cfg.max_body, **fmt)
    p.formatter = formatter
    return formatter.records(p.take()), p


def run_pairs(frames, linktype: int = 1, close: bool = True, **cfg):
    """Feed (ts, frame) pairs one by one; return (Pair objects, pipeline)."""
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
