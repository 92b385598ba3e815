"""The rule-based reward: 1 when the completion's last \\boxed{...} is mathematically equal to
the ground truth (Math-Verify), else 0, including when there is no box or its braces do not close.
Math-Verify would otherwise fall back to any number in the text, which a policy learns to game."""

BOX = "\\boxed{"


def last_boxed(text):
    """The content of the last \\boxed{...} in `text`, or None when there is none or it is unclosed."""
    if not isinstance(text, str):
        return None
    start = text.rfind(BOX)
    if start < 0:
        return None
    depth, begin = 1, start + len(BOX)
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            content = text[begin:index].strip()
            return content or None
    return None


def score(completion, truth):
    """1.0 or 0.0 for one completion (a string, or a list of chat messages) against one answer."""
    import threading
    from math_verify import parse, verify
    # Math-Verify's timeouts use signal.alarm, which raises off the main thread, and OpenRLHF calls
    # a reward file from a worker thread: with them every answer would silently score 0. The
    # content is one box's worth of text, so running without a timeout there is safe.
    seconds = 5 if threading.current_thread() is threading.main_thread() else None
    if isinstance(completion, list):  # conversational: the last message is the model's
        completion = completion[-1].get("content", "") if completion else ""
    content = last_boxed(completion)
    if content is None:
        return 0.0
    try:
        gold = parse(f"${truth}$", parsing_timeout=seconds)
        answer = parse(f"$\\boxed{{{content}}}$", parsing_timeout=seconds)
        return 1.0 if verify(gold, answer, timeout_seconds=seconds) else 0.0
    except Exception:  # Math-Verify could not read it: malformed, so no reward
        return 0.0


def accuracy_reward(completions, reward_model, **_):
    """TRL reward function: the dataset's `reward_model` column carries each ground truth."""
    return [score(completion, spec["ground_truth"]) for completion, spec in zip(completions, reward_model)]
