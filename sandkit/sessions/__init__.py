"""Code sessions and function calls (issue 19): a long-lived Python interpreter in a container,
driven from the host over a msgpack channel. See session.py for the shape, agent.py for the
in-container side."""

from .results import CodeError, CodeResult, OutputChunk
from .session import AsyncCodeSession

__all__ = ["AsyncCodeSession", "CodeError", "CodeResult", "OutputChunk"]
