"""Reward functions for the ``module:function`` ranker tests (importable as tests.reward_functions)."""


def by_length(prompt: str, response: str) -> float:
    return float(len(response))


def unavailable(prompt: str, response: str) -> float:
    raise ConnectionError("judge service unavailable")


def not_a_number(prompt: str, response: str) -> float:
    return float("nan")
